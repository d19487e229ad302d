package catalog

import (
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
)

// verifyAll runs a full verify's archive checks over b's archives (the
// manifest is in memory: one with slices cannot be stored until the
// manifest format accepts them).
func verifyAll(t *testing.T, repo *repository.Repository, b *manifest.Backup) Verdict {
	t.Helper()
	v := Verdict{ID: b.ID, Mode: "full"}
	checkSlices(b, &v)
	seen := map[string]bool{}
	var done atomic.Int64
	for ai := range b.Archives {
		verifyArchive(t.Context(), repo, b, ai, 4, seen, &v, &done)
	}
	v.Chunks = len(seen)
	return v
}

// A full verify of archives that slice two chunks alternately downloads
// each chunk once, checks every file's CRC32C from the slices, and
// reports damage once per chunk, not once per reference.
func TestVerifySliced(t *testing.T) {
	base := newFixture(t, backupSpec{seed: 1})
	orig := base.backups[0]
	contentFiles := 0
	for _, fl := range orig.Files {
		if fl.Type == manifest.TypeFile && fl.Size > 0 {
			contentFiles++
		}
	}
	for _, tc := range []struct {
		name string
		// damage changes the sliced manifest or the store.
		damage func(t *testing.T, f *fixture, b *manifest.Backup)
		kinds  []string // the problems expected, in order
		files  int      // files checked
	}{
		{name: "intact", files: contentFiles},
		{name: "missing chunk", damage: func(t *testing.T, f *fixture, b *manifest.Backup) {
			if err := f.store.Delete(t.Context(), repository.ChunkKey(b.Archives[0].Chunks[1].ID)); err != nil {
				t.Fatal(err)
			}
		}, kinds: []string{MissingChunk}, files: -1},
		{name: "file checksum", damage: func(t *testing.T, f *fixture, b *manifest.Backup) {
			b.Files = slices.Clone(b.Files)
			for i := range b.Files {
				if b.Files[i].Path == "base/1/1259" {
					b.Files[i].CRC32C ^= 1
				}
			}
		}, kinds: []string{FileChecksum}, files: contentFiles},
		{name: "slice past the chunk", damage: func(t *testing.T, f *fixture, b *manifest.Backup) {
			chunks := slices.Clone(b.Archives[0].Chunks)
			chunks[2].Offset = chunks[2].RawSize - chunks[2].Length + 1
			b.Archives = slices.Clone(b.Archives)
			b.Archives[0].Chunks = chunks
		}, kinds: []string{BadManifest}, files: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := base.clone(t)
			b := repotest.Alternate(t, f.repo, orig, 3000)
			if tc.damage != nil {
				tc.damage(t, f, b)
			}
			gc := repotest.NewGetCounter(f.store)
			v := verifyAll(t, repository.New(gc), b)
			var kinds []string
			for _, p := range v.Problems {
				kinds = append(kinds, p.Kind)
			}
			if !slices.Equal(kinds, tc.kinds) {
				t.Errorf("problems %+v, want kinds %v", v.Problems, tc.kinds)
			}
			if tc.files >= 0 && v.Files != tc.files {
				t.Errorf("%d files checked, want %d", v.Files, tc.files)
			}
			if tc.files == -1 && v.Files >= contentFiles {
				t.Errorf("%d files checked: the ones in a bad slice were not left out", v.Files)
			}
			if v.Chunks != 2 {
				t.Errorf("%d chunks, want 2", v.Chunks)
			}
			for k, n := range gc.Gets() {
				if strings.HasPrefix(k, repository.ChunksPrefix) && n != 1 {
					t.Errorf("%s read %d times, want once", k, n)
				}
			}
		})
	}
}

// Quick verify reports a slice that lies outside its chunk.
func TestQuickVerifySlices(t *testing.T) {
	for _, tc := range []struct {
		offset, length, raw int64
		bad                 bool
	}{
		{0, 0, 10, false},
		{0, 10, 10, false},
		{9, 1, 10, false},
		{9, 2, 10, true},
		{3, 0, 10, true},
		{-1, 2, 10, true},
		{0, -1, 10, true},
		{1 << 62, 1 << 62, 10, true},
	} {
		b := &manifest.Backup{ID: "x", Archives: []manifest.Archive{{Name: "base.tar", Chunks: []manifest.ChunkRef{
			{ID: "ab", RawSize: tc.raw, Offset: tc.offset, Length: tc.length},
		}}}}
		var v Verdict
		checkSlices(b, &v)
		if got := len(v.Problems) > 0; got != tc.bad {
			t.Errorf("[%d, +%d) of %d: problems %v, want bad %v", tc.offset, tc.length, tc.raw, v.Problems, tc.bad)
		}
	}
}
