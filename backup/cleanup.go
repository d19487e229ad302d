package backup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
)

// Bounds of the cleanup after a failed backup. It runs after Ctrl-C too,
// so it must end soon: what it cannot do in time, gc does later.
const (
	// DefaultCleanupTimeout bounds the whole cleanup.
	DefaultCleanupTimeout = time.Minute
	// cleanupLockWait bounds the wait for a delete or gc to finish.
	cleanupLockWait = 15 * time.Second
	// stalledLeaseGrace is how long after a backup lease expired its
	// holder may still be alive (stalled, its lease lapsed) and about to
	// commit after checking that what it references is stored. gc spares
	// young objects for such a backup (its --grace, 1 hour by default);
	// the cleanup removes objects younger than that, so it defers to such
	// a lease instead.
	stalledLeaseGrace = time.Hour
	// cleanupConcurrency is how many deletions run at once.
	cleanupConcurrency = 8
)

// leftovers is what a failed backup stored in the repository.
type leftovers struct {
	// chunks are the chunks it stored itself, or tried to (a failed write
	// may land), never one it found stored (uploader.Written).
	chunks []manifest.ChunkRef
	// pgManifestOf is the id under which the commit may have stored
	// PostgreSQL's backup_manifest before failing; "" if none.
	pgManifestOf string
	// commitUnknown is set when that commit failed without saying
	// whether its manifest was stored (repository.ErrCommitUnknown).
	commitUnknown bool
	// walSegments is how many WAL segments its stream stored.
	walSegments int
	// ownLease is the backup's own lease key, released by now.
	ownLease string
}

// removeLeftovers removes what a failed backup stored and nothing else
// uses, and returns one line saying what it removed and what it left, and
// why ("" when the backup stored nothing).
//
// It is safe with concurrent backups, restores and prunes, because it
// removes only under the prune lock, as gc does (docs/catalog.md):
//   - Another backup may have deduplicated against a chunk this one
//     stored, and commit it later. Every running backup holds a live
//     lease, and one that starts after the lock is taken waits for it; so
//     if any backup lease other than ours is seen (or one that expired
//     less than stalledLeaseGrace ago, whose holder may be stalled, not
//     dead), nothing is removed.
//   - A backup that used such a chunk and has committed by then has its
//     manifest stored: every committed manifest is read under the lock,
//     and a chunk any of them references stays.
//
// WAL segments are left: they belong to the WAL archive, which
// point-in-time recovery from an earlier backup replays through, and
// which wal-receive, wal-push and other backups write under the same
// names; gc removes them once no backup needs them.
func removeLeftovers(ctx context.Context, repo *repository.Repository, left leftovers, o Options) string {
	if len(left.chunks) == 0 && left.pgManifestOf == "" && left.walSegments == 0 {
		return ""
	}
	timeout := o.CleanupTimeout
	if timeout <= 0 {
		timeout = DefaultCleanupTimeout
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	var parts []string
	if len(left.chunks) > 0 || left.pgManifestOf != "" {
		parts = append(parts, removeChunks(ctx, repo, left, o))
	}
	if left.walSegments > 0 {
		parts = append(parts, fmt.Sprintf("kept the %d WAL segment(s) it stored, which belong to the WAL archive (gc removes them once no backup needs them)", left.walSegments))
	}
	return strings.Join(parts, "; ")
}

// removeChunks removes the chunks (and an uncommitted backup_manifest)
// under the prune lock and says what it did.
func removeChunks(ctx context.Context, repo *repository.Repository, left leftovers, o Options) string {
	var wrote int64
	for _, c := range left.chunks {
		wrote += c.StoredSize
	}
	what := fmt.Sprintf("the %d chunk(s) (%s) it stored", len(left.chunks), manifest.HumanBytes(wrote))
	if len(left.chunks) == 0 {
		what = "its uncommitted backup_manifest"
	}
	gcHint := "; `pgstow gc --grace 0s` removes them once no backup is running"
	if left.commitUnknown {
		// A store may complete a write after its client gave up (a
		// timeout or Ctrl-C once the body was sent), at any time after
		// this. No check made here, not even under the lock, rules out
		// that the manifest lands just after it; so nothing is removed,
		// and the plain gc, which spares objects for its grace period
		// (an hour), removes them only if the manifest never landed.
		id := left.pgManifestOf
		return fmt.Sprintf("left %s and its backup_manifest: it is not known whether backup %s was committed; if `pgstow list` shows it later, check it with `pgstow verify %s`, otherwise `pgstow gc` removes them after its grace period", what, id, id)
	}
	o.Log.Info("the backup failed: removing what it stored that nothing else uses", "chunks", len(left.chunks), "bytes", wrote)

	lock, err := repo.TakeLease(ctx, repository.LockPrune, repository.LeaseOptions{
		Command: "backup cleanup", TTL: o.LeaseTTL, Wait: cleanupLockWait, Log: o.Log,
	})
	if err != nil {
		return fmt.Sprintf("left %s: could not take the delete/gc lock to remove them (%v)%s", what, err, gcHint)
	}
	defer lock.Release(ctx)
	locks, err := repo.Locks(ctx)
	if err != nil {
		return fmt.Sprintf("left %s: %v%s", what, err, gcHint)
	}
	now := lock.StoreNow()
	for _, h := range locks {
		if h.Kind != repository.LockBackup || h.Key == left.ownLease {
			continue
		}
		if h.ModTime.Add(time.Duration(h.TTLSeconds)*time.Second + stalledLeaseGrace).After(now) {
			return fmt.Sprintf("left %s, as another backup may use them (%s)%s", what, h, gcHint)
		}
	}

	// Committed backups that share a chunk keep it. Manifests are read
	// under the lock: one that commits later held a lease we saw.
	ids, err := repo.BackupIDs(ctx)
	if err != nil {
		return fmt.Sprintf("left %s: %v%s", what, err, gcHint)
	}
	candidates := make(map[string]bool, len(left.chunks))
	for _, c := range left.chunks {
		candidates[c.ID] = true
	}
	var mu sync.Mutex
	shared := map[string]bool{}
	err = repo.ForEachBackup(ctx, ids, func(_ int, b *manifest.Backup) error {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range b.Archives {
			for _, c := range a.Chunks {
				if candidates[c.ID] {
					shared[c.ID] = true
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Sprintf("left %s: read the committed backups' manifests: %v%s", what, err, gcHint)
	}
	var msgs []string
	if id := left.pgManifestOf; id != "" {
		// Asked now, right before deleting, not taken from the listing
		// above: a manifest write whose answer was lost may have landed
		// since.
		committed, err := repo.HasBackup(ctx, id)
		if err != nil {
			return fmt.Sprintf("left %s: could not check whether backup %s was committed after all (%v)%s", what, id, err, gcHint)
		}
		if committed {
			// The commit's answer was lost but its manifest landed:
			// everything the backup references is in use.
			return fmt.Sprintf("but its manifest was stored: backup %s is committed after all; check it with pgstow verify %s", id, id)
		}
		key := repository.PGManifestKey(id)
		if err := lock.Held(); err != nil {
			return fmt.Sprintf("left %s: %v%s", what, err, gcHint)
		}
		if err := repo.DeleteObject(ctx, key); err != nil && !errors.Is(err, providers.ErrNotExist) {
			msgs = append(msgs, fmt.Sprintf("left %s: %v (gc removes it)", key, err))
		} else if len(left.chunks) == 0 {
			msgs = append(msgs, "removed its uncommitted backup_manifest")
		}
	}
	if len(left.chunks) == 0 {
		return strings.Join(msgs, "; ")
	}

	var removed, removedBytes atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cleanupConcurrency)
	for _, c := range left.chunks {
		if shared[c.ID] {
			continue
		}
		g.Go(func() error {
			// A prune that stalled past its lease stops: a backup that
			// started since may use what it would remove.
			if err := lock.Held(); err != nil {
				return err
			}
			size, err := repo.DeleteChunk(gctx, c.ID)
			if errors.Is(err, providers.ErrNotExist) {
				return nil // its write failed after all
			}
			if err != nil {
				return err
			}
			removed.Add(1)
			removedBytes.Add(size)
			return nil
		})
	}
	err = g.Wait()
	msg := fmt.Sprintf("removed the %d chunk(s) (%s) it had stored", removed.Load(), manifest.HumanBytes(removedBytes.Load()))
	if n := len(shared); n > 0 {
		msg += fmt.Sprintf(", kept %d that a committed backup shares", n)
	}
	if err != nil {
		msg += fmt.Sprintf(", then stopped (%v)%s", err, strings.Replace(gcHint, "them", "the rest", 1))
	}
	o.Log.Debug("failed backup cleaned up", "removed", removed.Load(), "bytes", removedBytes.Load(), "shared", len(shared))
	return strings.Join(append(msgs, msg), "; ")
}
