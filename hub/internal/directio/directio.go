// Package directio writes large buffers to files without copying them through the page cache
// (O_DIRECT) where the platform and the buffer allow it. On virtual machines, filling the page
// cache costs more CPU than hashing and decompressing the same bytes; data the hub writes (chunks,
// restored images) is not read back soon, so caching it buys nothing.
package directio

import "os"

// Align is the alignment O_DIRECT needs for buffer addresses, file offsets and lengths on the
// file systems a hub uses (4 KiB logical blocks).
const Align = 4096

// WriteAt writes p at off in f. The largest 4 KiB-aligned part of p goes through a second
// descriptor opened with O_DIRECT when p's address and off are aligned (Go places buffers of
// 32 KiB and more on page boundaries); the rest, and everything when direct I/O is not possible,
// goes through f. The caller still fsyncs f for durability.
func WriteAt(f *os.File, p []byte, off int64) error {
	n := len(p) &^ (Align - 1)
	if n > 0 && off%Align == 0 && aligned(p) {
		if d := openDirect(f.Name()); d != nil {
			_, err := d.WriteAt(p[:n], off)
			cerr := d.Close()
			if err == nil && cerr == nil {
				if n == len(p) {
					return nil
				}
				_, err = f.WriteAt(p[n:], off+int64(n))
				return err
			}
			// Some file systems accept O_DIRECT at open and refuse the write (EINVAL):
			// write through the page cache instead.
		}
	}
	_, err := f.WriteAt(p, off)
	return err
}

// Preallocate reserves the blocks of [off, off+n) in f without changing its size, so that
// writes into the range need not allocate: on ext4 and XFS, aligned direct writes into
// preallocated blocks run side by side, while writes that allocate take the inode's lock in
// turn. A file system that cannot preallocate is not an error (the writes allocate instead);
// running out of space is.
func Preallocate(f *os.File, off, n int64) error {
	if n <= 0 {
		return nil
	}
	return preallocate(f, off, n)
}
