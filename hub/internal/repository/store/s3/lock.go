package s3

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/sendense/sendense/hub/internal/repository/store"
)

// Object Lock. A bucket created with Object Lock enabled is versioned, and each version of an
// object may carry a retention date before which the server refuses to delete or overwrite that
// version: in compliance mode nobody can, not even the bucket's owner or the account's root; in
// governance mode a user with the s3:BypassGovernanceRetention permission can (with the
// x-amz-bypass-governance-retention header, which this store never sends). A date can be moved
// later, never earlier. The hub's store uses it as follows:
//
//   - Retain moves an object's date to the given time when that is later, never earlier, so that
//     a chunk shared by several backups keeps the latest date any of them asked for.
//   - Every removal (Remove, RemoveIfOlder, Rename's delete of its source) first lists the
//     versions of the key and reads their dates: while one is in the future it removes nothing
//     and returns store.ErrRetained; otherwise it deletes every version. (A plain DELETE would
//     only add a delete marker and hide versions that are still there.)
//   - Rename's copy carries the source's date, like Touch's. A Rename (a chunk moved into
//     quarantine) whose source is retained hides the source behind a delete marker instead of
//     deleting it: the key reads as absent, so a damaged chunk is not reused and the next backup
//     of its bytes puts a fresh version; the hidden versions go with the key's next removal once
//     their dates passed (a key never put again keeps them until a lifecycle rule for noncurrent
//     versions, which the operator may set on the bucket, expires them).
//   - Touch makes no new version: it moves the current version's date to at least
//     touchRetention from now, so every removal refuses the object until then whatever its
//     time (a self-copy would leave the replaced version behind, retained, once per touch).
//     Versions left behind (a chunk put again) keep their own dates and go with the key's
//     removal.
//
// SeaweedFS (the version scripts/weed pins) enforces both modes this way; the tests check it.

// Modes of Config.ObjectLock.
const (
	LockCompliance = "compliance"
	LockGovernance = "governance"
)

func lockMode(s string) (minio.RetentionMode, error) {
	switch s {
	case "":
		return "", nil
	case LockCompliance:
		return minio.Compliance, nil
	case LockGovernance:
		return minio.Governance, nil
	}
	return "", fmt.Errorf("s3 object lock %q: want %s or %s", s, LockCompliance, LockGovernance)
}

// checkLockEnabled checks that the bucket was created with Object Lock enabled (retention dates
// on a bucket without it are refused by the server at every put) and has no default retention:
// the server would give one to every object the store puts, its locks' leases and removal
// markers too, which must go within seconds, while the store dates what it retains itself.
func (s *Store) checkLockEnabled(ctx context.Context) error {
	enabled, mode, validity, unit, err := s.client.GetObjectLockConfig(ctx, s.bucket)
	if err != nil && response(err).Code != "ObjectLockConfigurationNotFoundError" {
		return fmt.Errorf("s3 bucket %s: object lock configuration: %w", s.bucket, describe(err))
	}
	if enabled != "Enabled" {
		return fmt.Errorf("s3 bucket %s: object lock is not enabled; a bucket gets it only when it is created (with x-amz-bucket-object-lock-enabled: true)", s.bucket)
	}
	return s.refuseDefaultRetention(mode, validity, unit)
}

// refuseDefaultRetention refuses a bucket whose Object Lock configuration (mode, validity, unit
// as GetObjectLockConfig reads them) gives every new object a retention date.
func (s *Store) refuseDefaultRetention(mode *minio.RetentionMode, validity *uint, unit *minio.ValidityUnit) error {
	if mode == nil || *mode == "" || validity == nil || *validity == 0 || unit == nil {
		return nil
	}
	return fmt.Errorf("s3 bucket %s has a default retention (%s, %d %s): it would also retain the hub's locks and removal markers, which must go within seconds, and stall garbage collection; "+
		"remove the bucket's default retention (with --s3-object-lock the hub dates each backup's objects itself)", s.bucket, *mode, *validity, strings.ToLower(string(*unit)))
}

// checkVersions looks at the bucket of a store without Object Lock. One that keeps versions gets
// a warning: there a removal only hides an object behind a delete marker and a touch (a copy
// onto itself) keeps the object's old version, so space is never given back unless a lifecycle
// rule of the bucket expires noncurrent versions. One with a default retention is refused, as
// with Object Lock. A server or a user not allowed to say is not an error.
func (s *Store) checkVersions(ctx context.Context) error {
	vc, err := s.client.GetBucketVersioning(ctx, s.bucket)
	if err != nil {
		s.log.DebugContext(ctx, "s3 store: cannot read the bucket's versioning", "bucket", s.bucket, "err", describe(err))
		return nil
	}
	if vc.Status != "Enabled" && vc.Status != "Suspended" {
		return nil
	}
	if _, mode, validity, unit, err := s.client.GetObjectLockConfig(ctx, s.bucket); err == nil {
		if err := s.refuseDefaultRetention(mode, validity, unit); err != nil {
			return err
		}
	} else if response(err).Code != "ObjectLockConfigurationNotFoundError" {
		s.log.DebugContext(ctx, "s3 store: cannot read the bucket's object lock configuration", "bucket", s.bucket, "err", describe(err))
	}
	s.log.WarnContext(ctx, "s3 store: the bucket keeps versions: what garbage collection removes, and each chunk's old version at every backup that reuses it, stays stored until a lifecycle rule for noncurrent versions expires it; "+
		"add such a rule, or use a bucket without versioning, or one with Object Lock and --s3-object-lock", "bucket", s.bucket, "versioning", vc.Status)
	return nil
}

// ObjectLock reports the store's retention mode: LockCompliance, LockGovernance or "".
func (s *Store) ObjectLock() string {
	switch s.lock {
	case minio.Compliance:
		return LockCompliance
	case minio.Governance:
		return LockGovernance
	}
	return ""
}

// version is the current version of an object and its retention date (zero when it has none).
type version struct {
	id    string
	until time.Time
}

// headVersion reads version id of obj, or its current version when id is "".
func (s *Store) headVersion(ctx context.Context, obj, id string) (version, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	oi, err := s.client.StatObject(ctx, s.bucket, obj, minio.StatObjectOptions{VersionID: id})
	if err != nil {
		if isNotFound(err) {
			return version{}, store.ErrNotFound
		}
		if ctx.Err() != nil {
			return version{}, ctx.Err()
		}
		return version{}, describe(err)
	}
	v := version{id: oi.VersionID}
	if h := oi.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date"); h != "" {
		if v.until, err = time.Parse(time.RFC3339, h); err != nil {
			return version{}, fmt.Errorf("retain-until date %q of %s: %w", h, obj, err)
		}
	}
	return v, nil
}

// removableVersions returns every version of obj (and its delete markers) when none is under
// retention, or an error wrapping store.ErrRetained. A version left behind by a second Put would
// otherwise come back as the object once the current one is deleted. They come oldest first and
// the current version last, in the order to delete them: deleting the current one first would
// make an older version (a damaged one moved aside, say) the object until it went too, for a
// Touch to retain.
func (s *Store) removableVersions(ctx context.Context, obj string) ([]string, error) {
	// The current version first, by HEAD: a version listing is not guaranteed to show it.
	cur, err := s.headVersion(ctx, obj, "")
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return nil, err
	case time.Now().Before(cur.until):
		return nil, fmt.Errorf("%w until %s (%s mode)", store.ErrRetained, cur.until.UTC().Format(time.RFC3339), s.ObjectLock())
	}
	var ids []string
	for oi := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: obj, WithVersions: true}) {
		if oi.Err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("list versions of %s: %w", obj, describe(oi.Err))
		}
		if oi.Key != obj || oi.VersionID == cur.id {
			continue
		}
		ids = append(ids, oi.VersionID)
		if oi.IsDeleteMarker {
			continue
		}
		v, err := s.headVersion(ctx, obj, oi.VersionID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if time.Now().Before(v.until) {
			return nil, fmt.Errorf("%w until %s (%s mode)", store.ErrRetained, v.until.UTC().Format(time.RFC3339), s.ObjectLock())
		}
	}
	slices.Reverse(ids) // listed newest first
	if cur.id != "" {
		ids = append(ids, cur.id)
	}
	return ids, nil
}

// removeVersions deletes the versions of obj that removableVersions returned.
func (s *Store) removeVersions(ctx context.Context, obj string, ids []string) error {
	for _, id := range ids {
		if err := s.client.RemoveObject(ctx, s.bucket, obj, minio.RemoveObjectOptions{VersionID: id}); err != nil && !isNotFound(err) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if response(err).Code == "AccessDenied" {
				// An older version whose date has not passed: the server refuses, as it should.
				return fmt.Errorf("%w: version %s: %w", store.ErrRetained, id, describe(err))
			}
			return describe(err)
		}
	}
	return nil
}

// hide puts a delete marker on obj (a plain DELETE in a versioned bucket, which retention
// allows): its versions stay, and the key reads as absent.
func (s *Store) hide(ctx context.Context, obj string) error {
	ctx, cancel := context.WithTimeout(ctx, s.removeWindow)
	defer cancel()
	if err := s.client.RemoveObject(ctx, s.bucket, obj, minio.RemoveObjectOptions{}); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return describe(err)
	}
	return nil
}

// Hide implements store.Hider with a delete marker: in a versioned bucket, which Object Lock
// makes every locked bucket, a plain DELETE hides the object and keeps its versions, whatever
// their dates.
func (s *Store) Hide(ctx context.Context, key string) error {
	obj, err := s.objectKey(key)
	if err != nil {
		return fmt.Errorf("hide: %w", err)
	}
	if s.lock == "" {
		return fmt.Errorf("hide %s: the store does not use object lock", key)
	}
	if _, err := s.stat(ctx, obj); err != nil {
		return fmt.Errorf("hide %s: %w", key, err)
	}
	if err := s.hide(ctx, obj); err != nil {
		return fmt.Errorf("hide %s: %w", key, err)
	}
	return nil
}

// carryRetention adds to a self-copy's headers the retention of the version it replaces.
func (s *Store) carryRetention(ctx context.Context, obj string, headers map[string]string) error {
	v, err := s.headVersion(ctx, obj, "")
	if err != nil {
		return err
	}
	if time.Now().Before(v.until) {
		headers["X-Amz-Object-Lock-Mode"] = string(s.lock)
		headers["X-Amz-Object-Lock-Retain-Until-Date"] = v.until.UTC().Format(time.RFC3339)
	}
	return nil
}

// Retain makes the object under key undeletable until at least until (rounded up to the
// second): it sets the current version's retention date to until when that is later than the
// date it has, and leaves it otherwise, so it never shortens a date. ErrNotFound when there is
// no object. Only for a store opened with Config.ObjectLock. Two Retains of one key racing may
// both read the old date and both send theirs: the server refuses to move a date earlier (in
// governance mode too, as the store never sends the bypass header), so the earlier one fails
// and a retry finds the later date in place.
func (s *Store) Retain(ctx context.Context, key string, until time.Time) error {
	obj, err := s.objectKey(key)
	if err != nil {
		return fmt.Errorf("retain: %w", err)
	}
	if s.lock == "" {
		return fmt.Errorf("retain %s: the store does not use object lock", key)
	}
	if r := until.Truncate(time.Second); r.Before(until) {
		until = r.Add(time.Second)
	}
	until = until.UTC()
	v, err := s.headVersion(ctx, obj, "")
	if err != nil {
		return fmt.Errorf("retain %s: %w", key, err)
	}
	if !v.until.Before(until) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	mode := s.lock
	err = s.client.PutObjectRetention(ctx, s.bucket, obj, minio.PutObjectRetentionOptions{Mode: &mode, RetainUntilDate: &until, VersionID: v.id})
	switch {
	case err == nil:
		return nil
	case isNotFound(err):
		return fmt.Errorf("retain %s: %w", key, store.ErrNotFound)
	case ctx.Err() != nil:
		return fmt.Errorf("retain %s: %w", key, ctx.Err())
	}
	return fmt.Errorf("retain %s until %s: %w", key, until.Format(time.RFC3339), describe(err))
}

// RetainedUntil returns the retention date of the object under key (zero when it has none, or
// the store does not use object lock); ErrNotFound when there is no object.
func (s *Store) RetainedUntil(ctx context.Context, key string) (time.Time, error) {
	obj, err := s.objectKey(key)
	if err != nil {
		return time.Time{}, fmt.Errorf("retention: %w", err)
	}
	v, err := s.headVersion(ctx, obj, "")
	if err != nil {
		return time.Time{}, fmt.Errorf("retention of %s: %w", key, err)
	}
	return v.until, nil
}

// CreateBucket creates the bucket of cfg, with Object Lock enabled when cfg.ObjectLock is set
// (S3 enables it only at creation). An existing bucket owned by the caller is not an error.
func CreateBucket(ctx context.Context, cfg Config) error {
	st, err := connect(cfg)
	if err != nil {
		return err
	}
	defer st.tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	err = st.client.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region, ObjectLocking: cfg.ObjectLock != ""})
	if r := response(err); err != nil && r.Code != "BucketAlreadyOwnedByYou" && r.StatusCode != http.StatusConflict {
		return fmt.Errorf("create s3 bucket %s: %w", cfg.Bucket, describe(err))
	}
	return nil
}
