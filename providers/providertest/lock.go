package providertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pgstow/pgstow/providers"
)

// LockStores is what RunLockSuite needs of a store that can lock objects
// (providers.Locker). Retention cannot be lifted by the suite, so it uses
// short retentions and waits for them to expire: a few seconds against
// an emulator; a stand-in server with its own clock can make Wait jump.
type LockStores struct {
	// Open returns a new, empty store on a bucket (container) where
	// objects can be locked. It is called from parallel subtests.
	Open func(t *testing.T) providers.Store
	// OpenUnlockable returns a new, empty store on a bucket of the same
	// kind where objects cannot be locked (no object lock, no
	// version-level immutability, no object retention).
	OpenUnlockable func(t *testing.T) providers.Store
	// Retention is how long the suite locks objects; keep it short
	// (seconds), since the suite waits for it to pass. Zero means 3 s.
	Retention time.Duration
	// Wait lets d pass on the store's clock (a stand-in's own clock).
	// Nil means a real server's: the suite then retries each deletion
	// until the store lets it (DeleteWhenUnlocked).
	Wait func(t *testing.T, d time.Duration)
	// Versions, if set, counts what the bucket still keeps of key in any
	// form (current and non-current versions, delete markers), so that
	// the suite can check that Delete leaves nothing behind.
	Versions func(t *testing.T, s providers.Store, key string) int
	// LargeSize, if not zero, is the size of one more locked object,
	// large enough for the store's multipart (block, resumable) upload,
	// which must set the lock in the request that creates the object.
	LargeSize int
}

// lockSlack is how far a store may round the dates it is given: S3 keeps
// milliseconds, Azure and GCS may keep whole seconds.
const lockSlack = time.Second

// RunLockSuite checks a providers.Locker store against the contract of
// providers/lock.go, in each lock mode:
//   - Put with a Retention locks the object as it creates it, and
//     Locker.Retention reports that lock (mode, and date within 1 s);
//     an object put without one has the zero Retention, a missing key
//     is ErrNotExist;
//   - Delete before the date fails with a *providers.LockedError
//     (errors.Is ErrLocked) naming the key and the date, and the object
//     stays readable;
//   - ExtendRetention makes the lock later and never earlier or weaker;
//   - once the date has passed Delete removes the object, leaving no
//     version behind (when Versions is set);
//   - Put with a Retention into an unlockable bucket fails with
//     ErrLockUnsupported and stores nothing, and its LockConfig says
//     Enabled false while the lockable one says true.
func RunLockSuite(t *testing.T, st LockStores) {
	if st.Retention == 0 {
		st.Retention = 3 * time.Second
	}
	for _, mode := range []providers.LockMode{providers.LockGovernance, providers.LockCompliance} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			testLockLifecycle(t, st, mode)
		})
	}
	t.Run("Unsupported", func(t *testing.T) {
		t.Parallel()
		testLockUnsupported(t, st)
	})
}

// asLocker finds the store's Locker or fails the test.
func asLocker(t *testing.T, s providers.Store) providers.Locker {
	t.Helper()
	l, ok := providers.AsLocker(s)
	if !ok {
		t.Fatalf("%s does not implement providers.Locker", s)
	}
	return l
}

// checkRetention compares a store's report of a lock with what was asked,
// allowing the store to round the date by lockSlack.
func checkRetention(t *testing.T, l providers.Locker, key string, want providers.Retention) {
	t.Helper()
	got, err := l.Retention(t.Context(), key)
	if err != nil {
		t.Fatalf("Retention(%q): %v", key, err)
	}
	if want.IsZero() {
		if !got.IsZero() {
			t.Errorf("Retention(%q) = %+v, want none", key, got)
		}
		return
	}
	if got.Mode != want.Mode || got.Until.Before(want.Until.Add(-lockSlack)) || got.Until.After(want.Until.Add(lockSlack)) {
		t.Errorf("Retention(%q) = %s until %s, want %s until %s (±%s)", key, got.Mode, got.Until.UTC().Format(time.RFC3339Nano),
			want.Mode, want.Until.UTC().Format(time.RFC3339Nano), lockSlack)
	}
}

// checkLocked deletes a locked key and checks the refusal.
func checkLocked(t *testing.T, s providers.Store, key string, want providers.Retention) {
	t.Helper()
	err := s.Delete(t.Context(), key)
	if !errors.Is(err, providers.ErrLocked) {
		t.Fatalf("Delete(%q) of a locked object = %v, want ErrLocked", key, err)
	}
	var le *providers.LockedError
	if !errors.As(err, &le) {
		t.Fatalf("Delete(%q) = %v (%T), want a *providers.LockedError", key, err, err)
	}
	if le.Key != key {
		t.Errorf("LockedError.Key = %q, want %q", le.Key, key)
	}
	if le.Until.Before(want.Until.Add(-lockSlack)) || le.Until.After(want.Until.Add(lockSlack)) {
		t.Errorf("LockedError.Until = %s, want %s (±%s)", le.Until, want.Until, lockSlack)
	}
}

func testLockLifecycle(t *testing.T, st LockStores, mode providers.LockMode) {
	s := st.Open(t)
	l := asLocker(t, s)
	cfg, err := l.LockConfig(t.Context())
	if err != nil {
		t.Fatalf("LockConfig: %v", err)
	}
	if !cfg.Enabled {
		t.Errorf("LockConfig of a lockable bucket = %+v, want Enabled", cfg)
	}

	r := providers.Retention{Mode: mode, Until: time.Now().Add(st.Retention)}
	locked := content(1, 1000)
	put(t, s, "lock/a", locked, providers.PutOptions{Retention: r, IfAbsent: true, CRC32C: crc32c(locked), HasCRC32C: true})
	put(t, s, "lock/plain", []byte("unlocked"), providers.PutOptions{})
	var large []byte
	if st.LargeSize > 0 {
		large = content(2, st.LargeSize)
		put(t, s, "lock/large", large, providers.PutOptions{Retention: r, CRC32C: crc32c(large), HasCRC32C: true})
	}

	checkRetention(t, l, "lock/a", r)
	checkRetention(t, l, "lock/plain", providers.Retention{})
	if _, err := l.Retention(t.Context(), "lock/missing"); !errors.Is(err, providers.ErrNotExist) {
		t.Errorf("Retention of a missing key = %v, want ErrNotExist", err)
	}
	if err := s.Delete(t.Context(), "lock/plain"); err != nil {
		t.Errorf("Delete of an unlocked object: %v", err)
	}
	checkNotExist(t, s, "lock/plain")

	checkLocked(t, s, "lock/a", r)
	checkObject(t, s, "lock/a", locked)
	if large != nil {
		checkRetention(t, l, "lock/large", r)
		checkLocked(t, s, "lock/large", r)
		checkObject(t, s, "lock/large", large)
	}

	// Later, then earlier: the lock ends at the later date.
	later := providers.Retention{Mode: mode, Until: r.Until.Add(2 * time.Second)}
	if err := l.ExtendRetention(t.Context(), "lock/a", later); err != nil {
		t.Fatalf("ExtendRetention(%q) to %s: %v", "lock/a", later.Until, err)
	}
	checkRetention(t, l, "lock/a", later)
	if err := l.ExtendRetention(t.Context(), "lock/a", r); err != nil {
		t.Fatalf("ExtendRetention(%q) to an earlier date: %v, want no error", "lock/a", err)
	}
	checkRetention(t, l, "lock/a", later)
	if mode == providers.LockCompliance {
		// Asking for governance must not weaken a compliance lock.
		if err := l.ExtendRetention(t.Context(), "lock/a", providers.Retention{Mode: providers.LockGovernance, Until: later.Until}); err != nil {
			t.Fatalf("ExtendRetention(%q) in governance mode: %v", "lock/a", err)
		}
		checkRetention(t, l, "lock/a", later)
	}
	if err := l.ExtendRetention(t.Context(), "lock/missing", later); !errors.Is(err, providers.ErrNotExist) {
		t.Errorf("ExtendRetention of a missing key = %v, want ErrNotExist", err)
	}
	checkLocked(t, s, "lock/a", later)

	if st.Wait != nil {
		st.Wait(t, time.Until(later.Until)+lockSlack+500*time.Millisecond)
	}
	keys := []string{"lock/a"}
	if large != nil {
		keys = append(keys, "lock/large")
	}
	for _, key := range keys {
		del := s.Delete
		if st.Wait == nil {
			del = func(ctx context.Context, key string) error {
				return DeleteWhenUnlocked(ctx, s, key, later.Until.Add(lockSlack+time.Minute))
			}
		}
		if err := del(t.Context(), key); err != nil {
			t.Fatalf("Delete(%q) after its lock expired: %v", key, err)
		}
		checkNotExist(t, s, key)
		if st.Versions != nil {
			if n := st.Versions(t, s, key); n != 0 {
				t.Errorf("after Delete(%q) the bucket keeps %d versions or delete markers of it, want none", key, n)
			}
		}
	}
	checkList(t, s, "", nil)
}

func testLockUnsupported(t *testing.T, st LockStores) {
	s := st.OpenUnlockable(t)
	for _, mode := range []providers.LockMode{providers.LockGovernance, providers.LockCompliance} {
		key := fmt.Sprintf("unsupported/%s", mode)
		data := []byte("must not be stored")
		r := providers.Retention{Mode: mode, Until: time.Now().Add(time.Hour)}
		err := s.Put(t.Context(), key, bytes.NewReader(data), int64(len(data)), providers.PutOptions{Retention: r})
		if !errors.Is(err, providers.ErrLockUnsupported) {
			t.Errorf("Put(%q) with a retention into an unlockable bucket = %v, want ErrLockUnsupported", key, err)
		}
		checkNotExist(t, s, key)
	}
	if st.LargeSize > 0 {
		data := content(3, st.LargeSize)
		err := s.Put(t.Context(), "unsupported/large", bytes.NewReader(data), int64(len(data)),
			providers.PutOptions{Retention: providers.Retention{Mode: providers.LockGovernance, Until: time.Now().Add(time.Hour)}})
		if !errors.Is(err, providers.ErrLockUnsupported) {
			t.Errorf("large Put with a retention into an unlockable bucket = %v, want ErrLockUnsupported", err)
		}
		checkNotExist(t, s, "unsupported/large")
	}
	checkList(t, s, "", nil)
	if l, ok := providers.AsLocker(s); ok {
		cfg, err := l.LockConfig(t.Context())
		if err != nil {
			t.Fatalf("LockConfig of an unlockable bucket: %v", err)
		}
		if cfg.Enabled {
			t.Errorf("LockConfig of an unlockable bucket = %+v, want not Enabled", cfg)
		}
		put(t, s, "unsupported/plain", []byte("x"), providers.PutOptions{})
		err = l.ExtendRetention(t.Context(), "unsupported/plain", providers.Retention{Mode: providers.LockGovernance, Until: time.Now().Add(time.Hour)})
		if !errors.Is(err, providers.ErrLockUnsupported) {
			t.Errorf("ExtendRetention in an unlockable bucket = %v, want ErrLockUnsupported", err)
		}
		if err := s.Delete(t.Context(), "unsupported/plain"); err != nil {
			t.Errorf("Delete: %v", err)
		}
	}
}

// DeleteWhenUnlocked deletes key as soon as the store lets it: it asks
// again every 100 ms while the answer is ErrLocked, until deadline, and
// returns the last answer. Tests use it to wait for a lock to end by the
// store's own clock rather than sleep by theirs.
func DeleteWhenUnlocked(ctx context.Context, s providers.Store, key string, deadline time.Time) error {
	for {
		err := s.Delete(ctx, key)
		if !errors.Is(err, providers.ErrLocked) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitUnlocked returns once the store's clock has passed until: a probe
// object locked until then (and removed again) can be deleted. When until
// is already past or about to be (a slow machine), the probe is locked a
// little into the future instead, since a store refuses a lock that ends
// in the past; passing that later time passes until too.
func WaitUnlocked(t *testing.T, s providers.Store, until time.Time) {
	t.Helper()
	if soonest := time.Now().Add(2 * time.Second); until.Before(soonest) {
		until = soonest
	}
	key := fmt.Sprintf("lock-probe-%d", time.Now().UnixNano())
	body := []byte("probe")
	if err := s.Put(t.Context(), key, bytes.NewReader(body), int64(len(body)),
		providers.PutOptions{IfAbsent: true, Retention: providers.Retention{Mode: providers.LockGovernance, Until: until}}); err != nil {
		t.Fatalf("put a lock probe: %v", err)
	}
	if err := DeleteWhenUnlocked(t.Context(), s, key, until.Add(time.Minute)); err != nil {
		t.Fatalf("wait for the store's clock to pass %s: %v", until.Format(time.RFC3339), err)
	}
}
