package azblob

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/pgstow/pgstow/providers"
)

// Object retention on Azure is version-level immutability (WORM): a
// container (or its account) with "version-level immutability support"
// accepts a time-based policy per blob version, set by Put Blob and Put
// Block List headers as the version is created, and extended later with
// Set Blob Immutability Policy. It requires blob versioning, so a delete
// must remove the versions themselves (see Delete), or every deleted blob
// would stay behind as a previous version.
//
// Governance is the Unlocked policy (an account with the right
// permission can shorten or remove it); compliance is the Locked policy,
// which nobody can shorten or remove until it expires.

var _ providers.Locker = (*Store)(nil)

// policySetting maps a pgstow lock mode to Azure's policy mode.
func policySetting(m providers.LockMode) (blob.ImmutabilityPolicySetting, error) {
	switch m {
	case providers.LockGovernance:
		return blob.ImmutabilityPolicySettingUnlocked, nil
	case providers.LockCompliance:
		return blob.ImmutabilityPolicySettingLocked, nil
	}
	return "", fmt.Errorf("lock mode %q: want %s or %s", m, providers.LockGovernance, providers.LockCompliance)
}

// lockMode maps Azure's policy mode back; "Mutable" (a removed policy)
// and anything unknown is no lock.
func lockMode(m *blob.ImmutabilityPolicyMode) (providers.LockMode, bool) {
	if m == nil {
		return "", false
	}
	// The service has answered in lower case ("unlocked") as well as
	// in the documented form.
	switch {
	case strings.EqualFold(string(*m), string(blob.ImmutabilityPolicyModeUnlocked)):
		return providers.LockGovernance, true
	case strings.EqualFold(string(*m), string(blob.ImmutabilityPolicyModeLocked)):
		return providers.LockCompliance, true
	}
	return "", false
}

// policyUntil is the date sent for a lock: Azure takes whole seconds
// (RFC 1123 dates), so a fraction is rounded up, never down, which would
// end the lock early.
func policyUntil(t time.Time) time.Time {
	t = t.UTC()
	if r := t.Truncate(time.Second); !r.Equal(t) {
		return r.Add(time.Second)
	}
	return t
}

// retention returns the Retention described by a policy, zero when the
// policy is absent, removed or expired.
func retention(until *time.Time, mode *blob.ImmutabilityPolicyMode) providers.Retention {
	m, ok := lockMode(mode)
	if !ok || until == nil || until.IsZero() {
		return providers.Retention{}
	}
	return providers.Retention{Mode: m, Until: *until}
}

// lockOptions checks a Put's retention and returns the policy headers'
// values for the creating request, after making sure the container can
// hold them: Azure without version-level immutability support refuses
// them, but Azurite ignores them and would store the blob unlocked.
func (s *Store) lockOptions(ctx context.Context, key string, r providers.Retention) (*time.Time, *blob.ImmutabilityPolicySetting, error) {
	if r.IsZero() {
		return nil, nil, nil
	}
	mode, err := policySetting(r.Mode)
	if err != nil {
		return nil, nil, fmt.Errorf("put %q into %s: %w", key, s, err)
	}
	if err := s.checkLockable(ctx); err != nil {
		return nil, nil, fmt.Errorf("put %q into %s: %w", key, s, err)
	}
	until := policyUntil(r.Until)
	return &until, &mode, nil
}

// checkLockable fails with ErrLockUnsupported unless the container has
// version-level immutability support. The answer is kept for the store's
// life once it is yes: the support cannot be turned off again.
func (s *Store) checkLockable(ctx context.Context) error {
	if s.lockable.Load() {
		return nil
	}
	cfg, err := s.LockConfig(ctx)
	if err != nil {
		return err
	}
	if !cfg.Enabled {
		return fmt.Errorf("container %q has no version-level immutability support (enable it on the container or the storage account, with blob versioning): %w",
			s.container, providers.ErrLockUnsupported)
	}
	return nil
}

// LockConfig reads the container's properties. Azure reports whether
// version-level immutability is supported (which implies versioning) and
// whether a container-level policy or legal hold exists, but not the
// account's versioning setting nor a default policy's period: those are
// ARM settings the data plane does not show.
func (s *Store) LockConfig(ctx context.Context) (providers.LockConfig, error) {
	props, err := s.client.GetProperties(ctx, nil)
	if err != nil {
		return providers.LockConfig{}, fmt.Errorf("lock configuration of %s: %w", s, classify(ctx, err))
	}
	cfg := providers.LockConfig{NeedsVersioning: true}
	if props.IsImmutableStorageWithVersioningEnabled != nil && *props.IsImmutableStorageWithVersioningEnabled {
		cfg.Enabled = true
		cfg.Versioning = true
		s.lockable.Store(true)
	} else {
		cfg.Notes = append(cfg.Notes, "container has no version-level immutability support: enable it (with blob versioning) on the storage account or the container")
	}
	if props.HasImmutabilityPolicy != nil && *props.HasImmutabilityPolicy {
		cfg.Notes = append(cfg.Notes, "container has a container-level immutability policy (a default retention, whose period the Blob service does not report): it also locks the lease objects; pgstow sets a policy on each object itself")
	}
	if props.HasLegalHold != nil && *props.HasLegalHold {
		cfg.Notes = append(cfg.Notes, "container has a legal hold: nothing in it can be deleted until it is cleared")
	}
	return cfg, nil
}

// Retention reads the current version's policy.
func (s *Store) Retention(ctx context.Context, key string) (providers.Retention, error) {
	name, err := s.objectName(key)
	if err != nil {
		return providers.Retention{}, fmt.Errorf("retention of %s: %w", s, err)
	}
	if err := s.checkLockable(ctx); err != nil {
		return providers.Retention{}, fmt.Errorf("retention of %q in %s: %w", key, s, err)
	}
	props, err := s.client.NewBlobClient(name).GetProperties(ctx, nil)
	if err != nil {
		return providers.Retention{}, fmt.Errorf("retention of %q in %s: %w", key, s, classify(ctx, err))
	}
	return retention(props.ImmutabilityPolicyExpiresOn, props.ImmutabilityPolicyMode), nil
}

// ExtendRetention sets a policy on the current version that ends at the
// later of its present date and r.Until, in the stronger of the two
// modes; it sends nothing when the present policy already covers r.
func (s *Store) ExtendRetention(ctx context.Context, key string, r providers.Retention) error {
	name, err := s.objectName(key)
	if err != nil {
		return fmt.Errorf("extend retention in %s: %w", s, err)
	}
	what := fmt.Sprintf("extend the retention of %q in %s", key, s)
	if _, err := policySetting(r.Mode); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := s.checkLockable(ctx); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	bc := s.client.NewBlobClient(name)
	props, err := bc.GetProperties(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", what, classify(ctx, err))
	}
	cur := retention(props.ImmutabilityPolicyExpiresOn, props.ImmutabilityPolicyMode)
	want := providers.Retention{Mode: r.Mode, Until: policyUntil(r.Until)}
	if cur.Mode == providers.LockCompliance {
		want.Mode = providers.LockCompliance
	}
	if !cur.IsZero() && !cur.Until.Before(want.Until) {
		if cur.Mode == want.Mode {
			return nil
		}
		want.Until = cur.Until // only the mode gets stronger
	}
	mode, _ := policySetting(want.Mode)
	if props.VersionID != nil && *props.VersionID != "" {
		// The policy belongs to a version: name it, so that a blob
		// overwritten meanwhile does not get the policy on its new
		// version instead.
		if bc, err = bc.WithVersionID(*props.VersionID); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if _, err := bc.SetImmutabilityPolicy(ctx, want.Until, &blob.SetImmutabilityPolicyOptions{Mode: &mode}); err != nil {
		return fmt.Errorf("%s: %w", what, classify(ctx, err))
	}
	return nil
}

// version is one version of a blob as a listing shows it.
type version struct {
	id        string // "" without versioning
	current   bool
	retention providers.Retention
	hold      bool
}

// versions lists the versions of the blob name: the listing's prefix is
// the name itself, and its versions come first in the listing's order,
// before any longer name, so the first other name ends the search.
func (s *Store) versions(ctx context.Context, name string) ([]version, error) {
	pager := s.client.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Prefix:     &name,
		MaxResults: to.Ptr(s.pageSize),
		Include:    container.ListBlobsInclude{Versions: true, ImmutabilityPolicy: true, LegalHold: true},
	})
	var out []version
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		if page.Segment == nil {
			continue
		}
		for _, item := range page.Segment.BlobItems {
			if item == nil || item.Name == nil {
				continue
			}
			if *item.Name != name {
				return out, nil
			}
			v := version{current: true}
			if item.VersionID != nil {
				v.id = *item.VersionID
				v.current = item.IsCurrentVersion != nil && *item.IsCurrentVersion
			}
			if p := item.Properties; p != nil {
				v.retention = retention(p.ImmutabilityPolicyExpiresOn, p.ImmutabilityPolicyMode)
				v.hold = p.LegalHold != nil && *p.LegalHold
			}
			out = append(out, v)
		}
	}
	return out, nil
}

// Delete removes the blob. With blob versioning on, a plain Delete Blob
// would keep the blob as a previous version, so Delete lists the blob's
// versions (one request, which also says which are locked) and deletes
// each by its version ID, the previous ones first and the current one
// last; without versioning the listing shows one unversioned blob, which
// is deleted with its snapshots, as before. A version under a policy or
// a legal hold makes it fail with a *providers.LockedError, after the
// others were deleted. A name with only previous versions left (a plain
// delete by another tool) has them deleted, and is no ErrNotExist.
func (s *Store) Delete(ctx context.Context, key string) error {
	name, err := providers.CheckDelete(ctx, s, key, s.objectName)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("delete %q from %s", key, s)
	vs, err := s.versions(ctx, name)
	if err != nil {
		return fmt.Errorf("%s: list its versions: %w", what, classify(ctx, err))
	}
	if len(vs) == 0 {
		return fmt.Errorf("%s: %w", what, &classified{msg: "object does not exist", errs: []error{providers.ErrNotExist}})
	}
	// Previous versions first: the current one goes last, so that the
	// key stays visible until nothing else of it is left.
	var ordered []version
	for _, v := range vs {
		if !v.current {
			ordered = append(ordered, v)
		}
	}
	for _, v := range vs {
		if v.current {
			ordered = append(ordered, v)
		}
	}
	var locked error
	for _, v := range ordered {
		err := s.deleteVersion(ctx, key, name, v)
		switch {
		case err == nil:
		case errors.Is(err, providers.ErrLocked):
			if locked == nil {
				locked = err
			}
		case errors.Is(err, providers.ErrNotExist) && !v.current:
			// Deleted meanwhile: what was asked.
		default:
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if locked != nil {
		return fmt.Errorf("%s: %w", what, locked)
	}
	return nil
}

// deleteVersion deletes one version (or the unversioned blob) and turns
// a refusal for immutability into a LockedError with the policy's date,
// read from the version's properties when the listing did not have it.
func (s *Store) deleteVersion(ctx context.Context, key, name string, v version) error {
	bc := s.client.NewBlobClient(name)
	opts := &blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)}
	if v.id != "" {
		var err error
		if bc, err = bc.WithVersionID(v.id); err != nil {
			return err
		}
		opts = nil // a version has no snapshots of its own
	}
	_, err := bc.Delete(ctx, opts)
	if err == nil {
		return nil
	}
	if !isImmutable(err) {
		return classify(ctx, err)
	}
	le := &providers.LockedError{Key: key, Until: v.retention.Until, Mode: v.retention.Mode, Hold: v.hold}
	if le.Until.IsZero() && !le.Hold {
		if props, perr := bc.GetProperties(ctx, nil); perr == nil {
			r := retention(props.ImmutabilityPolicyExpiresOn, props.ImmutabilityPolicyMode)
			le.Until, le.Mode = r.Until, r.Mode
			le.Hold = props.LegalHold != nil && *props.LegalHold
		}
	}
	return le
}

// isImmutable reports a refusal to change a blob under an immutability
// policy or legal hold (409 BlobImmutableDueToPolicy; legal holds have
// their own code on some service versions).
func isImmutable(err error) bool {
	return bloberror.HasCode(err, bloberror.BlobImmutableDueToPolicy, "BlobImmutableDueToLegalHold")
}
