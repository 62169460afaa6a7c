package s3_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/hub/internal/repository/store/s3"
	"github.com/sendense/sendense/hub/internal/repository/store/s3/s3test"
	"github.com/sendense/sendense/hub/internal/repository/store/storetest"
)

// A retained object survives every removal the store offers, in both modes, until its date
// has passed (a Rename only hides it); then it is removed for good (not hidden behind a delete
// marker).
func TestObjectLockRefusesRemovalUntilTheDate(t *testing.T) {
	for _, mode := range []string{s3.LockCompliance, s3.LockGovernance} {
		t.Run(mode, func(t *testing.T) {
			st := open(t, s3test.LockedConfig(t, mode))
			ctx := t.Context()
			if st.ObjectLock() != mode {
				t.Fatalf("ObjectLock() = %q", st.ObjectLock())
			}
			if err := st.Put(ctx, "chunks/aa/bb/x", []byte("locked")); err != nil {
				t.Fatal(err)
			}
			// Real time, which the S3 server goes by: the refusals below must all land
			// before it, on a loaded machine too.
			until := time.Now().Add(8 * time.Second)
			if err := st.Retain(ctx, "chunks/aa/bb/x", until); err != nil {
				t.Fatal(err)
			}
			got, err := st.RetainedUntil(ctx, "chunks/aa/bb/x")
			if err != nil || got.Before(until.Truncate(time.Second)) {
				t.Fatalf("RetainedUntil = %v, %v; want ≥ %v", got, err, until)
			}
			if err := st.Remove(ctx, "chunks/aa/bb/x"); !errors.Is(err, store.ErrRetained) || !strings.Contains(err.Error(), mode) {
				t.Fatalf("Remove of a retained object: %v, want ErrRetained naming %s", err, mode)
			}
			if _, _, err := st.RemoveIfOlder(ctx, "chunks/aa/bb/x", time.Now().Add(time.Hour)); !errors.Is(err, store.ErrRetained) {
				t.Fatalf("RemoveIfOlder of a retained object: %v, want ErrRetained", err)
			}
			// A Rename (into quarantine) cannot delete the retained source: it hides it behind a
			// delete marker, so that the key reads as absent while its versions stay; and the
			// object can go back (a sound chunk leaving quarantine).
			if err := st.Rename(ctx, "chunks/aa/bb/x", "quarantine/x"); err != nil {
				t.Fatalf("Rename of a retained object: %v", err)
			}
			if _, err := st.Stat(ctx, "chunks/aa/bb/x"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Stat of a renamed retained object: %v, want ErrNotFound", err)
			}
			if err := st.Rename(ctx, "quarantine/x", "chunks/aa/bb/x"); err != nil {
				t.Fatalf("Rename back: %v", err)
			}
			if err := st.Remove(ctx, "chunks/aa/bb/x"); !errors.Is(err, store.ErrRetained) {
				t.Fatalf("Remove after the renames: %v, want ErrRetained (the hidden version stays)", err)
			}
			// An earlier date changes nothing.
			if err := st.Retain(ctx, "chunks/aa/bb/x", time.Now()); err != nil {
				t.Fatal(err)
			}
			if got2, _ := st.RetainedUntil(ctx, "chunks/aa/bb/x"); !got2.Equal(got) {
				t.Fatalf("an earlier Retain moved the date to %v", got2)
			}
			if b, err := st.Get(ctx, "chunks/aa/bb/x", nil, 0); err != nil || string(b) != "locked" {
				t.Fatalf("Get = %q, %v", b, err)
			}
			time.Sleep(time.Until(got) + 1100*time.Millisecond)
			removed, _, err := st.RemoveIfOlder(ctx, "chunks/aa/bb/x", time.Now().Add(time.Hour))
			if err != nil || !removed {
				t.Fatalf("RemoveIfOlder after the date: %v, %v", removed, err)
			}
			if _, err := st.Stat(ctx, "chunks/aa/bb/x"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Stat after removal: %v", err)
			}
		})
	}
}

// Under Object Lock a Touch retains the object for two days instead of copying it onto itself:
// a self-copy would leave the replaced version behind, retained, once per touch (every full
// backup and every copy touches the chunks it reuses). The object keeps its time and version,
// every removal refuses it meanwhile, a date already later stays, and a missing object is
// ErrNotFound as always.
func TestTouchUnderObjectLockRetainsInsteadOfCopying(t *testing.T) {
	st := open(t, s3test.LockedConfig(t, s3.LockGovernance))
	ctx := t.Context()
	for _, k := range []string{"chunks/aa/bb/t", "chunks/aa/bb/later"} {
		if err := st.Put(ctx, k, []byte("reused")); err != nil {
			t.Fatal(err)
		}
	}
	later := time.Now().Add(30 * 24 * time.Hour)
	if err := st.Retain(ctx, "chunks/aa/bb/later", later); err != nil {
		t.Fatal(err)
	}
	before, err := st.Stat(ctx, "chunks/aa/bb/t")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // Last-Modified has whole seconds
	start := time.Now()
	for _, k := range []string{"chunks/aa/bb/t", "chunks/aa/bb/later"} {
		if err := st.Touch(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if until, err := st.RetainedUntil(ctx, "chunks/aa/bb/t"); err != nil || until.Before(start.Add(47*time.Hour)) {
		t.Fatalf("after Touch RetainedUntil = %v, %v; want two days from now", until, err)
	}
	if until, err := st.RetainedUntil(ctx, "chunks/aa/bb/later"); err != nil || until.Before(later.Truncate(time.Second)) {
		t.Fatalf("a Touch moved a later date to %v (%v), want it kept at %v", until, err, later)
	}
	if after, err := st.Stat(ctx, "chunks/aa/bb/t"); err != nil || !after.ModTime.Equal(before.ModTime) {
		t.Fatalf("Touch changed the time %v → %v (%v): it wrote a new version", before.ModTime, after.ModTime, err)
	}
	if removed, _, err := st.RemoveIfOlder(ctx, "chunks/aa/bb/t", time.Now().Add(time.Hour)); removed || !errors.Is(err, store.ErrRetained) {
		t.Fatalf("RemoveIfOlder of a touched object: %v, %v; want ErrRetained", removed, err)
	}
	if b, err := st.Get(ctx, "chunks/aa/bb/t", nil, 0); err != nil || string(b) != "reused" {
		t.Fatalf("Get after Touch = %q, %v", b, err)
	}
	if err := st.Touch(ctx, "chunks/aa/bb/none"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Touch of a missing object: %v, want ErrNotFound", err)
	}
}

// A store asked to use Object Lock refuses a bucket without it, and an unknown mode.
func TestObjectLockNeedsALockedBucket(t *testing.T) {
	cfg := s3test.Config(t)
	cfg.ObjectLock = s3.LockCompliance
	if _, err := s3.Open(t.Context(), cfg, nil); err == nil || !strings.Contains(err.Error(), "object lock is not enabled") {
		t.Fatalf("Open of a bucket without object lock: %v", err)
	}
	cfg.ObjectLock = "forever"
	if _, err := s3.Open(t.Context(), cfg, nil); err == nil || !strings.Contains(err.Error(), "want compliance or governance") {
		t.Fatalf("Open with mode %q: %v", cfg.ObjectLock, err)
	}
	cfg.ObjectLock = ""
	st := open(t, cfg)
	if err := st.Put(t.Context(), "k", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := st.Retain(t.Context(), "k", time.Now().Add(time.Minute)); err == nil {
		t.Fatal("Retain in a store without object lock succeeded")
	}
}

// The store keeps its whole contract in an Object Lock bucket (versioned), where removals
// delete versions rather than hide them.
func TestConformanceInObjectLockBucket(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func(t *testing.T) store.Store {
		cfg := s3test.LockedConfig(t, s3.LockGovernance)
		return func(t *testing.T) store.Store { return open(t, cfg) }
	})
}
