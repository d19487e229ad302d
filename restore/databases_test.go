package restore

import (
	"path/filepath"
	"testing"

	"github.com/pgstow/pgstow/providers/mem"
)

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

// TestRangedProgress: the last progress of a delta restore or one of
// chosen databases says what was kept, fetched and made a placeholder,
// as the Result does; a normal restore's is not Ranged.
func TestRangedProgress(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fixture func(*testing.T) *fixture
		edit    func(*testing.T, *fixture, *Options)
		ranged  bool
		leftOut uint32 // the database whose files are placeholders
	}{
		{"normal", func(t *testing.T) *fixture { return deltaFixture(t, mem.New()) }, func(*testing.T, *fixture, *Options) {}, false, 0},
		{"delta", func(t *testing.T) *fixture { return deltaFixture(t, mem.New()) }, func(t *testing.T, f *fixture, o *Options) {
			o.Target = restoreFresh(t, f)
			o.Delta = true
			patch(t, filepath.Join(o.Target, bigFile), 200<<10, []byte("changed"))
		}, true, 0},
		{"databases", func(t *testing.T) *fixture { return databaseFixture(t, mem.New()) }, func(_ *testing.T, f *fixture, o *Options) {
			o.Databases = []string{"app"}
			o.listDatabases = fakeDatabases(f)
		}, true, 16385},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.fixture(t)
			o := testOptions(filepath.Join(t.TempDir(), "data"))
			tc.edit(t, f, &o)
			var last Progress
			o.Progress = func(p Progress) { last = p }
			res, err := Run(t.Context(), f.repo, o)
			if err != nil {
				t.Fatal(err)
			}
			var holders int64
			for _, fl := range f.backup.Files {
				if db, ok := placeholderDB(false, fl.Path); ok && db == tc.leftOut {
					holders += fl.Size
				}
			}
			if last.Ranged != tc.ranged || last.BytesKept != res.BytesKept || last.BytesDone != res.BytesFetched ||
				last.BytesTotal != last.BytesDone || last.BytesPlaceholder != holders {
				t.Errorf("last progress %+v; result kept %d, fetched %d; placeholders %d bytes", last, res.BytesKept, res.BytesFetched, holders)
			}
			if o.Delta && (res.BytesKept == 0 || res.BytesFetched == 0) {
				t.Errorf("delta restore kept %d, fetched %d: want some of both", res.BytesKept, res.BytesFetched)
			}
		})
	}
}
