package catalog

import (
	"context"
	"encoding/json"
	"iter"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
)

// agedStore reports chosen objects as written that long before they were,
// so that tests of the grace period need not wait: the mem store dates an
// object when it is put.
type agedStore struct {
	providers.Store
	mu  sync.Mutex
	age map[string]time.Duration
}

func newAgedStore(s providers.Store) *agedStore {
	return &agedStore{Store: s, age: map[string]time.Duration{}}
}

func (s *agedStore) setAge(key string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.age[key] = d
}

func (s *agedStore) shift(obj providers.ObjectInfo) providers.ObjectInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	obj.ModTime = obj.ModTime.Add(-s.age[obj.Key])
	return obj
}

func (s *agedStore) Stat(ctx context.Context, key string) (providers.ObjectInfo, error) {
	obj, err := s.Store.Stat(ctx, key)
	return s.shift(obj), err
}

func (s *agedStore) List(ctx context.Context, prefix string) iter.Seq2[providers.ObjectInfo, error] {
	return func(yield func(providers.ObjectInfo, error) bool) {
		for obj, err := range s.Store.List(ctx, prefix) {
			if !yield(s.shift(obj), err) {
				return
			}
		}
	}
}

// recordingStore records the keys deleted through it, in order.
type recordingStore struct {
	providers.Store
	mu      sync.Mutex
	deleted []string
}

func (s *recordingStore) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	s.deleted = append(s.deleted, key)
	s.mu.Unlock()
	return s.Store.Delete(ctx, key)
}

// checkDeleteOrder checks that each deleted backup's manifest went
// before its other objects, and every backup's objects before any chunk
// or WAL file, so that no listed backup ever lacks an object.
func checkDeleteOrder(t *testing.T, deleted []string, gone []*manifest.Backup) {
	t.Helper()
	firstShared := slices.IndexFunc(deleted, func(k string) bool {
		return strings.HasPrefix(k, repository.ChunksPrefix) || strings.HasPrefix(k, repository.WALPrefix)
	})
	for _, b := range gone {
		m := slices.Index(deleted, repository.BackupManifestKey(b.ID))
		pg := slices.Index(deleted, repository.PGManifestKey(b.ID))
		if m < 0 || pg < m || firstShared >= 0 && pg > firstShared {
			t.Errorf("deletions in the order %q: want backup %s's manifest first, then its backup_manifest, then chunks and WAL", deleted, b.ID)
		}
	}
}

// segKey is the key of WAL segment segno on timeline tli.
func segKey(tli uint32, segno uint64) string {
	return repository.WALKey(manifest.SegmentName(tli, segno, repotest.SegSize))
}

// putWAL stores a WAL file; its content does not matter to pruning.
func putWAL(t *testing.T, repo *repository.Repository, name string) string {
	t.Helper()
	if _, err := repo.PutWAL(t.Context(), chunker.NewCompressor(), name, []byte("wal "+name)); err != nil {
		t.Fatal(err)
	}
	return repository.WALKey(name)
}

// putPartial stores segment's .partial file.
func putPartial(t *testing.T, repo *repository.Repository, segment string) string {
	t.Helper()
	if err := repo.PutWALPartial(t.Context(), chunker.NewCompressor(), segment, []byte("partial")); err != nil {
		t.Fatal(err)
	}
	return repository.WALKey(segment + ".partial")
}

// fakeChunk stores an unreferenced object under a well-formed chunk key.
func fakeChunk(t *testing.T, s providers.Store, content string) string {
	t.Helper()
	key := repository.ChunkKey(chunker.ID([]byte(content)))
	putKey(t, s, key, []byte(content))
	return key
}

func keySet(keys []string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// minus returns the keys of a not in b, sorted.
func minus(a, b []string) []string {
	in := keySet(b)
	var out []string
	for _, k := range a {
		if !in[k] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// checkKeys fails unless got and want hold the same keys.
func checkKeys(t *testing.T, what string, got, want []string) {
	t.Helper()
	if extra, missing := minus(got, want), minus(want, got); len(extra)+len(missing) > 0 {
		t.Errorf("%s:\n  unexpected %q\n  missing %q", what, extra, missing)
	}
}

// backupKeys are the objects a committed backup needs: its two manifests,
// its chunks and its WAL.
func backupKeys(b *manifest.Backup) []string {
	keys := []string{repository.BackupManifestKey(b.ID), repository.PGManifestKey(b.ID)}
	for k := range chunkKeys(b) {
		keys = append(keys, k)
	}
	for _, w := range b.WAL {
		keys = append(keys, repository.WALKey(w.Name))
	}
	return keys
}

// reportedKeys are the keys a dry run lists as removed.
func reportedKeys(r *Report) []string {
	return slices.Concat(r.Manifests.Keys, r.Chunks.Keys, r.WAL.Keys, r.Leftovers.Keys, r.Locks.Keys)
}

// sameCounts fails unless a dry run and a real run counted the same.
func sameCounts(t *testing.T, dry, real *Report) {
	t.Helper()
	for _, c := range []struct {
		name      string
		dry, real Objects
	}{
		{"manifests", dry.Manifests, real.Manifests},
		{"chunks", dry.Chunks, real.Chunks},
		{"WAL", dry.WAL, real.WAL},
		{"leftovers", dry.Leftovers, real.Leftovers},
		{"locks", dry.Locks, real.Locks},
		{"deferred", dry.Deferred, real.Deferred},
		{"young", dry.Young, real.Young}, // counted, never listed
	} {
		if c.dry.Count != c.real.Count || c.dry.Bytes != c.real.Bytes {
			t.Errorf("%s: dry run counted %d objects of %d bytes, the real run %d of %d", c.name, c.dry.Count, c.dry.Bytes, c.real.Count, c.real.Bytes)
		}
		if c.name != "young" && c.dry.Count != len(c.dry.Keys) || c.real.Keys != nil {
			t.Errorf("%s: dry run lists %d keys for %d objects, the real run %d keys", c.name, len(c.dry.Keys), c.dry.Count, len(c.real.Keys))
		}
	}
	if !dry.DryRun || real.DryRun {
		t.Errorf("DryRun is %v in the dry run and %v in the real one", dry.DryRun, real.DryRun)
	}
}

func keeps(r *Report) []bool {
	var out []bool
	for _, d := range r.Backups {
		out = append(out, d.Keep)
	}
	return out
}

// TestDeleteRetainLast deletes all but the newest backup, first as a dry
// run, and checks that exactly what the newest needs is left.
func TestDeleteRetainLast(t *testing.T) {
	f := threeBackups(t)
	ctx := t.Context()
	// WAL the backups do not list: below the kept backup's first segment
	// (6) on either timeline it goes, from it on it stays, and timeline
	// history files always stay.
	putWAL(t, f.repo, manifest.SegmentName(1, 1, repotest.SegSize))
	putPartial(t, f.repo, manifest.SegmentName(1, 2, repotest.SegSize))
	putWAL(t, f.repo, manifest.PartialSegmentName(manifest.SegmentName(1, 3, repotest.SegSize), 4096))
	putWAL(t, f.repo, manifest.SegmentName(2, 4, repotest.SegSize))
	stays := []string{
		putWAL(t, f.repo, manifest.PartialSegmentName(manifest.SegmentName(1, 7, repotest.SegSize), 4096)),
		putWAL(t, f.repo, "00000002.history"),
		putWAL(t, f.repo, manifest.SegmentName(2, 6, repotest.SegSize)),
		putWAL(t, f.repo, manifest.SegmentName(1, 8, repotest.SegSize)),
		putPartial(t, f.repo, manifest.SegmentName(1, 9, repotest.SegSize)),
	}
	kept := f.backups[2]
	want := slices.Concat([]string{repository.RepoKey}, backupKeys(kept), stays)
	before := f.store.Keys()

	dry, err := Delete(ctx, f.repo, Retention{RetainLast: 1}, PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	checkKeys(t, "objects after a dry run", f.store.Keys(), before)
	if got := keeps(dry); !slices.Equal(got, []bool{false, false, true}) {
		t.Errorf("dry run keeps %v, want only the newest", got)
	}
	if r := dry.Backups[2].Reason; r != "newest backup" {
		t.Errorf("the newest is kept because %q", r)
	}

	rec := &recordingStore{Store: f.store}
	rep, err := Delete(ctx, repository.New(rec), Retention{RetainLast: 1}, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after := f.store.Keys()
	checkDeleteOrder(t, rec.deleted, f.backups[:2])
	checkKeys(t, "objects after deleting all but the newest", after, want)
	checkKeys(t, "what the dry run listed against what the real run removed", reportedKeys(dry), minus(before, after))
	sameCounts(t, dry, rep)
	if got := keeps(rep); !slices.Equal(got, []bool{false, false, true}) {
		t.Errorf("keeps %v, want only the newest", got)
	}
	if want := kept.WAL[0].Name; rep.WALKeptFrom != want || dry.WALKeptFrom != want {
		t.Errorf("WAL kept from %q (dry run %q), want %s", rep.WALKeptFrom, dry.WALKeptFrom, want)
	}
	if rep.Manifests.Count != 4 || rep.WAL.Count != 7 || rep.Chunks.Count == 0 || rep.Deferred.Count != 0 || len(rep.RunningBackup) != 0 {
		t.Errorf("report %+v; want 4 manifests, 7 WAL files (one a standby backup's partial segment), some chunks and nothing deferred", rep)
	}
	vs, err := Verify(ctx, f.repo, []string{kept.ID}, VerifyOptions{})
	if err != nil || !vs[0].OK {
		t.Fatalf("the kept backup does not verify: %v %+v", err, vs)
	}
}

// TestDeletePolicies applies policies with a fixed clock and checks which
// backups go and which WAL stays.
func TestDeletePolicies(t *testing.T) {
	base := threeBackups(t)
	now := finishedAt(2).Add(time.Hour) // backups finished 49, 25 and 1 hours ago
	for _, tc := range []struct {
		name string
		r    Retention
		// keep says which backups stay; segs are the WAL segments left.
		keep []bool
		segs []uint64
	}{
		{"retain last 2", Retention{RetainLast: 2}, []bool{false, true, true}, []uint64{5, 6, 7}},
		{"retain last more than there are", Retention{RetainLast: 5}, []bool{true, true, true}, []uint64{3, 4, 5, 6, 7}},
		{"retain within 30h", Retention{RetainWithin: 30 * time.Hour}, []bool{false, true, true}, []uint64{5, 6, 7}},
		{"retain within 2h", Retention{RetainWithin: 2 * time.Hour}, []bool{false, false, true}, []uint64{6, 7}},
		{"retain within 25h, to the second", Retention{RetainWithin: 25 * time.Hour}, []bool{false, true, true}, []uint64{5, 6, 7}},
		{"retain within 30m keeps the newest", Retention{RetainWithin: 30 * time.Minute}, []bool{false, false, true}, []uint64{6, 7}},
		// The window opens 30 hours ago: recovering to then needs
		// backup 0, which finished before, and the WAL from it on;
		// backup 1 is neither the newest nor the window's base.
		{"keep WAL within 30h", Retention{RetainLast: 1, KeepWALWithin: 30 * time.Hour}, []bool{true, false, true}, []uint64{3, 4, 5, 6, 7}},
		{"keep WAL within 2h", Retention{RetainLast: 1, KeepWALWithin: 2 * time.Hour}, []bool{false, true, true}, []uint64{5, 6, 7}},
		{"keep WAL within 60h", Retention{RetainLast: 1, KeepWALWithin: 60 * time.Hour}, []bool{false, false, true}, []uint64{6, 7}},
		{"named", Retention{IDs: []string{backupID(1)}}, []bool{true, false, true}, []uint64{3, 4, 5, 6, 7}},
		// WAL goes only below the oldest kept backup's first segment.
		{"named newest", Retention{IDs: []string{backupID(2)}}, []bool{true, true, false}, []uint64{3, 4, 5, 6, 7}},
		{"named all", Retention{IDs: []string{backupID(0), backupID(1), backupID(2)}}, []bool{false, false, false}, []uint64{3, 4, 5, 6, 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := base.clone(t)
			before := f.store.Keys()
			o := PruneOptions{Now: func() time.Time { return now }}
			o.DryRun = true
			dry, err := Delete(t.Context(), f.repo, tc.r, o)
			if err != nil {
				t.Fatal(err)
			}
			o.DryRun = false
			rep, err := Delete(t.Context(), f.repo, tc.r, o)
			if err != nil {
				t.Fatal(err)
			}
			if got := keeps(rep); !slices.Equal(got, tc.keep) || !slices.Equal(keeps(dry), tc.keep) {
				t.Errorf("keeps %v (dry run %v), want %v; decisions %+v", got, keeps(dry), tc.keep, rep.Backups)
			}
			after := f.store.Keys()
			want := []string{repository.RepoKey}
			chunksLeft := map[string]bool{}
			for i, b := range f.backups {
				if tc.keep[i] {
					want = append(want, repository.BackupManifestKey(b.ID), repository.PGManifestKey(b.ID))
					for k := range chunkKeys(b) {
						chunksLeft[k] = true
					}
				}
			}
			for k := range chunksLeft {
				want = append(want, k)
			}
			for _, s := range tc.segs {
				want = append(want, segKey(1, s))
			}
			checkKeys(t, "objects left", after, want)
			checkKeys(t, "what the dry run listed against what the real run removed", reportedKeys(dry), minus(before, after))
			sameCounts(t, dry, rep)
			if rep.WALKeptFrom != "" && rep.WALKeptFrom != manifest.SegmentName(1, tc.segs[0], repotest.SegSize) {
				t.Errorf("WAL kept from %s, want segment %d", rep.WALKeptFrom, tc.segs[0])
			}
		})
	}
}

func TestDeleteRefuses(t *testing.T) {
	f := newFixture(t, backupSpec{seed: 1}, backupSpec{seed: 2})
	before := f.store.Keys()
	for _, tc := range []struct {
		name    string
		r       Retention
		wantErr string
	}{
		{"empty policy", Retention{}, "nothing to delete"},
		{"ids and a policy", Retention{IDs: []string{backupID(0)}, RetainLast: 1}, "not both"},
		{"negative retain-last", Retention{RetainLast: -1}, "--retain-last -1"},
		{"negative retain-within", Retention{RetainWithin: -time.Hour}, "positive"},
		{"negative keep-wal-within", Retention{RetainLast: 1, KeepWALWithin: -time.Hour}, "positive"},
		{"keep-wal-within alone", Retention{KeepWALWithin: time.Hour}, "--keep-wal-within"},
		{"not an id", Retention{IDs: []string{"latest"}}, `"latest" is not a backup id`},
		{"unknown id", Retention{IDs: []string{backupID(0), backupID(7)}}, "backup " + backupID(7) + " does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, dry := range []bool{true, false} {
				rep, err := Delete(t.Context(), f.repo, tc.r, PruneOptions{DryRun: dry})
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || rep != nil {
					t.Errorf("dry run %v: %+v, %v; want an error containing %q", dry, rep, err, tc.wantErr)
				}
			}
			// Nothing removed, and no lock left behind.
			checkKeys(t, "objects after a refused delete", f.store.Keys(), before)
		})
	}
}

// lockObject writes a lease as a process that is gone would have left it.
func lockObject(t *testing.T, s providers.Store, kind, name string, ttl time.Duration) string {
	t.Helper()
	data, err := json.Marshal(repository.LockInfo{Kind: kind, Command: "backup", Host: "gone", PID: 1, Started: time.Now().Add(-time.Hour), TTLSeconds: int64(ttl / time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	key := repository.LockKey(kind, name)
	putKey(t, s, key, data)
	return key
}

// TestGC puts unreferenced objects of several ages next to two backups
// and collects them with and without a grace period.
func TestGC(t *testing.T) {
	base := newFixture(t, backupSpec{seed: 1, firstSeg: 3, segs: 2}, backupSpec{seed: 2, firstSeg: 5, segs: 1})
	const old = 2 * time.Hour
	for _, tc := range []struct {
		name  string
		grace time.Duration
	}{
		{"grace 1h", time.Hour},
		{"no grace", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := base.clone(t)
			aged := newAgedStore(f.store)
			repo := repository.New(aged)
			put := func(key string, age time.Duration) string {
				putKey(t, f.store, key, []byte("content of "+key))
				aged.setAge(key, age)
				return key
			}
			// Unreferenced chunks, old and young, and a stray object
			// under chunks/ that is not ours.
			oldChunks := []string{put(repository.ChunkKey(chunker.ID([]byte("old"))), old)}
			youngChunks := []string{put(repository.ChunkKey(chunker.ID([]byte("young"))), 10*time.Minute)}
			put(repository.ChunksPrefix+"README", old)
			// A backup that never committed, long ago; one whose
			// newest object is recent, though the one listed first is
			// old; a stray.
			oldLeft := []string{put(repository.PGManifestKey(backupID(8)), old), put(repository.BackupsPrefix+backupID(8)+"/notes", old)}
			youngLeft := []string{put(repository.PGManifestKey(backupID(9)), old), put(repository.BackupsPrefix+backupID(9)+"/notes", 0)}
			put(repository.BackupsPrefix+"README", old)
			// WAL before the oldest backup's first segment (3), on any
			// timeline, and WAL that stays: timeline history, later
			// segments.
			oldWAL := []string{
				putWAL(t, repo, manifest.SegmentName(1, 1, repotest.SegSize)),
				putPartial(t, repo, manifest.SegmentName(1, 2, repotest.SegSize)),
				putWAL(t, repo, manifest.SegmentName(2, 2, repotest.SegSize)),
			}
			for _, k := range oldWAL {
				aged.setAge(k, old)
			}
			// Archived a moment ago, though numbered before the oldest
			// backup: the grace period spares it too.
			youngWAL := []string{putWAL(t, repo, manifest.SegmentName(3, 1, repotest.SegSize))}
			putWAL(t, repo, manifest.SegmentName(2, 3, repotest.SegSize))
			putWAL(t, repo, "00000002.history")
			putWAL(t, repo, manifest.SegmentName(1, 6, repotest.SegSize))
			// Leases of dead processes, expired by the store's clock.
			locks := []string{
				lockObject(t, f.store, repository.LockBackup, "dead", time.Minute),
				lockObject(t, f.store, repository.LockPrune, "dead", time.Minute),
			}
			for _, k := range locks {
				aged.setAge(k, old)
			}

			wantChunks, wantLeft, wantWAL, wantYoung := oldChunks, oldLeft, oldWAL, len(youngChunks)+len(youngLeft)+len(youngWAL)
			if tc.grace == 0 {
				wantChunks, wantLeft, wantWAL, wantYoung = slices.Concat(oldChunks, youngChunks), slices.Concat(oldLeft, youngLeft), slices.Concat(oldWAL, youngWAL), 0
			}
			removed := slices.Concat(wantChunks, wantLeft, wantWAL, locks)

			before := f.store.Keys()
			o := PruneOptions{Grace: tc.grace, DryRun: true}
			dry, err := GC(t.Context(), repo, o)
			if err != nil {
				t.Fatal(err)
			}
			checkKeys(t, "objects after a dry run", f.store.Keys(), before)
			o.DryRun = false
			rep, err := GC(t.Context(), repo, o)
			if err != nil {
				t.Fatal(err)
			}
			checkKeys(t, "objects removed", minus(before, f.store.Keys()), removed)
			checkKeys(t, "what the dry run listed against what the real run removed", reportedKeys(dry), removed)
			checkKeys(t, "chunks reported", dry.Chunks.Keys, wantChunks)
			checkKeys(t, "leftovers reported", dry.Leftovers.Keys, wantLeft)
			checkKeys(t, "WAL reported", dry.WAL.Keys, wantWAL)
			checkKeys(t, "locks reported", dry.Locks.Keys, locks)
			sameCounts(t, dry, rep)
			if rep.Young.Count != wantYoung || rep.Manifests.Count != 0 || rep.Deferred.Count != 0 || len(rep.RunningBackup) != 0 {
				t.Errorf("report %+v; want %d young objects, no manifests, nothing deferred", rep, wantYoung)
			}
			if want := f.backups[0].WAL[0].Name; rep.WALKeptFrom != want {
				t.Errorf("WAL kept from %s, want %s", rep.WALKeptFrom, want)
			}
			vs, err := Verify(t.Context(), repo, f.ids(), VerifyOptions{Quick: true})
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vs {
				if !v.OK {
					t.Errorf("%s after gc: %v", v.ID, v.Problems)
				}
			}
		})
	}
}

// TestGCWithoutBackups: with no backup, every chunk is unreferenced, but
// no WAL can be judged older than what a backup needs.
func TestGCWithoutBackups(t *testing.T) {
	f := newFixture(t)
	chunk := fakeChunk(t, f.store, "orphan")
	wal := putWAL(t, f.repo, manifest.SegmentName(1, 1, repotest.SegSize))
	rep, err := GC(t.Context(), f.repo, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkKeys(t, "objects left", f.store.Keys(), []string{wal})
	if rep.Chunks.Count != 1 || rep.WAL.Count != 0 || rep.WALKeptFrom != "" {
		t.Errorf("report %+v; want the chunk %s removed and the WAL kept", rep, chunk)
	}
}

// TestDeleteDefersRestoredBackup: a backup a live restore reads is left
// whole by a delete that removes another: the chunks it shares with the
// deleted one, and its WAL, stay with it.
func TestDeleteDefersRestoredBackup(t *testing.T) {
	// Backups 0 and 1 share base/1/1259 but not pg_control; 2 shares
	// only the last chunk with them.
	base := newFixture(t, backupSpec{seed: 1, firstSeg: 3, segs: 2}, backupSpec{seed: 1, control: 9, firstSeg: 5, segs: 1}, backupSpec{seed: 2, firstSeg: 6, segs: 1})
	b0, b1, b2 := base.backups[0], base.backups[1], base.backups[2]
	// What only backup 1 needs, but its WAL: that comes after backup 0's,
	// which is kept from its first segment on.
	var own []string
	for _, k := range backupKeys(b1) {
		if !slices.Contains(backupKeys(b0), k) && !slices.Contains(backupKeys(b2), k) && !strings.HasPrefix(k, repository.WALPrefix) {
			own = append(own, k)
		}
	}
	if !slices.ContainsFunc(own, func(k string) bool { return strings.HasPrefix(k, repository.ChunksPrefix) }) {
		t.Fatalf("backup 1 has no chunk of its own (%q): the fixture does not test what it should", own)
	}
	for _, dry := range []bool{true, false} {
		f := base.clone(t)
		l, err := f.repo.TakeLease(t.Context(), repository.LockRestore, repository.LeaseOptions{Command: "restore", Backup: b0.ID})
		if err != nil {
			t.Fatal(err)
		}
		before := f.store.Keys()
		rep, err := Delete(t.Context(), f.repo, Retention{RetainLast: 1}, PruneOptions{DryRun: dry})
		after := f.store.Keys()
		l.Release(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if d := rep.Backups; len(d) != 3 || !d[0].Deferred || d[0].Keep || d[1].Deferred || d[1].Keep || !d[2].Keep {
			t.Errorf("dry run %v: decisions %+v; want backup 0 deferred, 1 deleted, 2 kept", dry, d)
		}
		if rep.WALKeptFrom != b0.WAL[0].Name || rep.Deferred.Count != 0 {
			t.Errorf("dry run %v: %+v; want WAL kept from %s, the deferred backup's first segment", dry, rep, b0.WAL[0].Name)
		}
		if dry {
			checkKeys(t, "what a dry run lists", reportedKeys(rep), own)
			continue
		}
		checkKeys(t, "objects removed", minus(before, after), own)
	}
}
