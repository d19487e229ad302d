// Package pgdata reads the few PostgreSQL on-disk formats a restore must
// understand on its own, from bytes it is given: the system identifier in
// global/pg_control, which database a relation file belongs to, and the
// list of databases in the pg_database catalog (with the commit status
// pg_xact records), and which files PostgreSQL seals with a trailing
// CRC32C. Restore uses them to refuse a delta restore into
// another cluster's directory and to map database names to OIDs from the
// backup itself, never from a live server; backup and restore use the
// last to record and compare a stronger hash of those files. It is pure: no I/O.
package pgdata
