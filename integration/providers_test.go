package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/backup"
	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/integration/testserver"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/azblob"
	"github.com/pgstow/pgstow/providers/gcs"
	"github.com/pgstow/pgstow/providers/retry"
	"github.com/pgstow/pgstow/providers/s3"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/restore"
)

// cloudStores opens a fresh bucket on each real test server.
func cloudStores(t *testing.T) map[string]func(t *testing.T) providers.Store {
	return map[string]func(t *testing.T) providers.Store{
		"s3-minio": func(t *testing.T) providers.Store {
			srv := testserver.StartMinIO(t)
			return openS3(t, srv, srv.Endpoint)
		},
		"gcs": func(t *testing.T) providers.Store {
			srv := testserver.StartFakeGCS(t)
			s, err := gcs.Open(t.Context(), gcs.Config{Bucket: srv.NewBucket(t), Prefix: "repo", Endpoint: srv.Endpoint})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"azure": func(t *testing.T) providers.Store {
			srv := testserver.StartAzurite(t)
			s, err := azblob.Open(t.Context(), azblob.Config{Container: srv.NewContainer(t), Prefix: "repo", ConnectionString: srv.ConnectionString})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
}

func openS3(t *testing.T, srv *testserver.S3Server, endpoint string) providers.Store {
	s, err := s3.Open(t.Context(), s3.Config{
		Bucket: srv.NewBucket(t), Prefix: "repo", Region: srv.Region, Endpoint: endpoint, PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
		// Small parts, so 16 MiB chunks and WAL segments go multipart.
		PartSize: 5 << 20, MultipartThreshold: 5 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// backupAndRestore takes a backup of c through store and restores it, with
// PostgreSQL's checks; it returns the restored server.
func backupAndRestore(t *testing.T, c *pgtest.Cluster, store providers.Store, want string, chunkSize int) {
	t.Helper()
	repo := repository.New(retry.Wrap(store, retry.Policy{}, testLogger(t)))
	o := backupOpts(t, c)
	o.Uploader.ChunkSize = chunkSize
	b, err := backup.Run(t.Context(), repo, o)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	verifyRepository(t, repo, b)
	target := filepath.Join(pgtest.TempDir(t), "data")
	if _, err := restore.Run(t.Context(), repo, restore.Options{Target: target, Log: testLogger(t)}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	r := restoreChecks(t, c.Major, target)
	if got := fingerprint(t, r); got != want {
		t.Fatalf("committed_before: %s after restore, %s before", got, want)
	}
	amcheck(t, r)
}

// TestProviderBackupRestore: the full round trip through each cloud
// provider's real server.
func TestProviderBackupRestore(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Pgbench(t, "-i", "-s", "3", "postgres")
	want := seedBeforeBackup(t, c)
	for name, open := range cloudStores(t) {
		t.Run(name, func(t *testing.T) {
			backupAndRestore(t, c, open(t), want, 8<<20)
		})
	}
}

// TestFaultyS3: with 5% of requests answered 503 SlowDown and 5% dropped,
// a backup completes and restores bit for bit.
func TestFaultyS3(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Pgbench(t, "-i", "-s", "5", "postgres")
	want := seedBeforeBackup(t, c)
	srv := testserver.StartMinIO(t)
	fp := testserver.StartFaultProxy(t, "http://"+strings.TrimPrefix(srv.Endpoint, "http://"), 0.05, 0.05)
	fp.SetEnabled(false) // bucket creation and the open check
	store := openS3(t, srv, fp.URL)
	fp.SetEnabled(true)
	// Small chunks: hundreds of requests, so dozens of faults.
	backupAndRestore(t, c, store, want, 1<<20)
	t.Logf("proxy: %d requests, %d answered 503, %d dropped", fp.Requests.Load(), fp.Slowdowns.Load(), fp.Drops.Load())
	if fp.Slowdowns.Load() == 0 || fp.Drops.Load() == 0 {
		t.Fatal("no faults were injected: the test proves nothing")
	}
}

// TestProviderErrors: wrong credentials, a missing bucket and an
// unreachable endpoint each fail in seconds with one line naming the
// repository and the cause.
func TestProviderErrors(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	minio := testserver.StartMinIO(t)
	gsrv := testserver.StartFakeGCS(t)
	az := testserver.StartAzurite(t)
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s3env := func(key, secret string) []string {
		return []string{"AWS_ACCESS_KEY_ID=" + key, "AWS_SECRET_ACCESS_KEY=" + secret, "AWS_REGION=us-east-1"}
	}
	s3url := func(bucket, endpoint string) string {
		return fmt.Sprintf("s3://%s/repo?endpoint=%s&path_style=true", bucket, endpoint)
	}
	bucket := minio.NewBucket(t)
	gbucket := gsrv.NewBucket(t)
	container := az.NewContainer(t)
	badAz := strings.Replace(az.ConnectionString, "AccountKey=", "AccountKey=AAAA", 1)
	tests := []struct {
		name     string
		repo     string
		env      []string
		contains []string
	}{
		{"s3 wrong credentials", s3url(bucket, minio.Endpoint), s3env("wrong", "wrongwrong"), []string{"s3://" + bucket, "access denied", "HTTP status 403"}},
		// Off EC2 without credentials the SDK tries the metadata service
		// (here MinIO, which refuses the IMDSv2 token as IMDS does off
		// EC2) and logs "falling back to IMDSv1": only at debug.
		{"s3 no credentials", s3url(bucket, minio.Endpoint), []string{"AWS_REGION=us-east-1", "AWS_EC2_METADATA_SERVICE_ENDPOINT=" + minio.Endpoint,
			"AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent"}, []string{"s3://" + bucket, "no usable AWS credentials"}},
		{"s3 missing bucket", s3url("no-such-bucket", minio.Endpoint), s3env(minio.AccessKey, minio.SecretKey), []string{"no-such-bucket", "does not exist"}},
		{"s3 unreachable", s3url(bucket, "http://"+dead), s3env(minio.AccessKey, minio.SecretKey), []string{dead}},
		{"gcs missing bucket", "gs://no-such-bucket/repo", []string{"STORAGE_EMULATOR_HOST=" + strings.TrimPrefix(gsrv.Endpoint, "http://")}, []string{"no-such-bucket", "does not exist"}},
		{"gcs unreachable", "gs://" + gbucket + "/repo", []string{"STORAGE_EMULATOR_HOST=" + dead}, []string{dead}},
		{"azure wrong key", "azblob://" + container + "/repo", []string{"AZURE_STORAGE_CONNECTION_STRING=" + badAz}, []string{container, "access denied"}},
		{"azure missing container", "azblob://no-such-container/repo", []string{"AZURE_STORAGE_CONNECTION_STRING=" + az.ConnectionString}, []string{"no-such-container", "does not exist"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			r := runCLI(t, 2*time.Minute, tt.env, "backup", "--repo", tt.repo, "--pg", c.DSN("postgres"), "--log-level", "error")
			took := time.Since(start)
			t.Logf("exit %d after %s: %s", r.code, took.Round(time.Millisecond), r.stderr)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1", r.code)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if len(lines) != 1 {
				t.Fatalf("want one line, got:\n%s", r.stderr)
			}
			for _, s := range tt.contains {
				if !strings.Contains(strings.ToLower(lines[0]), strings.ToLower(s)) {
					t.Errorf("error lacks %q", s)
				}
			}
			if took > 20*time.Second {
				t.Errorf("took %s to fail, want seconds", took)
			}
			if strings.Contains(r.stderr, "wrongwrong") || strings.Contains(r.stderr, "AccountKey=") {
				t.Error("a secret appears in the error")
			}
			if strings.Contains(r.stderr, "https response error") {
				t.Error("an answer over plain HTTP is called an https response error")
			}
		})
	}
}
