package gcs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/pgstow/pgstow/providers"
)

// Object retention on GCS is Object Retention Lock: a bucket created with
// object retention enabled accepts a retention {mode, retainUntilTime} in
// the object resource of an upload, so the object is created locked, and
// in a PATCH later. Governance is the Unlocked mode (users with the right
// permission may shorten or remove it), compliance the Locked mode, which
// can only be extended. Deleting a retained object is refused with 403;
// GCS needs no versioning for this.

var _ providers.Locker = (*Store)(nil)

// objectRetention is the retention of the JSON API's object resource.
type objectRetention struct {
	Mode            string    `json:"mode"`
	RetainUntilTime time.Time `json:"retainUntilTime"`
}

// retentionOf maps GCS's retention to pgstow's, zero without one.
func retentionOf(r *objectRetention) providers.Retention {
	if r == nil || r.RetainUntilTime.IsZero() {
		return providers.Retention{}
	}
	switch r.Mode {
	case "Unlocked":
		return providers.Retention{Mode: providers.LockGovernance, Until: r.RetainUntilTime}
	case "Locked":
		return providers.Retention{Mode: providers.LockCompliance, Until: r.RetainUntilTime}
	}
	return providers.Retention{}
}

// gcsRetention maps pgstow's retention to GCS's.
func gcsRetention(r providers.Retention) (*objectRetention, error) {
	switch r.Mode {
	case providers.LockGovernance:
		return &objectRetention{Mode: "Unlocked", RetainUntilTime: r.Until.UTC()}, nil
	case providers.LockCompliance:
		return &objectRetention{Mode: "Locked", RetainUntilTime: r.Until.UTC()}, nil
	}
	return nil, fmt.Errorf("lock mode %q: want %s or %s", r.Mode, providers.LockGovernance, providers.LockCompliance)
}

// bucketResource is the part of the bucket resource LockConfig reads.
type bucketResource struct {
	ObjectRetention *struct {
		Mode string `json:"mode"`
	} `json:"objectRetention"`
	RetentionPolicy *struct {
		RetentionPeriod int64 `json:"retentionPeriod,string"`
		IsLocked        bool  `json:"isLocked"`
	} `json:"retentionPolicy"`
	Versioning *struct {
		Enabled bool `json:"enabled"`
	} `json:"versioning"`
}

// LockConfig reads the bucket's metadata, which needs the
// storage.buckets.get permission.
func (s *Store) LockConfig(ctx context.Context) (providers.LockConfig, error) {
	what := fmt.Sprintf("lock configuration of %s", s)
	u := join(s.api, url.Values{"fields": {"objectRetention,retentionPolicy,versioning"}}, "b", s.cfg.Bucket)
	resp, err := s.send(ctx, http.MethodGet, u, nil, http.StatusOK)
	if err != nil {
		return providers.LockConfig{}, s.fail(what, err, providers.ErrNoBucket)
	}
	var b bucketResource
	if err := decodeJSON(resp, &b); err != nil {
		return providers.LockConfig{}, s.fail(what, err, providers.ErrNoBucket)
	}
	var cfg providers.LockConfig
	cfg.Enabled = b.ObjectRetention != nil && b.ObjectRetention.Mode == "Enabled"
	if cfg.Enabled {
		s.lockable.Store(true)
	} else {
		cfg.Notes = append(cfg.Notes, "bucket has no object retention: it can only be enabled when the bucket is created (--enable-per-object-retention)")
	}
	cfg.Versioning = b.Versioning != nil && b.Versioning.Enabled
	if cfg.Versioning {
		cfg.Notes = append(cfg.Notes, "bucket has object versioning on, which pgstow does not need: its deletes remove the exact generation, so no noncurrent versions pile up")
	}
	if p := b.RetentionPolicy; p != nil && p.RetentionPeriod > 0 {
		cfg.DefaultPeriod = time.Duration(p.RetentionPeriod) * time.Second
		cfg.DefaultMode = providers.LockGovernance
		if p.IsLocked {
			cfg.DefaultMode = providers.LockCompliance
		}
	}
	return cfg, nil
}

// checkLockable fails with ErrLockUnsupported when the bucket has no
// object retention; a yes is kept for the store's life, since it cannot
// be turned off. Credentials without storage.buckets.get cannot tell:
// then the upload itself decides (GCS refuses a retention on such a
// bucket, and created checks what an emulator kept).
func (s *Store) checkLockable(ctx context.Context) error {
	if s.lockable.Load() {
		return nil
	}
	cfg, err := s.LockConfig(ctx)
	switch {
	case errors.Is(err, providers.ErrAccessDenied):
		return nil
	case err != nil:
		return err
	case !cfg.Enabled:
		return fmt.Errorf("bucket %q has no object retention enabled (it can only be enabled when the bucket is created): %w",
			s.cfg.Bucket, providers.ErrLockUnsupported)
	}
	return nil
}

// lockFields is what the lock calls read of an object.
const lockFields = "generation,retention,retentionExpirationTime,temporaryHold,eventBasedHold"

// lockState is an object's generation and what keeps it from deletion.
type lockState struct {
	Generation              int64            `json:"generation,string"`
	Retention               *objectRetention `json:"retention"`
	RetentionExpirationTime time.Time        `json:"retentionExpirationTime"`
	TemporaryHold           bool             `json:"temporaryHold"`
	EventBasedHold          bool             `json:"eventBasedHold"`
}

func (s *Store) lockState(ctx context.Context, name, what string) (lockState, error) {
	var st lockState
	resp, err := s.send(ctx, http.MethodGet, s.objectURL(name, url.Values{"fields": {lockFields}}), nil, http.StatusOK)
	if err == nil {
		err = decodeJSON(resp, &st)
	}
	if err != nil {
		return st, s.fail(what, err, providers.ErrNotExist)
	}
	return st, nil
}

// Retention reads the object's retention.
func (s *Store) Retention(ctx context.Context, key string) (providers.Retention, error) {
	name, err := s.checkedName(key)
	if err != nil {
		return providers.Retention{}, fmt.Errorf("retention in %s: %w", s, err)
	}
	what := fmt.Sprintf("retention of %q in %s", key, s)
	if err := s.checkLockable(ctx); err != nil {
		return providers.Retention{}, fmt.Errorf("%s: %w", what, err)
	}
	st, err := s.lockState(ctx, name, what)
	if err != nil {
		return providers.Retention{}, err
	}
	return retentionOf(st.Retention), nil
}

// ExtendRetention patches the object's retention to the later date and
// the stronger mode of the present one and r; it sends nothing when the
// present one already covers r. The PATCH names the generation read, so
// that a replaced object is not patched instead.
func (s *Store) ExtendRetention(ctx context.Context, key string, r providers.Retention) error {
	name, err := s.checkedName(key)
	if err != nil {
		return fmt.Errorf("extend retention in %s: %w", s, err)
	}
	what := fmt.Sprintf("extend the retention of %q in %s", key, s)
	if _, err := gcsRetention(r); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := s.checkLockable(ctx); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	st, err := s.lockState(ctx, name, what)
	if err != nil {
		return err
	}
	cur := retentionOf(st.Retention)
	want := providers.Retention{Mode: r.Mode, Until: r.Until}
	if cur.Mode == providers.LockCompliance {
		want.Mode = providers.LockCompliance
	}
	if !cur.IsZero() && !cur.Until.Before(want.Until) {
		if cur.Mode == want.Mode {
			return nil
		}
		want.Until = cur.Until
	}
	ret, _ := gcsRetention(want)
	body, err := json.Marshal(struct {
		Retention *objectRetention `json:"retention"`
	}{ret})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	q := url.Values{"fields": {"retention"}, "generation": {strconv.FormatInt(st.Generation, 10)}}
	resp, err := s.send(ctx, http.MethodPatch, s.objectURL(name, q), bytes.NewReader(body), http.StatusOK)
	if err != nil {
		return s.fail(what, err, providers.ErrNotExist)
	}
	var got struct {
		Retention *objectRetention `json:"retention"`
	}
	if err := decodeJSON(resp, &got); err != nil {
		return s.fail(what, err, providers.ErrNotExist)
	}
	if g := retentionOf(got.Retention); g.Mode != want.Mode || g.Until.Before(want.Until.Add(-time.Millisecond)) {
		return fmt.Errorf("%s: the server keeps %+v, not %s until %s: %w", what, got.Retention, want.Mode, want.Until, providers.ErrLockUnsupported)
	}
	return nil
}

// lockedError describes why a retained object could not be deleted: its
// retention, the bucket policy's expiry, or a hold. It is nil when the
// object has none of them in effect, so the refusal was for another
// reason (access denied).
func lockedError(key string, st lockState) *providers.LockedError {
	// An hour's tolerance, as for S3: this host's clock may run ahead of
	// the store's, and a lock that is about to end is still a lock, not
	// a refusal for another reason.
	now := time.Now().Add(-time.Hour)
	le := &providers.LockedError{Key: key, Hold: st.TemporaryHold || st.EventBasedHold}
	if r := retentionOf(st.Retention); !r.IsZero() && r.Until.After(now) {
		le.Until, le.Mode = r.Until, r.Mode
	}
	if t := st.RetentionExpirationTime; t.After(now) && t.After(le.Until) {
		le.Until, le.Mode = t, providers.LockGovernance
	}
	if le.Until.IsZero() && !le.Hold {
		return nil
	}
	return le
}

// checkRetained checks that an upload asked to lock created a locked
// object. GCS refuses a retention on a bucket without object retention,
// but an emulator may store the object without it: then the object is
// deleted again and the Put fails with ErrLockUnsupported.
func (u *upload) checkRetained(ctx context.Context, obj *objectResource) error {
	if u.opts.Retention.IsZero() {
		return nil
	}
	got := retentionOf(obj.Retention)
	if got.Mode == u.opts.Retention.Mode && !got.Until.Before(u.opts.Retention.Until.Add(-time.Millisecond)) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
	defer cancel()
	q := url.Values{"generation": {strconv.FormatInt(obj.Generation, 10)}}
	resp, err := u.s.send(ctx, http.MethodDelete, u.s.objectURL(u.name, q), nil, http.StatusNoContent, http.StatusOK)
	if err != nil {
		return fmt.Errorf("%s: the server stored the object without its retention, and deleting it failed (delete it by hand): %w: %w",
			u.what, providers.ErrLockUnsupported, err)
	}
	discard(resp)
	return fmt.Errorf("%s: the server stored the object without its retention (deleted again): %w", u.what, providers.ErrLockUnsupported)
}
