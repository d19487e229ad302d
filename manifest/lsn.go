package manifest

import (
	"fmt"
	"strings"
)

// ParseLSN parses an LSN as PostgreSQL prints it: two hexadecimal halves of
// one to eight digits each, separated by a slash ("0/3000028", and the
// zero-padded "0/0300A028" of PostgreSQL 18). Either case is accepted
// because both appear in the wild.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("parse LSN %q: want X/X", s)
	}
	h, err := parseHex32(hi)
	if err != nil {
		return 0, fmt.Errorf("parse LSN %q: high half: %w", s, err)
	}
	l, err := parseHex32(lo)
	if err != nil {
		return 0, fmt.Errorf("parse LSN %q: low half: %w", s, err)
	}
	return LSN(uint64(h)<<32 | uint64(l)), nil
}

// parseHex32 parses one to eight hex digits. It is stricter than
// strconv.ParseUint, which would also take signs, underscores or a 0x
// prefix in some modes; an LSN has none of those.
func parseHex32(s string) (uint32, error) {
	if len(s) == 0 || len(s) > 8 {
		return 0, fmt.Errorf("want 1 to 8 hex digits, got %d characters", len(s))
	}
	var v uint32
	for i := 0; i < len(s); i++ {
		d, ok := hexDigit(s[i])
		if !ok {
			return 0, fmt.Errorf("invalid hex digit %q", s[i])
		}
		v = v<<4 | uint32(d)
	}
	return v, nil
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// String formats the LSN as PostgreSQL 18 does ("%X/%08X"), so that what we
// log and store can be pasted into SQL and compared with server output.
func (l LSN) String() string {
	return fmt.Sprintf("%X/%08X", uint32(l>>32), uint32(l))
}

// MarshalText makes an LSN a JSON string in PostgreSQL's notation rather
// than an opaque 64-bit number.
func (l LSN) MarshalText() ([]byte, error) {
	return []byte(l.String()), nil
}

// UnmarshalText is the inverse of MarshalText.
func (l *LSN) UnmarshalText(text []byte) error {
	v, err := ParseLSN(string(text))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
