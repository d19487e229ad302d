package pgdata

import "testing"

func TestSealedByCRC(t *testing.T) {
	tests := []struct {
		tablespace bool
		path       string
		want       bool
	}{
		{false, "global/pg_control", true},
		{false, "global/pg_filenode.map", true},
		{false, "base/1/pg_filenode.map", true},
		{false, "base/16384/pg_filenode.map", true},
		{false, "pg_twophase/000002E5", true},         // before PostgreSQL 17
		{false, "pg_twophase/00000000000002E5", true}, // 17 and later
		{false, "pg_logical/replorigin_checkpoint", true},
		{true, "PG_15_202209061/16390/pg_filenode.map", true},
		{true, "PG_18_202506291/5/pg_filenode.map", true},

		{false, "global/1262", false},
		{false, "global/pg_internal.init", false},
		{false, "base/1/1259", false},
		{false, "base/1/PG_VERSION", false},
		{false, "base/pg_filenode.map", false},
		{false, "base//pg_filenode.map", false},
		{false, "base/1/sub/pg_filenode.map", false},
		{false, "pg_filenode.map", false},
		{false, "pg_control", false},
		{false, "pg_twophase", false},
		{false, "pg_twophase/", false},
		{false, "pg_twophase/a/b", false},
		{false, "pg_logical/snapshots/0-1.snap", false},
		{false, "pg_logical/replorigin_checkpoint.tmp", false},
		{false, "pg_xact/0000", false},
		{false, "PG_15_202209061/16390/pg_filenode.map", false}, // a tablespace path in the data directory
		{true, "base/1/pg_filenode.map", false},                 // a data directory path in a tablespace
		{true, "global/pg_control", false},
		{true, "PG_15_202209061/16390/16391", false},
		{true, "PG_15_202209061//pg_filenode.map", false},
		{false, "", false},
		{true, "", false},
	}
	for _, tc := range tests {
		if got := SealedByCRC(tc.tablespace, tc.path); got != tc.want {
			t.Errorf("SealedByCRC(%v, %q) = %v, want %v", tc.tablespace, tc.path, got, tc.want)
		}
	}
}
