package s3

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/pgstow/pgstow/providers"
)

// S3 Object Lock (docs/immutability.md). A lock is set in the request that
// creates the object (PutObject, CreateMultipartUpload), so no unlocked
// object is ever visible; later it can only be extended
// (PutObjectRetention with a later date). Locks need a versioned bucket,
// so Delete removes the exact version a HEAD found rather than adding a
// delete marker, and never sends x-amz-bypass-governance-retention: a
// governance lock holds against pgstow as it does against an attacker
// with pgstow's credentials.

var _ providers.Locker = (*Store)(nil)

// lockMode maps a providers.LockMode onto S3's.
func lockMode(m providers.LockMode) (types.ObjectLockMode, error) {
	switch m {
	case providers.LockGovernance:
		return types.ObjectLockModeGovernance, nil
	case providers.LockCompliance:
		return types.ObjectLockModeCompliance, nil
	}
	return "", fmt.Errorf("unknown lock mode %q", m)
}

// fromS3Mode maps S3's mode (in any of its types) onto ours; "" for none.
func fromS3Mode(m string) providers.LockMode {
	switch m {
	case string(types.ObjectLockModeGovernance):
		return providers.LockGovernance
	case string(types.ObjectLockModeCompliance):
		return providers.LockCompliance
	}
	return ""
}

// lockFields fills the lock headers of an upload from opts; nothing when
// opts asks for no lock.
func lockFields(r providers.Retention) (types.ObjectLockMode, *time.Time, error) {
	if r.IsZero() {
		return "", nil, nil
	}
	mode, err := lockMode(r.Mode)
	if err != nil {
		return "", nil, err
	}
	until := r.Until.UTC()
	return mode, &until, nil
}

// lockRefusal turns the store's refusal of a locked write on a bucket
// without Object Lock into ErrLockUnsupported; other errors pass.
// AWS answers 400 InvalidRequest ("Bucket is missing Object Lock
// Configuration"), MinIO 400 InvalidRequest too; versitygw similar.
func lockRefusal(err error, r providers.Retention) error {
	if r.IsZero() || err == nil {
		return err
	}
	code := errorCode(err)
	if code == "InvalidRequest" || code == "InvalidBucketObjectLockConfiguration" ||
		code == "ObjectLockConfigurationNotFoundError" || code == "NotImplemented" {
		return fmt.Errorf("%w: the bucket has no Object Lock (create it with object lock enabled): %w", providers.ErrLockUnsupported, err)
	}
	return err
}

// headLock is what a HEAD says about an object's version and lock.
type headLock struct {
	versionID string
	ret       providers.Retention
	hold      bool
}

func (s *Store) headLock(ctx context.Context, name string) (headLock, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(name)})
	if err != nil {
		return headLock{}, err
	}
	h := headLock{
		versionID: aws.ToString(out.VersionId),
		hold:      out.ObjectLockLegalHoldStatus == types.ObjectLockLegalHoldStatusOn,
	}
	if out.ObjectLockRetainUntilDate != nil {
		h.ret = providers.Retention{Mode: fromS3Mode(string(out.ObjectLockMode)), Until: out.ObjectLockRetainUntilDate.UTC()}
	}
	return h, nil
}

// locked reports whether h forbids a deletion now, as a LockedError.
func (h headLock) locked(key string, now time.Time) error {
	switch {
	case h.hold:
		return &providers.LockedError{Key: key, Hold: true, Mode: h.ret.Mode, Until: h.ret.Until}
	case !h.ret.IsZero() && h.ret.Until.After(now):
		return &providers.LockedError{Key: key, Mode: h.ret.Mode, Until: h.ret.Until}
	}
	return nil
}

// Delete removes the object. S3 deletes a missing object without
// complaint, so a HEAD first finds a missing one; the same HEAD gives
// the object's lock (a locked object is a *providers.LockedError, without
// a delete attempt) and its version. In a bucket without versions that
// is all: one DeleteObject. In a versioned bucket a plain DeleteObject
// would only add a delete marker, and deleting the current version would
// bring an older one back (an overwritten lease, say), so every version
// of the key (and any delete marker) is listed and deleted by its id.
// A concurrent Delete between the requests is not noticed, which is
// harmless.
func (s *Store) Delete(ctx context.Context, key string) error {
	name, err := providers.CheckDelete(ctx, s, key, s.objectName)
	if err != nil {
		return err
	}
	h, err := s.headLock(ctx, name)
	if err != nil {
		return fmt.Errorf("delete %q from %s: %w", key, s, classify(err))
	}
	if lerr := h.locked(key, time.Now()); lerr != nil {
		return fmt.Errorf("delete %q from %s: %w", key, s, lerr)
	}
	if h.versionID == "" || h.versionID == "null" {
		// No versions kept (never enabled, or suspended: then the
		// null version goes, without a marker).
		in := &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(name)}
		if h.versionID != "" {
			in.VersionId = aws.String(h.versionID)
		}
		if _, err := s.client.DeleteObject(ctx, in); err != nil {
			return fmt.Errorf("delete %q from %s: %w", key, s, classify(err))
		}
		return nil
	}
	versions, err := s.versionsOf(ctx, name)
	if err != nil {
		return fmt.Errorf("delete %q from %s: %w", key, s, err)
	}
	if len(versions) == 0 {
		versions = []string{h.versionID} // a listing that lags
	}
	// Oldest first, the current version last: should an older version
	// be locked (by another tool, or a bucket default on a lease), the
	// deletion stops there and the current version stays current,
	// rather than the locked older one coming back in its place.
	for i := len(versions) - 1; i >= 0; i-- {
		v := versions[i]
		_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(name), VersionId: aws.String(v)})
		if err == nil {
			continue
		}
		// Locked since the HEAD, or an older version is locked: say
		// until when. AWS answers 403 AccessDenied, MinIO 400
		// InvalidRequest ("Object is WORM protected"): ask the version
		// itself rather than trust either.
		if !errors.Is(classify(err), providers.ErrTransient) {
			if lerr := s.versionLock(ctx, key, name, v); lerr != nil {
				return fmt.Errorf("delete %q from %s: %w", key, s, lerr)
			}
		}
		return fmt.Errorf("delete %q from %s: version %s: %w", key, s, v, classify(err))
	}
	return nil
}

// versionsOf lists the version ids (delete markers included) of exactly
// the object name, newest first as S3 lists them.
func (s *Store) versionsOf(ctx context.Context, name string) ([]string, error) {
	in := &s3.ListObjectVersionsInput{Bucket: aws.String(s.bucket), Prefix: aws.String(name)}
	var ids []string
	for {
		out, err := s.client.ListObjectVersions(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("list versions: %w", classify(err))
		}
		past := false
		for _, v := range out.Versions {
			switch k := aws.ToString(v.Key); {
			case k == name:
				ids = append(ids, aws.ToString(v.VersionId))
			case k > name:
				past = true
			}
		}
		for _, m := range out.DeleteMarkers {
			if aws.ToString(m.Key) == name {
				ids = append(ids, aws.ToString(m.VersionId))
			}
		}
		if past || !aws.ToBool(out.IsTruncated) {
			return ids, nil
		}
		in.KeyMarker, in.VersionIdMarker = out.NextKeyMarker, out.NextVersionIdMarker
	}
}

// versionLock returns a LockedError when version v of name is locked.
func (s *Store) versionLock(ctx context.Context, key, name, v string) error {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(name), VersionId: aws.String(v)})
	if err != nil {
		return nil
	}
	h := headLock{hold: out.ObjectLockLegalHoldStatus == types.ObjectLockLegalHoldStatusOn}
	if out.ObjectLockRetainUntilDate != nil {
		h.ret = providers.Retention{Mode: fromS3Mode(string(out.ObjectLockMode)), Until: out.ObjectLockRetainUntilDate.UTC()}
	}
	// Any date still ahead by the store's reckoning counts: our clock
	// may be behind.
	return h.locked(key, time.Now().Add(-time.Hour))
}

// Retention reports the object's lock (its current version's).
func (s *Store) Retention(ctx context.Context, key string) (providers.Retention, error) {
	name, err := providers.CheckStat(ctx, s, key, s.objectName)
	if err != nil {
		return providers.Retention{}, err
	}
	h, err := s.headLock(ctx, name)
	if err != nil {
		return providers.Retention{}, fmt.Errorf("retention of %q in %s: %w", key, s, classify(err))
	}
	return h.ret, nil
}

// ExtendRetention makes the object's current version locked at least
// until r.Until: a HEAD tells its lock, and PutObjectRetention is sent
// only when it falls short. A compliance lock is never turned into a
// governance one (S3 would refuse; pgstow would not want it).
func (s *Store) ExtendRetention(ctx context.Context, key string, r providers.Retention) error {
	name, err := providers.CheckStat(ctx, s, key, s.objectName)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("extend the retention of %q in %s", key, s)
	if r.IsZero() {
		return nil
	}
	h, err := s.headLock(ctx, name)
	if err != nil {
		return fmt.Errorf("%s: %w", what, classify(err))
	}
	mode := r.Mode
	if h.ret.Mode == providers.LockCompliance {
		mode = providers.LockCompliance
	}
	if !h.ret.Until.Before(r.Until) && (h.ret.Mode == mode) {
		return nil
	}
	until := r.Until
	if h.ret.Until.After(until) {
		until = h.ret.Until // a stronger mode, with the later date
	}
	m, err := lockMode(mode)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	in := &s3.PutObjectRetentionInput{
		Bucket:    aws.String(s.bucket),
		Key:       aws.String(name),
		Retention: &types.ObjectLockRetention{Mode: types.ObjectLockRetentionMode(m), RetainUntilDate: aws.Time(until.UTC())},
		// S3 requires a checksum of the body (Content-MD5 or an
		// x-amz-checksum): the SDK sends one for this operation.
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c,
	}
	if h.versionID != "" {
		in.VersionId = aws.String(h.versionID)
	}
	if _, err := s.client.PutObjectRetention(ctx, in); err != nil {
		return fmt.Errorf("%s: %w", what, lockRefusal(classify(err), r))
	}
	return nil
}

// LockConfig reads the bucket's Object Lock configuration and its
// versioning status. These need s3:GetBucketObjectLockConfiguration and
// s3:GetBucketVersioning; a refusal is reported as a note, not an error,
// since pgstow needs neither to write.
func (s *Store) LockConfig(ctx context.Context) (providers.LockConfig, error) {
	var c providers.LockConfig
	out, err := s.client.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: aws.String(s.bucket)})
	switch {
	case err == nil:
		if out.ObjectLockConfiguration != nil {
			olc := out.ObjectLockConfiguration
			c.Enabled = olc.ObjectLockEnabled == types.ObjectLockEnabledEnabled
			if olc.Rule != nil && olc.Rule.DefaultRetention != nil {
				dr := olc.Rule.DefaultRetention
				c.DefaultMode = fromS3Mode(string(dr.Mode))
				c.DefaultPeriod = time.Duration(aws.ToInt32(dr.Days))*24*time.Hour +
					time.Duration(aws.ToInt32(dr.Years))*365*24*time.Hour
			}
		}
	case errorCode(err) == "ObjectLockConfigurationNotFoundError" || errorCode(err) == "NoSuchObjectLockConfiguration":
		// No lock configuration: Enabled stays false.
	case errors.Is(classify(err), providers.ErrAccessDenied):
		c.Notes = append(c.Notes, "the credentials may not read the bucket's Object Lock configuration (s3:GetBucketObjectLockConfiguration)")
		return c, fmt.Errorf("read the object lock configuration of %s: %w", s, classify(err))
	default:
		return c, fmt.Errorf("read the object lock configuration of %s: %w", s, classify(err))
	}
	v, err := s.client.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: aws.String(s.bucket)})
	if err != nil {
		return c, fmt.Errorf("read the versioning status of %s: %w", s, classify(err))
	}
	c.Versioning = v.Status == types.BucketVersioningStatusEnabled
	c.NeedsVersioning = true
	if c.Enabled && !c.Versioning {
		c.Notes = append(c.Notes, "object lock is enabled but versioning is not: S3 requires versioning for object lock")
	}
	return c, nil
}
