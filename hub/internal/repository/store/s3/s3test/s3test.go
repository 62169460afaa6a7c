// Package s3test gives the hub's tests store settings on the tests' S3 server
// (testenv.S3, the SeaweedFS of scripts/s3.sh): a fresh prefix of its bucket per test, emptied
// when the test ends. Tests only.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/hub/internal/repository/store/s3"
	"github.com/sendense/sendense/shared/testenv"
)

// Config returns the settings of a fresh, empty prefix of the tests' S3 bucket, starting the
// server if needed (or skipping the test when it cannot run). The prefix's objects are removed
// when the test ends.
func Config(t testing.TB) s3.Config {
	t.Helper()
	srv := testenv.S3(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	cfg := s3.Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, Prefix: "test-" + hex.EncodeToString(b[:]), AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}
	t.Cleanup(func() { clean(cfg) })
	return cfg
}

// clean removes the objects of a test's prefix; best effort, the server's data is a test's.
func clean(cfg s3.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := s3.Open(ctx, cfg, nil)
	if err != nil {
		return
	}
	defer st.Close()
	var keys []string
	_ = st.List(ctx, "", func(i store.Info) error { keys = append(keys, i.Key); return nil })
	for _, k := range keys {
		_ = st.Remove(ctx, k)
	}
}

// LockedConfig is Config in a bucket of the tests' S3 server created with Object Lock enabled
// (sendense-test-locked), for a store that sets retention dates in mode (s3.LockCompliance or
// s3.LockGovernance). Objects under retention outlive the test: keep the dates short.
func LockedConfig(t testing.TB, mode string) s3.Config {
	t.Helper()
	cfg := Config(t)
	cfg.Bucket += "-locked"
	cfg.ObjectLock = mode
	if err := s3.CreateBucket(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}
