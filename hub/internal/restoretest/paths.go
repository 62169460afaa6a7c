package restoretest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/files"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/shared/api"
)

// fileTrees opens the file trees of restore points' disks (file-level restore); files.Service
// is one. A Browser reads under the context it was opened with, and every read of it verifies
// its chunks: bytes under a damaged chunk fail with files.ErrDamaged, never come back wrong.
type fileTrees interface {
	Open(ctx context.Context, backupID, diskID string) (*files.Browser, error)
}

var _ fileTrees = (*files.Service)(nil)

// tree is one disk's file tree, opened at most once per test.
type tree struct {
	b   *files.Browser
	err error
}

// checkPaths runs the paths check: one result per path of the test, in order. The error is
// ctx's, when it ended before every path was checked.
func (s *Service) checkPaths(ctx context.Context, t *catalog.RestoreTest, disks []restore.Disk, read *counter, done *atomic.Int64) ([]api.RestoreTestCheck, error) {
	opened := map[string]tree{}
	open := func(diskID string) tree {
		tr, ok := opened[diskID]
		if !ok {
			tr.b, tr.err = s.files.Open(ctx, t.BackupID, diskID)
			opened[diskID] = tr
		}
		return tr
	}
	out := make([]api.RestoreTestCheck, 0, len(t.Paths))
	for _, p := range t.Paths {
		if ctx.Err() != nil {
			return out, fmt.Errorf("cancelled before path %s was checked: %w", p, ctx.Err())
		}
		c := s.checkPath(ctx, t, p, disks, open, read)
		done.Add(read.n.Swap(0))
		if !c.Passed {
			s.log.WarnContext(ctx, "restore test: path check failed", "restore_test_id", t.ID, "vm_name", t.VMName, "backup_id", t.BackupID,
				"path", p, "disk_id", c.DiskID, "err", c.Error)
		}
		out = append(out, c)
	}
	return out, nil
}

// checkPath looks for one path (api.SplitTestPath) on the disk it names, or on each disk in
// turn until one has it, and verifies what it finds: a file is read in full (into read), a
// directory or a volume listed.
func (s *Service) checkPath(ctx context.Context, t *catalog.RestoreTest, p string, disks []restore.Disk, open func(string) tree, read *counter) (c api.RestoreTestCheck) {
	start := time.Now()
	c = api.RestoreTestCheck{Name: api.CheckPaths, Path: p}
	defer func() { c.Seconds = time.Since(start).Seconds() }()
	diskID, fp, err := api.SplitTestPath(p)
	if err != nil { // requests are validated: a row written by other means
		c.Error = err.Error()
		return c
	}
	var candidates []string
	for _, d := range disks {
		if diskID == "" || d.DiskID == diskID {
			candidates = append(candidates, d.DiskID)
		}
	}
	switch {
	case diskID != "" && len(candidates) == 0:
		c.DiskID, c.Error = diskID, fmt.Sprintf("missing: the restore point has no disk %s", diskID)
		return c
	case len(candidates) == 0:
		c.Error = "missing: the restore point has no disks"
		return c
	}
	var reasons []string
	allMissing := true
	for _, d := range candidates {
		if ctx.Err() != nil {
			c.Error = fmt.Sprintf("cancelled: %v", ctx.Err())
			return c
		}
		tr := open(d)
		var e api.FileEntry
		err := tr.err
		if err == nil {
			e, err = tr.b.Stat(fp)
		}
		if err != nil {
			r := reason(err)
			allMissing = allMissing && r == reasonMissing
			reasons = append(reasons, d+": "+r)
			continue
		}
		// Found: what is found here is the result, whatever the other disks hold.
		c.DiskID, c.Type = d, e.Type
		if err := verify(tr.b, fp, e, read); err != nil {
			c.Error = reason(err)
		} else {
			c.Passed = true
		}
		c.BytesRead = read.n.Load()
		return c
	}
	switch {
	case diskID != "":
		c.DiskID, c.Error = diskID, strings.TrimPrefix(reasons[0], diskID+": ")
	case allMissing:
		c.Error = reasonMissing + " (looked on " + strings.Join(candidates, ", ") + ")"
	default:
		c.Error = strings.Join(reasons, "; ")
	}
	return c
}

// verify reads what was found at p: a regular file in full, a directory's entries, a volume's
// root directory (a volume whose filesystem cannot be read fails here); a symlink or another
// node exists, which is all the check asks of it.
func verify(b *files.Browser, p string, e api.FileEntry, read *counter) error {
	isVolume := strings.Count(p, "/") == 1
	switch {
	case e.Type == api.FileTypeFile:
		f, err := b.File(p)
		if err != nil {
			return err
		}
		_, err = f.Copy(read, 0, f.Entry.Size)
		return err
	case e.Type == api.FileTypeDir, isVolume:
		_, err := b.List(p)
		return err
	}
	return nil
}

const reasonMissing = "missing"

// reason says why a path failed, in the words of the evidence.
func reason(err error) string {
	switch {
	case errors.Is(err, files.ErrDamaged):
		return "damaged chunk: " + err.Error()
	case errors.Is(err, files.ErrUnsupported), errors.Is(err, files.ErrCorrupt), errors.Is(err, files.ErrTooLarge):
		return "filesystem not readable: " + err.Error()
	case errors.Is(err, files.ErrNotFound), errors.Is(err, files.ErrNotDir):
		return reasonMissing
	}
	return err.Error()
}
