package nfsexport

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// countingReader counts the reads of an image and can fail them.
type countingReader struct {
	b     []byte
	reads atomic.Int64
	fail  atomic.Bool
}

var errDamaged = errors.New("chunk damaged")

func (r *countingReader) ReadAt(p []byte, off int64) (int, error) {
	r.reads.Add(1)
	if r.fail.Load() {
		return 0, errDamaged
	}
	if off >= int64(len(r.b)) {
		return 0, io.EOF
	}
	n := copy(p, r.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestSlotCacheReadsEachSlotOnce(t *testing.T) {
	const slotSize = 64 << 10
	img := make([]byte, 6*slotSize+1000)
	_, _ = rand.Read(img)
	r := &countingReader{b: img}
	c := newSlotCache(r, int64(len(img)), slotSize, 8)
	got := make([]byte, 0, len(img))
	buf := make([]byte, 4096)
	for off := int64(0); off < int64(len(img)); {
		n, err := c.ReadAt(buf, off)
		got = append(got, buf[:n]...)
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, img) {
		t.Fatal("sequential 4 KiB reads differ from the image")
	}
	if n := r.reads.Load(); n != 7 {
		t.Fatalf("%d reads of the image for 7 slots, want 7", n)
	}

	// Concurrent random reads, with a cache smaller than the image, all read right.
	small := newSlotCache(r, int64(len(img)), slotSize, 2)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 100<<10)
			for range 50 {
				off := mrand.Int64N(int64(len(img)))
				n, err := small.ReadAt(p, off)
				if err != nil && err != io.EOF {
					t.Error(err)
					return
				}
				if !bytes.Equal(p[:n], img[off:off+int64(n)]) {
					t.Errorf("read of %d bytes at %d differs", n, off)
					return
				}
			}
		}()
	}
	wg.Wait()

	// A failed read is not kept: it fails while the chunk is damaged, then reads again.
	fresh := newSlotCache(r, int64(len(img)), slotSize, 8)
	r.fail.Store(true)
	if _, err := fresh.ReadAt(buf, 0); !errors.Is(err, errDamaged) {
		t.Fatalf("read of a damaged slot: %v", err)
	}
	if _, err := fresh.ReadAt(buf, 0); !errors.Is(err, errDamaged) {
		t.Fatalf("second read of a damaged slot: %v", err)
	}
	r.fail.Store(false)
	if n, err := fresh.ReadAt(buf, 0); err != nil || !bytes.Equal(buf[:n], img[:n]) {
		t.Fatalf("read after the chunk is sound again: %d %v", n, err)
	}
}
