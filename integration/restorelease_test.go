package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/restore"
)

// gateStore holds every chunk download after the first until open is
// closed: a restore caught in the middle, for as long as a test needs.
type gateStore struct {
	providers.Store
	chunkGets atomic.Int32
	once      sync.Once
	reached   chan struct{} // closed when a download waits at the gate
	open      chan struct{}
}

func (s *gateStore) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if strings.HasPrefix(key, repository.ChunksPrefix) && s.chunkGets.Add(1) > 1 {
		s.once.Do(func() { close(s.reached) })
		select {
		case <-s.open:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
	return s.Store.Get(ctx, key, offset, length)
}

// countChunks counts the chunk objects of a file:// repository.
func countChunks(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, k := range repoKeys(t, dir) {
		if strings.HasPrefix(k, repository.ChunksPrefix) {
			n++
		}
	}
	return n
}

// TestDeleteDuringRestore: "pgstow delete" of the backup a restore is
// reading defers it and says so; the restore completes and the restored
// server holds the rows; a delete after the restore removes the backup.
func TestDeleteDuringRestore(t *testing.T) {
	t.Parallel()
	for _, major := range pgtest.Majors() {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			c := pgtest.Start(t, pgtest.Options{Major: major})
			c.Pgbench(t, "-i", "-s", "1", "postgres")
			want := seedBeforeBackup(t, c)
			dir := t.TempDir()
			repoURL := "file://" + dir
			id := cliBackup(t, c, repoURL)
			chunks := countChunks(t, dir)

			// The restore runs in this process, held after its first
			// chunk until the delete, another process, has run.
			gate := &gateStore{Store: openFileStore(t, dir), reached: make(chan struct{}), open: make(chan struct{})}
			target := filepath.Join(pgtest.TempDir(t), "data")
			done := make(chan error, 1)
			go func() {
				_, err := restore.Run(t.Context(), repository.New(gate), restore.Options{BackupID: id, Target: target, Concurrency: 2, Log: testLogger(t)})
				done <- err
			}()
			select {
			case <-gate.reached:
			case err := <-done:
				t.Fatalf("restore ended before it reached the gate: %v", err)
			case <-time.After(2 * time.Minute):
				t.Fatal("restore did not reach its second chunk within 2 minutes")
			}
			r := runCLI(t, 2*time.Minute, nil, "delete", "--repo", repoURL, id)
			if r.code != 0 {
				close(gate.open)
				t.Fatalf("delete during the restore exited %d:\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			for _, s := range []string{"defer", id, "a restore is reading", "restore of " + id, "run the delete again"} {
				if !strings.Contains(r.stdout, s) {
					t.Errorf("delete during the restore does not say %q:\n%s", s, r.stdout)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(repository.BackupManifestKey(id)))); err != nil {
				t.Errorf("the manifest of the backup being restored: %v", err)
			}
			if n := countChunks(t, dir); n != chunks {
				t.Errorf("%d chunks after the delete during the restore, %d before", n, chunks)
			}
			close(gate.open)
			if err := <-done; err != nil {
				t.Fatalf("restore during a delete: %v", err)
			}

			rs := restoreChecks(t, major, target)
			if got := fingerprint(t, rs); got != want {
				t.Fatalf("committed_before: %s after restore, %s before the backup", got, want)
			}
			rs.Stop(t)

			// Once the restore has finished, the same delete goes ahead.
			r = runCLI(t, 2*time.Minute, nil, "delete", "--repo", repoURL, id)
			if r.code != 0 || strings.Contains(r.stdout, "defer") || !strings.Contains(r.stdout, "delete       "+id) {
				t.Fatalf("delete after the restore exited %d:\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(repository.BackupManifestKey(id)))); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the manifest after the second delete: %v", err)
			}
			if n := countChunks(t, dir); n != 0 {
				t.Errorf("%d chunks left after the only backup was deleted", n)
			}
		})
	}
}

// TestRestoreFromReadOnlyRepository: a repository on a read-only mount is
// restored from without a lease, with a warning that says delete and gc
// are not held off; the restored server holds the rows.
func TestRestoreFromReadOnlyRepository(t *testing.T) {
	t.Parallel()
	const major = 15
	c := pgtest.Start(t, pgtest.Options{Major: major})
	c.Pgbench(t, "-i", "-s", "1", "postgres")
	want := seedBeforeBackup(t, c)
	dir := mountTmpfs(t, 512<<20, false)
	repoURL := "file://" + dir
	cliBackup(t, c, repoURL)
	if out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount the repository read-only: %v\n%s", err, out)
	}
	target := filepath.Join(pgtest.TempDir(t), "data")
	r := runCLI(t, 3*time.Minute, nil, "restore", "--repo", repoURL, "-D", target)
	if r.code != 0 || !strings.Contains(r.stdout, "restored backup") {
		t.Fatalf("restore from a read-only repository exited %d:\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, s := range []string{"read-only to this user", "not held off", "read-only file system"} {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("the warning does not say %q:\n%s", s, r.stderr)
		}
	}
	rs := restoreChecks(t, major, target)
	if got := fingerprint(t, rs); got != want {
		t.Fatalf("committed_before: %s after restore, %s before the backup", got, want)
	}
}
