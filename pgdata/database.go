package pgdata

import "errors"

// Database is one database of a cluster, as its pg_database catalog
// records it.
type Database struct {
	OID  uint32
	Name string
}

// XactStatusFunc returns the content of pg_xact segment file name (four
// or more upper-case hex digits, e.g. "0000"), or an error wrapping
// fs.ErrNotExist when the backup has no such file.
type XactStatusFunc func(name string) ([]byte, error)

// ErrNotImplemented is returned by Databases until it is built.
var ErrNotImplemented = errors.New("not implemented")

// Databases lists the databases recorded in pg_database's heap file
// (global/1262, all its segments concatenated, a whole number of 8 KiB
// pages), the tuples visible once every transaction the backup saw commit
// has committed: a tuple whose inserting transaction did not commit, or
// whose deleting one did, is left out, judged by the tuple's hint bits
// and, without them, by pg_xact (read through xact). Sorted by OID.
func Databases(pgDatabase []byte, xact XactStatusFunc) ([]Database, error) {
	return nil, ErrNotImplemented
}
