package restore

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
)

// An incremental backup's archives are lists of slices of chunks. These
// tests restore real backups whose manifests are rewritten in memory into
// such lists (the archives' bytes unchanged), and compare with restores
// of the originals.

// slicedInThirds rewrites every chunk reference of b into three slices
// of it, in order: the archives' bytes are the same.
func slicedInThirds(b *manifest.Backup) {
	for ai := range b.Archives {
		var refs []manifest.ChunkRef
		for _, c := range b.Archives[ai].Chunks {
			if c.Sliced() || c.RawSize < 3 {
				refs = append(refs, c)
				continue
			}
			third := c.RawSize / 3
			for k, off := range []int64{0, third, 2 * third} {
				s := c
				s.Offset, s.Length = off, third
				if k == 2 {
					s.Length = c.RawSize - off
				}
				refs = append(refs, s)
			}
		}
		b.Archives[ai].Chunks = refs
	}
	b.FormatVersion = manifest.FormatVersionIncremental
}

// alternating returns an edit that gives a backup the archives of
// repotest.Alternate of b: two chunks each, referenced alternately.
func alternating(t *testing.T, repo *repository.Repository, b *manifest.Backup, piece int64) func(*manifest.Backup) {
	t.Helper()
	alt := repotest.Alternate(t, repo, b, piece)
	return func(b *manifest.Backup) {
		b.Archives, b.FormatVersion = alt.Archives, alt.FormatVersion
	}
}

// relSnapshot is snapshot with paths relative to dir, without the mtimes
// of what a restore writes with the time it runs (the directory itself,
// backup_manifest, the WAL).
func relSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	s := map[string]string{}
	for p, d := range snapshot(t, dir) {
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			t.Fatal(err)
		}
		if rel == "." || rel == pgManifestPath || strings.HasPrefix(rel, "pg_wal/0") {
			fields := strings.Fields(d)
			fields[2] = "-"
			d = strings.Join(fields, " ")
		}
		s[rel] = d
	}
	return s
}

// checkChunkReads fails t if a chunk was read more than once, and returns
// how many chunks were read.
func checkChunkReads(t *testing.T, cs *countingStore) int {
	t.Helper()
	n := 0
	for k, c := range cs.gets {
		if strings.HasPrefix(k, repository.ChunksPrefix) {
			n++
			if c != 1 {
				t.Errorf("%s read %d times, want once", k, c)
			}
		}
	}
	return n
}

// layouts are the rewrites of a backup's manifest into slices.
var layouts = []struct {
	name string
	edit func(t *testing.T, f *fixture) func(*manifest.Backup)
	// chunks is how many distinct chunks a full restore reads (-1: as
	// many as the original backup has).
	chunks int
}{
	{name: "thirds", edit: func(*testing.T, *fixture) func(*manifest.Backup) { return slicedInThirds }, chunks: -1},
	{name: "alternating", edit: func(t *testing.T, f *fixture) func(*manifest.Backup) {
		return alternating(t, f.repo, f.backup, 5000)
	}, chunks: 2},
}

// A sliced manifest restores byte for byte as the original does, and
// each chunk is downloaded once although several references name it.
func TestRestoreSliced(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			f := deltaFixture(t, mem.New())
			want := relSnapshot(t, restoreFresh(t, f))

			cs := &countingStore{Store: f.store, gets: map[string]int{}}
			target := filepath.Join(t.TempDir(), "data")
			o := testOptions(target)
			o.editBackup = l.edit(t, f)
			res, err := Run(t.Context(), repository.New(cs), o)
			if err != nil {
				t.Fatal(err)
			}
			checkFullRestore(t, f, target)
			if diff := cmp.Diff(want, relSnapshot(t, target)); diff != "" {
				t.Errorf("the sliced manifest restores differently (-original +sliced):\n%s", diff)
			}
			wantChunks := l.chunks
			if wantChunks < 0 {
				wantChunks = 0
				seen := map[string]bool{}
				for _, a := range f.backup.Archives {
					for _, c := range a.Chunks {
						if !seen[c.ID] {
							seen[c.ID] = true
							wantChunks++
						}
					}
				}
			}
			if n := checkChunkReads(t, cs); n != wantChunks {
				t.Errorf("%d chunks read, want %d", n, wantChunks)
			}
			if res.BytesFetched != f.backup.Totals.RawBytes {
				t.Errorf("fetched %d archive bytes, want %d", res.BytesFetched, f.backup.Totals.RawBytes)
			}
		})
	}
}

// A delta restore with a sliced manifest fetches what changed: the
// chunks' ids cannot vouch for local bytes under a slice, so those are
// fetched, and files found right by their CRC32C are kept.
func TestDeltaRestoreSliced(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			f := deltaFixture(t, mem.New())
			target := restoreFresh(t, f)
			patch(t, filepath.Join(target, bigFile), 3*(64<<10)+100, []byte("changed"))
			rm(t, filepath.Join(target, "base/1/1259"))
			appendTo(t, filepath.Join(target, "PG_VERSION"), []byte("more"))
			writeFile(t, filepath.Join(target, "base/1/stray"), "not in the backup")

			cs := &countingStore{Store: f.store, gets: map[string]int{}}
			o := testOptions(target)
			o.Delta = true
			o.editBackup = l.edit(t, f)
			res, err := Run(t.Context(), repository.New(cs), o)
			if err != nil {
				t.Fatal(err)
			}
			checkFullRestore(t, f, target)
			checkChunkReads(t, cs)
			if res.FilesRewritten != 3 || res.FilesKept == 0 || res.EntriesRemoved == 0 {
				t.Errorf("rewrote %d files, kept %d, removed %d; want 3 rewritten (the changed and the removed ones), some kept, some removed",
					res.FilesRewritten, res.FilesKept, res.EntriesRemoved)
			}
		})
	}
}

// A restore of chosen databases reads pg_database and writes the kept
// databases' files from the slices.
func TestRestoreDatabasesSliced(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			f := databaseFixture(t, mem.New())
			cs := &countingStore{Store: f.store, gets: map[string]int{}}
			target := filepath.Join(t.TempDir(), "data")
			o := testOptions(target)
			o.Databases = []string{"app"}
			o.listDatabases = fakeDatabases(f)
			o.editBackup = l.edit(t, f)
			res, err := Run(t.Context(), repository.New(cs), o)
			if err != nil {
				t.Fatal(err)
			}
			placeholders := map[string]bool{"base/16385/3000": true, "base/16385/3000_fsm": true, "base/16385/pg_filenode.map": true}
			checkRestored(t, target, f.archives[len(f.archives)-1], placeholders)
			if res.Placeholders != 3 {
				t.Errorf("%d placeholders, want 3", res.Placeholders)
			}
		})
	}
}

// A slice is cut out of its chunk; one that reaches past the chunk is
// refused as corrupt rather than read out of bounds.
func TestSliceOf(t *testing.T) {
	raw := []byte("0123456789")
	for _, tc := range []struct {
		offset, length int64
		want           string
		bad            bool
	}{
		{0, 0, "0123456789", false},
		{0, 10, "0123456789", false},
		{3, 4, "3456", false},
		{9, 1, "9", false},
		{9, 2, "", true},
		{10, 1, "", true},
		{-1, 2, "", true},
		{1 << 62, 1 << 62, "", true},
	} {
		got, err := sliceOf(manifest.ChunkRef{RawSize: 10, Offset: tc.offset, Length: tc.length}, raw)
		if tc.bad {
			if !errors.Is(err, repository.ErrCorrupt) {
				t.Errorf("[%d, +%d): err %v, want ErrCorrupt", tc.offset, tc.length, err)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("[%d, +%d): %q, %v; want %q", tc.offset, tc.length, got, err, tc.want)
		}
	}
}

// A missing chunk is named with the files of the reference that needed
// it, the slice's bytes of the archive, not the whole chunk's.
func TestRestoreSlicedMissingChunk(t *testing.T) {
	const piece = 5000
	f := deltaFixture(t, mem.New())
	var sliced *manifest.Backup
	edit := alternating(t, f.repo, f.backup, piece)
	target := filepath.Join(t.TempDir(), "data")
	o := testOptions(target)
	o.editBackup = func(b *manifest.Backup) {
		edit(b)
		sliced = b
		// The odd pieces' chunk: the second reference is its first.
		if err := f.store.Delete(t.Context(), repository.ChunkKey(b.Archives[0].Chunks[1].ID)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Run(t.Context(), f.repo, o)
	if !errors.Is(err, providers.ErrNotExist) {
		t.Fatalf("error %v, want one wrapping ErrNotExist", err)
	}
	want := fmt.Sprintf("chunk 2 of %d; it holds %s)", len(sliced.Archives[0].Chunks), sliced.FilesIn(0, piece, piece))
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	checkNoPGControl(t, target, "a failure")
}
