package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgstow/pgstow/copier"
	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/integration/testserver"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/file"
	"github.com/pgstow/pgstow/providers/s3"
	"github.com/pgstow/pgstow/repository"
)

// chunkPutCounter counts the chunk Puts that reach the store below, by
// key, and calls after with each new count.
type chunkPutCounter struct {
	providers.Store
	mu    sync.Mutex
	keys  []string
	after func(n int)
}

func (s *chunkPutCounter) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, o providers.PutOptions) error {
	err := s.Store.Put(ctx, key, body, size, o)
	if err == nil && strings.HasPrefix(key, repository.ChunksPrefix) {
		s.mu.Lock()
		s.keys = append(s.keys, key)
		n := len(s.keys)
		s.mu.Unlock()
		if s.after != nil {
			s.after(n)
		}
	}
	return err
}

func (s *chunkPutCounter) chunkKeys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.keys)
}

// runCopy runs pgstow copy with --json and returns its result.
func runCopy(t *testing.T, env []string, args ...string) (copier.Result, cliResult) {
	t.Helper()
	r := runCLI(t, 5*time.Minute, env, append([]string{"copy", "--json"}, args...)...)
	var res copier.Result
	if r.stdout != "" {
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatalf("copy %v printed no JSON (exit %d): %v\n%s\n%s", args, r.code, err, r.stdout, r.stderr)
		}
	}
	return res, r
}

// TestCopy copies the backups of one cluster file:// → MinIO (first
// interrupted, then resumed without sending again what arrived), MinIO →
// Azurite (plain → encrypted) and Azurite → file:// (encrypted → plain,
// one backup by retention); each copy restores, passes pg_verifybackup,
// starts and holds the data. A damaged source chunk is named, and the
// backup that holds it is not committed at the destination.
func TestCopy(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	want1 := seedBeforeBackup(t, c)
	srcDir := filepath.Join(pgtest.TempDir(t), "src")
	srcURL := "file://" + srcDir
	id1 := cliBackup(t, c, srcURL)
	c.Exec(t, "postgres", "INSERT INTO committed_before SELECT g, md5(g::text) FROM generate_series(20001, 26000) g")
	want2 := fingerprint(t, c)
	id2 := cliBackup(t, c, srcURL)
	c.Stop(t)

	minio := testserver.StartMinIO(t)
	az := testserver.StartAzurite(t)
	bucket, container := minio.NewBucket(t), az.NewContainer(t)
	s3URL := fmt.Sprintf("s3://%s/dr?endpoint=%s&path_style=true", bucket, minio.Endpoint)
	azURL := "azblob://" + container + "/dr"
	env := []string{"AWS_ACCESS_KEY_ID=" + minio.AccessKey, "AWS_SECRET_ACCESS_KEY=" + minio.SecretKey, "AWS_REGION=" + minio.Region,
		"AZURE_STORAGE_CONNECTION_STRING=" + az.ConnectionString}
	keyFile := writeKeyFile(t, t.TempDir())

	// restoreFrom restores backup id from repoURL and checks it with
	// PostgreSQL's referees and the data.
	restoreFrom := func(t *testing.T, repoURL, id, want string, extra ...string) {
		t.Helper()
		target := filepath.Join(pgtest.TempDir(t), "restored")
		args := append([]string{"restore", "--repo", repoURL, "--backup", id, "-D", target}, extra...)
		if r := runCLI(t, 3*time.Minute, env, args...); r.code != 0 {
			t.Fatalf("restore %s from %s: exit %d: %s", id, repoURL, r.code, r.stderr)
		}
		rc := restoreChecks(t, 15, target)
		if got := fingerprint(t, rc); got != want {
			t.Fatalf("backup %s from %s holds %s, want %s", id, repoURL, got, want)
		}
		rc.Stop(t)
	}

	t.Run("file to MinIO, interrupted and resumed", func(t *testing.T) {
		fs, err := file.Open(t.Context(), srcDir)
		if err != nil {
			t.Fatal(err)
		}
		src := repository.New(fs)
		store, err := s3.Open(t.Context(), s3.Config{Bucket: bucket, Prefix: "dr", Region: minio.Region, Endpoint: minio.Endpoint,
			PathStyle: true, AccessKey: minio.AccessKey, SecretKey: minio.SecretKey})
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		const stopAfter = 5
		first := &chunkPutCounter{Store: store, after: func(n int) {
			if n == stopAfter {
				cancel()
			}
		}}
		if _, err := copier.Copy(ctx, src, repository.New(first), copier.Options{All: true, Parallel: 2}); !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted copy: %v, want context.Canceled", err)
		}
		dst := repository.New(store)
		if ids, err := dst.BackupIDs(t.Context()); err != nil || len(ids) != 0 {
			t.Fatalf("backups committed by the interrupted copy: %v (%v)", ids, err)
		}
		// What arrived is what the store holds: a Put cancelled after its
		// body was sent may have landed without its caller hearing so.
		var arrived []string
		for ch, err := range dst.ChunkFiles(t.Context()) {
			if err != nil {
				t.Fatal(err)
			}
			arrived = append(arrived, ch.Key)
		}
		if n := len(first.chunkKeys()); len(arrived) < n || n < stopAfter {
			t.Fatalf("%d chunks stored before the interruption, %d of them acknowledged; want at least %d acknowledged", len(arrived), n, stopAfter)
		}
		second := &chunkPutCounter{Store: store}
		res, err := copier.Copy(t.Context(), src, repository.New(second), copier.Options{All: true})
		if err != nil {
			t.Fatalf("resumed copy: %v", err)
		}
		again := second.chunkKeys()
		for _, k := range again {
			if slices.Contains(arrived, k) {
				t.Errorf("%s sent again by the resumed copy", k)
			}
		}
		sizes, err := dst.ChunkSizes(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(arrived)+len(again) != len(sizes) || res.ChunksSent != len(again) {
			t.Fatalf("%d chunks before the interruption + %d after, result says %d sent; the destination holds %d", len(arrived), len(again), res.ChunksSent, len(sizes))
		}
		// The command finds everything there.
		out, r := runCopy(t, env, "--repo", srcURL, "--to", s3URL, "--all")
		if r.code != 0 || out.ChunksSent != 0 || out.WALSent != 0 || len(out.Backups) != 2 || out.Backups[1].Status != "present" {
			t.Fatalf("copy again: exit %d %+v\n%s", r.code, out, r.stderr)
		}
		restoreFrom(t, s3URL, id2, want2)
	})

	t.Run("MinIO to Azurite, plain to encrypted", func(t *testing.T) {
		out, r := runCopy(t, env, "--repo", s3URL, "--to", azURL, "--to-encryption-key-file", keyFile, "--all")
		if r.code != 0 || !out.Rekeyed || len(out.Backups) != 2 || out.Backups[0].Status != "copied" || out.ChunksSent == 0 {
			t.Fatalf("copy: exit %d %+v\n%s", r.code, out, r.stderr)
		}
		if r := runCLI(t, time.Minute, env, "list", "--repo", azURL); r.code != 1 || !strings.Contains(r.stderr, "is encrypted") {
			t.Fatalf("the destination is not encrypted: list without its key exits %d: %s", r.code, r.stderr)
		}
		restoreFrom(t, azURL, id1, want1, "--encryption-key-file", keyFile)
	})

	t.Run("Azurite to file, encrypted to plain, by retention", func(t *testing.T) {
		dstDir := filepath.Join(t.TempDir(), "plain")
		dstURL := "file://" + dstDir
		// A forgotten destination key is refused: no decrypted copy
		// unless --to-plain says so.
		if _, r := runCopy(t, env, "--repo", azURL, "--encryption-key-file", keyFile, "--to", dstURL, "--retain-last", "1"); r.code != 1 || !strings.Contains(r.stderr, "--to-plain") {
			t.Fatalf("copy from encrypted to a new plain destination without --to-plain: exit %d, want 1 naming --to-plain:\n%s", r.code, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(dstDir, repository.RepoKey)); err == nil {
			t.Fatalf("the refused copy created %s", repository.RepoKey)
		}
		out, r := runCopy(t, env, "--repo", azURL, "--encryption-key-file", keyFile, "--to", dstURL, "--retain-last", "1", "--to-plain")
		if r.code != 0 || !out.Rekeyed || len(out.Backups) != 1 || out.Backups[0].ID != id2 || out.Backups[0].Status != "copied" {
			t.Fatalf("copy: exit %d %+v\n%s", r.code, out, r.stderr)
		}
		restoreFrom(t, dstURL, id2, want2)
	})

	t.Run("damaged source chunk", func(t *testing.T) {
		b1, b2 := readManifest(t, srcDir, id1), readManifest(t, srcDir, id2)
		var bad string
		for _, ch := range b2.Archives[0].Chunks {
			if !slices.ContainsFunc(b1.Archives[0].Chunks, func(r1 manifest.ChunkRef) bool { return r1.ID == ch.ID }) {
				bad = ch.ID
				break
			}
		}
		if bad == "" {
			t.Fatal("no chunk of the second backup is new")
		}
		defer flipByte(t, filepath.Join(srcDir, filepath.FromSlash(repository.ChunkKey(bad))))()
		dstDir := filepath.Join(t.TempDir(), "dst")
		out, r := runCopy(t, env, "--repo", srcURL, "--to", "file://"+dstDir, "--all")
		if r.code != 1 || !strings.Contains(r.stderr, bad) || !strings.Contains(r.stderr, "damaged") || !strings.Contains(r.stderr, id2) {
			t.Fatalf("copy with a damaged chunk: exit %d, want 1 naming chunk %s of backup %s:\n%s", r.code, bad, id2, r.stderr)
		}
		if len(out.Backups) != 2 || out.Backups[0].Status != "copied" || out.Backups[1].Status != "failed" {
			t.Errorf("result %+v", out)
		}
		if _, err := os.Stat(filepath.Join(dstDir, filepath.FromSlash(repository.BackupManifestKey(id1)))); err != nil {
			t.Errorf("the sound backup before it was not committed: %v", err)
		}
		for _, k := range repoKeys(t, dstDir) {
			if strings.HasPrefix(k, repository.BackupsPrefix+id2) {
				t.Errorf("%s stored at the destination for the backup with the damaged chunk", k)
			}
		}
	})
}
