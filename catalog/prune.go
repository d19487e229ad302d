package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
)

// PruneOptions tune Delete and GC.
type PruneOptions struct {
	// DryRun reports what would be removed and removes nothing; it takes
	// no lock.
	DryRun bool
	// LockWait is how long to wait for another delete or gc to finish.
	LockWait time.Duration
	// LeaseTTL is the prune lock's TTL (repository.DefaultLeaseTTL).
	LeaseTTL time.Duration
	// Grace (GC only) spares unreferenced objects younger than this, by
	// the store's clock: a second line of defence behind the leases, for
	// a backup whose lease could not be written or has lapsed.
	Grace time.Duration
	// Concurrency is how many deletions run at once (8).
	Concurrency int
	// Now is the clock for retention decisions; nil means time.Now.
	Now func() time.Time
	Log *slog.Logger
}

func (o *PruneOptions) defaults() {
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// Objects is a set of objects removed (or, in a dry run, to be removed).
// Keys are listed in a dry run only, so that a large deletion does not
// hold every key in memory.
type Objects struct {
	Count int      `json:"count"`
	Bytes int64    `json:"bytes"`
	Keys  []string `json:"keys,omitempty"`
}

// LockedObjects are objects left in place because they are locked.
type LockedObjects struct {
	Count   int            `json:"count"`
	Bytes   int64          `json:"bytes"`
	Objects []LockedObject `json:"objects,omitempty"`
}

// LockedObject is one locked object and until when it is locked.
type LockedObject struct {
	Key string `json:"key"`
	// Until is when the lock expires; nil when the store did not say.
	Until *time.Time `json:"until,omitempty"`
	Mode  string     `json:"mode,omitempty"`
	// Hold is set for a legal hold, which has no expiry.
	Hold bool `json:"legal_hold,omitempty"`
}

// Report says what Delete or GC did, or would do.
type Report struct {
	DryRun  bool             `json:"dry_run"`
	Backups []BackupDecision `json:"backups,omitempty"`
	// Manifests are the objects of deleted backups under backups/.
	Manifests Objects `json:"manifests"`
	Chunks    Objects `json:"chunks"`
	WAL       Objects `json:"wal"`
	// Leftovers (GC) are objects of backups that never committed.
	Leftovers Objects `json:"leftovers"`
	// Locks are expired leases of dead processes (GC).
	Locks Objects `json:"locks"`
	// Deferred are objects left because backups were running; a gc
	// after they finish removes them.
	Deferred      Objects  `json:"deferred"`
	RunningBackup []string `json:"running_backups,omitempty"`
	// RunningRestore are the live restore leases; Delete defers the
	// backups they read (BackupDecision.Deferred).
	RunningRestore []string `json:"running_restores,omitempty"`
	// Young (GC) are unreferenced objects spared by the grace period.
	Young Objects `json:"young"`
	// Locked are objects the store would not delete yet because they are
	// locked (an immutable repository): not a failure. A delete or gc
	// after their locks expire removes them.
	Locked LockedObjects `json:"locked"`
	// WALKeptFrom is the first WAL segment of the oldest kept backup:
	// segments with a lower number, on any timeline, are removed.
	WALKeptFrom string `json:"wal_kept_from,omitempty"`
}

// pruner is one Delete or GC run.
type pruner struct {
	repo *repository.Repository
	o    PruneOptions
	lock *repository.Lease // nil in a dry run
	rep  *Report
	// deferring is set when running backups forbid removing chunks,
	// WAL and leftovers.
	deferring bool
	// restoring maps the id of each backup a live restore lease names
	// to its holders: Delete leaves those backups whole.
	restoring map[string][]string
	now       time.Time // the store's clock
	// mu guards rep.Locked and the counts remove adds to, which parallel
	// deletions update.
	mu sync.Mutex
}

// start takes the prune lock (none on a dry run), records the running
// backups and restores, and returns the ids of the committed backups.
// Manifests are listed after the lock is held: a backup that committed
// before is seen here, one that commits after held a lease start saw.
func start(ctx context.Context, repo *repository.Repository, o PruneOptions, command string) (*pruner, []string, error) {
	o.defaults()
	p := &pruner{repo: repo, o: o, rep: &Report{DryRun: o.DryRun}, restoring: map[string][]string{}}
	if o.DryRun {
		// No lock: a dry run reads, and reports running backups as a
		// real run would find them now. Without an object of its own it
		// has no reading of the store's clock, so ages are judged by
		// this host's (o.Now is for retention decisions only).
		p.now = time.Now()
		locks, err := repo.Locks(ctx)
		if err != nil {
			return nil, nil, err
		}
		for _, h := range locks {
			if !repository.Stale(h, p.now) {
				p.running(h)
			}
		}
	} else {
		l, err := repo.TakeLease(ctx, repository.LockPrune, repository.LeaseOptions{
			Command: command, TTL: o.LeaseTTL, Wait: o.LockWait, Log: o.Log,
		})
		if err != nil {
			return nil, nil, err
		}
		p.lock = l
		p.now = l.StoreNow()
		for _, h := range l.Others() {
			p.running(h)
		}
	}
	p.deferring = len(p.rep.RunningBackup) > 0
	if p.deferring {
		o.Log.Warn("backups are running: chunks, WAL and leftovers stay until a gc after they finish", "running", p.rep.RunningBackup)
	}
	ids, err := repo.BackupIDs(ctx)
	if err != nil {
		p.release(ctx)
		return nil, nil, err
	}
	return p, ids, nil
}

// running records a live backup or restore lease.
func (p *pruner) running(h repository.LockInfo) {
	switch h.Kind {
	case repository.LockBackup:
		p.rep.RunningBackup = append(p.rep.RunningBackup, h.String())
	case repository.LockRestore:
		p.rep.RunningRestore = append(p.rep.RunningRestore, h.String())
		p.restoring[h.Backup] = append(p.restoring[h.Backup], h.String())
	}
}

func (p *pruner) release(ctx context.Context) {
	if p.lock != nil {
		p.lock.Release(ctx)
	}
}

// remove deletes keys, or in a dry run records them, adding them to set.
// Deletions run in parallel; before each one the lock is checked, so a
// process that stalled past its lease stops instead of deleting what a
// backup that has since started may use. An object the store keeps
// locked is no failure: it goes to the report's Locked, and its key into
// the returned set.
func (p *pruner) remove(ctx context.Context, set *Objects, keys []string, sizes []int64) (map[string]bool, error) {
	if p.o.DryRun {
		for i := range keys {
			set.Count++
			set.Bytes += sizes[i]
		}
		set.Keys = append(set.Keys, keys...)
		return nil, nil
	}
	locked := map[string]bool{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.o.Concurrency)
	for i, k := range keys {
		g.Go(func() error {
			if err := p.lock.Held(); err != nil {
				return err
			}
			err := p.repo.DeleteObject(gctx, k)
			var le *providers.LockedError
			switch {
			case err == nil || errors.Is(err, providers.ErrNotExist):
				p.mu.Lock()
				set.Count++
				set.Bytes += sizes[i]
				p.mu.Unlock()
			case errors.As(err, &le):
				p.mu.Lock()
				locked[k] = true
				p.lockedObject(k, sizes[i], le.Until, string(le.Mode), le.Hold)
				p.mu.Unlock()
			default:
				return fmt.Errorf("delete %s: %w", k, err)
			}
			return nil
		})
	}
	return locked, g.Wait()
}

// lockedObject records an object left because it is locked; p.mu is
// held, or no deletion runs.
func (p *pruner) lockedObject(key string, size int64, until time.Time, mode string, hold bool) {
	o := LockedObject{Key: key, Mode: mode, Hold: hold}
	if !until.IsZero() {
		u := until.UTC()
		o.Until = &u
	}
	p.rep.Locked.Count++
	p.rep.Locked.Bytes += size
	p.rep.Locked.Objects = append(p.rep.Locked.Objects, o)
}

// shared removes chunks, WAL or leftovers, unless backups are running, in
// which case they are deferred.
func (p *pruner) shared(ctx context.Context, set *Objects, keys []string, sizes []int64) error {
	if p.deferring {
		for i := range keys {
			p.rep.Deferred.Count++
			p.rep.Deferred.Bytes += sizes[i]
		}
		if p.o.DryRun {
			p.rep.Deferred.Keys = append(p.rep.Deferred.Keys, keys...)
		}
		return nil
	}
	_, err := p.remove(ctx, set, keys, sizes)
	return err
}

// chunkSet is a set of chunk ids with their stored sizes.
type chunkSet struct {
	mu sync.Mutex
	m  map[repository.ChunkID]int64
}

func (s *chunkSet) addBackup(b *manifest.Backup) {
	s.add(chunksOf(b))
}

func (s *chunkSet) add(m map[repository.ChunkID]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, size := range m {
		s.m[id] = size
	}
}

// chunksOf returns the chunks a backup references with their stored
// sizes.
func chunksOf(b *manifest.Backup) map[repository.ChunkID]int64 {
	m := make(map[repository.ChunkID]int64)
	for _, a := range b.Archives {
		for _, c := range a.Chunks {
			if id, ok := repository.ParseChunkID(c.ID); ok {
				m[id] = c.StoredSize
			}
		}
	}
	return m
}

// walBefore lists the WAL segments (and partial ones) whose segment
// number is below cutoff, on any timeline, and, when old is given, are
// older than the grace period. Timeline history files are
// kept: they are tiny and recovery needs them to follow timelines.
func (p *pruner) walBefore(ctx context.Context, cutoff, segSize uint64, old func(time.Time) bool) (keys []string, sizes []int64, err error) {
	for obj, err := range p.repo.WALFiles(ctx) {
		if err != nil {
			return nil, nil, err
		}
		name := obj.Name
		if len(name) == 24+len(".partial") && name[24:] == ".partial" {
			name = name[:24]
		}
		if seg, _, _, _, err := manifest.ParsePartialSegmentName(name, segSize); err == nil {
			name = seg // a standby backup's last segment
		}
		_, segno, err := manifest.ParseSegmentName(name, segSize)
		if err != nil {
			continue // a history file, or not ours
		}
		if segno >= cutoff {
			continue
		}
		if old != nil && !old(obj.ModTime) {
			p.rep.Young.Count++
			p.rep.Young.Bytes += obj.Size
			continue
		}
		keys = append(keys, obj.Key)
		sizes = append(sizes, obj.Size)
	}
	return keys, sizes, nil
}

// Delete removes backups: those named, or those a retention policy does
// not keep. Each backup's manifest goes first, so it disappears at once;
// then its other objects, then the chunks no kept backup references and
// the WAL older than the oldest kept backup needs — unless backups are
// running, which may have deduplicated against those chunks: then they
// are deferred to a later gc. A backup that a live restore reads is not
// deleted at all: it counts as kept for this run, so its chunks and WAL
// stay too, and a delete after the restore removes it.
func Delete(ctx context.Context, repo *repository.Repository, r Retention, o PruneOptions) (*Report, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	p, ids, err := start(ctx, repo, o, "delete")
	if err != nil {
		return nil, err
	}
	defer p.release(ctx)

	sums := make([]summary, len(ids))
	// The manifests' lock dates (immutable repositories), for a dry
	// run to tell which backups would stay locked without asking the
	// store.
	lockedUntil := make([]time.Time, len(ids))
	if err := repo.ForEachBackup(ctx, ids, func(i int, b *manifest.Backup) error {
		sums[i] = summarize(b)
		if b.Retention != nil {
			lockedUntil[i] = b.Retention.Until
		}
		return nil
	}); err != nil {
		return nil, err
	}
	decisions, err := decide(sums, r, p.o.Now())
	if err != nil {
		return nil, err
	}
	for i := range decisions {
		d := &decisions[i]
		if holders := p.restoring[d.ID]; !d.Keep && len(holders) > 0 {
			d.Deferred = true
			d.Reason += "; deferred: a restore is reading it (" + strings.Join(holders, "; ") + ")"
			p.o.Log.Warn("a restore is reading this backup: it stays until a delete after the restore", "id", d.ID, "restore", holders)
		}
	}
	p.rep.Backups = decisions
	stays := func(d BackupDecision) bool { return d.Keep || d.Deferred || d.Locked }
	var doomed []int
	for i, d := range decisions {
		if !stays(d) {
			doomed = append(doomed, i)
		}
	}
	if len(doomed) == 0 {
		return p.rep, nil
	}

	// Second pass: the chunks the kept backups reference, and those
	// each doomed one does, read before its manifest goes.
	kept := &chunkSet{m: map[repository.ChunkID]int64{}}
	var doomedMu sync.Mutex
	doomedChunks := make(map[int]map[repository.ChunkID]int64, len(doomed))
	if err := repo.ForEachBackup(ctx, ids, func(i int, b *manifest.Backup) error {
		if stays(decisions[i]) {
			kept.addBackup(b)
			return nil
		}
		m := chunksOf(b)
		doomedMu.Lock()
		doomedChunks[i] = m
		doomedMu.Unlock()
		return nil
	}); err != nil {
		return nil, err
	}

	// The backups' own objects, the manifest first. A backup whose
	// manifest is locked stays whole, and counts as kept below, so that
	// nothing it needs is removed.
	for _, i := range doomed {
		d := &decisions[i]
		keys, sizes, err := p.backupObjects(ctx, d.ID)
		if err != nil {
			return nil, err
		}
		if p.o.DryRun && lockedUntil[i].After(p.now) {
			p.lockedObject(keys[0], sizes[0], lockedUntil[i], "", false)
		} else {
			locked, err := p.remove(ctx, &p.rep.Manifests, keys[:1], sizes[:1])
			if err != nil {
				return nil, err
			}
			if !locked[keys[0]] {
				if _, err := p.remove(ctx, &p.rep.Manifests, keys[1:], sizes[1:]); err != nil {
					return nil, err
				}
				p.o.Log.Info("backup deleted", "id", d.ID, "dry_run", p.o.DryRun)
				continue
			}
		}
		d.Locked = true
		until := p.rep.Locked.Objects[len(p.rep.Locked.Objects)-1].Until
		d.Reason += "; stays: its manifest is locked"
		if until != nil {
			d.Reason += " until " + until.Format(time.RFC3339)
		}
		p.o.Log.Warn("backup manifest is locked: the backup stays until a delete after the lock expires", "id", d.ID, "until", until)
	}

	// The chunks no remaining backup references, and the WAL older than
	// the oldest remaining backup needs.
	gone := &chunkSet{m: map[repository.ChunkID]int64{}}
	var segSize uint64
	cutoff, anyKept, keptFrom := uint64(0), false, ""
	for i, d := range decisions {
		segSize = sums[i].segSize
		if stays(d) {
			if !anyKept || sums[i].firstSeg < cutoff {
				cutoff, keptFrom = sums[i].firstSeg, sums[i].firstWAL
			}
			anyKept = true
		}
		if m, ok := doomedChunks[i]; ok {
			if stays(d) {
				kept.add(m)
			} else {
				gone.add(m)
			}
		}
	}
	doomedChunks = nil
	p.rep.WALKeptFrom = keptFrom

	var keys []string
	var sizes []int64
	for id, size := range gone.m {
		if _, ok := kept.m[id]; !ok {
			keys = append(keys, repository.ChunkKey(id.String()))
			sizes = append(sizes, size)
		}
	}
	sortKeys(keys, sizes)
	if err := p.shared(ctx, &p.rep.Chunks, keys, sizes); err != nil {
		return nil, err
	}
	if anyKept && segSize != 0 {
		keys, sizes, err := p.walBefore(ctx, cutoff, segSize, nil)
		if err != nil {
			return nil, err
		}
		if err := p.shared(ctx, &p.rep.WAL, keys, sizes); err != nil {
			return nil, err
		}
	}
	p.sortLocked()
	return p.rep, nil
}

// sortLocked orders the locked objects by key, so reports are stable.
func (p *pruner) sortLocked() {
	sort.Slice(p.rep.Locked.Objects, func(i, j int) bool { return p.rep.Locked.Objects[i].Key < p.rep.Locked.Objects[j].Key })
}

// backupObjects lists a backup's objects under backups/<id>/ with
// manifest.json first.
func (p *pruner) backupObjects(ctx context.Context, id string) ([]string, []int64, error) {
	keys, sizes := []string{repository.BackupManifestKey(id)}, []int64{0}
	for obj, err := range p.repo.ObjectsOfBackup(ctx, id) {
		if err != nil {
			return nil, nil, err
		}
		if obj.Manifest {
			sizes[0] = obj.Size
			continue
		}
		keys = append(keys, obj.Key)
		sizes = append(sizes, obj.Size)
	}
	return keys, sizes, nil
}

// GC removes what no committed backup can use: chunks nobody references,
// objects of backups that never committed, WAL older than the oldest
// backup needs, and expired leases. Objects younger than the grace period
// are spared, and while backups run nothing but expired leases is
// removed.
func GC(ctx context.Context, repo *repository.Repository, o PruneOptions) (*Report, error) {
	p, ids, err := start(ctx, repo, o, "gc")
	if err != nil {
		return nil, err
	}
	defer p.release(ctx)
	refs := &chunkSet{m: map[repository.ChunkID]int64{}}
	var mu sync.Mutex
	var segSize uint64
	cutoff := uint64(0)
	if err := repo.ForEachBackup(ctx, ids, func(_ int, b *manifest.Backup) error {
		refs.addBackup(b)
		s := summarize(b)
		mu.Lock()
		if segSize == 0 || s.firstSeg < cutoff {
			cutoff = s.firstSeg
			p.rep.WALKeptFrom = s.firstWAL
		}
		segSize = b.WALSegmentSize
		mu.Unlock()
		return nil
	}); err != nil {
		return nil, err
	}
	committed := make(map[string]bool, len(ids))
	for _, id := range ids {
		committed[id] = true
	}

	// Expired leases of dead processes.
	locks, err := repo.Locks(ctx)
	if err != nil {
		return nil, err
	}
	var keys []string
	var sizes []int64
	for _, h := range locks {
		if p.lock != nil && h.Key == p.lock.Key() {
			continue
		}
		if repository.Stale(h, p.now) {
			keys = append(keys, h.Key)
			sizes = append(sizes, 0)
		}
	}
	if _, err := p.remove(ctx, &p.rep.Locks, keys, sizes); err != nil {
		return nil, err
	}

	// Unreferenced chunks.
	keys, sizes = nil, nil
	// Keys under chunks/ that are not chunk keys are not listed: never
	// delete what we do not understand.
	for obj, err := range repo.ChunkFiles(ctx) {
		if err != nil {
			return nil, err
		}
		if _, ok := refs.m[obj.ID]; ok {
			continue
		}
		if !p.old(obj.ModTime) {
			p.rep.Young.Count++
			p.rep.Young.Bytes += obj.Size
			continue
		}
		keys = append(keys, obj.Key)
		sizes = append(sizes, obj.Size)
	}
	refs.m = nil
	if err := p.shared(ctx, &p.rep.Chunks, keys, sizes); err != nil {
		return nil, err
	}

	// Objects of backups that never committed. A backup's objects are
	// judged together by the newest of them, so a commit in progress is
	// never cut in half.
	type leftover struct {
		keys   []string
		sizes  []int64
		newest time.Time
	}
	left := map[string]*leftover{}
	for obj, err := range repo.BackupObjects(ctx) {
		if err != nil {
			return nil, err
		}
		id := obj.BackupID
		if committed[id] {
			continue
		}
		l := left[id]
		if l == nil {
			l = &leftover{}
			left[id] = l
		}
		l.keys = append(l.keys, obj.Key)
		l.sizes = append(l.sizes, obj.Size)
		if obj.ModTime.After(l.newest) {
			l.newest = obj.ModTime
		}
	}
	keys, sizes = nil, nil
	for _, l := range left {
		if !p.old(l.newest) {
			for _, s := range l.sizes {
				p.rep.Young.Count++
				p.rep.Young.Bytes += s
			}
			continue
		}
		keys = append(keys, l.keys...)
		sizes = append(sizes, l.sizes...)
	}
	sortKeys(keys, sizes)
	if err := p.shared(ctx, &p.rep.Leftovers, keys, sizes); err != nil {
		return nil, err
	}

	// WAL no backup needs.
	if len(ids) > 0 {
		keys, sizes, err := p.walBefore(ctx, cutoff, segSize, p.old)
		if err != nil {
			return nil, err
		}
		if err := p.shared(ctx, &p.rep.WAL, keys, sizes); err != nil {
			return nil, err
		}
	}
	p.sortLocked()
	return p.rep, nil
}

// old reports whether an object is older than the grace period, by the
// store's clock.
func (p *pruner) old(t time.Time) bool { return !t.After(p.now.Add(-p.o.Grace)) }

// sortKeys orders keys (and their sizes) so reports are stable.
func sortKeys(keys []string, sizes []int64) {
	sort.Sort(keySizes{keys, sizes})
}

type keySizes struct {
	k []string
	s []int64
}

func (ks keySizes) Len() int           { return len(ks.k) }
func (ks keySizes) Less(i, j int) bool { return ks.k[i] < ks.k[j] }
func (ks keySizes) Swap(i, j int) {
	ks.k[i], ks.k[j] = ks.k[j], ks.k[i]
	ks.s[i], ks.s[j] = ks.s[j], ks.s[i]
}
