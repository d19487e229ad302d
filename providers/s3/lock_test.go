package s3

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pgstow/pgstow/integration/testserver"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/providertest"
)

// TestObjectLock runs the Locker contract against MinIO with Object
// Lock: locks set by Put (single and multipart), reported by Retention,
// refused deletions as LockedError, extensions that never shorten, and
// deletions that leave no version or delete marker behind.
func TestObjectLock(t *testing.T) {
	srv := testserver.StartMinIO(t)
	for _, mode := range []providers.LockMode{providers.LockGovernance, providers.LockCompliance} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			bucket := srv.NewLockedBucket(t)
			s := openStore(t, testConfig(srv, bucket, "p"))
			ctx := t.Context()

			c, err := s.LockConfig(ctx)
			if err != nil || !c.Enabled || !c.Versioning || c.DefaultPeriod != 0 {
				t.Fatalf("LockConfig = %+v, %v; want enabled, versioning, no default", c, err)
			}
			until := time.Now().Add(6 * time.Second).Truncate(time.Second)
			ret := providers.Retention{Mode: mode, Until: until}
			small := []byte("locked object")
			big := bytes.Repeat([]byte("m"), MinPartSize+10)
			for key, data := range map[string][]byte{"small": small, "big": big} {
				if err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data)),
					providers.PutOptions{IfAbsent: true, Retention: ret, CRC32C: crc32c(data), HasCRC32C: true}); err != nil {
					t.Fatalf("Put %s locked: %v", key, err)
				}
				got, err := s.Retention(ctx, key)
				if err != nil || got.Mode != mode || !got.Until.Equal(until) {
					t.Fatalf("Retention(%s) = %+v, %v; want %s until %s", key, got, err, mode, until)
				}
				err = s.Delete(ctx, key)
				var le *providers.LockedError
				if !errors.Is(err, providers.ErrLocked) || !errors.As(err, &le) || !le.Until.Equal(until) || le.Mode != mode {
					t.Fatalf("Delete of locked %s: %v; want a LockedError until %s", key, err, until)
				}
				checkGet(t, s, key, data)
			}

			// Extending never shortens.
			later := until.Add(2 * time.Second)
			if err := s.ExtendRetention(ctx, "small", providers.Retention{Mode: mode, Until: later}); err != nil {
				t.Fatalf("ExtendRetention: %v", err)
			}
			if err := s.ExtendRetention(ctx, "small", providers.Retention{Mode: mode, Until: until.Add(-time.Second)}); err != nil {
				t.Fatalf("ExtendRetention to an earlier date: %v", err)
			}
			if got, err := s.Retention(ctx, "small"); err != nil || !got.Until.Equal(later) {
				t.Fatalf("Retention after extension = %+v, %v; want until %s", got, err, later)
			}

			// An unlocked object is deleted with every version: nothing
			// left, and no older version comes back.
			for range 3 {
				if err := s.Put(ctx, "plain", bytes.NewReader(small), int64(len(small)), providers.PutOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Delete(ctx, "plain"); err != nil {
				t.Fatalf("Delete of an unlocked object: %v", err)
			}
			if n := versions(t, srv, bucket, "p/plain"); n != 0 {
				t.Fatalf("%d versions or delete markers left of a deleted object", n)
			}
			if _, err := s.Stat(ctx, "plain"); !errors.Is(err, providers.ErrNotExist) {
				t.Fatalf("Stat after Delete: %v", err)
			}

			// An older version locked under an unlocked current one: the
			// deletion stops at the lock and the current version stays
			// current (the locked older one must not come back).
			if err := s.Put(ctx, "layered", bytes.NewReader(small), int64(len(small)), providers.PutOptions{Retention: ret}); err != nil {
				t.Fatal(err)
			}
			newer := []byte("newer unlocked version")
			if err := s.Put(ctx, "layered", bytes.NewReader(newer), int64(len(newer)), providers.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, "layered"); !errors.Is(err, providers.ErrLocked) {
				t.Fatalf("Delete over a locked older version: %v, want ErrLocked", err)
			}
			checkGet(t, s, "layered", newer)

			deadline := later.Add(time.Minute)
			if err := providertest.DeleteWhenUnlocked(ctx, s, "layered", deadline); err != nil {
				t.Fatalf("Delete of layered after the lock expired: %v", err)
			}
			for _, key := range []string{"small", "big"} {
				if err := providertest.DeleteWhenUnlocked(ctx, s, key, deadline); err != nil {
					t.Fatalf("Delete of %s after the lock expired: %v", key, err)
				}
			}
			if n := versions(t, srv, bucket, "p/"); n != 0 {
				t.Fatalf("%d versions or delete markers left", n)
			}
		})
	}
	t.Run("unlocked bucket", func(t *testing.T) {
		t.Parallel()
		s := openStore(t, testConfig(srv, srv.NewBucket(t), ""))
		ctx := t.Context()
		c, err := s.LockConfig(ctx)
		if err != nil || c.Enabled {
			t.Fatalf("LockConfig of a plain bucket = %+v, %v", c, err)
		}
		ret := providers.Retention{Mode: providers.LockGovernance, Until: time.Now().Add(time.Hour)}
		for _, n := range []int{10, MinPartSize + 1} {
			data := bytes.Repeat([]byte("x"), n)
			err := s.Put(ctx, "k", bytes.NewReader(data), int64(n), providers.PutOptions{Retention: ret})
			if !errors.Is(err, providers.ErrLockUnsupported) {
				t.Fatalf("locked Put of %d bytes into a plain bucket: %v, want ErrLockUnsupported", n, err)
			}
			if _, err := s.Stat(ctx, "k"); !errors.Is(err, providers.ErrNotExist) {
				t.Fatalf("refused locked Put left an object: %v", err)
			}
		}
	})
}

// versions counts the versions and delete markers under prefix.
func versions(t *testing.T, srv *testserver.S3Server, bucket, prefix string) int {
	t.Helper()
	out, err := adminClient(srv).ListObjectVersions(t.Context(), &s3.ListObjectVersionsInput{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatalf("list object versions: %v", err)
	}
	return len(out.Versions) + len(out.DeleteMarkers)
}

// TestLockSuite runs the providers' lock conformance suite against MinIO
// with Object Lock, counting versions and delete markers left behind.
func TestLockSuite(t *testing.T) {
	srv := testserver.StartMinIO(t)
	buckets := map[providers.Store]string{}
	var mu sync.Mutex
	providertest.RunLockSuite(t, providertest.LockStores{
		Open: func(t *testing.T) providers.Store {
			bucket := srv.NewLockedBucket(t)
			s := openStore(t, testConfig(srv, bucket, "suite"))
			mu.Lock()
			buckets[s] = bucket
			mu.Unlock()
			return s
		},
		OpenUnlockable: func(t *testing.T) providers.Store { return openStore(t, testConfig(srv, srv.NewBucket(t), "suite")) },
		Versions: func(t *testing.T, s providers.Store, key string) int {
			mu.Lock()
			bucket := buckets[s]
			mu.Unlock()
			n := 0
			for _, v := range srv.Versions(t, bucket, "suite/"+key) {
				if v.Key == "suite/"+key {
					n++
				}
			}
			return n
		},
		LargeSize: MinPartSize + 1,
	})
}
