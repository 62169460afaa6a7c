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

// pathState is one path of a paths check on its way through the disks.
type pathState struct {
	c          api.RestoreTestCheck
	diskID, fp string // the disk named (empty: any) and the path in its tree
	done       bool
	reasons    []string // per disk looked at, why the path was not found there
	allMissing bool
}

// checkPaths runs the paths check: one result per path of the test, in order. It goes through
// the restore point's disks in order, opening one file tree at a time (a tree keeps up to 32
// MiB of pages), and checks on each disk the paths not yet found that may lie there; a path
// without a disk is taken from the first disk that has it. The error is ctx's, when it ended
// before every path was checked.
func (s *Service) checkPaths(ctx context.Context, t *catalog.RestoreTest, disks []restore.Disk, read *counter, done *atomic.Int64) ([]api.RestoreTestCheck, error) {
	ps := make([]*pathState, len(t.Paths))
	for i, p := range t.Paths {
		st := &pathState{c: api.RestoreTestCheck{Name: api.CheckPaths, Path: p}, allMissing: true}
		var err error
		if st.diskID, st.fp, err = api.SplitTestPath(p); err != nil { // requests are validated: a row written by other means
			st.c.Error, st.done = err.Error(), true
		}
		ps[i] = st
	}
	var runErr error
	for _, d := range disks {
		var todo []*pathState
		for _, st := range ps {
			if !st.done && (st.diskID == "" || st.diskID == d.DiskID) {
				todo = append(todo, st)
			}
		}
		if len(todo) == 0 {
			continue
		}
		if runErr = ctx.Err(); runErr != nil {
			break
		}
		start := time.Now()
		b, err := s.files.Open(ctx, t.BackupID, d.DiskID)
		opened := time.Since(start).Seconds() / float64(len(todo)) // shared by the paths that needed the tree
		for _, st := range todo {
			if runErr = ctx.Err(); runErr != nil {
				break
			}
			st.c.Seconds += opened
			lookOn(b, err, d.DiskID, st, read)
			done.Add(read.n.Swap(0))
		}
		if runErr != nil {
			break
		}
	}
	out := make([]api.RestoreTestCheck, 0, len(ps))
	for _, st := range ps {
		if !st.done {
			if runErr != nil {
				continue // not checked: the test fails on runErr
			}
			finish(st, disks)
		}
		if !st.c.Passed {
			s.log.WarnContext(ctx, "restore test: path check failed", "restore_test_id", t.ID, "vm_name", t.VMName, "backup_id", t.BackupID,
				"path", st.c.Path, "disk_id", st.c.DiskID, "err", st.c.Error)
		}
		out = append(out, st.c)
	}
	if runErr != nil {
		return out, fmt.Errorf("cancelled before every path was checked: %w", runErr)
	}
	return out, nil
}

// lookOn looks for a path on one disk whose tree is b (or could not be opened: openErr),
// and verifies what it finds there: what is found on a disk is the path's result, whatever
// the other disks hold.
func lookOn(b *files.Browser, openErr error, diskID string, st *pathState, read *counter) {
	start := time.Now()
	defer func() { st.c.Seconds += time.Since(start).Seconds() }()
	var e api.FileEntry
	err := openErr
	if err == nil {
		e, err = b.Stat(st.fp)
	}
	if err != nil {
		r := reason(err)
		st.allMissing = st.allMissing && r == reasonMissing
		st.reasons = append(st.reasons, diskID+": "+r)
		return
	}
	st.done = true
	st.c.DiskID, st.c.Type = diskID, e.Type
	if err := verify(b, st.fp, e, read); err != nil {
		st.c.Error = reason(err)
	} else {
		st.c.Passed = true
	}
	st.c.BytesRead = read.n.Load()
}

// finish gives a path found on no disk its reason.
func finish(st *pathState, disks []restore.Disk) {
	st.done = true
	var looked []string
	for _, d := range disks {
		if st.diskID == "" || st.diskID == d.DiskID {
			looked = append(looked, d.DiskID)
		}
	}
	switch {
	case st.diskID != "" && len(looked) == 0:
		st.c.DiskID, st.c.Error = st.diskID, "missing: the restore point has no disk "+st.diskID
	case len(looked) == 0:
		st.c.Error = "missing: the restore point has no disks"
	case st.diskID != "":
		st.c.DiskID, st.c.Error = st.diskID, strings.TrimPrefix(st.reasons[0], st.diskID+": ")
	case st.allMissing:
		st.c.Error = reasonMissing + " (looked on " + strings.Join(looked, ", ") + ")"
	default:
		st.c.Error = strings.Join(st.reasons, "; ")
	}
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
