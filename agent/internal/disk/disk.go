// Package disk reads VM disk images through one small interface, whichever transport carries
// the bytes: NBD from an nbdkit process it supervises (vddk in production), HTTPS range requests
// (vSphere datastore file access), or a local file or block device.
package disk

import (
	"io"

	"github.com/sendense/sendense/agent/internal/nbd"
)

// Reader is random read access to one disk image of a fixed size.
//
// Contract, for every implementation:
//   - ReadAt is safe for concurrent use by many goroutines; the backup pipeline reads many
//     slots (usually 4 MiB) in parallel through one Reader.
//   - ReadAt follows io.ReaderAt. A short read happens only at the end of the disk and then
//     comes with io.EOF (a read at or past Size returns 0, io.EOF). Anything else short is an
//     error, never silently missing or wrong bytes.
//   - Size is the disk size in bytes, fixed when the Reader is opened.
//   - Close releases the transport and is idempotent. It may be called while reads are in
//     flight, which is how a caller aborts reads stuck on an unresponsive source (for example
//     with context.AfterFunc(ctx, func() { r.Close() })): they return errors promptly. Reads
//     after Close fail.
type Reader interface {
	io.ReaderAt
	Size() int64
	Close() error
}

// An NBD connection reads like any other disk (NBDKit.Open wraps one).
var _ Reader = (*nbd.Client)(nil)
