package pgdata

import "testing"

func TestRelationFile(t *testing.T) {
	tests := []struct {
		tablespace bool
		path       string
		db         uint32
		ok         bool
	}{
		{false, "base/5/16384", 5, true},
		{false, "base/5/16384_fsm", 5, true},
		{false, "base/5/16384_vm", 5, true},
		{false, "base/5/16384_init", 5, true},
		{false, "base/5/16384.1", 5, true},
		{false, "base/5/16384_vm.2", 5, true},
		{false, "base/1/1259", 1, true},
		{false, "base/4294967295/4294967295.4294967295", 4294967295, true},
		{true, "PG_15_202209061/16390/16391", 16390, true},
		{true, "PG_18_202506291/16390/16391_fsm.3", 16390, true},
		{false, "PG_15_202209061/16390/16391", 0, false}, // a tablespace path in the data directory
		{true, "base/5/16384", 0, false},                 // a data directory path in a tablespace
		{false, "base/5/PG_VERSION", 0, false},
		{false, "base/5/pg_filenode.map", 0, false},
		{false, "base/5/pg_internal.init", 0, false},
		{false, "base/5/t3_16384", 0, false}, // temporary relation (never backed up)
		{false, "global/1262", 0, false},     // shared catalog, not a database's
		{false, "global/pg_control", 0, false},
		{false, "base/05/1", 0, false},
		{false, "base/5/01", 0, false},
		{false, "base/0/1", 0, false},
		{false, "base/5/0", 0, false},
		{false, "base/5/16384.0", 0, false},
		{false, "base/5/16384.01", 0, false},
		{false, "base/5/16384.", 0, false},
		{false, "base/5/16384.1.2", 0, false},
		{false, "base/5/16384_fsm_vm", 0, false},
		{false, "base/5/16384_xyz", 0, false},
		{false, "base/5/_fsm", 0, false},
		{false, "base/5/+16384", 0, false},
		{false, "base/5/4294967296", 0, false}, // above uint32
		{false, "base/4294967296/1", 0, false},
		{false, "base/5", 0, false},
		{false, "base/5/", 0, false},
		{false, "base/5/16384/x", 0, false},
		{false, "/base/5/16384", 0, false},
		{false, "base//16384", 0, false},
		{false, "pg_wal/000000010000000000000001", 0, false},
		{false, "", 0, false},
	}
	for _, tc := range tests {
		db, ok := RelationFile(tc.tablespace, tc.path)
		if db != tc.db || ok != tc.ok {
			t.Errorf("RelationFile(%v, %q) = %d, %v; want %d, %v", tc.tablespace, tc.path, db, ok, tc.db, tc.ok)
		}
	}
}
