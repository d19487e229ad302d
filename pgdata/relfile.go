package pgdata

import (
	"strconv"
	"strings"
)

// RelationFile reports whether path, as a backup records it (relative to
// the data directory for the data directory's archive, relative to the
// tablespace directory for a tablespace's), is a relation data file of a
// database, and which: base/<db>/<file> in the data directory,
// PG_<major>_<catversion>/<db>/<file> in a tablespace, where <file> is a
// relfilenode with an optional fork suffix (_fsm, _vm, _init) and segment
// number (.1, .2…). Other files of a database directory (PG_VERSION,
// pg_filenode.map, pg_internal.init) are not relation files: a restore of
// chosen databases writes them for every database, so that the server
// can start and drop the others.
func RelationFile(tablespace bool, path string) (db uint32, ok bool) {
	parts := strings.Split(path, "/")
	if len(parts) != 3 {
		return 0, false
	}
	switch {
	case !tablespace && parts[0] == "base":
	case tablespace && strings.HasPrefix(parts[0], "PG_"):
	default:
		return 0, false
	}
	d, ok := parseOID(parts[1])
	if !ok {
		return 0, false
	}
	if !relationFileName(parts[2]) {
		return 0, false
	}
	return d, true
}

// IsRelationFile reports whether path, as a backup records it (see
// RelationFile), is a relation data file: base/<db>/<file> or
// global/<file> in the data directory, PG_<major>_<catversion>/<db>/<file>
// in a tablespace. These are the files PostgreSQL 17's incremental backups
// may send as INCREMENTAL.<file>, and the ones whose blocks a backup
// records CRCs of. Unlike RelationFile it counts the shared catalogs of
// global/, which belong to no database.
func IsRelationFile(tablespace bool, path string) bool {
	if !tablespace {
		if name, ok := strings.CutPrefix(path, "global/"); ok {
			return relationFileName(name)
		}
	}
	_, ok := RelationFile(tablespace, path)
	return ok
}

// relationFileName reports whether name is a relation file's name: a
// relfilenode with an optional fork suffix (_fsm, _vm, _init) and segment
// number (.1, .2…), all canonical decimals.
func relationFileName(name string) bool {
	if i := strings.IndexByte(name, '.'); i >= 0 {
		if _, ok := parseOID(name[i+1:]); !ok {
			return false
		}
		name = name[:i]
	}
	for _, fork := range []string{"_fsm", "_vm", "_init"} {
		if rest, found := strings.CutSuffix(name, fork); found {
			name = rest
			break
		}
	}
	_, ok := parseOID(name)
	return ok
}

// incrementalPrefix starts the name PostgreSQL 17+ gives a relation file
// an incremental backup sends only the changed blocks of.
const incrementalPrefix = "INCREMENTAL."

// IncrementalName maps dir/INCREMENTAL.<name>, as an incremental backup
// sends a relation file, to dir/<name>, the file it stands for. ok is
// false for any other path, including INCREMENTAL.<name> where dir/<name>
// is not a relation file (in the data directory's or a tablespace's form),
// which PostgreSQL never sends incrementally and so is an ordinary file.
func IncrementalName(path string) (realPath string, ok bool) {
	dir, name := "", path
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		dir, name = path[:i+1], path[i+1:]
	}
	rest, found := strings.CutPrefix(name, incrementalPrefix)
	if !found {
		return "", false
	}
	realPath = dir + rest
	if !IsRelationFile(false, realPath) && !IsRelationFile(true, realPath) {
		return "", false
	}
	return realPath, true
}

// parseOID accepts a canonical decimal uint32 above 0: no sign, no
// leading zero.
func parseOID(s string) (uint32, bool) {
	if s == "" || s[0] == '0' || len(s) > 10 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err == nil
}
