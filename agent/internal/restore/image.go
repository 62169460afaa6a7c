package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// maxImageReopens bounds how often in a row a disk image is reopened without a byte read in
// between: a hub that keeps failing at the same byte (a damaged chunk) fails the restore.
const maxImageReopens = 5

// imageIdleTimeout is how long one read of an image may wait for a byte before the connection is
// taken for dead and the image reopened at the byte reached (a hub stuck on its repository, a
// link that went silent without breaking).
var imageIdleTimeout = 2 * time.Minute

// imageReader reads one disk image of a restore from the hub, start to end, for a stream that
// cannot start over (the VMDK upload into an import lease): when the connection drops or the
// body ends early, it reopens the image at the byte reached (a Range request) and goes on.
// The hub verifies every chunk before sending it, so what is read is the backup's bytes.
type imageReader struct {
	ctx           context.Context
	hub           restoreHub
	jobID, diskID string
	size, off     int64
	body          io.ReadCloser
	failures      int
	log           *slog.Logger
}

func newImageReader(ctx context.Context, hub restoreHub, jobID, diskID string, size int64, log *slog.Logger) *imageReader {
	return &imageReader{ctx: ctx, hub: hub, jobID: jobID, diskID: diskID, size: size, log: log}
}

func (r *imageReader) Read(p []byte) (int, error) {
	for {
		if r.off >= r.size {
			return 0, io.EOF
		}
		if r.body == nil {
			body, n, err := r.hub.OpenRestoreImage(r.ctx, r.jobID, r.diskID, r.off)
			if err != nil {
				return 0, fmt.Errorf("read image of disk %s at byte %d: %w", r.diskID, r.off, err)
			}
			if r.off+n != r.size {
				body.Close()
				return 0, fmt.Errorf("image of disk %s: %d bytes from byte %d, want %d in all", r.diskID, n, r.off, r.size)
			}
			r.body = body
		}
		body := r.body
		idle := time.AfterFunc(imageIdleTimeout, func() { _ = body.Close() })
		n, err := body.Read(p[:min(int64(len(p)), r.size-r.off)])
		if !idle.Stop() && err != nil {
			err = fmt.Errorf("no byte for %s: %w", imageIdleTimeout, err)
		}
		r.off += int64(n)
		if n > 0 {
			r.failures = 0
		}
		if err == nil || (errors.Is(err, io.EOF) && r.off == r.size) {
			if r.off == r.size {
				r.close()
			}
			return n, nil
		}
		r.close()
		if cerr := r.ctx.Err(); cerr != nil {
			return n, cerr
		}
		if r.failures++; r.failures > maxImageReopens {
			return n, fmt.Errorf("read image of disk %s at byte %d (%d attempts): %w", r.diskID, r.off, r.failures, err)
		}
		r.log.WarnContext(r.ctx, "image read broke off; reopening at the byte reached", "disk_id", r.diskID, "offset_bytes", r.off, "attempt", r.failures, "err", err)
		if n > 0 {
			return n, nil
		}
	}
}

func (r *imageReader) close() {
	if r.body != nil {
		_ = r.body.Close()
		r.body = nil
	}
}
