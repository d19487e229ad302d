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

// rewriteTablespaceMap points the lines of the remapped tablespaces at
// their new directories, so that PostgreSQL, which recreates the
// pg_tblspc links from this file when it starts, links to them. Other
// lines keep their path.
func rewriteTablespaceMap(data []byte, dirs map[uint32]string, remapped map[uint32]bool) ([]byte, error) {
	entries, err := parseTablespaceMap(data)
	if err != nil {
		return nil, err
	}
	var out strings.Builder
	for _, e := range entries {
		path := e.path
		if remapped[e.oid] {
			path = dirs[e.oid]
		}
		out.WriteString(strconv.FormatUint(uint64(e.oid), 10))
		out.WriteByte(' ')
		for i := 0; i < len(path); i++ {
			// Escaped as PostgreSQL writes the file.
			if c := path[i]; c == '\n' || c == '\r' || c == '\\' {
				out.WriteByte('\\')
			}
			out.WriteByte(path[i])
		}
		out.WriteByte('\n')
	}
	return []byte(out.String()), nil
}
