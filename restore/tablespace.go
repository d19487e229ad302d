package restore

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// tablespaceMapEntry is one line of a tablespace_map: the tablespace's oid
// and the directory its pg_tblspc link points to.
type tablespaceMapEntry struct {
	oid  uint32
	path string
}

// parseTablespaceMap reads a tablespace_map as PostgreSQL does
// (read_tablespace_map): lines of "<oid> <path>", where a backslash makes
// the next character literal, so a path can hold a line break.
func parseTablespaceMap(data []byte) ([]tablespaceMapEntry, error) {
	var (
		entries []tablespaceMapEntry
		line    strings.Builder
		escaped bool
	)
	for _, c := range data {
		switch {
		case escaped:
			line.WriteByte(c)
			escaped = false
		case c == '\\':
			escaped = true
		case c == '\n' || c == '\r':
			if line.Len() == 0 {
				continue // "\r\n", or an empty line
			}
			e, err := parseTablespaceMapLine(line.String())
			if err != nil {
				return nil, err
			}
			entries = append(entries, e)
			line.Reset()
		default:
			line.WriteByte(c)
		}
	}
	if line.Len() > 0 || escaped {
		return nil, errors.New("tablespace_map: last line is not terminated")
	}
	return entries, nil
}

func parseTablespaceMapLine(s string) (tablespaceMapEntry, error) {
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return tablespaceMapEntry{}, fmt.Errorf("tablespace_map: invalid line %q: want \"<oid> <path>\"", s)
	}
	n, err := strconv.ParseUint(s[:i], 10, 32)
	path := strings.TrimLeft(s[i:], " \t")
	if err != nil || n == 0 || path == "" {
		return tablespaceMapEntry{}, fmt.Errorf("tablespace_map: invalid line %q: want \"<oid> <path>\"", s)
	}
	return tablespaceMapEntry{oid: uint32(n), path: path}, nil
}

// checkTablespaceMap checks, before a restore leaves tablespace_map out,
// that every tablespace it names is one the backup has and the restore
// links in pg_tblspc: without the map, PostgreSQL knows only those links.
func checkTablespaceMap(data []byte, dirs map[uint32]string) error {
	entries, err := parseTablespaceMap(data)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, ok := dirs[e.oid]; !ok {
			return fmt.Errorf("tablespace_map names tablespace %d (at %s), which the backup does not have: the backup is inconsistent; restore another backup", e.oid, e.path)
		}
	}
	return nil
}
