package copier

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/catalog"
	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
)

func testKey(t *testing.T, hexByte string) *encryption.Key {
	t.Helper()
	k, err := encryption.ParseKey([]byte(strings.Repeat(hexByte, 32)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// open makes a repository over s, encrypted when key is not nil.
func open(s providers.Store, key *encryption.Key) *repository.Repository {
	if key == nil {
		return repository.New(s)
	}
	return repository.NewEncrypted(s, key)
}

// source commits two backups that share most of their chunks, and a
// third WAL segment no backup needs.
func source(t *testing.T, key *encryption.Key) (*mem.Store, *repository.Repository, []*manifest.Backup) {
	t.Helper()
	s := mem.New()
	r := open(s, key)
	base := repotest.BaseMembers(1)
	b1, _ := repotest.Commit(t, r, repotest.Spec{ID: "20260102T030000Z", Archives: []repotest.Archive{{Name: "base.tar", Members: base}},
		Finished: repotest.BaseTime.Add(time.Minute)})
	more := append(slices.Clone(base), repotest.File("base/1/2000", 20, repotest.PseudoRandom(9, 200<<10)))
	b2, _ := repotest.Commit(t, r, repotest.Spec{ID: "20260103T030000Z", Archives: []repotest.Archive{{Name: "base.tar", Members: more}},
		StartSegment: 4, Segments: 2, Finished: repotest.BaseTime.Add(25 * time.Hour)})
	if _, err := r.PutWAL(t.Context(), chunker.NewCompressor(), manifest.SegmentName(1, 6, repotest.SegSize), repotest.SegmentData(6)); err != nil {
		t.Fatal(err)
	}
	return s, r, []*manifest.Backup{b1, b2}
}

// archives reads every archive of backup id in r, whole.
func archives(t *testing.T, r *repository.Repository, id string) [][]byte {
	t.Helper()
	b, err := r.Backup(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, a := range b.Archives {
		var whole []byte
		err := r.StreamChunks(t.Context(), slices.Values(a.Chunks), repository.StreamOptions{}, func(_ int, raw []byte, err error) error {
			whole = append(whole, raw...)
			return err
		})
		if err != nil {
			t.Fatalf("read backup %s in %s: %v", id, r, err)
		}
		out = append(out, whole)
	}
	return out
}

// sameBackups checks that dst holds the backups of src, whole: same
// archives byte for byte, same files and WAL content, and a full verify.
func sameBackups(t *testing.T, src, dst *repository.Repository, ids ...string) {
	t.Helper()
	got, err := dst.BackupIDs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("destination holds backups %v, want %v", got, ids)
	}
	for _, id := range ids {
		a, b := archives(t, src, id), archives(t, dst, id)
		if len(a) != len(b) {
			t.Fatalf("backup %s: %d archives at the destination, %d at the source", id, len(b), len(a))
		}
		for i := range a {
			if !bytes.Equal(a[i], b[i]) {
				t.Fatalf("backup %s: archive %d differs", id, i)
			}
		}
		sb, _ := src.Backup(t.Context(), id)
		db, _ := dst.Backup(t.Context(), id)
		if !cmp.Equal(sb.Files, db.Files) || len(sb.WAL) != len(db.WAL) || sb.PGManifestSHA256 != db.PGManifestSHA256 {
			t.Fatalf("backup %s: files, WAL or backup_manifest differ", id)
		}
		for i := range sb.WAL {
			if sb.WAL[i].Name != db.WAL[i].Name || sb.WAL[i].SHA256 != db.WAL[i].SHA256 {
				t.Fatalf("backup %s: WAL %d is %+v at the destination, %+v at the source", id, i, db.WAL[i], sb.WAL[i])
			}
		}
	}
	verdicts, err := catalog.Verify(t.Context(), dst, ids, catalog.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range verdicts {
		if !v.OK {
			t.Fatalf("verify of %s at the destination: %v", v.ID, v.Problems)
		}
	}
}

// TestCopyKeyings copies between each pair of keyings: the backups arrive
// whole, with the destination's chunk ids, and pass a full verify.
func TestCopyKeyings(t *testing.T) {
	for _, tc := range []struct {
		name             string
		srcKey, dstKey   string
		wantRekeyed      bool
		wantSameChunkIDs bool
	}{
		{"plain to plain", "", "", false, true},
		{"plain to encrypted", "", "ab", true, false},
		{"encrypted to plain", "cd", "", true, false},
		{"encrypted to the same key", "cd", "cd", false, true},
		{"encrypted to another key", "cd", "ab", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sk, dk *encryption.Key
			if tc.srcKey != "" {
				sk = testKey(t, tc.srcKey)
			}
			if tc.dstKey != "" {
				dk = testKey(t, tc.dstKey)
			}
			_, src, bs := source(t, sk)
			dst := open(mem.New(), dk)
			// ToPlain for "encrypted to plain"; the second run, into
			// the plain destination then existing, needs none.
			res, err := Copy(t.Context(), src, dst, Options{All: true, ToPlain: true})
			if err != nil {
				t.Fatal(err)
			}
			if res.Rekeyed != tc.wantRekeyed {
				t.Errorf("rekeyed %v, want %v", res.Rekeyed, tc.wantRekeyed)
			}
			sameBackups(t, src, dst, bs[0].ID, bs[1].ID)
			db, _ := dst.Backup(t.Context(), bs[0].ID)
			if got := db.Archives[0].Chunks[0].ID == bs[0].Archives[0].Chunks[0].ID; got != tc.wantSameChunkIDs {
				t.Errorf("same chunk ids at both ends: %v, want %v", got, tc.wantSameChunkIDs)
			}
			if res.ChunksSent == 0 || res.ChunksPresent == 0 || res.WALSent != 4 {
				t.Errorf("result %+v: want chunks sent, chunks shared by the two backups found present, 4 WAL files sent", res)
			}
			cfg, err := dst.Config(t.Context())
			if err != nil || cfg.SystemID != repotest.SystemID || cfg.WALSegmentSize != repotest.SegSize || (cfg.Encryption != nil) != (dk != nil) {
				t.Fatalf("destination configuration %+v (%v)", cfg, err)
			}
			if locks := repotest.LockKeys(t, dst); len(locks) != 0 {
				t.Errorf("leases left at the destination: %v", locks)
			}
			// A second run finds everything there and sends nothing.
			again, err := Copy(t.Context(), src, dst, Options{All: true})
			if err != nil {
				t.Fatal(err)
			}
			if again.ChunksSent != 0 || again.WALSent != 0 || again.Backups[0].Status != "present" || again.Backups[1].Status != "present" {
				t.Errorf("second run: %+v", again)
			}
		})
	}
}

// countingStore counts Puts by key prefix and fails every Put once
// failAfter chunk Puts have succeeded (failAfter < 0: never).
type countingStore struct {
	providers.Store
	mu        sync.Mutex
	puts      map[string]int
	failAfter int
}

var errInjected = errors.New("injected failure")

func (s *countingStore) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, o providers.PutOptions) error {
	s.mu.Lock()
	prefix, _, _ := strings.Cut(key, "/")
	if s.failAfter >= 0 && s.puts["chunks"] >= s.failAfter && prefix != "locks" {
		s.mu.Unlock()
		return errInjected
	}
	s.puts[prefix]++
	s.mu.Unlock()
	return s.Store.Put(ctx, key, body, size, o)
}

func (s *countingStore) count(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.puts[prefix]
}

// TestCopyResumes: a copy that fails after some chunks commits nothing;
// the rerun sends only what had not arrived, by Puts counted, whether or
// not the ends key chunks alike.
func TestCopyResumes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		dstKey string
	}{{"same keying", ""}, {"rekeyed", "ab"}} {
		t.Run(tc.name, func(t *testing.T) {
			var dk *encryption.Key
			if tc.dstKey != "" {
				dk = testKey(t, tc.dstKey)
			}
			_, src, bs := source(t, nil)
			// How many chunks a whole copy sends.
			full, err := Copy(t.Context(), src, open(mem.New(), dk), Options{All: true})
			if err != nil {
				t.Fatal(err)
			}
			inner := mem.New()
			cs := &countingStore{Store: inner, puts: map[string]int{}, failAfter: 3}
			dst := open(cs, dk)
			if _, err := Copy(t.Context(), src, dst, Options{All: true, Parallel: 1}); !errors.Is(err, errInjected) {
				t.Fatalf("copy through a failing store: %v, want the injected failure", err)
			}
			for _, k := range inner.Keys() {
				if strings.HasPrefix(k, repository.BackupsPrefix) {
					t.Fatalf("%s stored by a copy that failed before its commit", k)
				}
			}
			if got := cs.count("chunks"); got != 3 {
				t.Fatalf("%d chunks stored before the failure, want 3", got)
			}
			cs.failAfter = -1
			res, err := Copy(t.Context(), src, dst, Options{All: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := cs.count("chunks"); got != full.ChunksSent {
				t.Errorf("%d chunk Puts in all, want %d: the rerun sent again what had arrived", got, full.ChunksSent)
			}
			if res.ChunksSent != full.ChunksSent-3 {
				t.Errorf("rerun sent %d chunks, want %d", res.ChunksSent, full.ChunksSent-3)
			}
			sameBackups(t, src, dst, bs[0].ID, bs[1].ID)
		})
	}
}

// TestCopyRekeyedRerunReadsLittle: after the first backup was copied to
// a differently keyed repository, copying the second reads from the
// source only the chunks the first did not have: the ids of the others
// are known from the two manifests of the first.
func TestCopyRekeyedRerunReadsLittle(t *testing.T) {
	s, _, bs := source(t, nil)
	gc := repotest.NewGetCounter(s)
	src := repository.New(gc)
	dst := open(mem.New(), testKey(t, "ab"))
	if _, err := Copy(t.Context(), src, dst, Options{IDs: []string{bs[0].ID}}); err != nil {
		t.Fatal(err)
	}
	before := gc.Gets()
	if _, err := Copy(t.Context(), src, dst, Options{IDs: []string{bs[1].ID}}); err != nil {
		t.Fatal(err)
	}
	after := gc.Gets()
	for _, c := range bs[0].Archives[0].Chunks {
		if k := repository.ChunkKey(c.ID); after[k] != before[k] {
			t.Errorf("chunk %s of the first backup read again for the second", c.ID[:12])
		}
	}
	sameBackups(t, src, dst, bs[0].ID, bs[1].ID)
}

// TestCopyDamagedChunk: a damaged source chunk is named, nothing of the
// backup is committed at the destination, and what came before it stays.
func TestCopyDamagedChunk(t *testing.T) {
	for _, tc := range []struct {
		name   string
		dstKey string
	}{{"same keying", ""}, {"rekeyed", "ab"}} {
		t.Run(tc.name, func(t *testing.T) {
			s, src, bs := source(t, nil)
			var bad string
			for _, c := range bs[1].Archives[0].Chunks {
				if !slices.ContainsFunc(bs[0].Archives[0].Chunks, func(r manifest.ChunkRef) bool { return r.ID == c.ID }) {
					bad = c.ID // only the second backup has it
				}
			}
			s.Corrupt(repository.ChunkKey(bad), 40)
			var dk *encryption.Key
			if tc.dstKey != "" {
				dk = testKey(t, tc.dstKey)
			}
			inner := mem.New()
			dst := open(inner, dk)
			res, err := Copy(t.Context(), src, dst, Options{All: true})
			if !errors.Is(err, repository.ErrCorrupt) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), bs[1].ID) {
				t.Fatalf("copy with a damaged chunk: %v; want ErrCorrupt naming chunk %s and backup %s", err, bad, bs[1].ID)
			}
			ids, _ := dst.BackupIDs(t.Context())
			if !slices.Equal(ids, []string{bs[0].ID}) {
				t.Fatalf("destination holds %v, want only the first backup", ids)
			}
			for _, k := range inner.Keys() {
				if strings.HasPrefix(k, repository.BackupsPrefix+bs[1].ID) {
					t.Fatalf("%s stored for the backup with the damaged chunk", k)
				}
			}
			if len(res.Backups) != 2 || res.Backups[0].Status != "copied" || res.Backups[1].Status != "failed" {
				t.Errorf("result %+v", res.Backups)
			}
		})
	}
}

// TestCopyRefusesOtherCluster: a destination bound to another cluster is
// refused before anything is written, also in a dry run.
func TestCopyRefusesOtherCluster(t *testing.T) {
	_, src, bs := source(t, nil)
	inner := mem.New()
	dst := repository.New(inner)
	if err := dst.Bind(t.Context(), "7300000000000000999", repotest.SegSize); err != nil {
		t.Fatal(err)
	}
	for _, dry := range []bool{false, true} {
		if _, err := Copy(t.Context(), src, dst, Options{IDs: []string{bs[0].ID}, DryRun: dry}); !errors.Is(err, repository.ErrOtherCluster) {
			t.Fatalf("dry run %v: %v, want ErrOtherCluster", dry, err)
		}
	}
	if keys := inner.Keys(); !slices.Equal(keys, []string{repository.RepoKey}) {
		t.Fatalf("destination holds %v", keys)
	}
}

// TestCopyDryRun writes nothing and says what it would copy.
func TestCopyDryRun(t *testing.T) {
	_, src, bs := source(t, nil)
	inner := mem.New()
	res, err := Copy(t.Context(), src, repository.New(inner), Options{All: true, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if keys := inner.Keys(); len(keys) != 0 {
		t.Fatalf("a dry run stored %v", keys)
	}
	if len(res.Backups) != 2 || res.Backups[0].Status != "would copy" || res.ChunksSent == 0 || res.WALSent != 4 {
		t.Fatalf("dry run result %+v", res)
	}
	want := 0
	seen := map[string]bool{}
	for _, b := range bs {
		for _, c := range b.Archives[0].Chunks {
			if !seen[c.ID] {
				seen[c.ID] = true
				want++
			}
		}
	}
	if res.ChunksSent != want {
		t.Errorf("dry run would send %d chunks, want %d", res.ChunksSent, want)
	}
}

// TestSelect chooses backups as the flags say.
func TestSelect(t *testing.T) {
	_, src, bs := source(t, nil)
	now := repotest.BaseTime.Add(26 * time.Hour) // the second finished an hour before
	for _, tc := range []struct {
		name    string
		o       Options
		want    []string
		wantErr bool
	}{
		{"ids", Options{IDs: []string{bs[1].ID, bs[0].ID}}, []string{bs[0].ID, bs[1].ID}, false},
		{"latest", Options{IDs: []string{"latest"}}, []string{bs[1].ID}, false},
		{"all", Options{All: true}, []string{bs[0].ID, bs[1].ID}, false},
		{"retain last 1", Options{RetainLast: 1}, []string{bs[1].ID}, false},
		{"retain last 5", Options{RetainLast: 5}, []string{bs[0].ID, bs[1].ID}, false},
		{"retain within 2h", Options{RetainWithin: 2 * time.Hour}, []string{bs[1].ID}, false},
		{"retain within 2d", Options{RetainWithin: 48 * time.Hour}, []string{bs[0].ID, bs[1].ID}, false},
		{"retain within 1m", Options{RetainWithin: time.Minute}, nil, true},
		{"unknown id", Options{IDs: []string{"20200101T000000Z"}}, nil, true},
		{"nothing", Options{}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Now = func() time.Time { return now }
			c := &run{src: src, o: tc.o}
			got, err := c.selectBackups(t.Context())
			if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v (error %v)", got, err, tc.want, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrSelection) {
				t.Fatalf("error %v is not ErrSelection", err)
			}
		})
	}
}

// TestCopySliced: an incremental backup's slices keep their offsets and
// lengths when the chunks they slice are renamed for another keying.
func TestCopySliced(t *testing.T) {
	r := repository.New(mem.New())
	b, _ := repotest.Commit(t, r, repotest.Spec{ID: "20260104T030000Z",
		Archives: []repotest.Archive{{Name: "base.tar", Members: repotest.BaseMembers(3)}},
		Edit: func(b *manifest.Backup) {
			alt := repotest.Alternate(t, r, b, 3000)
			b.Archives, b.FormatVersion = alt.Archives, alt.FormatVersion
		}})
	if !b.Archives[0].Chunks[0].Sliced() {
		t.Fatal("the fixture has no slices")
	}
	dst := open(mem.New(), testKey(t, "ab"))
	if _, err := Copy(t.Context(), r, dst, Options{IDs: []string{"latest"}}); err != nil {
		t.Fatal(err)
	}
	sameBackups(t, r, dst, b.ID)
	db, err := dst.Backup(t.Context(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if db.FormatVersion != manifest.FormatVersionIncremental {
		t.Errorf("format %s at the destination", db.FormatVersion)
	}
	src, dstRefs := b.Archives[0].Chunks, db.Archives[0].Chunks
	if len(src) != len(dstRefs) {
		t.Fatalf("%d references at the destination, %d at the source", len(dstRefs), len(src))
	}
	for i := range src {
		if src[i].Offset != dstRefs[i].Offset || src[i].Length != dstRefs[i].Length || src[i].RawSize != dstRefs[i].RawSize || src[i].ID == dstRefs[i].ID {
			t.Fatalf("reference %d: %+v at the source, %+v at the destination", i, src[i], dstRefs[i])
		}
	}
}

// TestCopyBadSelectionWritesNothing: a selection that names no backup of
// the source is refused before the destination is touched.
func TestCopyBadSelectionWritesNothing(t *testing.T) {
	_, src, _ := source(t, nil)
	inner := mem.New()
	if _, err := Copy(t.Context(), src, repository.New(inner), Options{IDs: []string{"20200101T000000Z"}}); !errors.Is(err, ErrSelection) {
		t.Fatalf("copy of an unknown backup: %v, want ErrSelection", err)
	}
	if keys := inner.Keys(); len(keys) != 0 {
		t.Fatalf("the destination holds %v", keys)
	}
}

// TestCopySameIDOtherBackup: a backup taken into the destination directly
// under an id the source also holds (ids are start times to the second)
// is not taken for a copy of the source's: its chunks are not paired with
// the source's, so a later backup copied is whole, and copying the source's
// backup of that id is refused as ErrIDTaken before anything is written.
func TestCopySameIDOtherBackup(t *testing.T) {
	for _, tc := range []struct {
		name   string
		dstKey string
	}{{"same keying", ""}, {"rekeyed", "ab"}} {
		t.Run(tc.name, func(t *testing.T) {
			_, src, bs := source(t, nil)
			var dk *encryption.Key
			if tc.dstKey != "" {
				dk = testKey(t, tc.dstKey)
			}
			inner := mem.New()
			dst := open(inner, dk)
			// Same layout, same sizes, other content: one byte of
			// PG_VERSION differs, so the first chunk does.
			other := repotest.BaseMembers(1)
			for i := range other {
				if other[i].Name == "PG_VERSION" {
					other[i].Data = []byte("16\n")
				}
			}
			d, _ := repotest.Commit(t, dst, repotest.Spec{ID: bs[0].ID, Archives: []repotest.Archive{{Name: "base.tar", Members: other}}})
			if len(d.Archives[0].Chunks) != len(bs[0].Archives[0].Chunks) {
				t.Fatalf("fixture: %d references at the destination, %d at the source", len(d.Archives[0].Chunks), len(bs[0].Archives[0].Chunks))
			}
			if _, err := Copy(t.Context(), src, dst, Options{IDs: []string{bs[1].ID}}); err != nil {
				t.Fatal(err)
			}
			a, b := archives(t, src, bs[1].ID), archives(t, dst, bs[1].ID)
			if !bytes.Equal(a[0], b[0]) {
				t.Fatalf("backup %s at the destination differs from the source's: it was given chunks of the other backup %s", bs[1].ID, bs[0].ID)
			}
			before := inner.Keys()
			for _, o := range []Options{{IDs: []string{bs[0].ID}}, {All: true}, {All: true, DryRun: true}} {
				res, err := Copy(t.Context(), src, dst, o)
				if !errors.Is(err, repository.ErrIDTaken) || !strings.Contains(err.Error(), bs[0].ID) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("copy %+v: %v; want one line of ErrIDTaken naming %s", o, err, bs[0].ID)
				}
				if len(res.Backups) != 0 {
					t.Errorf("copy %+v: result %+v, want no backup handled", o, res.Backups)
				}
			}
			if after := inner.Keys(); !slices.Equal(before, after) {
				t.Errorf("the refused copies stored %v", after)
			}
		})
	}
}

// TestCopyEncryptedToPlain: from an encrypted source, a new destination
// is not created plain unless ToPlain says so (a forgotten key must not
// leave a decrypted copy); an existing plain one is used as it is.
func TestCopyEncryptedToPlain(t *testing.T) {
	for _, tc := range []struct {
		name     string
		srcKey   string
		dstKey   string
		existing bool // the destination is bound already
		toPlain  bool
		wantErr  bool
	}{
		{"encrypted to new plain", "cd", "", false, false, true},
		{"encrypted to new plain, allowed", "cd", "", false, true, false},
		{"encrypted to existing plain", "cd", "", true, false, false},
		{"encrypted to new encrypted", "cd", "ab", false, false, false},
		{"plain to new plain", "", "", false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sk, dk *encryption.Key
			if tc.srcKey != "" {
				sk = testKey(t, tc.srcKey)
			}
			if tc.dstKey != "" {
				dk = testKey(t, tc.dstKey)
			}
			_, src, bs := source(t, sk)
			inner := mem.New()
			dst := open(inner, dk)
			if tc.existing {
				if err := dst.Bind(t.Context(), repotest.SystemID, repotest.SegSize); err != nil {
					t.Fatal(err)
				}
			}
			before := inner.Keys()
			for _, dry := range []bool{true, false} {
				_, err := Copy(t.Context(), src, dst, Options{IDs: []string{bs[0].ID}, ToPlain: tc.toPlain, DryRun: dry})
				if tc.wantErr {
					if !errors.Is(err, ErrPlainDestination) || !strings.Contains(err.Error(), "--to-plain") {
						t.Fatalf("dry run %v: %v, want ErrPlainDestination naming --to-plain", dry, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("dry run %v: %v", dry, err)
				}
			}
			if tc.wantErr {
				if after := inner.Keys(); !slices.Equal(before, after) {
					t.Fatalf("the refused copy stored %v", after)
				}
				return
			}
			sameBackups(t, src, dst, bs[0].ID)
		})
	}
}

// TestCopyAllPartialWAL: --all copies the <segment>.partial files too —
// the archiver's last segment of a timeline at promotion, needed to
// recover along that timeline, and wal-receive's snapshot — through the
// destination's partial-WAL path; a snapshot grown at the source since
// is copied again, and an immutable destination keeps the one it has.
func TestCopyAllPartialWAL(t *testing.T) {
	for _, tc := range []struct {
		name      string
		immutable bool
	}{{"mutable", false}, {"immutable", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			_, src, _ := source(t, nil)
			promoted := manifest.SegmentName(1, 7, repotest.SegSize) + ".partial"
			if _, err := src.PutWAL(ctx, chunker.NewCompressor(), promoted, repotest.SegmentData(7)); err != nil {
				t.Fatal(err)
			}
			growing := manifest.SegmentName(2, 8, repotest.SegSize)
			if err := src.PutWALPartial(ctx, chunker.NewCompressor(), growing, repotest.SegmentData(8)[:1000]); err != nil {
				t.Fatal(err)
			}
			inner := mem.New()
			if tc.immutable {
				inner = mem.NewLocking()
			}
			dst := repository.New(inner)
			if tc.immutable {
				if err := dst.SetImmutability(providers.LockGovernance, time.Hour); err != nil {
					t.Fatal(err)
				}
			}
			same := func(name string, want []byte) {
				t.Helper()
				got, _, err := dst.FetchWAL(ctx, name)
				if err != nil {
					t.Fatalf("%s at the destination: %v", name, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s at the destination: %d bytes, want %d", name, len(got), len(want))
				}
			}
			if _, err := Copy(ctx, src, dst, Options{All: true}); err != nil {
				t.Fatal(err)
			}
			same(promoted, repotest.SegmentData(7))
			same(growing+".partial", repotest.SegmentData(8)[:1000])

			// The snapshot grows at the source.
			if err := src.PutWALPartial(ctx, chunker.NewCompressor(), growing, repotest.SegmentData(8)[:5000]); err != nil {
				t.Fatal(err)
			}
			res, err := Copy(ctx, src, dst, Options{All: true})
			if err != nil {
				t.Fatal(err)
			}
			if tc.immutable {
				same(growing+".partial", repotest.SegmentData(8)[:1000])
				if res.WALSent != 0 {
					t.Errorf("rerun sent %d WAL files, want none", res.WALSent)
				}
			} else {
				same(growing+".partial", repotest.SegmentData(8)[:5000])
				if res.WALSent != 1 {
					t.Errorf("rerun sent %d WAL files, want the grown snapshot only", res.WALSent)
				}
			}
			// Nothing changed since: nothing is sent.
			again, err := Copy(ctx, src, dst, Options{All: true})
			if err != nil || again.WALSent != 0 {
				t.Fatalf("third run: sent %d WAL files (%v), want none", again.WALSent, err)
			}
		})
	}
}

// TestCopyHoldsSource: while a backup is copied the source holds a
// restore lease naming it, so a delete of that backup run there meanwhile
// is deferred and the copy completes; the lease is gone afterwards.
func TestCopyHoldsSource(t *testing.T) {
	_, src, bs := source(t, nil)
	dst := open(mem.New(), testKey(t, "ab"))
	var once sync.Once
	var rep *catalog.Report
	var delErr error
	var leases []repository.LockInfo
	o := Options{IDs: []string{bs[0].ID}, Parallel: 1, Progress: func(p Progress) {
		if p.Phase != "chunks" || p.ChunksDone != 1 {
			return
		}
		once.Do(func() {
			leases, delErr = src.Locks(t.Context())
			if delErr == nil {
				rep, delErr = catalog.Delete(t.Context(), src, catalog.Retention{IDs: []string{bs[0].ID}}, catalog.PruneOptions{})
			}
		})
	}}
	if _, err := Copy(t.Context(), src, dst, o); err != nil {
		t.Fatalf("copy while a delete of its backup ran at the source: %v", err)
	}
	if delErr != nil {
		t.Fatal(delErr)
	}
	if len(leases) != 1 || leases[0].Kind != repository.LockRestore || leases[0].Backup != bs[0].ID || leases[0].Command != "copy" {
		t.Fatalf("leases at the source during the copy: %+v, want a restore lease of copy naming %s", leases, bs[0].ID)
	}
	if len(rep.Backups) == 0 || !rep.Backups[0].Deferred {
		t.Errorf("delete during the copy: %+v, want the backup deferred", rep.Backups)
	}
	sameBackups(t, src, dst, bs[0].ID)
	if locks := repotest.LockKeys(t, src); len(locks) != 0 {
		t.Errorf("leases left at the source: %v", locks)
	}
}
