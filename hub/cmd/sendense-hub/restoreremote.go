package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/sendense/sendense/hub/internal/client"
	"github.com/sendense/sendense/shared/api"
)

// imageOps reads a backup and downloads the raw image of one of its disks.
type imageOps interface {
	Backup(ctx context.Context, id string) (api.Backup, error)
	DownloadImage(ctx context.Context, backupID, diskID, repo string, dst io.WriterAt, progress func(int64)) (int64, error)
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
