package nfsexport

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// ErrOverlayFull is returned for a write that would take a session's copy-on-write overlays
// past their bound. It wraps EDQUOT, which the NFS client sees as "disk quota exceeded": the
// guest gets an I/O error on that write and the backup stays untouched.
var ErrOverlayFull = fmt.Errorf("instant recovery overlay is full: %w", syscall.EDQUOT)

// overlayBlock is the unit of copy-on-write. 64 KiB keeps a guest's small random writes from
// copying a whole 4 MiB slot, and a 1 TiB disk's bitmap at 2 MiB.
const overlayBlock = 64 << 10

// seekData and seekHole are lseek's SEEK_DATA and SEEK_HOLE (Linux, and most Unixes).
const (
	seekData = 3
	seekHole = 4
)

// budget bounds the overlay bytes of one session, over all its disks.
type budget struct {
	limit int64
	used  atomic.Int64
}

// reserve takes n bytes of the budget, or returns ErrOverlayFull and takes nothing.
func (b *budget) reserve(n int64) error {
	for {
		cur := b.used.Load()
		if b.limit > 0 && cur+n > b.limit {
			return fmt.Errorf("%w (%d of %d bytes used)", ErrOverlayFull, cur, b.limit)
		}
		if b.used.CompareAndSwap(cur, cur+n) {
			return nil
		}
	}
}

// cowDisk is one disk of a session: reads come from the overlay where the guest wrote and
// from the restore point's image elsewhere; writes go only to the overlay, a sparse file of
// the disk's size. A block is in the overlay exactly when the sparse file has data there, so
// the overlay survives a restart without a separate map: it is rebuilt with SEEK_DATA.
// Methods are safe for concurrent use.
type cowDisk struct {
	base   io.ReaderAt
	size   int64
	f      *os.File
	budget *budget

	mu    sync.RWMutex
	dirty []uint64 // one bit per overlayBlock
}

// openCOW opens (or creates) the overlay file at path for a disk of size bytes read from base,
// charging the blocks already in it to b.
func openCOW(path string, base io.ReaderAt, size int64, b *budget) (*cowDisk, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open overlay %s: %w", path, err)
	}
	d := &cowDisk{base: base, size: size, f: f, budget: b}
	if err := d.load(); err != nil {
		f.Close()
		return nil, fmt.Errorf("load overlay %s: %w", path, err)
	}
	return d, nil
}

// load sizes the overlay file and rebuilds the dirty map from its allocated extents.
func (d *cowDisk) load() error {
	st, err := d.f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != d.size {
		if err := d.f.Truncate(d.size); err != nil {
			return err
		}
	}
	blocks := (d.size + overlayBlock - 1) / overlayBlock
	d.dirty = make([]uint64, (blocks+63)/64)
	var used int64
	for off := int64(0); off < d.size; {
		start, err := d.f.Seek(off, seekData)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) { // no data past off
				break
			}
			return fmt.Errorf("seek data at %d: %w", off, err)
		}
		end, err := d.f.Seek(start, seekHole)
		if err != nil {
			return fmt.Errorf("seek hole at %d: %w", start, err)
		}
		for blk := start / overlayBlock; blk*overlayBlock < end; blk++ {
			if !d.isDirty(blk) {
				d.setDirty(blk)
				used += min((blk+1)*overlayBlock, d.size) - blk*overlayBlock
			}
		}
		off = end
	}
	d.budget.used.Add(used)
	return nil
}

func (d *cowDisk) isDirty(blk int64) bool { return d.dirty[blk/64]&(1<<(blk%64)) != 0 }
func (d *cowDisk) setDirty(blk int64)     { d.dirty[blk/64] |= 1 << (blk % 64) }

// ReadAt reads the disk as the guest sees it: its own writes over the restore point.
func (d *cowDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: %w", off, syscall.EINVAL) // an NFS offset past 2^63
	}
	if off >= d.size {
		return 0, io.EOF
	}
	var eof error
	if rest := d.size - off; int64(len(p)) > rest {
		p, eof = p[:rest], io.EOF
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		blk := pos / overlayBlock
		dirty := d.isDirty(blk)
		// extend the run over following blocks in the same state
		end := (blk + 1) * overlayBlock
		for end < off+int64(len(p)) && d.isDirty(end/overlayBlock) == dirty {
			end += overlayBlock
		}
		if end > off+int64(len(p)) {
			end = off + int64(len(p))
		}
		src := d.base
		if dirty {
			src = d.f
		}
		m, err := src.ReadAt(p[n:end-off], pos)
		n += m
		if err != nil && !(errors.Is(err, io.EOF) && m == int(end-pos)) {
			return n, fmt.Errorf("read disk at %d: %w", pos, err)
		}
	}
	return n, eof
}

// WriteAt writes to the overlay, copying the untouched part of each block it first writes
// from the restore point, and syncs the overlay before returning: the NFS server answers
// every write as stable. A write past the disk's end fails with EFBIG (a disk does not grow).
func (d *cowDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || int64(len(p)) > d.size || off > d.size-int64(len(p)) { // no overflow of off+len
		return 0, fmt.Errorf("write %d bytes at %d past the disk's %d bytes: %w", len(p), off, d.size, syscall.EFBIG)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var buf []byte
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		blk := pos / overlayBlock
		blkStart := blk * overlayBlock
		blkEnd := min(blkStart+overlayBlock, d.size)
		chunk := p[n:min(len(p), n+int(blkEnd-pos))]
		if d.isDirty(blk) {
			if _, err := d.f.WriteAt(chunk, pos); err != nil {
				return n, fmt.Errorf("write overlay at %d: %w", pos, err)
			}
			n += len(chunk)
			continue
		}
		if err := d.budget.reserve(blkEnd - blkStart); err != nil {
			return n, err
		}
		if buf == nil {
			buf = make([]byte, overlayBlock)
		}
		b := buf[:blkEnd-blkStart]
		if pos != blkStart || int64(len(chunk)) != int64(len(b)) {
			if _, err := d.base.ReadAt(b, blkStart); err != nil && !errors.Is(err, io.EOF) {
				d.budget.used.Add(-(blkEnd - blkStart))
				return n, fmt.Errorf("copy block %d from the restore point: %w", blk, err)
			}
		}
		copy(b[pos-blkStart:], chunk)
		if _, err := d.f.WriteAt(b, blkStart); err != nil {
			d.budget.used.Add(-(blkEnd - blkStart))
			return n, fmt.Errorf("write overlay block %d: %w", blk, err)
		}
		d.setDirty(blk)
		n += len(chunk)
	}
	if err := d.f.Sync(); err != nil {
		return n, fmt.Errorf("sync overlay: %w", err)
	}
	return n, nil
}

// Close closes the overlay file; the file stays for a later open.
func (d *cowDisk) Close() error { return d.f.Close() }
