package restore

import "testing"

// TestPlaceholderDB: a database left out gets placeholders for its
// relation files and its relation map, never for PG_VERSION or files
// outside database directories.
func TestPlaceholderDB(t *testing.T) {
	for _, tc := range []struct {
		tablespace bool
		path       string
		db         uint32
		ok         bool
	}{
		{false, "base/16385/pg_filenode.map", 16385, true},
		{false, "base/16385/2662", 16385, true},
		{false, "base/16385/16400_fsm", 16385, true},
		{false, "base/16385/16400.1", 16385, true},
		{true, "PG_15_202209061/16385/pg_filenode.map", 16385, true},
		{true, "PG_15_202209061/16385/16400", 16385, true},
		{false, "base/16385/PG_VERSION", 0, false},
		{true, "PG_15_202209061/16385/PG_VERSION", 0, false},
		{false, "global/pg_filenode.map", 0, false},
		{false, "global/1262", 0, false},
		{false, "base/pg_filenode.map", 0, false},
		{false, "base/x/pg_filenode.map", 0, false},
		{false, "base/16385/sub/pg_filenode.map", 0, false},
		{true, "base/16385/pg_filenode.map", 0, false},
		{false, "PG_15_202209061/16385/pg_filenode.map", 0, false},
		{false, "pg_filenode.map", 0, false},
	} {
		db, ok := placeholderDB(tc.tablespace, tc.path)
		if db != tc.db || ok != tc.ok {
			t.Errorf("placeholderDB(%v, %q) = %d, %v; want %d, %v", tc.tablespace, tc.path, db, ok, tc.db, tc.ok)
		}
	}
}
