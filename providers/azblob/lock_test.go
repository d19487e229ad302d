package azblob

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/testserver"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/providertest"
)

// TestLockSuite runs the lock conformance suite: the lockable container is
// a stand-in server (Azurite has no versioning nor immutability, see
// standIn), the unlockable one is Azurite's, which ignores the policy
// headers, so only the store's own check keeps an unlocked blob out.
func TestLockSuite(t *testing.T) {
	azurite := testserver.StartAzurite(t)
	var standIns sync.Map // *testing.T → *standIn
	providertest.RunLockSuite(t, providertest.LockStores{
		Open: func(t *testing.T) providers.Store {
			f := newStandIn(t)
			standIns.Store(t, f)
			return openStandIn(t, f)
		},
		OpenUnlockable: func(t *testing.T) providers.Store { return openTest(t, azurite, "") },
		Wait: func(t *testing.T, d time.Duration) {
			f, _ := standIns.Load(t)
			f.(*standIn).wait(d)
		},
		Versions: func(t *testing.T, _ providers.Store, key string) int {
			f, _ := standIns.Load(t)
			return f.(*standIn).versionCount(key)
		},
		LargeSize: 2*testBlockSize + 1,
	})
}

func openStandIn(t *testing.T, f *standIn) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{
		Container:          standInContainer,
		BlockSize:          testBlockSize,
		MultipartThreshold: testBlockSize,
		ConnectionString:   f.connectionString(),
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestDeleteVersions checks that Delete removes every version of a blob
// that was overwritten, and that a locked previous version keeps the
// key's Delete failing with its date, while the unlocked versions go.
func TestDeleteVersions(t *testing.T) {
	f := newStandIn(t)
	s := openStandIn(t, f)
	ctx := t.Context()
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	put := func(data string, r providers.Retention) {
		t.Helper()
		if err := s.Put(ctx, "k", strings.NewReader(data), int64(len(data)), providers.PutOptions{Retention: r}); err != nil {
			t.Fatal(err)
		}
	}
	put("one", providers.Retention{Mode: providers.LockCompliance, Until: until})
	put("two", providers.Retention{})
	put("three", providers.Retention{})
	if n := f.versionCount("k"); n != 3 {
		t.Fatalf("%d versions, want 3", n)
	}
	err := s.Delete(ctx, "k")
	var le *providers.LockedError
	if !errors.As(err, &le) || !le.Until.Equal(until) || le.Mode != providers.LockCompliance || le.Key != "k" {
		t.Fatalf("Delete = %v, want a LockedError until %s in compliance mode", err, until)
	}
	if n := f.versionCount("k"); n != 1 {
		t.Errorf("after Delete %d versions are left, want only the locked one", n)
	}
	f.wait(time.Hour + time.Second)
	if err := s.Delete(ctx, "k"); err != nil {
		t.Fatalf("Delete after expiry: %v", err)
	}
	if n := f.versionCount("k"); n != 0 {
		t.Errorf("after Delete %d versions are left, want none", n)
	}
	if err := s.Delete(ctx, "k"); !errors.Is(err, providers.ErrNotExist) {
		t.Errorf("Delete of a deleted key = %v, want ErrNotExist", err)
	}
}

// TestPolicyUntil checks that dates are rounded up to Azure's whole
// seconds, never down.
func TestPolicyUntil(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct{ in, want time.Time }{
		{base, base},
		{base.Add(time.Nanosecond), base.Add(time.Second)},
		{base.Add(999 * time.Millisecond), base.Add(time.Second)},
	} {
		if got := policyUntil(tc.in); !got.Equal(tc.want) {
			t.Errorf("policyUntil(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
