package repository

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/repository/store/s3"
	"github.com/sendense/sendense/shared/api"
)

// CreateS3 is Create for a repository in an S3 bucket: it checks the settings, reads the
// credentials file, initialises a repository under the bucket's prefix (or adopts the one
// there) and records the settings — the credentials file's path, never its content — in the
// catalog under name. The bucket must exist. A non-empty passwordFile makes (or adopts) an
// encrypted repository, as CreateEncrypted does for a directory.
func (g *Registry) CreateS3(ctx context.Context, name string, set api.S3Settings, chunkSize int64, passwordFile string) (*catalog.Repository, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if err := CheckChunkSize(chunkSize); err != nil {
		return nil, err
	}
	for _, f := range []struct{ field, value string }{
		{"s3_endpoint", set.S3Endpoint}, {"s3_bucket", set.S3Bucket}, {"s3_credentials_file", set.S3CredentialsFile},
	} {
		if f.value == "" {
			return nil, &api.FieldError{Field: f.field, Msg: "required for an S3 repository"}
		}
	}
	// The hub reads the files whenever it opens the repository, from wherever it runs: the
	// paths are made absolute now.
	var err error
	if set.S3CredentialsFile, err = filepath.Abs(set.S3CredentialsFile); err != nil {
		return nil, &api.FieldError{Field: "s3_credentials_file", Msg: err.Error()}
	}
	if set.S3CAFile != "" {
		if set.S3CAFile, err = filepath.Abs(set.S3CAFile); err != nil {
			return nil, &api.FieldError{Field: "s3_ca_file", Msg: err.Error()}
		}
	}
	set.S3Prefix = strings.Trim(set.S3Prefix, "/")
	switch {
	case set.S3ObjectLock != "" && set.S3ObjectLock != s3.LockCompliance && set.S3ObjectLock != s3.LockGovernance:
		return nil, &api.FieldError{Field: "s3_object_lock", Msg: "must be compliance or governance"}
	case set.S3ObjectLock != "" && (set.S3LockDays < 1 || set.S3LockDays > maxLockDays):
		return nil, &api.FieldError{Field: "s3_lock_days", Msg: fmt.Sprintf("must be 1 to %d with s3_object_lock", maxLockDays)}
	case set.S3ObjectLock == "" && set.S3LockDays != 0:
		return nil, &api.FieldError{Field: "s3_lock_days", Msg: "needs s3_object_lock"}
	}
	opts := g.repoOptions()
	if passwordFile != "" {
		if passwordFile, err = secretRef(passwordFile); err != nil {
			return nil, err
		}
		opts = append(opts, WithPasswordFile(passwordFile))
	}
	if _, err := g.cat.RepositoryByName(ctx, name); err == nil {
		return nil, fmt.Errorf("repository %q: %w", name, catalog.ErrConflict)
	}
	rec := &catalog.Repository{Name: name, Kind: api.RepositoryS3, Path: s3Location(set),
		S3Endpoint: set.S3Endpoint, S3Bucket: set.S3Bucket, S3Prefix: set.S3Prefix, S3Region: set.S3Region,
		S3CAFile: set.S3CAFile, S3CredentialsFile: set.S3CredentialsFile, PasswordFile: passwordFile,
		S3ObjectLock: set.S3ObjectLock, S3LockDays: set.S3LockDays}
	// Settings that do not lead to a usable bucket are the request's fault: field errors.
	st, err := openS3Store(ctx, rec, g)
	var cerr *credentialsError
	switch {
	case errors.As(err, &cerr):
		return nil, &api.FieldError{Field: "s3_credentials_file", Msg: err.Error()}
	case err != nil && set.S3ObjectLock != "" && strings.Contains(err.Error(), "object lock"):
		return nil, &api.FieldError{Field: "s3_object_lock", Msg: err.Error()}
	case err != nil:
		return nil, &api.FieldError{Field: "s3_endpoint", Msg: err.Error()}
	}
	r, err := Open(ctx, st, opts...)
	if errors.Is(err, ErrNotRepository) {
		if passwordFile != "" {
			opts = append(opts, Encrypt())
		}
		r, err = Init(ctx, st, chunkSize, opts...)
	}
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("repository %q at %s: %w", name, rec.Path, err)
	}
	if passwordFile != "" && !r.Encrypted() {
		_ = r.Close()
		return nil, fmt.Errorf("%s already holds a repository that is not encrypted", rec.Path)
	}
	if chunkSize != 0 && r.ChunkSize() != chunkSize {
		_ = r.Close()
		return nil, fmt.Errorf("%s already holds a repository with chunk size %d", rec.Path, r.ChunkSize())
	}
	rec.ID, rec.ChunkSize = r.ID(), r.ChunkSize()
	if err := g.cat.CreateRepository(ctx, rec); err != nil {
		_ = r.Close()
		return nil, err
	}
	r.lockPeriod = time.Duration(rec.S3LockDays) * 24 * time.Hour
	g.keep(rec.ID, r)
	return rec, nil
}

// maxLockDays bounds s3_lock_days: ten years, far beyond any sane lock, still a date S3 takes.
const maxLockDays = 3650

// s3Location is where an S3 repository is, for people: endpoint/bucket[/prefix].
func s3Location(set api.S3Settings) string {
	loc := strings.TrimSuffix(set.S3Endpoint, "/") + "/" + set.S3Bucket
	if set.S3Prefix != "" {
		loc += "/" + set.S3Prefix
	}
	return loc
}

func s3Settings(r *catalog.Repository) api.S3Settings {
	return api.S3Settings{S3Endpoint: r.S3Endpoint, S3Bucket: r.S3Bucket, S3Prefix: r.S3Prefix, S3Region: r.S3Region, S3CAFile: r.S3CAFile, S3CredentialsFile: r.S3CredentialsFile,
		S3ObjectLock: r.S3ObjectLock, S3LockDays: r.S3LockDays}
}

// openS3 opens the S3 repository of a catalog record, unlocking an encrypted one with the
// secret in passwordFile.
func (g *Registry) openS3(ctx context.Context, rec *catalog.Repository, passwordFile string) (*Repository, error) {
	st, err := openS3Store(ctx, rec, g)
	if err != nil {
		return nil, err
	}
	r, err := Open(ctx, st, append(g.repoOptions(), WithPasswordFile(passwordFile))...)
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("%s: %w", rec.Path, err)
	}
	r.lockPeriod = time.Duration(rec.S3LockDays) * 24 * time.Hour
	return r, nil
}

// openS3Store reads the record's credentials file and connects to its bucket.
func openS3Store(ctx context.Context, rec *catalog.Repository, g *Registry) (*s3.Store, error) {
	key, secret, err := s3.ReadCredentials(rec.S3CredentialsFile)
	if err != nil {
		return nil, &credentialsError{err}
	}
	return s3.Open(ctx, s3.Config{
		Endpoint: rec.S3Endpoint, Bucket: rec.S3Bucket, Prefix: rec.S3Prefix, Region: rec.S3Region,
		CAFile: rec.S3CAFile, AccessKey: key, SecretKey: secret, ObjectLock: rec.S3ObjectLock,
	}, g.log)
}

// credentialsError is a credentials file that cannot be read.
type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }
