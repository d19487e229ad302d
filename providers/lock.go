package providers

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Object retention ("immutable repositories", docs/immutability.md).
// Stores that can lock an object against deletion and overwrite until a
// date (S3 Object Lock, Azure version-level immutability, GCS object
// retention) implement Locker. The repository decides the dates; the
// providers only carry them out and report what the store says.

// LockMode is how strong a retention is. Governance locks can be lifted
// by a principal with a special permission (S3 governance bypass, Azure
// unlocked policy, GCS unlocked retention); compliance locks cannot be
// lifted or shortened by anyone until they expire.
type LockMode string

const (
	LockGovernance LockMode = "governance"
	LockCompliance LockMode = "compliance"
)

// Valid reports whether m is a mode pgstow knows.
func (m LockMode) Valid() bool { return m == LockGovernance || m == LockCompliance }

// Retention is an object's lock: it cannot be deleted or overwritten
// before Until. The zero value means no lock.
type Retention struct {
	Mode  LockMode
	Until time.Time
}

// IsZero reports whether r asks for no lock.
func (r Retention) IsZero() bool { return r.Until.IsZero() }

// ErrLocked is returned (wrapped, as a *LockedError) by Delete when the
// object is under retention. Deleting callers report it and move on; it
// is never retried.
var ErrLocked = errors.New("object is locked")

// ErrLockUnsupported is returned (wrapped) by Put with a Retention, and by
// the Locker methods, when the store or the bucket cannot lock objects:
// a write asked to be locked must never be stored unlocked.
var ErrLockUnsupported = errors.New("object retention is not supported here")

// LockedError says which object is locked and until when.
type LockedError struct {
	Key string
	// Until is when the lock expires; zero when the store did not say
	// (the caller may ask Locker.Retention).
	Until time.Time
	Mode  LockMode
	// Hold is set when the object is under a legal hold, which has no
	// expiry.
	Hold bool
}

func (e *LockedError) Error() string {
	switch {
	case e.Hold:
		return fmt.Sprintf("%s is under a legal hold", e.Key)
	case e.Until.IsZero():
		return fmt.Sprintf("%s is locked", e.Key)
	default:
		return fmt.Sprintf("%s is locked (%s) until %s", e.Key, e.Mode, e.Until.UTC().Format(time.RFC3339))
	}
}

// Is makes errors.Is(err, ErrLocked) hold.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// LockConfig is what a store says about its bucket's (or container's)
// lock configuration, for `pgstow repo check`.
type LockConfig struct {
	// Enabled: objects in the bucket can be given a retention (S3 Object
	// Lock enabled, Azure version-level immutability support on the
	// container, GCS object retention enabled on the bucket).
	Enabled bool
	// Versioning: the bucket keeps versions (S3 and Azure require it for
	// locks); deletions must then remove a version, never add a delete
	// marker.
	Versioning bool
	// NeedsVersioning: locks on this store require versioning (S3, Azure;
	// GCS object retention does not).
	NeedsVersioning bool
	// Default is the retention the store applies to every new object
	// without being asked (bucket default retention); zero if none.
	DefaultMode   LockMode
	DefaultPeriod time.Duration
	// Notes are facts worth telling the user, one line each.
	Notes []string
}

// Locker is implemented by stores that can lock objects. Wrappers
// (retry, encryption) implement it by forwarding, so callers find it
// with AsLocker.
type Locker interface {
	// Retention returns the object's current lock; the zero Retention
	// when it has none. A missing object is ErrNotExist.
	Retention(ctx context.Context, key string) (Retention, error)
	// ExtendRetention makes the object's lock last at least until
	// r.Until, in mode r.Mode. It never shortens or weakens a lock: an
	// existing later date is kept and is not an error.
	ExtendRetention(ctx context.Context, key string, r Retention) error
	// LockConfig reports the bucket's lock configuration.
	LockConfig(ctx context.Context) (LockConfig, error)
}

// AsLocker returns s as a Locker when it (or, through Unwrap, a store it
// wraps that does not hide it) can lock objects.
func AsLocker(s Store) (Locker, bool) {
	for s != nil {
		if l, ok := s.(Locker); ok {
			return l, true
		}
		u, ok := s.(interface{ Unwrap() Store })
		if !ok {
			return nil, false
		}
		s = u.Unwrap()
	}
	return nil, false
}
