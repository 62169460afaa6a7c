package disk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// fileReader reads a local file or block device with pread, which needs no locking.
type fileReader struct {
	f    *os.File
	path string
	size int64

	closeOnce sync.Once
	closeErr  error
}

var _ Reader = (*fileReader)(nil)

// OpenFile opens a local image file or block device (a hot-added disk) read-only. The size
// comes from seeking to the end, which works for block devices where Stat reports 0.
func OpenFile(path string) (Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open disk %s: %w", path, err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("size of disk %s: %w", path, err)
	}
	return &fileReader{f: f, path: path, size: size}, nil
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
	n, err := r.f.ReadAt(want, off)
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
