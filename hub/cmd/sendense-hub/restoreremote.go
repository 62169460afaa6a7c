package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sendense/sendense/hub/internal/client"
	"github.com/sendense/sendense/shared/api"
)

// imageOps reads a backup, holds it, and downloads the raw image of one of its disks.
type imageOps interface {
	Backup(ctx context.Context, id string) (api.Backup, error)
	DownloadImage(ctx context.Context, backupID, diskID, repo string, dst io.WriterAt, progress func(int64)) (int64, error)
	HoldBackup(ctx context.Context, backupID string) (api.BackupHold, error)
	RenewHold(ctx context.Context, backupID, id string) (api.BackupHold, error)
	EndHold(ctx context.Context, backupID, id string) error
}

var _ imageOps = (*client.Client)(nil)

// restoreRemote downloads disks of a backup over the API into sparse raw images (qcow2 after
// conversion). The hub verifies every chunk it serves and breaks the transfer on damage; a
// broken transfer is resumed, and one that cannot be completed removes the partial image.
func restoreRemote(ctx context.Context, e *env, o imageOps, backupID, repo, only, output, qemuImg string) error {
	bk, err := o.Backup(ctx, backupID)
	if err != nil {
		return err
	}
	if bk.Status != api.JobSucceeded {
		return fmt.Errorf("backup %s is %s: only a succeeded backup is a restore point", backupID, bk.Status)
	}
	var targets []api.BackupDisk
	for _, d := range bk.Disks {
		if only == "" || d.DiskID == only {
			targets = append(targets, d)
		}
	}
	if len(targets) == 0 {
		return fmt.Errorf("backup %s has no disk %q", backupID, only)
	}
	// Each disk is one download (and a broken one is resumed in another request); between them
	// the backup is held, so that it cannot be pruned or deleted halfway through the restore.
	defer holdBackup(ctx, e, o, backupID)()
	for _, d := range targets {
		out, err := restoreOutput(output, only, d.DiskID, qemuImg)
		if err != nil {
			return err
		}
		raw := rawPath(out, qemuImg)
		size, err := downloadDisk(ctx, e, o, backupID, repo, d, raw)
		if err != nil {
			return err
		}
		if err := finishRestore(ctx, e, d.DiskID, raw, out, size, qemuImg); err != nil {
			return err
		}
	}
	return nil
}

// Bounds on how often a hold is renewed: a quarter of its lifetime, within these.
const (
	minHoldRenewal = time.Second
	maxHoldRenewal = 30 * time.Second
)

// holdBackup holds backup backupID on the hub and renews the hold until release, which ends it.
// A hold found expired (the hub out of reach for its lifetime) is taken again; a renewal that
// fails is reported and the restore goes on, as it does against a hub without holds: the hub
// verifies every chunk it serves, so a backup deleted meanwhile fails the download, never gives
// other bytes.
func holdBackup(ctx context.Context, e *env, o imageOps, backupID string) (release func()) {
	h, err := o.HoldBackup(ctx, backupID)
	if err != nil {
		fmt.Fprintf(e.stderr, "warning: hold backup %s for the restore: %v; restoring without a hold\n", backupID, err)
		return func() {}
	}
	// Counted from its lifetime, not its expiry: the clocks of hub and client may differ.
	every := maxHoldRenewal
	if h.TTLSeconds > 0 {
		every = min(max(time.Duration(h.TTLSeconds)*time.Second/4, minHoldRenewal), maxHoldRenewal)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
			next, err := renewHold(ctx, o, backupID, h.ID, 2*every)
			if err == nil {
				h = next // before looking at ctx: release must end the hold it holds
			}
			switch {
			case ctx.Err() != nil:
				return
			case err != nil && !failing:
				fmt.Fprintf(e.stderr, "warning: renew the hold of backup %s: %v\n", backupID, err)
			}
			failing = err != nil
		}
	}()
	return func() {
		cancel()
		<-done
		ectx, stop := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer stop()
		if err := o.EndHold(ectx, backupID, h.ID); err != nil {
			fmt.Fprintf(e.stderr, "warning: end the hold of backup %s (it expires by itself): %v\n", backupID, err)
		}
	}
}

// renewHold renews hold id within timeout, or takes a new hold when the hub no longer knows it.
func renewHold(ctx context.Context, o imageOps, backupID, id string, timeout time.Duration) (api.BackupHold, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	h, err := o.RenewHold(ctx, backupID, id)
	var ae *client.Error
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return o.HoldBackup(ctx, backupID)
	}
	return h, err
}

func downloadDisk(ctx context.Context, e *env, o imageOps, backupID, repo string, d api.BackupDisk, raw string) (int64, error) {
	f, err := os.OpenFile(raw, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", raw, err)
	}
	bar := newProgress(e.stderr, "restore "+d.DiskID, d.CapacityBytes)
	size, err := o.DownloadImage(ctx, backupID, d.DiskID, repo, sparseWriter{f}, func(done int64) { bar.Update(done, "") })
	if err == nil {
		err = f.Truncate(size) // a trailing hole
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(raw)
		return 0, fmt.Errorf("restore %s of %s: %w (the partial image was removed)", d.DiskID, backupID, err)
	}
	bar.Done(size, "verified by the hub")
	return size, nil
}

// sparseWriter leaves all-zero writes out, so that they stay holes of the file (which is new,
// hence zero there, and truncated to the image's size at the end).
type sparseWriter struct{ f *os.File }

func (w sparseWriter) WriteAt(p []byte, off int64) (int, error) {
	if isZero(p) {
		return len(p), nil
	}
	return w.f.WriteAt(p, off)
}

var zeros = make([]byte, 64<<10)

func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeros))
		if !bytes.Equal(p[:n], zeros[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}

// getRemoteFile downloads one file of a restore point over the API to output (through a
// temporary file renamed once complete, with the file's mtime) or to stdout. The hub verifies
// every chunk and audits the download.
func getRemoteFile(ctx context.Context, cl *client.Client, backupID, diskID, p, output string, stdout io.Writer) error {
	if output == "" {
		_, _, err := cl.DownloadFile(ctx, backupID, diskID, p, &sequentialWriter{w: stdout})
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(output), "."+filepath.Base(output)+".part-*")
	if err != nil {
		return err
	}
	_, mtime, err := cl.DownloadFile(ctx, backupID, diskID, p, tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if !mtime.IsZero() {
			_ = os.Chtimes(tmp.Name(), mtime, mtime)
		}
		err = os.Rename(tmp.Name(), output)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	return nil
}

// sequentialWriter is an io.WriterAt over a stream that accepts only the next offset: a
// resumed download continues at exactly the byte reached, so that is all it needs.
type sequentialWriter struct {
	w   io.Writer
	off int64
}

func (s *sequentialWriter) WriteAt(p []byte, off int64) (int, error) {
	if off != s.off {
		return 0, fmt.Errorf("write at %d of a stream at %d", off, s.off)
	}
	n, err := s.w.Write(p)
	s.off += int64(n)
	return n, err
}
