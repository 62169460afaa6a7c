package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrDiffer is returned by CompareFiles for files whose bytes differ.
var ErrDiffer = errors.New("images differ")

// CompareFiles checks that two disk images hold the same size bytes, reading only the areas
// that either file has allocated: a hole reads as zeros, so areas that are holes in both are
// equal. A file shorter than size reads as zero-padded. It is how a 102 GB sparse disk is
// compared with its restored image in seconds.
func CompareFiles(a, b string, size int64) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	for _, f := range []*os.File{fa, fb} {
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if fi.Size() > size {
			return fmt.Errorf("%s: %d bytes, longer than the %d-byte disk: %w", f.Name(), fi.Size(), size, ErrDiffer)
		}
	}
	ea, err := dataExtents(fa, 0, size)
	if err != nil {
		return err
	}
	eb, err := dataExtents(fb, 0, size)
	if err != nil {
		return err
	}
	all := mergeExtents(append(ea, eb...))
	const block = 4 << 20
	ba, bb := make([]byte, block), make([]byte, block)
	for _, e := range all {
		for off := e.Offset; off < e.End(); off += block {
			n := min(block, e.End()-off)
			if err := readPadded(fa, ba[:n], off); err != nil {
				return err
			}
			if err := readPadded(fb, bb[:n], off); err != nil {
				return err
			}
			if !bytes.Equal(ba[:n], bb[:n]) {
				i := 0
				for ba[i] == bb[i] {
					i++
				}
				return fmt.Errorf("first difference at byte %d: %w", off+int64(i), ErrDiffer)
			}
		}
	}
	return nil
}

// readPadded reads len(p) bytes at off, zero-filling what lies past the end of the file.
func readPadded(f *os.File, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read %s at %d: %w", f.Name(), off, err)
	}
	clear(p[n:])
	return nil
}
