package files

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// pageCache is an io.ReaderAt over an image that keeps the last few pages it read. A
// filesystem reader makes many small reads (a 256-byte inode, a 4 KiB directory block), and
// every read of a restore point's image reads, decompresses and verifies a whole chunk: with
// pages the size of a chunk, a directory of 10,000 entries costs a handful of chunk reads
// instead of 10,000. Memory is bounded by pages × pageSize.
type pageCache struct {
	r        io.ReaderAt
	size     int64
	pageSize int64
	max      int

	mu    sync.Mutex
	pages map[int64]*page
	tick  uint64
}

type page struct {
	data []byte
	used uint64
}

// newPageCache caches up to max pages of pageSize bytes of r, an image of size bytes.
func newPageCache(r io.ReaderAt, size, pageSize int64, max int) *pageCache {
	return &pageCache{r: r, size: size, pageSize: pageSize, max: max, pages: make(map[int64]*page, max)}
}

// ReadAt reads len(p) bytes at off. Reads past the end return io.EOF; an error of the image
// (a damaged chunk) is returned as it is and caches nothing.
func (c *pageCache) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= c.size {
			return n, io.EOF
		}
		k, err := c.copyFrom(p[n:], pos)
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// copyFrom copies into p from the page holding pos, under the lock: an evicted page's buffer
// is reused.
func (c *pageCache) copyFrom(p []byte, pos int64) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	idx := pos / c.pageSize
	pg, err := c.page(idx)
	if err != nil {
		return 0, err
	}
	return copy(p, pg[pos-idx*c.pageSize:]), nil
}

func (c *pageCache) page(idx int64) ([]byte, error) {
	c.tick++
	if pg, ok := c.pages[idx]; ok {
		pg.used = c.tick
		return pg.data, nil
	}
	start := idx * c.pageSize
	l := min(c.pageSize, c.size-start)
	var buf []byte
	if len(c.pages) >= c.max {
		// Evict the least recently used page and reuse its buffer.
		var oldest int64 = -1
		for k, pg := range c.pages {
			if oldest < 0 || pg.used < c.pages[oldest].used {
				oldest = k
			}
		}
		buf = c.pages[oldest].data[:cap(c.pages[oldest].data)]
		delete(c.pages, oldest)
	}
	if int64(len(buf)) < l {
		buf = make([]byte, c.pageSize)
	}
	buf = buf[:l]
	if _, err := c.r.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read image at %d: %w", start, err)
	}
	c.pages[idx] = &page{data: buf, used: c.tick}
	return buf, nil
}

// section is an io.ReaderAt over [off, off+size) of r that reports io.EOF at its end.
type section struct {
	r         io.ReaderAt
	off, size int64
}

func (s section) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= s.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > s.size-off {
		p = p[:s.size-off]
	}
	n, err := s.r.ReadAt(p, s.off+off)
	if err == nil && n < want {
		err = io.EOF
	}
	return n, err
}
