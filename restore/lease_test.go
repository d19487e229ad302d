package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pgstow/pgstow/catalog"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
)

// hookStore runs hooks before Puts and Gets: a Put hook's error fails the
// Put, as a read-only or failing store would.
type hookStore struct {
	providers.Store
	mu  sync.Mutex
	put func(key string) error
	get func(key string)
}

func (s *hookStore) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, o providers.PutOptions) error {
	s.mu.Lock()
	hook := s.put
	s.mu.Unlock()
	if hook != nil {
		if err := hook(key); err != nil {
			return err
		}
	}
	return s.Store.Put(ctx, key, body, size, o)
}

func (s *hookStore) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	s.mu.Lock()
	hook := s.get
	s.mu.Unlock()
	if hook != nil {
		hook(key)
	}
	return s.Store.Get(ctx, key, offset, length)
}

// logBuffer collects log output from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// TestRunLeaseDefersDelete: a delete of the backup while it is being
// restored leaves it whole and says so; the restore completes; a delete
// after it removes the backup.
func TestRunLeaseDefersDelete(t *testing.T) {
	f := newFixture(t, mem.New(), fixtureOptions{})
	hs := &hookStore{Store: f.store}
	repo := repository.New(hs)
	id := f.backup.ID
	var (
		once      sync.Once
		locks     []repository.LockInfo
		dry, real *catalog.Report
		delErr    error
	)
	hs.get = func(key string) {
		if !strings.HasPrefix(key, repository.ChunksPrefix) {
			return
		}
		once.Do(func() {
			ctx := context.WithoutCancel(t.Context())
			if locks, delErr = repo.Locks(ctx); delErr != nil {
				return
			}
			if dry, delErr = catalog.Delete(ctx, repo, catalog.Retention{IDs: []string{id}}, catalog.PruneOptions{DryRun: true}); delErr != nil {
				return
			}
			real, delErr = catalog.Delete(ctx, repo, catalog.Retention{IDs: []string{id}}, catalog.PruneOptions{})
		})
	}
	before := f.store.(*mem.Store).Keys()
	if _, err := Run(t.Context(), repo, testOptions(filepath.Join(t.TempDir(), "data"))); err != nil {
		t.Fatalf("restore while a delete ran: %v", err)
	}
	if delErr != nil {
		t.Fatalf("delete during the restore: %v", delErr)
	}
	if len(locks) != 1 || locks[0].Kind != repository.LockRestore || locks[0].Backup != id || locks[0].Command != "restore" {
		t.Errorf("locks while restoring: %+v; want one restore lease naming %s", locks, id)
	}
	for name, r := range map[string]*catalog.Report{"dry run": dry, "delete": real} {
		if r == nil {
			t.Fatalf("%s did not run during the restore", name)
		}
		if len(r.Backups) != 1 || r.Backups[0].Keep || !r.Backups[0].Deferred || !strings.Contains(r.Backups[0].Reason, "a restore is reading it") {
			t.Errorf("%s: decisions %+v; want %s deferred because a restore reads it", name, r.Backups, id)
		}
		if len(r.RunningRestore) != 1 || !strings.Contains(r.RunningRestore[0], "restore of "+id) {
			t.Errorf("%s: running restores %q; want the one of %s", name, r.RunningRestore, id)
		}
		if n := r.Manifests.Count + r.Chunks.Count + r.WAL.Count; n != 0 {
			t.Errorf("%s: %d objects removed (%+v); want none", name, n, r)
		}
	}
	if after := f.store.(*mem.Store).Keys(); !slices.Equal(before, after) {
		t.Errorf("objects changed during the restore: %q, then %q", before, after)
	}
	if keys := repotest.LockKeys(t, repo); len(keys) != 0 {
		t.Errorf("locks after the restore: %q", keys)
	}

	rep, err := catalog.Delete(t.Context(), repo, catalog.Retention{IDs: []string{id}}, catalog.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Backups) != 1 || rep.Backups[0].Deferred || rep.Manifests.Count != 2 || rep.Chunks.Count == 0 || len(rep.RunningRestore) != 0 {
		t.Errorf("delete after the restore: %+v; want the backup and its chunks removed", rep)
	}
	if _, err := repo.Backup(t.Context(), id); !errors.Is(err, repository.ErrNoBackup) {
		t.Errorf("backup after the second delete: %v", err)
	}
}

// TestRunWithoutLease: a repository this user cannot write to (read-only
// mount, read-only credentials) is restored from without a lease, with a
// warning; any other failure to write the lease fails the restore before
// the target is created.
func TestRunWithoutLease(t *testing.T) {
	denied := func(err error) func(string) error {
		return func(key string) error {
			if strings.HasPrefix(key, repository.LocksPrefix) {
				return fmt.Errorf("put %q: %w", key, err)
			}
			return nil
		}
	}
	for _, tc := range []struct {
		name string
		put  func(string) error
		// fails is what the error says, or "" for a restore that works.
		fails string
	}{
		{"read-only file system", denied(&fs.PathError{Op: "mkdir", Path: "/repo/.tmp", Err: syscall.EROFS}), ""},
		{"no write permission", denied(&fs.PathError{Op: "open", Path: "/repo/.tmp/put-1", Err: syscall.EACCES}), ""},
		{"read-only credentials", denied(fmt.Errorf("403 AccessDenied: %w", providers.ErrAccessDenied)), ""},
		{"store failure", denied(errors.New("connection reset by peer")), "take restore lease in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, mem.New(), fixtureOptions{})
			hs := &hookStore{Store: f.store, put: tc.put}
			repo := repository.New(hs)
			var log logBuffer
			o := testOptions(filepath.Join(t.TempDir(), "data"))
			o.Log = log.logger()
			_, err := Run(t.Context(), repo, o)
			if tc.fails != "" {
				if err == nil || !strings.Contains(err.Error(), tc.fails) || !strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "\n") {
					t.Fatalf("restore when the lease cannot be written: %v; want one line saying so", err)
				}
				if _, err := os.Stat(o.Target); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("target created before the lease failed: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("restore from a repository this user cannot write: %v", err)
			}
			if _, err := os.Stat(filepath.Join(o.Target, pgControlPath)); err != nil {
				t.Errorf("restore without a lease is incomplete: %v", err)
			}
			if !strings.Contains(log.String(), "read-only to this user") || !strings.Contains(log.String(), "not held off") {
				t.Errorf("no warning that the restore runs without a lease:\n%s", log.String())
			}
		})
	}
}

// TestRunBackupDeletedBeforeLease: a backup deleted between being chosen
// and the lease being written is refused with one line, and no lease is
// left behind.
func TestRunBackupDeletedBeforeLease(t *testing.T) {
	f := newFixture(t, mem.New(), fixtureOptions{})
	hs := &hookStore{Store: f.store}
	var once sync.Once
	hs.put = func(key string) error {
		if strings.HasPrefix(key, repository.LocksPrefix) {
			once.Do(func() {
				if err := f.store.Delete(context.WithoutCancel(t.Context()), repository.BackupManifestKey(f.backup.ID)); err != nil {
					t.Error(err)
				}
			})
		}
		return nil
	}
	repo := repository.New(hs)
	o := testOptions(filepath.Join(t.TempDir(), "data"))
	_, err := Run(t.Context(), repo, o)
	if err == nil || !strings.Contains(err.Error(), "was deleted") || !strings.Contains(err.Error(), "restore another backup") {
		t.Fatalf("restore of a backup deleted as it started: %v", err)
	}
	if keys := repotest.LockKeys(t, repo); len(keys) != 0 {
		t.Errorf("locks left: %q", keys)
	}
	if _, err := os.Stat(o.Target); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("target created: %v", err)
	}
}

// TestRunLeaseLapsed: a restore whose lease could not be refreshed in time
// completes with a warning when every object was still there (each was
// verified), and fails naming the lapse when one was gone.
func TestRunLeaseLapsed(t *testing.T) {
	for _, tc := range []struct {
		name        string
		deleteChunk bool
	}{
		{"complete", false},
		{"chunk deleted meanwhile", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Fake time: the stall below costs no wall-clock time.
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t, mem.New(), fixtureOptions{})
				chunks := f.backup.Archives[0].Chunks
				if len(chunks) < 2 {
					t.Fatalf("fixture has %d chunks; the test needs two", len(chunks))
				}
				hs := &hookStore{Store: f.store}
				var once sync.Once
				hs.get = func(key string) {
					if !strings.HasPrefix(key, repository.ChunksPrefix) {
						return
					}
					once.Do(func() {
						// The store stops taking the lease's refreshes and
						// the restore stalls past 4/5 of the TTL; a gc that
						// judged it dead may have taken a chunk.
						hs.mu.Lock()
						hs.put = func(key string) error {
							if strings.HasPrefix(key, repository.LocksPrefix) {
								return providers.MarkTransient(fmt.Errorf("put %s: stalled", key))
							}
							return nil
						}
						hs.mu.Unlock()
						time.Sleep(900 * time.Millisecond)
						if tc.deleteChunk {
							last := chunks[len(chunks)-1].ID
							if key != repository.ChunkKey(last) {
								_ = f.store.Delete(context.WithoutCancel(t.Context()), repository.ChunkKey(last))
							}
						}
					})
				}
				repo := repository.New(hs)
				var log logBuffer
				o := testOptions(filepath.Join(t.TempDir(), "data"))
				o.Log, o.LeaseTTL, o.Concurrency = log.logger(), time.Second, 1
				_, err := Run(t.Context(), repo, o)
				if tc.deleteChunk {
					if !errors.Is(err, repository.ErrLeaseLapsed) || !errors.Is(err, providers.ErrNotExist) || !strings.Contains(err.Error(), "may have removed") {
						t.Fatalf("restore missing a chunk after its lease lapsed: %v; want both named", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("restore whose lease lapsed, nothing removed: %v", err)
				}
				if !strings.Contains(log.String(), "restore lease lapsed") || !strings.Contains(log.String(), "the restore is complete") {
					t.Errorf("no warning that the lease lapsed:\n%s", log.String())
				}
			})
		})
	}
}
