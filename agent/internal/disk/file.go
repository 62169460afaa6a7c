package disk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// fileReader reads a local file or block device with pread, which needs no locking. The holes
// of a sparse file (a thin-provisioned flat disk file) are not read: they are zero, and reading
// them would only have the kernel zero page-cache pages and copy them out.
type fileReader struct {
	f    *os.File
	path string
	size int64

	// dense is set for a device, and once the file refused SEEK_DATA (a file system without
	// it): from then on every read is one pread.
	dense atomic.Bool
	// holeBytes counts the bytes returned as holes without reading them.
	holeBytes atomic.Int64

	closeOnce sync.Once
	closeErr  error
}

// Whence values of lseek(2) that find a sparse file's data and holes.
const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
)

// minHole is the shortest hole left unread: a shorter one inside data is read through, which
// costs less than the two lseek calls that skip it.
const minHole = 64 << 10

var _ Reader = (*fileReader)(nil)

// OpenFile opens a local image file or block device (a hot-added disk) read-only. The size
// comes from seeking to the end, which works for block devices where Stat reports 0.
func OpenFile(path string) (Reader, error) { return openFile(path, false) }

// openFile is OpenFile; with readHoles every byte is read, holes too, for a file system whose
// SEEK_DATA answers cannot be trusted (one that has called dirty data a hole loses that data
// from a backup that skips it).
func openFile(path string, readHoles bool) (Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open disk %s: %w", path, err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("size of disk %s: %w", path, err)
	}
	r := &fileReader{f: f, path: path, size: size}
	// A block device (a hot-added disk) has no holes to find: lseek would call it all data.
	if fi, err := f.Stat(); readHoles || err != nil || fi.Mode()&os.ModeDevice != 0 {
		r.dense.Store(true)
	}
	return r, nil
}

// Size returns the size measured at open.
func (r *fileReader) Size() int64 { return r.size }

// ReadAt reads up to the size measured at open. A file that shrank since is an error, not a
// short read.
func (r *fileReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read disk %s at offset %d: negative offset", r.path, off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= r.size {
		return 0, io.EOF
	}
	want := p
	if rem := r.size - off; int64(len(p)) > rem {
		want = p[:rem]
	}
	n, err := r.read(want, off)
	if n < len(want) {
		if err == nil || errors.Is(err, io.EOF) {
			err = fmt.Errorf("file shrank below its size at open (%d bytes): %w", r.size, io.ErrUnexpectedEOF)
		}
		return n, fmt.Errorf("read disk %s: %d bytes at offset %d: %w", r.path, len(want), off, err)
	}
	if len(want) < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// read fills p from off like pread, leaving holes of at least minHole unread. It returns fewer
// bytes than len(p) only when the file ends before off+len(p).
func (r *fileReader) read(p []byte, off int64) (int, error) {
	if r.dense.Load() {
		return r.f.ReadAt(p, off)
	}
	end := off + int64(len(p))
	pos := off
	next, err := r.nextData(pos, end)
	if err != nil {
		return r.f.ReadAt(p, off)
	}
	skipped := false
	for pos < end {
		if next > pos {
			clear(p[pos-off : next-off])
			r.holeBytes.Add(next - pos)
			pos, skipped = next, true
			continue
		}
		// Data at pos: read up to the next hole of at least minHole, or to end.
		stop := pos
		for {
			if stop, err = r.seek(stop, seekHole, end); err != nil {
				stop = end
				break
			}
			if stop == end {
				break
			}
			if next, err = r.nextData(stop, end); err != nil {
				stop, next = end, end
				break
			}
			if next-stop >= minHole || next == end {
				break
			}
			stop = next
		}
		n, err := r.f.ReadAt(p[pos-off:stop-off], pos)
		if n < int(stop-pos) {
			return int(pos-off) + n, err
		}
		pos = stop
	}
	if skipped {
		// A hole is also what lseek reports past the end of a file that shrank.
		fi, err := r.f.Stat()
		if err != nil {
			return 0, err
		}
		if fi.Size() < end {
			return int(max(fi.Size()-off, 0)), io.EOF
		}
	}
	return len(p), nil
}

// nextData returns where data starts at or after pos, or end when none does before end. An
// error means the file cannot tell (it is then marked dense).
func (r *fileReader) nextData(pos, end int64) (int64, error) {
	d, err := r.seek(pos, seekData, end)
	if errors.Is(err, syscall.ENXIO) {
		return end, nil // no data from pos to the end of the file
	}
	return d, err
}

// seek is lseek(2) with whence SEEK_DATA or SEEK_HOLE, its answer capped at end. The file
// offset it moves is not used by pread, so concurrent reads are unaffected.
func (r *fileReader) seek(pos int64, whence int, end int64) (int64, error) {
	at, err := r.f.Seek(pos, whence)
	if err != nil {
		if !errors.Is(err, syscall.ENXIO) {
			r.dense.Store(true)
		}
		return 0, err
	}
	return min(at, end), nil
}

// Close closes the file; later reads fail with os.ErrClosed. A read already inside pread
// finishes first (the descriptor is released after it).
func (r *fileReader) Close() error {
	r.closeOnce.Do(func() {
		if err := r.f.Close(); err != nil {
			r.closeErr = fmt.Errorf("close disk %s: %w", r.path, err)
		}
	})
	return r.closeErr
}
