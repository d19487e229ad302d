package repository

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

// Lock kinds. A backup holds a backup lease from before its first
// deduplication check until after its commit; a restore holds a restore
// lease, naming the backup it reads, while it reads; delete and gc hold a
// prune lock. The protocol is described in docs/catalog.md.
const (
	LockBackup  = "backup"
	LockRestore = "restore"
	LockPrune   = "prune"
)

// DefaultLeaseTTL is how long a lease stays valid without a refresh. It is
// refreshed every fifth of that, so a holder must stall for minutes before
// others treat it as dead, and a killed backup's leftovers become
// collectable a few minutes after it died.
const DefaultLeaseTTL = 5 * time.Minute

// ErrLocked is returned when another delete or gc holds the prune lock
// for longer than the caller was willing to wait.
var ErrLocked = errors.New("repository is locked")

// ErrLeaseLapsed is returned when a lease could not be refreshed in time,
// so another process may have treated its holder as dead.
var ErrLeaseLapsed = errors.New("lease lapsed")

// LockInfo is the content of a lease or lock object.
type LockInfo struct {
	Kind       string    `json:"kind"`
	Command    string    `json:"command"`
	Host       string    `json:"host"`
	PID        int       `json:"pid"`
	Started    time.Time `json:"started"`
	TTLSeconds int64     `json:"ttl_seconds"`
	// Backup is, in a restore lease, the id of the backup it reads.
	Backup string `json:"backup,omitempty"`
	// Decided is set by a prune once it has listed the backup and
	// restore leases; Backups are the keys of the leases it saw and
	// defers to. A backup or restore waits for a prune that has not
	// decided or that did not see it.
	Decided bool     `json:"decided,omitempty"`
	Backups []string `json:"backups,omitempty"`

	// Key and ModTime come from the listing, not the object.
	Key     string    `json:"-"`
	ModTime time.Time `json:"-"`
}

func (l LockInfo) ttl() time.Duration { return time.Duration(l.TTLSeconds) * time.Second }

// String names the holder for messages.
func (l LockInfo) String() string {
	if l.Backup != "" {
		return fmt.Sprintf("%s of %s by %s pid %d since %s", l.Command, l.Backup, l.Host, l.PID, l.Started.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("%s by %s pid %d since %s", l.Command, l.Host, l.PID, l.Started.UTC().Format(time.RFC3339))
}

// LeaseOptions tune TakeLease.
type LeaseOptions struct {
	// Command names what the holder does ("backup", "restore",
	// "delete", "gc").
	Command string
	// Backup is the id of the backup a restore lease protects; it is
	// required for LockRestore.
	Backup string
	// TTL is DefaultLeaseTTL when zero.
	TTL time.Duration
	// Wait bounds how long a prune waits for another prune; a backup
	// waits for a deleting prune until ctx ends.
	Wait time.Duration
	// Poll is how often a waiting holder looks again (2 s).
	Poll time.Duration
	Log  *slog.Logger
}

// Lease is a held lease or lock, refreshed in the background until
// Release.
type Lease struct {
	repo *Repository
	info LockInfo
	key  string
	ttl  time.Duration

	mu     sync.Mutex
	lastOK time.Time // local start time of the last successful write
	// lapsed is set for good once a refresh came too late: another
	// process may have judged us dead in between, even if later
	// refreshes succeed again.
	held, lapsed bool
	others       []LockInfo
	// storeAt is the store's time for our object at the last listing,
	// localAt when that listing was taken.
	storeAt, localAt time.Time

	stop context.CancelFunc
	done chan struct{}
}

// TakeLease writes a lease of the given kind and settles it with the
// other holders: a prune lock excludes other prunes (waiting up to
// o.Wait), and a backup or restore lease waits while a prune that did not
// see it may be deleting. Staleness is judged with the store's clock (object
// modification times against the time the store gave our own object),
// so clock skew between hosts does not matter.
func (r *Repository) TakeLease(ctx context.Context, kind string, o LeaseOptions) (*Lease, error) {
	if o.TTL <= 0 {
		o.TTL = DefaultLeaseTTL
	}
	if o.Poll <= 0 {
		o.Poll = 2 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if kind == LockRestore && !manifest.ValidBackupID(o.Backup) {
		return nil, fmt.Errorf("take %s lease in %s: %q is not a backup id", kind, r, o.Backup)
	}
	host, _ := os.Hostname()
	info := LockInfo{Kind: kind, Command: o.Command, Backup: o.Backup, Host: host, PID: os.Getpid(), Started: time.Now().UTC(), TTLSeconds: int64(o.TTL / time.Second)}
	if info.TTLSeconds < 1 {
		info.TTLSeconds = 1
	}
	deadline := time.Now().Add(o.Wait)
	lastLog := time.Time{}
	for {
		l := &Lease{repo: r, info: info, ttl: info.ttl()}
		l.key = LockKey(kind, randomName())
		l.info.Key = l.key
		if err := l.write(ctx); err != nil {
			return nil, fmt.Errorf("take %s lease in %s: %w", kind, r, err)
		}
		for {
			live, err := l.live(ctx)
			if err != nil {
				l.remove(ctx)
				return nil, err
			}
			blocker, ok := l.settle(live)
			if ok {
				if kind == LockPrune {
					// Record what we saw, so a backup or restore that
					// started after our listing knows to wait for us.
					l.info.Decided = true
					for _, b := range l.others {
						l.info.Backups = append(l.info.Backups, b.Key)
					}
					if err := l.write(ctx); err != nil {
						l.remove(ctx)
						return nil, fmt.Errorf("take %s lease in %s: %w", kind, r, err)
					}
				}
				l.startRefresh(ctx, o.Log)
				return l, nil
			}
			if kind == LockPrune {
				// Two prunes that see each other both step back, each
				// removing its own lock, and retry after a random pause.
				l.remove(ctx)
				if time.Now().After(deadline) {
					return nil, fmt.Errorf("%w: another delete or gc is running in %s (%s); try again when it has finished, or wait longer with --lock-wait", ErrLocked, r, blocker)
				}
			}
			if time.Since(lastLog) > 30*time.Second {
				o.Log.Info("waiting for another process to finish with the repository", "holder", blocker.String())
				lastLog = time.Now()
			}
			if err := sleep(ctx, o.Poll+jitter(o.Poll)); err != nil {
				l.remove(ctx)
				return nil, err
			}
			if kind == LockPrune {
				break // write a new lock
			}
			if err := l.write(ctx); err != nil { // a fresh clock reading
				l.remove(ctx)
				return nil, fmt.Errorf("refresh %s lease in %s: %w", kind, r, err)
			}
		}
	}
}

// settle decides whether the lease holds given the other live holders,
// and names the one in the way if not.
func (l *Lease) settle(live []LockInfo) (LockInfo, bool) {
	l.others = l.others[:0]
	for _, o := range live {
		switch {
		case l.info.Kind == LockPrune && o.Kind == LockPrune:
			return o, false
		case l.info.Kind == LockPrune && (o.Kind == LockBackup || o.Kind == LockRestore):
			l.others = append(l.others, o)
		case (l.info.Kind == LockBackup || l.info.Kind == LockRestore) && o.Kind == LockPrune:
			if !o.Decided || !slices.Contains(o.Backups, l.key) {
				return o, false
			}
		}
	}
	return LockInfo{}, true
}

// live lists the other holders whose leases have not expired by the
// store's clock, as read from our own freshly written object.
func (l *Lease) live(ctx context.Context) ([]LockInfo, error) {
	all, err := l.repo.Locks(ctx)
	if err != nil {
		return nil, err
	}
	var now time.Time
	for _, h := range all {
		if h.Key == l.key {
			now = h.ModTime
		}
	}
	if now.IsZero() {
		return nil, fmt.Errorf("lease %s in %s vanished right after it was written; is another pgstow removing locks?", l.key, l.repo)
	}
	l.storeAt, l.localAt = now, time.Now()
	var out []LockInfo
	for _, h := range all {
		if h.Key != l.key && !Stale(h, now) {
			out = append(out, h)
		}
	}
	return out, nil
}

// Stale reports whether a holder's lease had expired at now, both by the
// store's clock.
func Stale(h LockInfo, now time.Time) bool {
	return !h.ModTime.Add(h.ttl()).After(now)
}

// Locks lists every lease and lock object with its content. Objects that
// vanish while being read (their holder released them) are left out;
// unreadable ones are reported with a zero TTL, so they count as stale.
func (r *Repository) Locks(ctx context.Context) ([]LockInfo, error) {
	var out []LockInfo
	for obj, err := range r.raw.List(ctx, LocksPrefix) {
		if err != nil {
			return nil, fmt.Errorf("list locks in %s: %w", r, err)
		}
		kind, _, ok := LockFromKey(obj.Key)
		if !ok {
			continue
		}
		data, err := providers.ReadAll(ctx, r.raw, obj.Key)
		if errors.Is(err, providers.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read lock %s in %s: %w", obj.Key, r, err)
		}
		var h LockInfo
		if json.Unmarshal(data, &h) != nil || h.Kind != kind {
			h = LockInfo{Kind: kind, Command: "unknown (unreadable lock)"}
		}
		h.Key, h.ModTime = obj.Key, obj.ModTime
		out = append(out, h)
	}
	return out, nil
}

// write stores the lease object, which also refreshes its modification
// time; the store's clock then says how fresh it is.
func (l *Lease) write(ctx context.Context) error {
	data, err := json.Marshal(l.info)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := l.repo.raw.Put(ctx, l.key, bytes.NewReader(data), int64(len(data)), providers.PutOptions{}); err != nil {
		return err
	}
	l.mu.Lock()
	if l.held && start.Sub(l.lastOK) >= l.ttl*4/5 {
		l.lapsed = true
	}
	l.lastOK = start
	l.mu.Unlock()
	return nil
}

func (l *Lease) startRefresh(ctx context.Context, log *slog.Logger) {
	l.mu.Lock()
	l.held = true
	l.mu.Unlock()
	ctx, l.stop = context.WithCancel(context.WithoutCancel(ctx))
	l.done = make(chan struct{})
	go func() {
		defer close(l.done)
		t := time.NewTicker(l.ttl / 5)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := l.write(ctx); err != nil && ctx.Err() == nil {
					log.Warn("could not refresh lease", "lease", l.key, "err", err)
				}
			}
		}
	}()
}

// Others returns the live holders seen when the lease was taken: for a
// prune lock, the running backups and restores it must not take objects
// from.
func (l *Lease) Others() []LockInfo { return slices.Clone(l.others) }

// StoreNow is the store's clock now, as read from the modification time
// of our own object, so that object ages are judged without trusting this
// host's clock.
func (l *Lease) StoreNow() time.Time { return l.storeAt.Add(time.Since(l.localAt)) }

// Key returns the lease's object key.
func (l *Lease) Key() string { return l.key }

// Held returns nil while nobody can have judged the lease expired: every
// refresh since it was taken started less than four fifths of the TTL
// after the one before, and so did the time since the last (the rest is
// margin for the store's clock and a request in flight).
func (l *Lease) Held() error {
	l.mu.Lock()
	since, lapsed := time.Since(l.lastOK), l.lapsed
	l.mu.Unlock()
	if lapsed {
		return fmt.Errorf("%w: %s in %s was once refreshed too late (it expires after %s); another process may have treated this one as dead",
			ErrLeaseLapsed, l.key, l.repo, l.ttl)
	}
	if since >= l.ttl*4/5 {
		return fmt.Errorf("%w: %s in %s was last refreshed %s ago (it expires after %s); another process may have treated this one as dead",
			ErrLeaseLapsed, l.key, l.repo, since.Round(time.Second), l.ttl)
	}
	return nil
}

// Release stops refreshing and removes the lease.
func (l *Lease) Release(ctx context.Context) {
	if l.stop != nil {
		l.stop()
		<-l.done
	}
	l.remove(ctx)
}

func (l *Lease) remove(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	// A lease left behind only delays gc until it expires.
	_ = l.repo.raw.Delete(ctx, l.key)
}

func randomName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func jitter(d time.Duration) time.Duration { return mrand.N(d + 1) }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
