package gcs

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/testserver"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/providertest"
)

// TestLockSuite runs the lock conformance suite: the lockable bucket is a
// stand-in server (fake-gcs-server does not enforce retention, see
// standIn), the unlockable one a bucket of fake-gcs-server, which has no
// object retention.
func TestLockSuite(t *testing.T) {
	srv := testserver.StartFakeGCS(t)
	var standIns sync.Map // *testing.T → *standIn
	providertest.RunLockSuite(t, providertest.LockStores{
		Open: func(t *testing.T) providers.Store {
			f := newStandIn(t)
			standIns.Store(t, f)
			return openOn(t, f.srv.URL, standInBucket, "")
		},
		OpenUnlockable: openStore(srv),
		Wait: func(t *testing.T, d time.Duration) {
			f, _ := standIns.Load(t)
			f.(*standIn).wait(d)
		},
		Versions: func(t *testing.T, _ providers.Store, key string) int {
			f, _ := standIns.Load(t)
			f.(*standIn).mu.Lock()
			defer f.(*standIn).mu.Unlock()
			if f.(*standIn).objects[key] != nil {
				return 1
			}
			return 0
		},
		LargeSize: 2*chunkUnitBytes + 1,
	})
}

// TestRetentionNotKept checks that an object a server stored without the
// retention it was sent with does not stay: Put deletes it and fails with
// ErrLockUnsupported.
func TestRetentionNotKept(t *testing.T) {
	f := newStandIn(t)
	f.dropRetention = true
	s := openOn(t, f.srv.URL, standInBucket, "")
	for _, size := range []int{10, 2*chunkUnitBytes + 1} {
		data := strings.Repeat("x", size)
		err := s.Put(t.Context(), "k", strings.NewReader(data), int64(size), providers.PutOptions{
			Retention: providers.Retention{Mode: providers.LockGovernance, Until: time.Now().Add(time.Hour)},
		})
		if !errors.Is(err, providers.ErrLockUnsupported) {
			t.Errorf("Put of %d bytes = %v, want ErrLockUnsupported", size, err)
		}
		if n := f.count(); n != 0 {
			t.Errorf("after Put of %d bytes the bucket holds %d objects, want none", size, n)
		}
	}
}

// TestFakeGCSRetention checks the uploads' requests against
// fake-gcs-server, which stores the retention of multipart and
// resumable uploads and patches an Unlocked one, behind a proxy that
// reports object retention as enabled on the bucket (fake-gcs-server's
// buckets have no objectRetention field).
func TestFakeGCSRetention(t *testing.T) {
	srv := testserver.StartFakeGCS(t)
	bucket := srv.NewBucket(t)
	target, _ := url.Parse("http://" + srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/storage/v1/b/"+bucket {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"name":"`+bucket+`","objectRetention":{"mode":"Enabled"}}`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	s := openOn(t, proxy.URL, bucket, "")
	r := providers.Retention{Mode: providers.LockGovernance, Until: time.Now().Add(time.Hour).Truncate(time.Millisecond)}
	for _, size := range []int{10, 2*chunkUnitBytes + 1} {
		data := strings.Repeat("y", size)
		if err := s.Put(t.Context(), "k", strings.NewReader(data), int64(size), providers.PutOptions{Retention: r}); err != nil {
			t.Fatalf("Put of %d bytes: %v", size, err)
		}
		got, err := s.Retention(t.Context(), "k")
		if err != nil || got.Mode != r.Mode || !got.Until.Equal(r.Until) {
			t.Fatalf("Retention after Put of %d bytes = %+v, %v; want %+v", size, got, err, r)
		}
		later := providers.Retention{Mode: r.Mode, Until: r.Until.Add(time.Hour)}
		if err := s.ExtendRetention(t.Context(), "k", later); err != nil {
			t.Fatalf("ExtendRetention: %v", err)
		}
		if got, err := s.Retention(t.Context(), "k"); err != nil || !got.Until.Equal(later.Until) {
			t.Fatalf("Retention after ExtendRetention = %+v, %v; want until %s", got, err, later.Until)
		}
		// fake-gcs-server does not refuse this delete, as GCS would.
		if err := s.Delete(t.Context(), "k"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
}

// TestLockedError checks which object states make a refused delete a
// LockedError, and with which date.
func TestLockedError(t *testing.T) {
	now := time.Now()
	soon, later, past := now.Add(time.Hour), now.Add(2*time.Hour), now.Add(-time.Hour)
	for _, tc := range []struct {
		name string
		st   lockState
		want *providers.LockedError
	}{
		{"nothing", lockState{}, nil},
		{"expired", lockState{Retention: &objectRetention{Mode: "Locked", RetainUntilTime: past}}, nil},
		{"retention", lockState{Retention: &objectRetention{Mode: "Locked", RetainUntilTime: soon}},
			&providers.LockedError{Key: "k", Until: soon, Mode: providers.LockCompliance}},
		{"bucket policy later", lockState{Retention: &objectRetention{Mode: "Unlocked", RetainUntilTime: soon}, RetentionExpirationTime: later},
			&providers.LockedError{Key: "k", Until: later, Mode: providers.LockGovernance}},
		{"hold", lockState{TemporaryHold: true}, &providers.LockedError{Key: "k", Hold: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := lockedError("k", tc.st)
			if (got == nil) != (tc.want == nil) || got != nil && (*got != *tc.want) {
				t.Errorf("lockedError = %+v, want %+v", got, tc.want)
			}
		})
	}
}
