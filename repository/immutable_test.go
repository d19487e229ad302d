package repository_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
)

func immutableRepo(t *testing.T, s providers.Store, mode providers.LockMode, period time.Duration) *repository.Repository {
	t.Helper()
	r := repository.New(s)
	if err := r.SetImmutability(mode, period); err != nil {
		t.Fatal(err)
	}
	return r
}

// testClock is a clock tests move by hand, shared by a store and the
// repositories on it, so that lock dates do not depend on how fast a
// loaded machine runs the test.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Now()} }

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// set moves the clock to t, never back.
func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.t) {
		c.t = t
	}
}

// clocked puts r on clk.
func clocked(r *repository.Repository, clk *testClock) *repository.Repository {
	r.SetClock(clk.now)
	return r
}

func TestImmutableBind(t *testing.T) {
	ctx := t.Context()
	t.Run("store without locks", func(t *testing.T) {
		s := mem.New()
		err := immutableRepo(t, s, providers.LockGovernance, time.Hour).Bind(ctx, repotest.SystemID, repotest.SegSize)
		if !errors.Is(err, repository.ErrLockMismatch) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("Bind of an immutable repository on a store without locks: %v", err)
		}
		if keys := s.Keys(); len(keys) != 0 {
			t.Fatalf("refused Bind stored %v", keys)
		}
	})
	s := mem.NewLocking()
	if err := immutableRepo(t, s, providers.LockCompliance, time.Hour).Bind(ctx, repotest.SystemID, repotest.SegSize); err != nil {
		t.Fatal(err)
	}
	ret, err := s.Retention(ctx, repository.RepoKey)
	if err != nil || ret.Mode != providers.LockCompliance || time.Until(ret.Until) < 59*time.Minute {
		t.Fatalf("pgstow.json lock = %+v, %v", ret, err)
	}
	c, err := repository.New(s).Config(ctx)
	if err != nil || c.FormatVersion != manifest.RepoFormatVersionImmutable || c.Immutability == nil ||
		c.Immutability.Mode != "compliance" || c.Immutability.Retention != "1h0m0s" {
		t.Fatalf("configuration = %+v, %v", c, err)
	}
	for _, tc := range []struct {
		name   string
		mode   providers.LockMode
		period time.Duration
		want   string
	}{
		{"same", providers.LockCompliance, time.Hour, ""},
		{"other mode", providers.LockGovernance, time.Hour, "--lock-mode governance --lock-retention 1h0m0s asked for, but pgstow.json"},
		{"other period", providers.LockCompliance, 2 * time.Hour, "says mode compliance, retention 1h0m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := immutableRepo(t, s, tc.mode, tc.period).Bind(ctx, repotest.SystemID, repotest.SegSize)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, repository.ErrLockMismatch) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Bind = %v, want one containing %q", err, tc.want)
			}
		})
	}
	t.Run("flags on a plain repository", func(t *testing.T) {
		plain := mem.NewLocking()
		if err := repository.New(plain).Bind(ctx, repotest.SystemID, repotest.SegSize); err != nil {
			t.Fatal(err)
		}
		err := immutableRepo(t, plain, providers.LockGovernance, time.Hour).Bind(ctx, repotest.SystemID, repotest.SegSize)
		if !errors.Is(err, repository.ErrLockMismatch) || !strings.Contains(err.Error(), "has no immutability") {
			t.Fatalf("Bind = %v", err)
		}
	})
}

// TestImmutableCommit checks that every object of a backup is locked at
// least as long as its manifest, and that a later backup sharing its
// chunks extends their locks only when the first one's dates fall short.
func TestImmutableCommit(t *testing.T) {
	ctx := t.Context()
	s := mem.NewLocking()
	clk := newTestClock()
	s.SetClock(clk.now)
	const period = 4 * time.Second // headroom 1 s
	archives := []repotest.Archive{{Name: "base.tar", Members: repotest.BaseMembers(1)}}

	r1 := clocked(immutableRepo(t, s, providers.LockGovernance, period), clk)
	b1, _ := repotest.Commit(t, r1, repotest.Spec{ID: "20260102T030405Z", Archives: archives})
	if b1.Retention == nil || b1.Retention.ObjectsUntil.Before(b1.Retention.Until) {
		t.Fatalf("backup retention = %+v", b1.Retention)
	}
	checkLocked := func(b *manifest.Backup) {
		t.Helper()
		keys := []string{repository.BackupManifestKey(b.ID), repository.PGManifestKey(b.ID)}
		for _, a := range b.Archives {
			for _, c := range a.Chunks {
				keys = append(keys, repository.ChunkKey(c.ID))
			}
		}
		for _, w := range b.WAL {
			keys = append(keys, repository.WALKey(w.Name))
		}
		for _, k := range keys {
			ret, err := s.Retention(ctx, k)
			if err != nil || ret.Mode != providers.LockGovernance || ret.Until.Before(b.Retention.Until) {
				t.Fatalf("%s: lock %+v, %v; want governance until %s or later", k, ret, err, b.Retention.Until)
			}
		}
		if err := s.Delete(ctx, repository.BackupManifestKey(b.ID)); !errors.Is(err, providers.ErrLocked) {
			t.Fatalf("delete of a locked manifest: %v", err)
		}
	}
	checkLocked(b1)

	// At once, in another process (no memory of what was written): the
	// first backup's dates cover the second's, nothing is extended.
	r2 := clocked(repository.New(s), clk)
	b2, _ := repotest.Commit(t, r2, repotest.Spec{ID: "20260102T030406Z", Archives: archives, StartSegment: 3})
	checkLocked(b2)
	if n := r2.Extended(); n > int64(len(b2.WAL)) {
		t.Fatalf("%d locks extended for a backup whose chunks the previous one covers", n)
	}

	// Later than the first backup's objects are covered: every chunk is
	// extended, once, to the new date plus the headroom.
	clk.set(b1.Retention.ObjectsUntil.Add(-period + 500*time.Millisecond))
	r3 := clocked(repository.New(s), clk)
	b3, _ := repotest.Commit(t, r3, repotest.Spec{ID: "20260102T030407Z", Archives: archives})
	checkLocked(b3)
	if r3.Extended() == 0 {
		t.Fatal("no lock extended although the previous backup's dates fall short")
	}
	if !b3.Retention.ObjectsUntil.After(b3.Retention.Until) {
		t.Fatalf("extended objects carry no headroom: %+v", b3.Retention)
	}
}

// TestImmutableEncrypted checks that an encrypted immutable repository's
// configuration, whose HMAC covers the lock settings, opens again, and
// that its objects are locked through the encryption layer.
func TestImmutableEncrypted(t *testing.T) {
	ctx := t.Context()
	key, err := encryption.ParseKey([]byte(strings.Repeat("cd", 32)))
	if err != nil {
		t.Fatal(err)
	}
	s := mem.NewLocking()
	r := repository.NewEncrypted(s, key)
	if err := r.SetImmutability(providers.LockGovernance, time.Hour); err != nil {
		t.Fatal(err)
	}
	b, _ := repotest.Commit(t, r, repotest.Spec{ID: "20260102T030405Z", Archives: []repotest.Archive{{Name: "base.tar", Members: repotest.BaseMembers(1)}}})
	again := repository.NewEncrypted(s, key)
	if err := again.CheckKey(ctx); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if ret, err := s.Retention(ctx, repository.ChunkKey(b.Archives[0].Chunks[0].ID)); err != nil || ret.IsZero() {
		t.Fatalf("chunk lock through encryption: %+v, %v", ret, err)
	}
}

// TestCommitRecomputesRetention checks that a manifest arriving with lock
// dates from another repository (pgstow copy) gets this repository's:
// none in a plain one, fresh ones with every object secured in an
// immutable one.
func TestCommitRecomputesRetention(t *testing.T) {
	stale := &manifest.BackupRetention{Mode: "compliance", Until: time.Unix(1, 0), ObjectsUntil: time.Unix(1, 0)}
	archives := []repotest.Archive{{Name: "base.tar", Members: repotest.BaseMembers(1)}}
	plain := repository.New(mem.New())
	b, _ := repotest.Commit(t, plain, repotest.Spec{ID: "20260102T030405Z", Archives: archives,
		Edit: func(b *manifest.Backup) { b.Retention = stale }})
	if got, err := plain.Backup(t.Context(), b.ID); err != nil || got.Retention != nil {
		t.Fatalf("plain repository kept copied lock dates: %+v, %v", got.Retention, err)
	}
	s := mem.NewLocking()
	locked := immutableRepo(t, s, providers.LockGovernance, time.Hour)
	b, _ = repotest.Commit(t, locked, repotest.Spec{ID: "20260102T030405Z", Archives: archives,
		Edit: func(b *manifest.Backup) { b.Retention = stale }})
	if b.Retention == nil || !b.Retention.Until.After(time.Now()) {
		t.Fatalf("immutable repository kept copied lock dates: %+v", b.Retention)
	}
	if ret, err := s.Retention(t.Context(), repository.BackupManifestKey(b.ID)); err != nil || !ret.Until.Equal(b.Retention.Until) {
		t.Fatalf("manifest lock %+v, %v; recorded %s", ret, err, b.Retention.Until)
	}
}

// plainWrapper "wraps" a data key by copying it: enough for a key copy
// whose lock, not its secrecy, is under test.
type plainWrapper struct{}

func (plainWrapper) URI() string { return "test://key" }
func (plainWrapper) Wrap(_ context.Context, dk []byte) (string, []byte, error) {
	return "test://key", append([]byte(nil), dk...), nil
}
func (plainWrapper) Unwrap(_ context.Context, w []byte) ([]byte, error) { return w, nil }

// TestImmutableKeepsConfigAndKeys checks that pgstow.json and the wrapped
// copies of a KMS data key, without which an encrypted repository's
// backups cannot be opened, are locked when made and stay locked at
// least as long as every backup committed after them.
func TestImmutableKeepsConfigAndKeys(t *testing.T) {
	ctx := t.Context()
	s := mem.NewLocking()
	clk := newTestClock()
	s.SetClock(clk.now)
	const period = 4 * time.Second // headroom 1 s
	lock, err := repository.NewObjectRetention(providers.LockCompliance, period)
	if err != nil {
		t.Fatal(err)
	}
	dk, _, err := repository.InitDataKey(ctx, s, plainWrapper{}, lock)
	if err != nil {
		t.Fatal(err)
	}
	copies, err := repository.WrappedKeys(ctx, s)
	if err != nil || len(copies) != 1 {
		t.Fatalf("wrapped copies: %v, %v", copies, err)
	}
	if ret, err := s.Retention(ctx, copies[0].Key); err != nil || ret.Until.Before(time.Now().Add(period)) {
		t.Fatalf("new key copy locked %+v, %v; want until now + %s or later", ret, err, period)
	}
	key, err := encryption.NewKey(dk)
	if err != nil {
		t.Fatal(err)
	}
	archives := []repotest.Archive{{Name: "base.tar", Members: repotest.BaseMembers(1)}}
	check := func(b *manifest.Backup) {
		t.Helper()
		for _, k := range []string{repository.RepoKey, copies[0].Key} {
			ret, err := s.Retention(ctx, k)
			if err != nil || ret.Until.Before(b.Retention.Until) {
				t.Fatalf("%s locked %+v, %v; want until backup %s's %s or later", k, ret, err, b.ID, b.Retention.Until)
			}
		}
	}
	r1 := clocked(repository.NewEncrypted(s, key), clk)
	if err := r1.SetImmutability(providers.LockCompliance, period); err != nil {
		t.Fatal(err)
	}
	b1, _ := repotest.Commit(t, r1, repotest.Spec{ID: "20260102T030405Z", Archives: archives})
	check(b1)
	// After the first backup's dates no longer cover a new one.
	clk.set(b1.Retention.ObjectsUntil.Add(-period + 500*time.Millisecond))
	b2, _ := repotest.Commit(t, clocked(repository.NewEncrypted(s, key), clk), repotest.Spec{ID: "20260102T030407Z", Archives: archives})
	check(b2)
}

// TestImmutablePartialKept checks that a partial WAL snapshot is locked
// and never replaced in an immutable repository (a replacement would
// leave a locked older version behind), while a plain repository still
// replaces it.
func TestImmutablePartialKept(t *testing.T) {
	ctx := t.Context()
	const segment = "000000010000000000000003"
	for _, immutable := range []bool{true, false} {
		s := mem.NewLocking()
		r := repository.New(s)
		if immutable {
			r = immutableRepo(t, s, providers.LockCompliance, time.Hour)
		}
		if err := r.Bind(ctx, repotest.SystemID, repotest.SegSize); err != nil {
			t.Fatal(err)
		}
		if err := r.PutWALPartial(ctx, chunker.NewCompressor(), segment, []byte("first")); err != nil {
			t.Fatal(err)
		}
		key := repository.WALKey(segment + ".partial")
		if ret, err := s.Retention(ctx, key); err != nil || ret.IsZero() != !immutable {
			t.Fatalf("immutable %v: partial snapshot locked %+v, %v", immutable, ret, err)
		}
		err := r.PutWALPartial(ctx, chunker.NewCompressor(), segment, []byte("first and more"))
		switch {
		case immutable && !errors.Is(err, repository.ErrPartialKept):
			t.Fatalf("second snapshot in an immutable repository: %v, want ErrPartialKept", err)
		case !immutable && err != nil:
			t.Fatalf("second snapshot in a plain repository: %v", err)
		}
	}
}
