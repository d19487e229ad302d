package mem

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/providertest"
)

func TestLocks(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	until := now.Add(time.Hour)
	ctx := t.Context()
	for _, mode := range []providers.LockMode{providers.LockGovernance, providers.LockCompliance} {
		t.Run(string(mode), func(t *testing.T) {
			s := NewLocking()
			clock := now
			s.SetClock(func() time.Time { return clock })
			ret := providers.Retention{Mode: mode, Until: until}
			if err := s.Put(ctx, "k", bytes.NewReader([]byte("x")), 1, providers.PutOptions{Retention: ret}); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Retention(ctx, "k"); err != nil || got != ret {
				t.Fatalf("Retention = %+v, %v; want %+v", got, err, ret)
			}
			var le *providers.LockedError
			if err := s.Delete(ctx, "k"); !errors.As(err, &le) || !errors.Is(err, providers.ErrLocked) || !le.Until.Equal(until) {
				t.Fatalf("Delete of a locked object: %v", err)
			}
			if err := s.Put(ctx, "k", bytes.NewReader([]byte("y")), 1, providers.PutOptions{}); !errors.Is(err, providers.ErrLocked) {
				t.Fatalf("overwrite of a locked object: %v", err)
			}
			for _, r := range []providers.Retention{
				{Mode: providers.LockGovernance, Until: until.Add(-time.Minute)}, // neither shorter nor weaker
				{Mode: mode, Until: until.Add(time.Hour)},
			} {
				if err := s.ExtendRetention(ctx, "k", r); err != nil {
					t.Fatal(err)
				}
			}
			if got, _ := s.Retention(ctx, "k"); got.Mode != mode || !got.Until.Equal(until.Add(time.Hour)) {
				t.Fatalf("Retention after extensions = %+v", got)
			}
			clock = until.Add(time.Hour)
			if err := s.Delete(ctx, "k"); err != nil {
				t.Fatalf("Delete after expiry: %v", err)
			}
		})
	}
	t.Run("unsupported", func(t *testing.T) {
		s := New()
		ret := providers.Retention{Mode: providers.LockGovernance, Until: until}
		if err := s.Put(ctx, "k", bytes.NewReader([]byte("x")), 1, providers.PutOptions{Retention: ret}); !errors.Is(err, providers.ErrLockUnsupported) {
			t.Fatalf("locked Put into a store without locks: %v", err)
		}
		if len(s.Keys()) != 0 {
			t.Fatal("a refused locked Put stored something")
		}
		if c, err := s.LockConfig(ctx); err != nil || c.Enabled {
			t.Fatalf("LockConfig = %+v, %v", c, err)
		}
	})
	t.Run("through encryption", func(t *testing.T) {
		s := NewLocking()
		key, err := encryption.ParseKey([]byte(strings.Repeat("ab", 32)))
		if err != nil {
			t.Fatal(err)
		}
		l, ok := providers.AsLocker(encryption.Wrap(s, key))
		if !ok {
			t.Fatal("AsLocker does not see through encryption")
		}
		if c, err := l.LockConfig(ctx); err != nil || !c.Enabled {
			t.Fatalf("LockConfig through encryption = %+v, %v", c, err)
		}
	})
}

// TestLockSuite runs the providers' lock conformance suite on the mem
// store, whose clock the suite moves instead of waiting: each subtest's
// store has a clock of its own, as the subtests run in parallel.
func TestLockSuite(t *testing.T) {
	var mu sync.Mutex
	offsets := map[string]time.Duration{}
	providertest.RunLockSuite(t, providertest.LockStores{
		Open: func(t *testing.T) providers.Store {
			s := NewLocking()
			name := t.Name()
			s.SetClock(func() time.Time {
				mu.Lock()
				defer mu.Unlock()
				return time.Now().Add(offsets[name])
			})
			return s
		},
		OpenUnlockable: func(t *testing.T) providers.Store { return New() },
		Wait: func(t *testing.T, d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			offsets[t.Name()] += d
		},
		LargeSize: 1 << 20,
	})
}
