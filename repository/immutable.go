package repository

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

// Immutable repositories (docs/immutability.md). The configuration says
// how long objects stay locked (the retention R) and in which mode. Every
// object pgstow writes but the leases is locked in the request that
// creates it:
//
//   - a backup's two manifests until U = commit time + R;
//   - chunks and WAL until write time + R + H, where the headroom H is
//     R/4 (at most 7 days);
//   - pgstow.json until creation + R (it is never deleted by pgstow; the
//     lock keeps it from being swapped while the first backups are).
//
// A committed backup's chunks and WAL must stay at least as long as its
// manifest, so before a commit every object the backup references that
// is not known to be locked until U is extended to U + H. What is known
// comes without asking the store: the newest committed backup records
// (manifest.BackupRetention.ObjectsUntil) a date until which all its
// chunks are locked, and this process remembers what it wrote. The
// headroom makes one extension cover the backups of the next H, so a
// chunk shared by daily backups costs one request per H, not one per
// backup.

// maxHeadroom caps the headroom H.
const maxHeadroom = 7 * 24 * time.Hour

// extendWorkers is how many extensions run at once before a commit.
const extendWorkers = 16

// ErrLockMismatch is returned by Bind when the lock settings asked for
// do not fit the repository's configuration or the bucket.
var ErrLockMismatch = errors.New("lock settings do not fit the repository")

// lockPolicy is an immutable repository's configuration, parsed.
type lockPolicy struct {
	mode     providers.LockMode
	period   time.Duration
	headroom time.Duration
}

func newLockPolicy(i *manifest.RepoImmutability) (*lockPolicy, error) {
	if i == nil {
		return nil, nil
	}
	if err := i.Validate(); err != nil {
		return nil, err
	}
	d, _ := i.Period()
	return &lockPolicy{mode: providers.LockMode(i.Mode), period: d, headroom: min(d/4, maxHeadroom)}, nil
}

// ceilSecond rounds t up to a whole second: S3 keeps lock dates to the
// second, and a date rounded down would be a lock shorter than asked.
func ceilSecond(t time.Time) time.Time {
	if t2 := t.Truncate(time.Second); !t2.Equal(t) {
		return t2.Add(time.Second)
	}
	return t
}

// SetImmutability asks for an immutable repository (--lock-mode,
// --lock-retention): Bind writes it into a new repository's
// configuration, and refuses an existing repository whose configuration
// says otherwise. Call it before Bind.
func (r *Repository) SetImmutability(mode providers.LockMode, retention time.Duration) error {
	want := &manifest.RepoImmutability{Mode: string(mode), Retention: retention.String()}
	if err := want.Validate(); err != nil {
		return err
	}
	r.lockWant = want
	return nil
}

// policy returns the repository's lock policy; nil for a repository
// without locks or not yet configured.
//
// It is read once per Repository, apart from Config's cache: a writer
// that has not bound the repository (a test, a wal-fetch) must still see
// a configuration removed or written later, as before immutability.
func (r *Repository) policy(ctx context.Context) (*lockPolicy, error) {
	r.cfgMu.Lock()
	c := r.cfg
	r.cfgMu.Unlock()
	r.policyMu.Lock()
	defer r.policyMu.Unlock()
	if c != nil {
		// Parsed once per configuration, not once per chunk written.
		if r.policyOf != c {
			p, err := newLockPolicy(c.Immutability)
			if err != nil {
				return nil, err
			}
			r.policyOf, r.policyCached, r.policyRead = c, p, true
		}
		return r.policyCached, nil
	}
	if r.policyRead {
		return r.policyCached, nil
	}
	b, err := providers.ReadAll(ctx, r.raw, RepoKey)
	if errors.Is(err, providers.ErrNotExist) {
		return nil, nil // not configured yet: nothing to lock by
	}
	if err != nil {
		return nil, fmt.Errorf("read repository configuration of %s: %w", r, err)
	}
	c, err = manifest.DecodeRepo(b)
	if err != nil {
		return nil, fmt.Errorf("%s in %s: %w", RepoKey, r, err)
	}
	p, err := newLockPolicy(c.Immutability)
	if err != nil {
		return nil, err
	}
	r.policyCached, r.policyRead = p, true
	return p, nil
}

// objectRetention is the lock for a chunk or WAL file written now (none
// outside an immutable repository). The date is remembered under key, so
// that a commit in this process knows it without asking the store.
func (r *Repository) objectRetention(ctx context.Context) (providers.Retention, error) {
	p, err := r.policy(ctx)
	if err != nil || p == nil {
		return providers.Retention{}, err
	}
	return providers.Retention{Mode: p.mode, Until: ceilSecond(r.now().Add(p.period + p.headroom))}, nil
}

// NewObjectRetention is the lock a new repository's first objects get
// when it is made immutable with mode and period: the one chunks and WAL
// get (write time + period + headroom). The wrapped copies of a data key
// are written before pgstow.json, so they cannot ask the repository.
func NewObjectRetention(mode providers.LockMode, period time.Duration) (providers.Retention, error) {
	p, err := newLockPolicy(&manifest.RepoImmutability{Mode: string(mode), Retention: period.String()})
	if err != nil {
		return providers.Retention{}, err
	}
	return providers.Retention{Mode: p.mode, Until: ceilSecond(time.Now().Add(p.period + p.headroom))}, nil
}

// SetClock makes the repository date its locks by now instead of the
// system clock: tests of lock dates, with a store on the same clock.
func (r *Repository) SetClock(now func() time.Time) { r.clock = now }

// now is the time locks are dated from.
func (r *Repository) now() time.Time {
	if r.clock != nil {
		return r.clock()
	}
	return time.Now()
}

// maxWritten bounds what wrote remembers (about 100 bytes an entry, so
// some 25 MiB): a process that writes for months (wal-receive) must not
// grow without end. Forgetting costs only a HEAD per object at the next
// commit.
const maxWritten = 1 << 18

// wrote records that key was stored locked until ret.Until.
func (r *Repository) wrote(key string, ret providers.Retention) {
	if ret.IsZero() {
		return
	}
	r.writtenMu.Lock()
	defer r.writtenMu.Unlock()
	if r.written == nil || len(r.written) >= maxWritten {
		r.written = make(map[string]time.Time)
	}
	r.written[key] = ret.Until
}

func (r *Repository) writtenUntil(key string) (time.Time, bool) {
	r.writtenMu.Lock()
	defer r.writtenMu.Unlock()
	t, ok := r.written[key]
	return t, ok
}

// checkImmutability compares what SetImmutability asked for with the
// configuration: a flag that contradicts pgstow.json is an error naming
// both.
func (r *Repository) checkImmutability(c *manifest.Repo) error {
	want, have := r.lockWant, c.Immutability
	switch {
	case want == nil:
		return nil
	case have == nil:
		return fmt.Errorf("%w: --lock-mode %s --lock-retention %s asked for, but %s in %s has no immutability (it is set when a repository is created); leave the lock flags out, or use a new repository",
			ErrLockMismatch, want.Mode, want.Retention, RepoKey, r)
	case want.Mode != have.Mode || !samePeriod(want, have):
		return fmt.Errorf("%w: --lock-mode %s --lock-retention %s asked for, but %s in %s says mode %s, retention %s; leave the lock flags out (pgstow.json decides)",
			ErrLockMismatch, want.Mode, want.Retention, RepoKey, r, have.Mode, have.Retention)
	}
	return nil
}

func samePeriod(a, b *manifest.RepoImmutability) bool {
	da, erra := a.Period()
	db, errb := b.Period()
	return erra == nil && errb == nil && da == db
}

// CheckLockSupport checks that the store can lock objects as p asks: a
// Locker whose bucket has locks enabled and keeps versions. It returns
// one line saying what to set on the bucket otherwise. Versioning is
// asked only of stores whose locks need it (not GCS).
func (r *Repository) CheckLockSupport(ctx context.Context) error {
	l, ok := providers.AsLocker(r.raw)
	if !ok {
		return fmt.Errorf("%w: %s cannot lock objects (no object lock support in this store); use S3 with Object Lock, Azure with version-level immutability, or GCS with object retention",
			ErrLockMismatch, r)
	}
	c, err := l.LockConfig(ctx)
	if errors.Is(err, providers.ErrLockUnsupported) {
		return fmt.Errorf("%w: %s cannot lock objects: %w", ErrLockMismatch, r, err)
	}
	if errors.Is(err, providers.ErrAccessDenied) {
		// Credentials that may write but not read the bucket's settings:
		// the first locked write decides, as a store that cannot lock
		// refuses it (ErrLockUnsupported) and stores nothing.
		return nil
	}
	if err != nil {
		return fmt.Errorf("check the lock configuration of %s: %w", r, err)
	}
	var missing []string
	if !c.Enabled {
		missing = append(missing, "object lock is not enabled on the bucket (S3: create the bucket with Object Lock enabled)")
	}
	if c.NeedsVersioning && !c.Versioning {
		missing = append(missing, "the bucket does not keep versions (enable versioning)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s: %s", ErrLockMismatch, r, strings.Join(missing, "; "))
	}
	return nil
}

// secureObjects makes every chunk and WAL segment b references locked at
// least until the backup's own lock ends (until), before its manifest is
// committed, and returns the earliest date they are now known to be
// locked until. See the comment at the top of this file.
func (r *Repository) secureObjects(ctx context.Context, p *lockPolicy, b *manifest.Backup, until time.Time) (time.Time, error) {
	l, ok := providers.AsLocker(r.raw)
	if !ok {
		return time.Time{}, fmt.Errorf("backup %s: %w: %s cannot lock objects", b.ID, ErrLockMismatch, r)
	}
	// What the newest committed backup guarantees.
	var prevUntil time.Time
	var prev map[ChunkID]struct{}
	if pb, err := r.BackupWithoutFiles(ctx, "latest"); err == nil && pb.Retention != nil && !pb.Retention.ObjectsUntil.Before(until) {
		prevUntil = pb.Retention.ObjectsUntil
		prev = make(map[ChunkID]struct{})
		for _, a := range pb.Archives {
			for _, c := range a.Chunks {
				if id, ok := ParseChunkID(c.ID); ok {
					prev[id] = struct{}{}
				}
			}
		}
	} else if err != nil && !errors.Is(err, ErrNoBackup) {
		return time.Time{}, fmt.Errorf("backup %s: read the newest backup's lock dates: %w", b.ID, err)
	}

	target := providers.Retention{Mode: p.mode, Until: ceilSecond(until.Add(p.headroom))}
	least := target.Until
	if prev != nil {
		// The configuration and the key copies below are taken as the
		// newest backup secured them, so the date this backup records
		// must not outlast that backup's, shared chunks or not: else a
		// later backup covered by this one would skip them while their
		// locks end first.
		least = prevUntil
	}
	var extend []string
	seen := make(map[string]bool)
	consider := func(key string, id ChunkID, isChunk bool) {
		if seen[key] {
			return
		}
		seen[key] = true
		if isChunk {
			if _, ok := prev[id]; ok {
				least = minTime(least, prevUntil)
				return
			}
		}
		if t, ok := r.writtenUntil(key); ok && !t.Before(until) {
			least = minTime(least, t)
			return
		}
		extend = append(extend, key)
	}
	for _, a := range b.Archives {
		for _, c := range a.Chunks {
			id, _ := ParseChunkID(c.ID)
			consider(ChunkKey(c.ID), id, true)
		}
	}
	for _, w := range b.WAL {
		consider(WALKey(w.Name), ChunkID{}, false)
	}
	// The configuration and the wrapped copies of the data key must last
	// as long as any backup: without them an encrypted repository's
	// backups cannot be opened at all. When the newest backup covers the
	// new one's date it secured them already, and a copy made since by
	// rotate-key is locked at least as long (NewObjectRetention).
	if prev == nil { // else the newest backup covers them
		consider(RepoKey, ChunkID{}, false)
		copies, err := WrappedKeys(ctx, r.raw)
		if err != nil {
			return time.Time{}, fmt.Errorf("backup %s: %w", b.ID, err)
		}
		for _, c := range copies {
			consider(c.Key, ChunkID{}, false)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(extendWorkers)
	for _, key := range extend {
		g.Go(func() error {
			if err := l.ExtendRetention(gctx, key, target); err != nil {
				return fmt.Errorf("backup %s: extend the lock of %s: %w", b.ID, key, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return time.Time{}, err
	}
	for _, key := range extend {
		r.wrote(key, target)
	}
	r.extended.Add(int64(len(extend)))
	return least, nil
}

// Extended is how many objects this repository has had their locks
// extended before commits, for logs and tests.
func (r *Repository) Extended() int64 { return r.extended.Load() }

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
