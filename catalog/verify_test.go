package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
	"github.com/pgstow/pgstow/uploader"
)

// The fixtures' backup i starts i days after repotest.BaseTime and
// finishes an hour later, so retention windows fall between backups.
func backupID(i int) string {
	return manifest.NewBackupID(repotest.BaseTime.Add(time.Duration(i) * 24 * time.Hour))
}

func finishedAt(i int) time.Time {
	return repotest.BaseTime.Add(time.Duration(i)*24*time.Hour + time.Hour)
}

// backupSpec is one backup of a fixture. Backups with the same seed share
// the chunks of base/1/1259; every backup shares the last chunk of
// base.tar (empty files, directories, postgresql.auto.conf), which does
// not depend on the seed.
type backupSpec struct {
	seed    uint64
	control uint64 // when set, pg_control's content differs from seed's
	// firstSeg and segs are the WAL segments on timeline 1.
	firstSeg, segs uint64
	edit           func(b *manifest.Backup)
}

func members(seed, control uint64) []repotest.Member {
	ms := repotest.BaseMembers(seed)
	if control != 0 {
		for i := range ms {
			if ms[i].Name == "global/pg_control" {
				ms[i].Data = repotest.PseudoRandom(1<<32+control, len(ms[i].Data))
			}
		}
	}
	return ms
}

// fixture is a repository in a mem store with committed backups.
type fixture struct {
	store   *mem.Store
	repo    *repository.Repository
	backups []*manifest.Backup
}

func newFixture(t *testing.T, specs ...backupSpec) *fixture {
	t.Helper()
	store := mem.New()
	f := &fixture{store: store, repo: repository.New(store)}
	for _, s := range specs {
		f.commit(t, s)
	}
	return f
}

// commit adds backup len(f.backups).
func (f *fixture) commit(t *testing.T, s backupSpec) *manifest.Backup {
	t.Helper()
	i := len(f.backups)
	b, _ := repotest.Commit(t, f.repo, repotest.Spec{
		ID:           backupID(i),
		Archives:     []repotest.Archive{{Name: "base.tar", Members: members(s.seed, s.control)}},
		StartSegment: s.firstSeg,
		Segments:     s.segs,
		Finished:     finishedAt(i),
		Edit:         s.edit,
		// base/1/1259 in three chunks: enough to share some and not
		// others, few enough to keep full verification cheap.
		ChunkSize: 128 << 10,
	})
	f.backups = append(f.backups, b)
	return b
}

func (f *fixture) ids() []string {
	var ids []string
	for _, b := range f.backups {
		ids = append(ids, b.ID)
	}
	return ids
}

// clone copies the repository into a new store, so that each case of a
// test can damage its own copy of a fixture built once. The copies are
// dated now.
func (f *fixture) clone(t *testing.T) *fixture {
	t.Helper()
	store := mem.New()
	for obj, err := range f.store.List(t.Context(), "") {
		if err != nil {
			t.Fatal(err)
		}
		putKey(t, store, obj.Key, readKey(t, f.store, obj.Key))
	}
	return &fixture{store: store, repo: repository.New(store), backups: f.backups}
}

// threeBackups: backup 0 has its own chunks but the shared last one and
// WAL segments 3–4; backups 1 and 2 share base/1/1259 but not pg_control,
// and need segment 5 and segments 6–7.
func threeBackups(t *testing.T) *fixture {
	t.Helper()
	return newFixture(t,
		backupSpec{seed: 1, firstSeg: 3, segs: 2},
		backupSpec{seed: 2, firstSeg: 5, segs: 1},
		backupSpec{seed: 2, control: 9, firstSeg: 6, segs: 2},
	)
}

// chunkKeys returns the keys of the chunks b references.
func chunkKeys(b *manifest.Backup) map[string]bool {
	out := map[string]bool{}
	for _, a := range b.Archives {
		for _, c := range a.Chunks {
			out[repository.ChunkKey(c.ID)] = true
		}
	}
	return out
}

// pickChunk returns a chunk of b's base.tar that holds part of path and
// satisfies ok.
func pickChunk(t *testing.T, b *manifest.Backup, path string, ok func(key string) bool) manifest.ChunkRef {
	t.Helper()
	offs := b.ChunkOffsets(0)
	for _, f := range b.Files {
		if f.Archive != 0 || f.Path != path {
			continue
		}
		for ci, c := range b.Archives[0].Chunks {
			if offs[ci] < f.Offset+max(f.Size, 1) && f.Offset < offs[ci]+c.RawSize && ok(repository.ChunkKey(c.ID)) {
				return c
			}
		}
	}
	t.Fatalf("backup %s: no suitable chunk holds %s", b.ID, path)
	return manifest.ChunkRef{}
}

// referencedBy returns a predicate true for the keys all of in reference
// and none of out do.
func referencedBy(in []*manifest.Backup, out ...*manifest.Backup) func(string) bool {
	return func(key string) bool {
		for _, b := range in {
			if !chunkKeys(b)[key] {
				return false
			}
		}
		for _, b := range out {
			if chunkKeys(b)[key] {
				return false
			}
		}
		return true
	}
}

// distinctChunks is the number of distinct chunks b references and their
// stored bytes.
func distinctChunks(b *manifest.Backup) (int, int64) {
	seen := map[string]bool{}
	var stored int64
	for _, a := range b.Archives {
		for _, c := range a.Chunks {
			if !seen[c.ID] {
				seen[c.ID] = true
				stored += c.StoredSize
			}
		}
	}
	return len(seen), stored
}

// checkedFiles is how many files a full verification recomputes the
// checksum of when chunk bad (a chunk id, or "") cannot be read.
func checkedFiles(b *manifest.Backup, bad string) int {
	n := 0
	for _, f := range b.Files {
		if f.Type != manifest.TypeFile || f.Size == 0 {
			continue
		}
		offs := b.ChunkOffsets(f.Archive)
		hit := false
		for ci, c := range b.Archives[f.Archive].Chunks {
			if c.ID == bad && offs[ci] < f.Offset+f.Size && f.Offset < offs[ci]+c.RawSize {
				hit = true
			}
		}
		if !hit {
			n++
		}
	}
	return n
}

func deleteKey(t *testing.T, s providers.Store, key string) {
	t.Helper()
	if err := s.Delete(t.Context(), key); err != nil {
		t.Fatal(err)
	}
}

func putKey(t *testing.T, s providers.Store, key string, data []byte) {
	t.Helper()
	if err := s.Put(t.Context(), key, bytes.NewReader(data), int64(len(data)), providers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func readKey(t *testing.T, s providers.Store, key string) []byte {
	t.Helper()
	data, err := providers.ReadAll(t.Context(), s, key)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// checkClean fails unless v is a clean verdict of b in mode.
func checkClean(t *testing.T, b *manifest.Backup, mode string, v Verdict) {
	t.Helper()
	chunks, chunkBytes := distinctChunks(b)
	var walBytes int64
	for _, w := range b.WAL {
		walBytes += w.StoredSize
	}
	files := 0
	if mode == "full" {
		files = checkedFiles(b, "")
	}
	if !v.OK || len(v.Problems) != 0 {
		t.Errorf("%s %s: OK %v, problems %v; want a clean verdict", mode, b.ID, v.OK, v.Problems)
	}
	if v.ID != b.ID || v.Mode != mode || v.Chunks != chunks || v.Files != files || v.WALSegments != len(b.WAL) || v.StoredBytes != chunkBytes+walBytes {
		t.Errorf("%s %s: verdict %+v; want id %s, %d chunks, %d files, %d WAL segments, %d stored bytes",
			mode, b.ID, v, b.ID, chunks, files, len(b.WAL), chunkBytes+walBytes)
	}
}

func TestVerifyClean(t *testing.T) {
	f := threeBackups(t)
	for _, quick := range []bool{true, false} {
		vs, err := Verify(t.Context(), f.repo, f.ids(), VerifyOptions{Quick: quick})
		if err != nil {
			t.Fatal(err)
		}
		if len(vs) != 3 {
			t.Fatalf("%d verdicts for 3 backups", len(vs))
		}
		mode := map[bool]string{true: "quick", false: "full"}[quick]
		for i, b := range f.backups {
			checkClean(t, b, mode, vs[i])
			if vs[i].Chunks == 0 || (!quick && vs[i].Files == 0) {
				t.Errorf("%s %s checked %d chunks and %d files", mode, b.ID, vs[i].Chunks, vs[i].Files)
			}
		}
	}
}

// otherSegment returns a well-formed compressed WAL segment of the
// stored size of w but with other content, as if another cluster's
// segment had been stored under its name.
func otherSegment(t *testing.T, w manifest.WALSegment) []byte {
	t.Helper()
	_, segno, err := manifest.ParseSegmentName(w.Name, repotest.SegSize)
	if err != nil {
		t.Fatal(err)
	}
	data := repotest.SegmentData(segno)
	comp := chunker.NewCompressor()
	for i := 0; i < len(data); i += 3 * 4099 {
		data[i]++
		var buf bytes.Buffer
		if _, err := comp.Compress(&buf, data); err != nil {
			t.Fatal(err)
		}
		if int64(buf.Len()) == w.StoredSize {
			return buf.Bytes()
		}
		data[i]--
	}
	t.Fatalf("no one-byte change to segment %s compresses to %d bytes", w.Name, w.StoredSize)
	return nil
}

// TestVerifyProblems breaks one object at a time and checks that exactly
// the backups that reference it report it, with the right kind and key,
// and that the others stay clean.
func TestVerifyProblems(t *testing.T) {
	base := threeBackups(t)
	// broken names the damaged object.
	type broken struct {
		key   string
		chunk string // the id when key is a chunk
	}
	chunk := func(c manifest.ChunkRef) broken { return broken{key: repository.ChunkKey(c.ID), chunk: c.ID} }
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, f *fixture) broken
		kind   string
		// quick and full are the backups that must report the damage;
		// quick verification sees only missing objects and wrong sizes.
		quick, full []int
		// holds is what a chunk problem's detail must name; detail is
		// what other problems' must say.
		holds, detail string
	}{
		{
			name: "missing chunk of one backup",
			damage: func(t *testing.T, f *fixture) broken {
				c := pickChunk(t, f.backups[0], "base/1/1259", referencedBy(f.backups[:1], f.backups[1:]...))
				deleteKey(t, f.store, repository.ChunkKey(c.ID))
				return chunk(c)
			},
			kind: MissingChunk, quick: []int{0}, full: []int{0}, holds: "base/1/1259",
		},
		{
			name: "corrupt chunk of two backups, same size",
			damage: func(t *testing.T, f *fixture) broken {
				c := pickChunk(t, f.backups[1], "base/1/1259", referencedBy(f.backups[1:], f.backups[0]))
				f.store.Corrupt(repository.ChunkKey(c.ID), c.StoredSize/2)
				return chunk(c)
			},
			kind: CorruptChunk, quick: nil, full: []int{1, 2}, holds: "base/1/1259",
		},
		{
			name: "corrupt chunk header",
			damage: func(t *testing.T, f *fixture) broken {
				c := pickChunk(t, f.backups[2], "global/pg_control", referencedBy(f.backups[2:], f.backups[:2]...))
				f.store.Corrupt(repository.ChunkKey(c.ID), 0)
				return chunk(c)
			},
			kind: CorruptChunk, quick: nil, full: []int{2}, holds: "global/pg_control",
		},
		{
			// The content is intact: only the frame's own checksum
			// (its last bytes) tells, and a verification checks it
			// where a restore trusts the chunk id.
			name: "damaged frame checksum",
			damage: func(t *testing.T, f *fixture) broken {
				c := pickChunk(t, f.backups[2], "global/pg_control", referencedBy(f.backups[2:], f.backups[:2]...))
				f.store.Corrupt(repository.ChunkKey(c.ID), c.StoredSize-1)
				return chunk(c)
			},
			kind: CorruptChunk, quick: nil, full: []int{2}, holds: "global/pg_control", detail: "is corrupt (",
		},
		{
			name: "truncated chunk of every backup",
			damage: func(t *testing.T, f *fixture) broken {
				c := pickChunk(t, f.backups[0], "postgresql.auto.conf", referencedBy(f.backups))
				key := repository.ChunkKey(c.ID)
				putKey(t, f.store, key, readKey(t, f.store, key)[:c.StoredSize-1])
				return chunk(c)
			},
			kind: CorruptChunk, quick: []int{0, 1, 2}, full: []int{0, 1, 2}, holds: "postgresql.auto.conf",
		},
		{
			name: "missing WAL segment",
			damage: func(t *testing.T, f *fixture) broken {
				key := repository.WALKey(f.backups[0].WAL[1].Name)
				deleteKey(t, f.store, key)
				return broken{key: key}
			},
			kind: MissingWAL, quick: []int{0}, full: []int{0},
		},
		{
			name: "corrupt WAL segment, same size",
			damage: func(t *testing.T, f *fixture) broken {
				w := f.backups[2].WAL[1]
				key := repository.WALKey(w.Name)
				f.store.Corrupt(key, w.StoredSize/2)
				return broken{key: key}
			},
			kind: CorruptWAL, quick: nil, full: []int{2},
		},
		{
			name: "WAL segment with other content, same size",
			damage: func(t *testing.T, f *fixture) broken {
				w := f.backups[2].WAL[0]
				key := repository.WALKey(w.Name)
				putKey(t, f.store, key, otherSegment(t, w))
				return broken{key: key}
			},
			kind: CorruptWAL, quick: nil, full: []int{2}, detail: "SHA-256",
		},
		{
			name: "truncated WAL segment",
			damage: func(t *testing.T, f *fixture) broken {
				key := repository.WALKey(f.backups[1].WAL[0].Name)
				putKey(t, f.store, key, readKey(t, f.store, key)[:100])
				return broken{key: key}
			},
			kind: CorruptWAL, quick: []int{1}, full: []int{1},
		},
		{
			name: "missing backup_manifest",
			damage: func(t *testing.T, f *fixture) broken {
				key := repository.PGManifestKey(f.backups[1].ID)
				deleteKey(t, f.store, key)
				return broken{key: key}
			},
			kind: BadPGManifest, quick: []int{1}, full: []int{1},
		},
		{
			name: "corrupt backup_manifest",
			damage: func(t *testing.T, f *fixture) broken {
				key := repository.PGManifestKey(f.backups[0].ID)
				f.store.Corrupt(key, 10)
				return broken{key: key}
			},
			kind: BadPGManifest, quick: nil, full: []int{0},
		},
		{
			name: "missing manifest",
			damage: func(t *testing.T, f *fixture) broken {
				key := repository.BackupManifestKey(f.backups[2].ID)
				deleteKey(t, f.store, key)
				return broken{key: key}
			},
			kind: BadManifest, quick: []int{2}, full: []int{2},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := base.clone(t)
			d := tc.damage(t, f)
			for _, quick := range []bool{true, false} {
				mode, want := "full", tc.full
				if quick {
					mode, want = "quick", tc.quick
				}
				vs, err := Verify(t.Context(), f.repo, f.ids(), VerifyOptions{Quick: quick, Concurrency: 3})
				if err != nil {
					t.Fatal(err)
				}
				for i, b := range f.backups {
					v := vs[i]
					if !slices.Contains(want, i) {
						checkClean(t, b, mode, v)
						continue
					}
					if v.OK || len(v.Problems) != 1 {
						t.Errorf("%s %s: OK %v, problems %v; want one %s of %s", mode, b.ID, v.OK, v.Problems, tc.kind, d.key)
						continue
					}
					p := v.Problems[0]
					if p.Kind != tc.kind || p.Object != d.key {
						t.Errorf("%s %s: problem %v; want %s of %s", mode, b.ID, p, tc.kind, d.key)
					}
					if tc.holds != "" && !strings.Contains(p.Detail, tc.holds) {
						t.Errorf("%s %s: %q does not name %s, which the chunk holds", mode, b.ID, p.Detail, tc.holds)
					}
					if tc.detail != "" && !strings.Contains(p.Detail, tc.detail) {
						t.Errorf("%s %s: %q does not say %s", mode, b.ID, p.Detail, tc.detail)
					}
					if tc.kind == BadManifest {
						continue
					}
					// Everything else is still checked.
					if chunks, _ := distinctChunks(b); v.Chunks != chunks || v.WALSegments != len(b.WAL) {
						t.Errorf("%s %s: %d chunks and %d WAL segments checked, want %d and %d", mode, b.ID, v.Chunks, v.WALSegments, chunks, len(b.WAL))
					}
					if files := checkedFiles(b, d.chunk); !quick && v.Files != files {
						t.Errorf("%s %s: %d files checked, want %d (all but those in the bad chunk)", mode, b.ID, v.Files, files)
					}
				}
			}
		})
	}
}

// TestVerifyFileChecksum records a wrong CRC32C for one file, in both
// manifests, so that only recomputing it from the chunks can tell.
func TestVerifyFileChecksum(t *testing.T) {
	f := newFixture(t, backupSpec{seed: 1, edit: func(b *manifest.Backup) {
		for i := range b.Files {
			if b.Files[i].Path == "backup_label" {
				b.Files[i].CRC32C ^= 1
			}
		}
	}})
	b := f.backups[0]
	quick, err := Verify(t.Context(), f.repo, f.ids(), VerifyOptions{Quick: true})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, b, "quick", quick[0])
	full, err := Verify(t.Context(), f.repo, f.ids(), VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v := full[0]
	if v.OK || len(v.Problems) != 1 || v.Problems[0].Kind != FileChecksum || !strings.Contains(v.Problems[0].Detail, "backup_label") {
		t.Fatalf("full: OK %v, problems %v; want one %s naming backup_label", v.OK, v.Problems, FileChecksum)
	}
	if want := checkedFiles(b, ""); v.Files != want {
		t.Errorf("full: %d files checked, want %d", v.Files, want)
	}
}

func TestVerifyUnknownBackup(t *testing.T) {
	f := newFixture(t, backupSpec{seed: 1})
	unknown := backupID(5)
	for _, quick := range []bool{true, false} {
		vs, err := Verify(t.Context(), f.repo, []string{unknown, f.backups[0].ID}, VerifyOptions{Quick: quick})
		if err != nil {
			t.Fatal(err)
		}
		if vs[0].OK || len(vs[0].Problems) != 1 || vs[0].Problems[0].Kind != BadManifest ||
			vs[0].Problems[0].Object != repository.BackupManifestKey(unknown) || !strings.Contains(vs[0].Problems[0].Detail, unknown) {
			t.Errorf("quick %v: verdict of an unknown backup %+v", quick, vs[0])
		}
		if !vs[1].OK {
			t.Errorf("quick %v: the existing backup is not OK: %v", quick, vs[1].Problems)
		}
	}
}

func TestVerifyCancelled(t *testing.T) {
	f := newFixture(t, backupSpec{seed: 1})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, quick := range []bool{true, false} {
		vs, err := Verify(ctx, f.repo, f.ids(), VerifyOptions{Quick: quick})
		if !errors.Is(err, context.Canceled) || vs != nil {
			t.Errorf("quick %v with a cancelled context: %v, %v; want context.Canceled", quick, vs, err)
		}
	}
}

// countingStore counts the requests made through it.
type countingStore struct {
	providers.Store
	gets, stats, lists atomic.Int64
}

func (s *countingStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	s.gets.Add(1)
	return s.Store.Get(ctx, key, off, n)
}

func (s *countingStore) Stat(ctx context.Context, key string) (providers.ObjectInfo, error) {
	s.stats.Add(1)
	return s.Store.Stat(ctx, key)
}

func (s *countingStore) List(ctx context.Context, prefix string) iter.Seq2[providers.ObjectInfo, error] {
	s.lists.Add(1)
	return s.Store.List(ctx, prefix)
}

// smallMembers is a tiny data directory cut, at 2 KiB chunks, into about
// twenty chunks, all but the last shared by every i.
func smallMembers(i int) []repotest.Member {
	ms := []repotest.Member{
		repotest.Dir("global/", 1),
		repotest.File("global/pg_control", 2, repotest.PseudoRandom(1, 512)),
		repotest.File("PG_VERSION", 3, []byte("15\n")),
		repotest.Dir("base/", 4),
		repotest.Dir("base/1/", 5),
	}
	for n := range 16 {
		// Header and content make a 2 KiB record: one chunk each.
		ms = append(ms, repotest.File(fmt.Sprintf("base/1/%d", 16384+n), 6, repotest.PseudoRandom(uint64(100+n), 1536)))
	}
	return append(ms, repotest.File("base/1/changing", 7, repotest.PseudoRandom(uint64(1000+i), 1536)))
}

// commitMany commits n backups of smallMembers at 2 KiB chunks. Only the
// first goes through repotest.Commit: the others are uploaded for real
// but reuse its WAL segment, which would otherwise cost a megabyte of
// compression each.
func commitMany(t *testing.T, repo *repository.Repository, n int) []*manifest.Backup {
	t.Helper()
	const chunkSize = 2 << 10
	first, _ := repotest.Commit(t, repo, repotest.Spec{
		ID:        backupID(0),
		Archives:  []repotest.Archive{{Name: "base.tar", Members: smallMembers(0)}},
		ChunkSize: chunkSize,
		Finished:  finishedAt(0),
	})
	out := []*manifest.Backup{first}
	for i := 1; i < n; i++ {
		up := uploader.New(repo, uploader.Config{ChunkSize: chunkSize}, slog.New(slog.DiscardHandler))
		arch, files, err := up.Archive(t.Context(), bytes.NewReader(repotest.Tar(t, smallMembers(i))), 0, "base.tar", 0)
		if err != nil {
			t.Fatal(err)
		}
		b := *first
		b.ID = backupID(i)
		b.Archives, b.Files = []manifest.Archive{arch}, files
		b.Timings = manifest.Timings{Started: finishedAt(i).Add(-time.Minute), Finished: finishedAt(i)}
		if err := repo.Commit(t.Context(), &b, bytes.NewReader(repotest.PGManifest(t, &b))); err != nil {
			t.Fatal(err)
		}
		out = append(out, &b)
	}
	return out
}

// TestVerifyQuickScales checks that a quick verification costs one read
// per backup and a fixed number of listings, not a request per chunk.
func TestVerifyQuickScales(t *testing.T) {
	const n = 100
	store := mem.New()
	repo := repository.New(store)
	backups := commitMany(t, repo, n)
	var ids []string
	refs := 0
	for _, b := range backups {
		ids = append(ids, b.ID)
		refs += len(b.Archives[0].Chunks)
	}
	budget := int64(2*n + 4)
	if int64(refs) <= budget {
		t.Fatalf("the backups reference %d chunks in all; the test needs more than %d", refs, budget)
	}
	victim := pickChunk(t, backups[n/2], "base/1/changing", func(string) bool { return true })
	deleteKey(t, store, repository.ChunkKey(victim.ID))

	counted := &countingStore{Store: store}
	start := time.Now()
	vs, err := Verify(t.Context(), repository.New(counted), ids, VerifyOptions{Quick: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("quick verification of %d backups (%d chunk references): %d gets, %d stats, %d lists in %v",
		n, refs, counted.gets.Load(), counted.stats.Load(), counted.lists.Load(), time.Since(start))
	for i, v := range vs {
		chunks, _ := distinctChunks(backups[i])
		switch {
		case i == n/2:
			if len(v.Problems) != 1 || v.Problems[0].Kind != MissingChunk || v.Problems[0].Object != repository.ChunkKey(victim.ID) {
				t.Errorf("%s: problems %v; want the missing chunk %s", v.ID, v.Problems, victim.ID)
			}
		case !v.OK || v.Chunks != chunks || chunks < 17:
			t.Errorf("%s: OK %v, %d chunks (want %d), problems %v", v.ID, v.OK, v.Chunks, chunks, v.Problems)
		}
	}
	if got := counted.gets.Load() + counted.stats.Load(); got > budget {
		t.Errorf("%d reads and stats for %d backups; want at most %d", got, n, budget)
	}
	if got := counted.lists.Load(); got > 4 {
		t.Errorf("%d listings; want a fixed few", got)
	}
}

// TestVerifyHistoryFile: a timeline history file among a backup's WAL has
// no segment length, and must verify clean.
func TestVerifyHistoryFile(t *testing.T) {
	store := mem.New()
	repo := repository.New(store)
	history := []byte("1\t0/5000000\tno recovery target specified\n")
	_, _ = repotest.Commit(t, repo, repotest.Spec{
		ID:       backupID(0),
		Archives: []repotest.Archive{{Name: "base.tar", Members: members(1, 0)}},
		Edit: func(b *manifest.Backup) {
			seg, err := repo.PutWAL(t.Context(), chunker.NewCompressor(), "00000002.history", history)
			if err != nil {
				t.Fatal(err)
			}
			b.WAL = append([]manifest.WALSegment{seg}, b.WAL...)
			b.Totals.WALBytes += seg.StoredSize
		},
	})
	for _, quick := range []bool{true, false} {
		v, err := Verify(t.Context(), repo, []string{backupID(0)}, VerifyOptions{Quick: quick})
		if err != nil {
			t.Fatal(err)
		}
		if !v[0].OK {
			t.Errorf("quick %v: %v", quick, v[0].Problems)
		}
	}
}
