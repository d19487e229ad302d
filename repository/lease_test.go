package repository_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pgstow/pgstow/catalog"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
)

func TestLockKeyRoundTrip(t *testing.T) {
	for _, tc := range []struct{ kind, name string }{
		{repository.LockBackup, "0123456789abcdef"},
		{repository.LockPrune, "0123456789abcdef"},
		{repository.LockBackup, "a-b"},
	} {
		key := repository.LockKey(tc.kind, tc.name)
		if !strings.HasPrefix(key, repository.LocksPrefix) || providers.ValidateKey(key) != nil {
			t.Errorf("repository.LockKey(%q, %q) = %q, not a valid key under %s", tc.kind, tc.name, key, repository.LocksPrefix)
		}
		kind, name, ok := repository.LockFromKey(key)
		if !ok || kind != tc.kind || name != tc.name {
			t.Errorf("repository.LockFromKey(%q) = %q, %q, %v; want %q, %q", key, kind, name, ok, tc.kind, tc.name)
		}
	}
	for _, key := range []string{
		"locks/backup.json",
		"locks/-abc.json",
		"locks/backup-.json",
		"locks/backup-a/b.json",
		"locks/backup-abc.txt",
		"locks/backup-abc",
		"chunks/backup-abc.json",
		"backup-abc.json",
	} {
		if kind, name, ok := repository.LockFromKey(key); ok {
			t.Errorf("repository.LockFromKey(%q) = %q, %q; want it refused", key, kind, name)
		}
	}
}

func TestStale(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		ttl   int64
		now   time.Time
		stale bool
	}{
		{"fresh", 60, at.Add(time.Second), false},
		{"just before expiry", 60, at.Add(time.Minute - time.Nanosecond), false},
		{"at expiry", 60, at.Add(time.Minute), true},
		{"long dead", 60, at.Add(time.Hour), true},
		{"written after now by the store's clock", 60, at.Add(-time.Second), false},
		{"unreadable lease (no TTL)", 0, at, true},
	} {
		h := repository.LockInfo{Kind: repository.LockBackup, TTLSeconds: tc.ttl, ModTime: at}
		if got := repository.Stale(h, tc.now); got != tc.stale {
			t.Errorf("%s: Stale = %v, want %v", tc.name, got, tc.stale)
		}
	}
}

// stallStore fails writes to chosen keys, and can run a hook before a
// deletion: what a process sees of a store while it hangs, so that its
// lease stops being refreshed though it still holds it.
type stallStore struct {
	providers.Store
	mu       sync.Mutex
	stalled  func(key string) bool
	onDelete func(key string)
}

func (s *stallStore) stall(match func(key string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stalled = match
}

func (s *stallStore) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, o providers.PutOptions) error {
	s.mu.Lock()
	stalled := s.stalled != nil && s.stalled(key)
	s.mu.Unlock()
	if stalled {
		return providers.MarkTransient(fmt.Errorf("put %s: stalled", key))
	}
	return s.Store.Put(ctx, key, body, size, o)
}

func (s *stallStore) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	hook := s.onDelete
	s.onDelete = nil // once
	s.mu.Unlock()
	if hook != nil {
		hook(key)
	}
	return s.Store.Delete(ctx, key)
}

// checkPruneDefers fails unless prune's lock is stored decided, deferring
// to the lease seen.
func checkPruneDefers(t *testing.T, repo *repository.Repository, prune, seen *repository.Lease) {
	t.Helper()
	locks, err := repo.Locks(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range locks {
		if h.Key == prune.Key() && (!h.Decided || !slices.Equal(h.Backups, []string{seen.Key()})) {
			t.Errorf("prune lock %+v; want it decided, deferring to %s", h, seen.Key())
		}
	}
}

func takeLease(t *testing.T, repo *repository.Repository, kind string, o repository.LeaseOptions) *repository.Lease {
	t.Helper()
	l, err := repo.TakeLease(t.Context(), kind, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Release(context.Background()) })
	return l
}

func TestTakeLease(t *testing.T) {
	ctx := t.Context()
	repo := repository.New(mem.New())
	before := time.Now()
	l := takeLease(t, repo, repository.LockBackup, repository.LeaseOptions{Command: "backup", TTL: time.Minute})
	if err := l.Held(); err != nil {
		t.Errorf("Held right after taking the lease: %v", err)
	}
	if kind, _, ok := repository.LockFromKey(l.Key()); !ok || kind != repository.LockBackup {
		t.Errorf("lease key %q is not a backup lock key", l.Key())
	}
	if now := l.StoreNow(); now.Before(before) || now.After(time.Now()) {
		t.Errorf("StoreNow %v, not between %v and now: the mem store shares this host's clock", now, before)
	}
	if len(l.Others()) != 0 {
		t.Errorf("others %v in an empty repository", l.Others())
	}
	locks, err := repo.Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(locks) != 1 {
		t.Fatalf("locks %+v, want the one lease", locks)
	}
	h := locks[0]
	if h.Key != l.Key() || h.Kind != repository.LockBackup || h.Command != "backup" || h.TTLSeconds != 60 || h.PID == 0 || h.ModTime.IsZero() || repository.Stale(h, l.StoreNow()) {
		t.Errorf("lease as listed: %+v", h)
	}
	l.Release(ctx)
	if keys := repotest.LockKeys(t, repo); len(keys) != 0 {
		t.Errorf("locks %v after Release", keys)
	}
}

func TestLocksUnreadable(t *testing.T) {
	store := mem.New()
	repo := repository.New(store)
	ctx := t.Context()
	good, _ := json.Marshal(repository.LockInfo{Kind: repository.LockPrune, Command: "gc", TTLSeconds: 300})
	for key, data := range map[string][]byte{
		repository.LockKey(repository.LockBackup, "garbage"):  []byte("{not json"),
		repository.LockKey(repository.LockBackup, "mismatch"): good, // a prune's content under a backup's key
		repository.LockKey(repository.LockPrune, "good"):      good,
		"locks/README": []byte("not a lock"),
	} {
		if err := store.Put(ctx, key, bytes.NewReader(data), int64(len(data)), providers.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	locks, err := repo.Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]repository.LockInfo{}
	for _, h := range locks {
		got[h.Key] = h
	}
	if len(got) != 3 {
		t.Fatalf("locks %+v; want the three lock keys, not the README", locks)
	}
	now := time.Now()
	for _, name := range []string{"garbage", "mismatch"} {
		h := got[repository.LockKey(repository.LockBackup, name)]
		if h.Kind != repository.LockBackup || !strings.Contains(h.Command, "unreadable") || !repository.Stale(h, now) {
			t.Errorf("%s: %+v; want an unreadable backup lock, stale at once", name, h)
		}
	}
	if h := got[repository.LockKey(repository.LockPrune, "good")]; h.Command != "gc" || repository.Stale(h, now) {
		t.Errorf("readable lock: %+v", h)
	}
}

func TestPruneLocksExclude(t *testing.T) {
	ctx := t.Context()
	store := &stallStore{Store: mem.New()}
	repo := repository.New(store)
	first := takeLease(t, repo, repository.LockPrune, repository.LeaseOptions{Command: "delete"})

	_, err := repo.TakeLease(ctx, repository.LockPrune, repository.LeaseOptions{Command: "gc"})
	if !errors.Is(err, repository.ErrLocked) || !strings.Contains(err.Error(), "delete by") {
		t.Errorf("second prune lock: %v; want ErrLocked naming the delete", err)
	}
	start := time.Now()
	_, err = repo.TakeLease(ctx, repository.LockPrune, repository.LeaseOptions{Wait: 50 * time.Millisecond, Poll: 10 * time.Millisecond})
	if !errors.Is(err, repository.ErrLocked) || time.Since(start) < 50*time.Millisecond {
		t.Errorf("second prune lock, waiting 50ms: %v after %v", err, time.Since(start))
	}
	if _, err := catalog.GC(ctx, repo, catalog.PruneOptions{}); !errors.Is(err, repository.ErrLocked) {
		t.Errorf("gc while a delete runs: %v", err)
	}
	if _, err := catalog.Delete(ctx, repo, catalog.Retention{RetainLast: 1}, catalog.PruneOptions{}); !errors.Is(err, repository.ErrLocked) {
		t.Errorf("delete while a delete runs: %v", err)
	}
	// The losers removed their locks.
	if keys := repotest.LockKeys(t, repo); !slices.Equal(keys, []string{first.Key()}) {
		t.Errorf("locks %v, want only %s", keys, first.Key())
	}
	if err := first.Held(); err != nil {
		t.Errorf("the first lock is no longer held: %v", err)
	}

	// One waiting gets the lock once the first is released.
	var waiterBackedOff atomic.Int32
	store.mu.Lock()
	store.onDelete = func(string) { waiterBackedOff.Add(1) } // its first deletion: it removes its own lock
	store.mu.Unlock()
	got := make(chan error, 1)
	go func() {
		l, err := repo.TakeLease(ctx, repository.LockPrune, repository.LeaseOptions{Wait: 10 * time.Second, Poll: 10 * time.Millisecond})
		if err == nil {
			l.Release(ctx)
		}
		got <- err
	}()
	// Release only once the waiter has tried and backed off: it has
	// removed its own lock and sleeps until its next try.
	waitFor(t, 5*time.Second, "the waiting prune to back off", func() bool { return waiterBackedOff.Load() > 0 })
	first.Release(ctx)
	select {
	case err := <-got:
		if err != nil {
			t.Errorf("waiting prune after the release: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiting prune did not get the lock after the release")
	}
	l := takeLease(t, repo, repository.LockPrune, repository.LeaseOptions{})
	l.Release(ctx)
}

func TestBackupWaitsForPrune(t *testing.T) {
	ctx := t.Context()
	repo := repository.New(mem.New())
	seen := takeLease(t, repo, repository.LockBackup, repository.LeaseOptions{Command: "backup"})
	prune := takeLease(t, repo, repository.LockPrune, repository.LeaseOptions{Command: "delete"})

	// The prune saw the running backup and recorded it.
	if others := prune.Others(); len(others) != 1 || others[0].Key != seen.Key() {
		t.Errorf("prune's others %+v, want the backup %s", others, seen.Key())
	}
	checkPruneDefers(t, repo, prune, seen)

	// A backup that starts now was not seen: it waits for the prune.
	type result struct {
		l          *repository.Lease
		err        error
		afterPrune bool
	}
	var released atomic.Bool
	done := make(chan result, 1)
	go func() {
		l, err := repo.TakeLease(ctx, repository.LockBackup, repository.LeaseOptions{Command: "backup", Poll: 10 * time.Millisecond})
		done <- result{l, err, released.Load()}
	}()
	select {
	case r := <-done:
		t.Fatalf("backup lease taken while an undecided prune ran: %v", r.err)
	case <-time.After(100 * time.Millisecond):
	}
	// Waiting, it has a lease, which the prune did not see.
	if keys := repotest.LockKeys(t, repo); len(keys) != 3 {
		t.Errorf("locks %v while the backup waits; want its lease too", keys)
	}
	released.Store(true)
	prune.Release(ctx)
	select {
	case r := <-done:
		if r.err != nil || !r.afterPrune {
			t.Fatalf("backup lease: %v (after the prune's release: %v)", r.err, r.afterPrune)
		}
		if err := r.l.Held(); err != nil {
			t.Errorf("Held right after waiting: %v", err)
		}
		r.l.Release(ctx)
	case <-time.After(5 * time.Second):
		t.Fatal("backup lease not taken after the prune was released")
	}

	// A backup given up while waiting leaves no lease.
	prune = takeLease(t, repo, repository.LockPrune, repository.LeaseOptions{Command: "gc"})
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := repo.TakeLease(cctx, repository.LockBackup, repository.LeaseOptions{Poll: 10 * time.Millisecond}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("backup lease with a context that ends while waiting: %v", err)
	}
	if keys := repotest.LockKeys(t, repo); !slices.Equal(keys, sortedKeys(seen.Key(), prune.Key())) {
		t.Errorf("locks %v after a backup gave up; want %s and %s", keys, seen.Key(), prune.Key())
	}
}

func sortedKeys(keys ...string) []string {
	slices.Sort(keys)
	return keys
}

// twoBackups commits backup 0 (WAL segments 3–4) and backup 1 (segment
// 5), which share no chunk but the last of base.tar.
func twoBackups(t *testing.T, repo *repository.Repository) (b0, b1 *manifest.Backup) {
	t.Helper()
	for i, seed := range []uint64{1, 2} {
		b, _ := repotest.Commit(t, repo, repotest.Spec{
			ID:           manifest.NewBackupID(repotest.BaseTime.Add(time.Duration(i) * time.Hour)),
			Archives:     []repotest.Archive{{Name: "base.tar", Members: repotest.BaseMembers(seed)}},
			StartSegment: 3 + 2*uint64(i), Segments: 2 - uint64(i),
			Finished: repotest.BaseTime.Add(time.Duration(i)*time.Hour + time.Minute),
		})
		if i == 0 {
			b0 = b
		} else {
			b1 = b
		}
	}
	return b0, b1
}

// needed are the keys a backup needs.
func needed(b *manifest.Backup) []string {
	keys := []string{repository.BackupManifestKey(b.ID), repository.PGManifestKey(b.ID)}
	for _, c := range b.Archives[0].Chunks {
		if !slices.Contains(keys, repository.ChunkKey(c.ID)) {
			keys = append(keys, repository.ChunkKey(c.ID))
		}
	}
	for _, w := range b.WAL {
		keys = append(keys, repository.WALKey(w.Name))
	}
	return keys
}

// removed returns the keys of before that are not in after, sorted.
func removed(before, after []string) []string {
	var out []string
	for _, k := range before {
		if !slices.Contains(after, k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// TestLiveBackupDefers: while a backup runs, delete removes manifests but
// leaves chunks and WAL, and gc leaves them too, with a backup's
// uncommitted objects; once it has finished, gc removes them all.
func TestLiveBackupDefers(t *testing.T) {
	ctx := t.Context()
	store := mem.New()
	repo := repository.New(store)
	b0, b1 := twoBackups(t, repo)
	lease := takeLease(t, repo, repository.LockBackup, repository.LeaseOptions{Command: "backup"})

	before := store.Keys()
	dry, err := catalog.Delete(ctx, repo, catalog.Retention{RetainLast: 1}, catalog.PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := catalog.Delete(ctx, repo, catalog.Retention{RetainLast: 1}, catalog.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*catalog.Report{"dry run": dry, "delete": rep} {
		if len(r.RunningBackup) != 1 || r.Manifests.Count != 2 || r.Chunks.Count != 0 || r.WAL.Count != 0 || r.Deferred.Count == 0 {
			t.Errorf("%s with a backup running: %+v; want manifests removed, chunks and WAL deferred", name, r)
		}
	}
	deferred := slices.Sorted(slices.Values(dry.Deferred.Keys))
	if rep.Deferred.Count != len(deferred) || rep.Deferred.Bytes != dry.Deferred.Bytes {
		t.Errorf("delete deferred %d objects (%d bytes), the dry run %d (%d bytes)", rep.Deferred.Count, rep.Deferred.Bytes, len(deferred), dry.Deferred.Bytes)
	}
	wantDeferred := []string{repository.WALKey(b0.WAL[0].Name), repository.WALKey(b0.WAL[1].Name)}
	for _, k := range needed(b0)[2:] {
		if !slices.Contains(needed(b1), k) && !slices.Contains(wantDeferred, k) {
			wantDeferred = append(wantDeferred, k)
		}
	}
	slices.Sort(wantDeferred)
	if !slices.Equal(deferred, wantDeferred) {
		t.Errorf("deferred %q, want backup 0's own chunks and WAL %q", deferred, wantDeferred)
	}
	if got, want := removed(before, store.Keys()), sortedKeys(repository.BackupManifestKey(b0.ID), repository.PGManifestKey(b0.ID)); !slices.Equal(got, want) {
		t.Errorf("delete removed %q, want only %q", got, want)
	}

	// The running backup has stored its backup_manifest, not yet its
	// manifest: gc must leave it alone too.
	running := repository.PGManifestKey(manifest.NewBackupID(repotest.BaseTime.Add(5 * time.Hour)))
	if err := store.Put(ctx, running, strings.NewReader("{}"), 2, providers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	before = store.Keys()
	gc, err := catalog.GC(ctx, repo, catalog.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(gc.RunningBackup) != 1 || gc.Deferred.Count != len(deferred)+1 || gc.Chunks.Count+gc.WAL.Count+gc.Leftovers.Count+gc.Locks.Count != 0 {
		t.Errorf("gc with a backup running: %+v; want %d objects deferred and nothing removed", gc, len(deferred)+1)
	}
	if got := removed(before, store.Keys()); len(got) != 0 {
		t.Errorf("gc removed %q while a backup ran", got)
	}
	if err := lease.Held(); err != nil {
		t.Errorf("running backup's lease: %v", err)
	}

	lease.Release(ctx)
	gc, err = catalog.GC(ctx, repo, catalog.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(gc.RunningBackup) != 0 || gc.Deferred.Count != 0 || gc.Chunks.Count+gc.WAL.Count != len(deferred) || gc.Leftovers.Count != 1 {
		t.Errorf("gc after the backup finished: %+v; want the %d deferred objects and the leftover removed", gc, len(deferred))
	}
	if got, want := store.Keys(), sortedKeys(append(needed(b1), repository.RepoKey)...); !slices.Equal(got, want) {
		t.Errorf("objects left %q, want what backup 1 needs %q", got, want)
	}
}

// waitFor polls cond until it holds, failing after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLapsedLease: a backup whose process hangs stops refreshing its
// lease; it learns that it lapsed, others ignore it once it expired, and
// gc removes it.
func TestLapsedLease(t *testing.T) {
	// Fake time: waiting out the TTL costs no wall-clock time.
	synctest.Test(t, testLapsedLease)
}

func testLapsedLease(t *testing.T) {
	ctx := t.Context()
	store := &stallStore{Store: mem.New()}
	repo := repository.New(store)
	b0, _ := twoBackups(t, repo)
	lease := takeLease(t, repo, repository.LockBackup, repository.LeaseOptions{Command: "backup", TTL: time.Second})
	store.stall(func(key string) bool { return key == lease.Key() })

	waitFor(t, 3*time.Second, "lease lapsed", func() bool { return lease.Held() != nil })
	if err := lease.Held(); !errors.Is(err, repository.ErrLeaseLapsed) {
		t.Errorf("Held of a lease not refreshed for 4/5 of its TTL: %v", err)
	}
	waitFor(t, 3*time.Second, "lease expired", func() bool {
		locks, err := repo.Locks(ctx)
		return err == nil && len(locks) == 1 && repository.Stale(locks[0], time.Now())
	})

	rep, err := catalog.Delete(ctx, repo, catalog.Retention{RetainLast: 1}, catalog.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.RunningBackup) != 0 || rep.Deferred.Count != 0 || rep.Chunks.Count == 0 || rep.WAL.Count != 2 {
		t.Errorf("delete with an expired lease: %+v; want nothing deferred", rep)
	}
	// Which is why a backup whose lease lapsed checks before it commits.
	if err := repo.CheckStored(ctx, b0); err == nil || !strings.Contains(err.Error(), "no longer stored") {
		t.Errorf("CheckStored after its chunks were deleted: %v", err)
	}
	gc, err := catalog.GC(ctx, repo, catalog.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gc.Locks.Count != 1 || len(gc.RunningBackup) != 0 {
		t.Errorf("gc: %+v; want the expired lease removed", gc)
	}
	if keys := repotest.LockKeys(t, repo); len(keys) != 0 {
		t.Errorf("locks after gc: %v", keys)
	}
	// The store comes back and the lease is written again: the lapse
	// must not be forgotten, since gc already took the backup's chunks.
	store.stall(nil)
	waitFor(t, 3*time.Second, "lease rewritten", func() bool { return len(repotest.LockKeys(t, repo)) == 1 })
	if err := lease.Held(); !errors.Is(err, repository.ErrLeaseLapsed) {
		t.Errorf("Held after refreshes resumed: %v; want the lapse remembered", err)
	}
}

// TestPruneStopsWhenItsLockLapses: a delete that hangs past its lock's
// TTL must not go on deleting, since a backup may since have started
// without waiting for it.
func TestPruneStopsWhenItsLockLapses(t *testing.T) {
	// Fake time: the hang below costs no wall-clock time.
	synctest.Test(t, testPruneStopsWhenItsLockLapses)
}

func testPruneStopsWhenItsLockLapses(t *testing.T) {
	ctx := t.Context()
	objects := mem.New()
	store := &stallStore{Store: objects}
	repo := repository.New(store)
	b0, b1 := twoBackups(t, repo)
	before := objects.Keys()
	store.onDelete = func(string) {
		// The first deletion hangs, and so do the lock's refreshes, for
		// longer than 4/5 of the TTL.
		store.stall(func(key string) bool { return strings.HasPrefix(key, repository.LocksPrefix) })
		time.Sleep(850 * time.Millisecond)
	}
	_, err := catalog.Delete(ctx, repo, catalog.Retention{RetainLast: 1}, catalog.PruneOptions{LeaseTTL: time.Second, Concurrency: 1})
	if !errors.Is(err, repository.ErrLeaseLapsed) {
		t.Fatalf("delete whose lock lapsed: %v", err)
	}
	if got := removed(before, objects.Keys()); !slices.Equal(got, []string{repository.BackupManifestKey(b0.ID)}) {
		t.Errorf("removed %q; want only the manifest deleted before the lock lapsed", got)
	}
	for _, k := range slices.Concat(needed(b0)[1:], needed(b1)) {
		if !slices.Contains(objects.Keys(), k) {
			t.Errorf("%s removed after the lock lapsed", k)
		}
	}
	if keys := repotest.LockKeys(t, repo); len(keys) != 0 {
		t.Errorf("locks left: %v", keys)
	}
}

// TestRestoreLease: a restore lease names its backup; a prune sees it and
// records it, and a restore that starts after the prune decided waits for
// it, as a backup does.
func TestRestoreLease(t *testing.T) {
	ctx := t.Context()
	repo := repository.New(mem.New())
	if _, err := repo.TakeLease(ctx, repository.LockRestore, repository.LeaseOptions{Command: "restore"}); err == nil || !strings.Contains(err.Error(), "not a backup id") {
		t.Errorf("restore lease without a backup id: %v", err)
	}
	const id = "20260102T030405Z"
	seen := takeLease(t, repo, repository.LockRestore, repository.LeaseOptions{Command: "restore", Backup: id})
	prune := takeLease(t, repo, repository.LockPrune, repository.LeaseOptions{Command: "delete"})
	others := prune.Others()
	if len(others) != 1 || others[0].Key != seen.Key() || others[0].Backup != id || !strings.HasPrefix(others[0].String(), "restore of "+id+" by ") {
		t.Errorf("prune's others %+v, want the restore of %s", others, id)
	}
	checkPruneDefers(t, repo, prune, seen)

	var released atomic.Bool
	done := make(chan error, 1)
	go func() {
		l, err := repo.TakeLease(ctx, repository.LockRestore, repository.LeaseOptions{Command: "restore", Backup: id, Poll: 10 * time.Millisecond})
		if err == nil {
			if !released.Load() {
				err = errors.New("taken while the prune that did not see it ran")
			}
			l.Release(ctx)
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("restore lease taken while a prune that did not see it ran: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	released.Store(true)
	prune.Release(ctx)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("restore lease not taken after the prune was released")
	}
}

// TestRestoreLeaseDefers: delete leaves whole the backup a live restore
// reads, and only that one; gc removes nothing of it; an expired restore
// lease holds nothing off.
func TestRestoreLeaseDefers(t *testing.T) {
	synctest.Test(t, testRestoreLeaseDefers)
}

func testRestoreLeaseDefers(t *testing.T) {
	ctx := t.Context()
	store := mem.New()
	repo := repository.New(store)
	b0, b1 := twoBackups(t, repo)

	// A restore of the newest backup holds off nothing of the older one.
	l1 := takeLease(t, repo, repository.LockRestore, repository.LeaseOptions{Command: "restore", Backup: b1.ID})
	dry, err := catalog.Delete(ctx, repo, catalog.Retention{RetainLast: 1}, catalog.PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.RunningRestore) != 1 || dry.Deferred.Count != 0 || dry.Manifests.Count != 2 || dry.WAL.Count != 2 || dry.Backups[0].Deferred {
		t.Errorf("dry run with a restore of the kept backup: %+v; want backup 0 and its WAL removed", dry)
	}
	l1.Release(ctx)

	// A restore of the older one keeps it, its chunks and its WAL.
	l0 := takeLease(t, repo, repository.LockRestore, repository.LeaseOptions{Command: "restore", Backup: b0.ID, TTL: time.Second})
	before := store.Keys()
	for _, r := range []catalog.Retention{{RetainLast: 1}, {IDs: []string{b0.ID}}} {
		rep, err := catalog.Delete(ctx, repo, r, catalog.PruneOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Backups) != 2 || !rep.Backups[0].Deferred || rep.Backups[0].Keep || !strings.Contains(rep.Backups[0].Reason, "restore of "+b0.ID) || rep.Backups[1].Deferred {
			t.Errorf("delete %+v during a restore of %s: decisions %+v; want it deferred, naming the restore", r, b0.ID, rep.Backups)
		}
		if rep.Manifests.Count+rep.Chunks.Count+rep.WAL.Count+rep.Deferred.Count != 0 {
			t.Errorf("delete %+v during a restore of %s: %+v; want nothing removed", r, b0.ID, rep)
		}
	}
	gc, err := catalog.GC(ctx, repo, catalog.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(gc.RunningRestore) != 1 || gc.Chunks.Count+gc.WAL.Count+gc.Leftovers.Count+gc.Locks.Count+gc.Deferred.Count != 0 {
		t.Errorf("gc during a restore: %+v; want nothing removed", gc)
	}
	if got := removed(before, store.Keys()); len(got) != 0 {
		t.Errorf("removed %q while a restore read backup 0", got)
	}

	// The restore hangs: its lease expires, and a delete goes ahead.
	hung := l0.Key()
	l0.Release(ctx) // stops the refreshes; write the lease back as a hung process leaves it
	data, _ := json.Marshal(repository.LockInfo{Kind: repository.LockRestore, Command: "restore", Backup: b0.ID, TTLSeconds: 1})
	if err := store.Put(ctx, hung, bytes.NewReader(data), int64(len(data)), providers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	rep, err := catalog.Delete(ctx, repo, catalog.Retention{IDs: []string{b0.ID}}, catalog.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.RunningRestore) != 0 || rep.Backups[0].Deferred || rep.Manifests.Count != 2 || rep.Chunks.Count == 0 || rep.WAL.Count != 2 {
		t.Errorf("delete with an expired restore lease: %+v; want backup 0 removed", rep)
	}
}
