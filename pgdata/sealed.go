package pgdata

import "strings"

// SealedByCRC reports whether PostgreSQL ends the file at path (as a
// backup records it: relative to the data directory, or to the tablespace
// directory when tablespace is set) with the CRC32C of what precedes it,
// then zero padding: global/pg_control, every pg_filenode.map (global/,
// base/<db>/, and <PG_version_dir>/<db>/ in a tablespace), the two-phase
// state files pg_twophase/* and pg_logical/replorigin_checkpoint.
//
// The CRC32C of such a whole file is the same constant for every valid
// content of its size (the CRC's residue), so a CRC32C of the file, and
// size and mtime, which a copy keeps, cannot tell two versions apart: a
// backup records a SHA-256 of these files' content, and a delta restore
// compares that instead. A stale one (the catalogs' file map, the
// checkpoint recovery starts from) would corrupt a cluster silently.
func SealedByCRC(tablespace bool, path string) bool {
	parts := strings.Split(path, "/")
	if tablespace {
		// PG_<major>_<catversion>/<db>/pg_filenode.map
		return len(parts) == 3 && strings.HasPrefix(parts[0], "PG_") && parts[1] != "" &&
			parts[2] == "pg_filenode.map"
	}
	switch len(parts) {
	case 2:
		switch parts[0] {
		case "global":
			return parts[1] == "pg_control" || parts[1] == "pg_filenode.map"
		case "pg_twophase":
			return parts[1] != ""
		case "pg_logical":
			return parts[1] == "replorigin_checkpoint"
		}
	case 3:
		return parts[0] == "base" && parts[1] != "" && parts[2] == "pg_filenode.map"
	}
	return false
}
