package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrChecksumMismatch is returned (wrapped) when a manifest's bytes do not
// match the checksum stored in it, ours or PostgreSQL's. It means the
// object is corrupt; retrying the read will not help unless the store
// itself returned bad bytes.
var ErrChecksumMismatch = errors.New("checksum mismatch")

// ErrUnsupportedVersion is returned (wrapped) when a manifest or
// repository configuration has a format major version this build does not
// know, typically because a newer pgstow wrote it.
var ErrUnsupportedVersion = errors.New("unsupported format version")

// checksumKey is the last member of an encoded Backup. It is not a field of
// Backup because it is a property of the encoding, not of the backup.
const checksumKey = "manifest_sha256"

// Encode validates b and serialises it as indented JSON whose last member,
// alone on the last line but one, is "manifest_sha256": the SHA-256 of
// every byte before that line. Like PostgreSQL's Manifest-Checksum, this
// lets Decode verify the manifest without re-serialising it, so the
// checksum survives fields a newer minor version adds.
func Encode(b *Backup) ([]byte, error) {
	var buf bytes.Buffer
	if _, _, err := EncodeTo(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Decode verifies the checksum Encode wrote, checks that the format version
// is one this build reads, decodes the manifest and validates it. Unknown
// fields are accepted, because a newer minor version may add some and must
// stay readable. It is DecodeFrom over data.
func Decode(data []byte) (*Backup, error) {
	return DecodeFrom(bytes.NewReader(data))
}

// EncodeRepo validates r and serialises it as indented JSON. The repository
// configuration is written once and small, so it carries no checksum of
// its own; the store's upload checksum covers it.
func EncodeRepo(r *Repo) ([]byte, error) {
	if r == nil {
		return nil, errors.New("encode repository configuration: nil repo")
	}
	if err := validateRepo(r); err != nil {
		return nil, fmt.Errorf("encode repository configuration: %w", err)
	}
	out, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return nil, fmt.Errorf("encode repository configuration: %w", err)
	}
	return append(out, '\n'), nil
}

// DecodeRepo decodes and validates a repository configuration, with the
// same version rule as Decode.
func DecodeRepo(data []byte) (*Repo, error) {
	if err := peekVersion(data, checkRepoVersion); err != nil {
		return nil, fmt.Errorf("decode repository configuration: %w", err)
	}
	var r Repo
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode repository configuration: %w", err)
	}
	if err := validateRepo(&r); err != nil {
		return nil, fmt.Errorf("decode repository configuration: %w", err)
	}
	return &r, nil
}

func validateRepo(r *Repo) error {
	if err := checkRepoVersion(r.FormatVersion); err != nil {
		return err
	}
	if r.Immutability != nil {
		if err := r.Immutability.Validate(); err != nil {
			return err
		}
		if n, _ := formatMajor(r.FormatVersion); n < 2 {
			return fmt.Errorf("format_version %s with immutability: want %s, so that a pgstow that cannot lock refuses the repository", r.FormatVersion, RepoFormatVersionImmutable)
		}
	}
	if !ValidSegmentSize(r.WALSegmentSize) {
		return fmt.Errorf("invalid wal_segment_size %d: want a power of two from 1 MiB to 1 GiB", r.WALSegmentSize)
	}
	if _, err := strconv.ParseUint(r.SystemID, 10, 64); err != nil {
		return fmt.Errorf("invalid system_id %q: want the cluster's decimal system identifier", r.SystemID)
	}
	return nil
}

// peekVersion reads only format_version from a JSON object and checks it
// with check.
func peekVersion(data []byte, check func(string) error) error {
	var v struct {
		FormatVersion *string `json:"format_version"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("read format_version: %w", err)
	}
	if v.FormatVersion == nil {
		return errors.New("missing format_version")
	}
	return check(*v.FormatVersion)
}

// checkVersion accepts a backup manifest's format version: any
// "1.<minor>" or "2.<minor>". Minor versions only add fields that older
// readers may ignore; major 2 added sliced chunk references (incremental
// backups), which a reader of major 1 would misread as whole chunks, so
// such a reader refuses them.
func checkVersion(v string) error { return checkVersionUpTo(v, 2) }

// checkRepoVersion accepts a repository configuration's format version:
// "1.<minor>", or "2.<minor>" for an immutable repository. Incremental
// backups changed only the backup manifest, so a plain repository stays
// readable by every pgstow of major 1.
func checkRepoVersion(v string) error { return checkVersionUpTo(v, 2) }

func checkVersionUpTo(v string, maxMajor int) error {
	n, err := formatMajor(v)
	if err != nil {
		return err
	}
	known := "format 1.x only"
	if maxMajor == 2 {
		known = "formats 1.x and 2.x only"
	}
	switch {
	case n >= 1 && n <= maxMajor:
		return nil
	case n > maxMajor:
		return fmt.Errorf("%w %s: this pgstow reads %s; a newer pgstow is needed", ErrUnsupportedVersion, v, known)
	default:
		return fmt.Errorf("%w %s: this pgstow reads %s", ErrUnsupportedVersion, v, known)
	}
}

// formatMajor returns the major version of a MAJOR.MINOR format version.
func formatMajor(v string) (int, error) {
	major, minor, ok := strings.Cut(v, ".")
	if !ok || !isDecimal(major) || !isDecimal(minor) {
		return 0, fmt.Errorf("malformed format_version %q: want MAJOR.MINOR", v)
	}
	n, _ := strconv.Atoi(major) // cannot fail: at most 9 digits
	return n, nil
}

// isDecimal reports whether s is 1 to 9 decimal digits (short enough that
// it cannot overflow an int).
func isDecimal(s string) bool {
	if len(s) == 0 || len(s) > 9 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// splitChecksum locates the checksum member named key, which must be the
// last member of the document and alone on its line (only blanks may
// precede it), and returns the bytes the checksum covers — everything up to
// and including the newline before that line, as PostgreSQL defines its
// Manifest-Checksum — and the stored hex digest. Searching for the last
// occurrence is safe: the key can appear earlier only inside string values,
// and the strict tail check below refuses anything after the checksum.
func splitChecksum(data []byte, key string) (covered []byte, stored string, err error) {
	quoted := `"` + key + `"`
	i := bytes.LastIndex(data, []byte(quoted))
	if i < 0 {
		return nil, "", fmt.Errorf("no %q member: not a manifest, or truncated", key)
	}
	lineStart := bytes.LastIndexByte(data[:i], '\n') + 1
	if lineStart == 0 {
		return nil, "", fmt.Errorf("%q is not on a line of its own", key)
	}
	for _, c := range data[lineStart:i] {
		if c != ' ' && c != '\t' {
			return nil, "", fmt.Errorf("%q is not on a line of its own", key)
		}
	}
	// The tail must be exactly: ":" "<hex>" "}" with optional blanks.
	t := tail{data[i+len(quoted):]}
	t.skipSpace()
	if !t.consume(':') {
		return nil, "", fmt.Errorf("malformed %q member: want ':'", key)
	}
	t.skipSpace()
	if !t.consume('"') {
		return nil, "", fmt.Errorf("malformed %q member: want a string", key)
	}
	end := bytes.IndexByte(t.b, '"')
	if end < 0 {
		return nil, "", fmt.Errorf("malformed %q member: unterminated string", key)
	}
	stored = string(t.b[:end])
	if len(stored) != 2*sha256.Size || !isHex(stored) {
		return nil, "", fmt.Errorf("malformed %q member: %q is not a hex SHA-256", key, stored)
	}
	t.b = t.b[end+1:]
	t.skipSpace()
	if !t.consume('}') {
		return nil, "", fmt.Errorf("%q is not the last member of the document", key)
	}
	t.skipSpace()
	if len(t.b) != 0 {
		return nil, "", fmt.Errorf("unexpected data after the end of the document")
	}
	return data[:lineStart], stored, nil
}

// tail is a tiny scanner for the bytes after a checksum key.
type tail struct{ b []byte }

func (t *tail) skipSpace() {
	for len(t.b) > 0 && (t.b[0] == ' ' || t.b[0] == '\t' || t.b[0] == '\n' || t.b[0] == '\r') {
		t.b = t.b[1:]
	}
}

func (t *tail) consume(c byte) bool {
	if len(t.b) == 0 || t.b[0] != c {
		return false
	}
	t.b = t.b[1:]
	return true
}

// isHex reports whether s is non-empty and all hex digits, of either case.
func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if _, ok := hexDigit(s[i]); !ok {
			return false
		}
	}
	return len(s) > 0
}
