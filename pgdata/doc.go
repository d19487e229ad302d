// Package pgdata reads the few PostgreSQL on-disk formats a restore must
// understand on its own, from bytes it is given: the system identifier in
// global/pg_control, which database a relation file belongs to, and the
// list of databases in the pg_database catalog (with the commit status
// pg_xact records), which files PostgreSQL seals with a trailing CRC32C,
// which are relation files, and the header of the INCREMENTAL.<name>
// files of PostgreSQL 17's incremental backups. Restore uses them to
// refuse a delta restore into another cluster's directory and to map
// database names to OIDs from the backup itself, never from a live
// server; backup and restore use the sealed files to record and compare a
// stronger hash of them, and backup the relation files and incremental
// headers to assemble an incremental backup into whole files. It is pure:
// no I/O.
package pgdata
