package repository

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/spool"
)

// Commit publishes a backup: PostgreSQL's backup_manifest (read from
// pgManifest, from its start) first, then pgstow's manifest, which is the
// commit point. Neither is ever overwritten. With a hundred thousand files
// each is tens of MB, so neither is held in memory: pgManifest is read
// twice (to hash it, then to upload it) and pgstow's manifest is encoded
// into a spool file (see SetSpoolDir) that the upload reads, and a retry
// reads again.
//
// In an immutable repository both are locked until commit time plus the
// retention, and first every chunk and WAL segment the backup references
// is made to stay locked at least as long (immutable.go); the dates are
// recorded in b.Retention (cleared outside an immutable repository, so a
// manifest copied from one does not claim locks it does not have). A
// second Commit of the same b (a new id after ErrIDTaken) computes them
// again, finding the objects just secured.
func (r *Repository) Commit(ctx context.Context, b *manifest.Backup, pgManifest io.ReadSeeker) error {
	p, err := r.policy(ctx)
	if err != nil {
		return fmt.Errorf("backup %s: %w", b.ID, err)
	}
	// Dates a manifest carries from elsewhere (a copy from another
	// repository) say nothing about this one's locks.
	b.Retention = nil
	var lock providers.Retention
	if p != nil {
		until := ceilSecond(r.now().Add(p.period))
		least, err := r.secureObjects(ctx, p, b, until)
		if err != nil {
			return err
		}
		b.Retention = &manifest.BackupRetention{Mode: string(p.mode), Until: until, ObjectsUntil: least}
		lock = providers.Retention{Mode: p.mode, Until: until}
	}
	pg, err := digestOf(pgManifest)
	if err != nil {
		return fmt.Errorf("backup %s: read backup_manifest: %w", b.ID, err)
	}
	b.PGManifestSHA256 = hex.EncodeToString(pg.sha256[:])

	f, err := spool.Create(r.spoolDir, "pgstow-manifest-*.json")
	if err != nil {
		return fmt.Errorf("backup %s: stage the manifest: %w", b.ID, err)
	}
	defer f.Close()
	crc := crc32.New(manifest.Castagnoli)
	n, sum, err := manifest.EncodeTo(io.MultiWriter(f, crc), b)
	if err != nil {
		return fmt.Errorf("backup %s: %w", b.ID, err)
	}
	own := contentDigest{size: n, sha256: sum, crc32c: crc.Sum32()}

	pgKey := PGManifestKey(b.ID)
	if err := r.putStaged(ctx, pgKey, pgManifest, pg, lock); err != nil {
		if !errors.Is(err, providers.ErrExist) {
			return fmt.Errorf("backup %s: store backup_manifest: %w", b.ID, err)
		}
		// Ours from an earlier attempt is fine; another backup's means
		// the id is taken.
		same, rerr := r.holds(ctx, pgKey, pg)
		if rerr != nil {
			return fmt.Errorf("backup %s: read existing backup_manifest: %w", b.ID, rerr)
		}
		if !same {
			return fmt.Errorf("backup %s: %w", b.ID, ErrIDTaken)
		}
		// Ours from an earlier attempt (a resumed copy, a commit whose
		// outcome was unknown) carries that attempt's shorter lock: it
		// must last as long as the manifest written now.
		if !lock.IsZero() {
			l, ok := providers.AsLocker(r.raw)
			if !ok {
				return fmt.Errorf("backup %s: %w: %s cannot lock objects", b.ID, ErrLockMismatch, r)
			}
			if err := l.ExtendRetention(ctx, pgKey, lock); err != nil {
				return fmt.Errorf("backup %s: extend the lock of %s: %w", b.ID, pgKey, err)
			}
		}
	}
	key := BackupManifestKey(b.ID)
	if err := r.putStaged(ctx, key, io.NewSectionReader(f, 0, n), own, lock); err != nil {
		if errors.Is(err, providers.ErrExist) {
			// A retried write whose first attempt landed (its answer
			// lost) finds its own manifest: that is success.
			if same, rerr := r.holds(ctx, key, own); rerr == nil && same {
				return nil
			}
			return fmt.Errorf("backup %s: %w", b.ID, ErrIDTaken)
		}
		if errors.Is(err, providers.ErrChecksum) {
			// The store refused the body: nothing was stored.
			return fmt.Errorf("backup %s: commit manifest: %w", b.ID, err)
		}
		return fmt.Errorf("backup %s: commit manifest: %w (%w)", b.ID, err, ErrCommitUnknown)
	}
	return nil
}

// contentDigest identifies an object's content without holding it.
type contentDigest struct {
	size   int64
	sha256 [sha256.Size]byte
	crc32c uint32
}

// digestOf reads r to its end and back to its start.
func digestOf(r io.ReadSeeker) (contentDigest, error) {
	var d contentDigest
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return d, err
	}
	sha, crc := sha256.New(), crc32.New(manifest.Castagnoli)
	n, err := io.Copy(io.MultiWriter(sha, crc), r)
	if err != nil {
		return d, err
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return d, err
	}
	d.size, d.crc32c = n, crc.Sum32()
	copy(d.sha256[:], sha.Sum(nil))
	return d, nil
}

// putStaged writes body, whose digest is d, only if key is absent, with
// the lock ret (none when zero).
func (r *Repository) putStaged(ctx context.Context, key string, body io.ReadSeeker, d contentDigest, ret providers.Retention) error {
	return r.store.Put(ctx, key, body, d.size, providers.PutOptions{IfAbsent: true, CRC32C: d.crc32c, HasCRC32C: true, Retention: ret})
}

// holds reports whether the object at key has the content d describes.
func (r *Repository) holds(ctx context.Context, key string, d contentDigest) (bool, error) {
	rc, err := r.store.Get(ctx, key, 0, -1)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	sha := sha256.New()
	n, err := io.Copy(sha, rc)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", key, err)
	}
	return n == d.size && bytes.Equal(sha.Sum(nil), d.sha256[:]), nil
}
