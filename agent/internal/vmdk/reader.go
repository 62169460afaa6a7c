package vmdk

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zlib"
)

// Limits of what Reader accepts from a stream, outside bytes: a grain's compressed form is at
// most twice a grain (deflate of random data grows by a fraction of a percent), and a table or
// directory at most 64 MiB (the directory of a 62 TiB disk is 8 MiB).
const maxMetadataSectors = 64 << 20 / SectorSize

func maxCompressed(grainBytes int64) int64 { return 2*grainBytes + 1024 }

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroGrain))
		if !bytes.Equal(b[:n], zeroGrain[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// Reader decodes a stream-optimized VMDK in one sequential pass, as an import receives it: it
// follows the markers and never seeks, so the grain tables and directory are skipped, not
// trusted. It is the counterpart of Write for the lab's import handler and for tests.
type Reader struct {
	in       *bufio.Reader
	h        header
	capacity int64
	pos      int64 // bytes of the stream consumed
}

// ReadStats describes one decoded stream.
type ReadStats struct {
	DataGrains   int64 // grains in the stream
	WrittenBytes int64 // bytes written to the destination (non-zero grains, clipped to the capacity)
	StreamSize   int64 // bytes of the stream through its end-of-stream marker
}

// NewReader reads the stream's header; the error wraps ErrFormat for anything but a
// stream-optimized sparse extent (version 3, compressed grains with markers, deflate).
func NewReader(src io.Reader) (*Reader, error) {
	r := &Reader{in: bufio.NewReaderSize(src, 1<<20)}
	sec := make([]byte, SectorSize)
	if err := r.full(sec); err != nil {
		return nil, err
	}
	h, err := parseHeader(sec)
	if err != nil {
		return nil, err
	}
	switch {
	case h.Flags&flagCompressed == 0 || h.Flags&flagMarkers == 0 || h.CompressAlgo != compressDeflate:
		return nil, fmt.Errorf("%w: flags %#x, compression %d (want deflated grains with markers)", ErrFormat, h.Flags, h.CompressAlgo)
	case h.GrainSize < 8 || h.GrainSize > 2048 || h.GrainSize&(h.GrainSize-1) != 0 || h.Capacity == 0 || h.Capacity > uint64(MaxCapacity/SectorSize):
		// Grains are a power of two from 4 KiB to 1 MiB (vSphere writes 64 KiB).
		return nil, fmt.Errorf("%w: grain of %d sectors, capacity of %d sectors", ErrFormat, h.GrainSize, h.Capacity)
	case h.OverHead < 1 || h.OverHead > maxMetadataSectors:
		return nil, fmt.Errorf("%w: overhead of %d sectors", ErrFormat, h.OverHead)
	}
	r.h, r.capacity = h, int64(h.Capacity)*SectorSize
	// The descriptor and any padding up to the first grain.
	if err := r.skip(int64(h.OverHead-1) * SectorSize); err != nil {
		return nil, err
	}
	return r, nil
}

// Capacity is the disk's size in bytes, from the header.
func (r *Reader) Capacity() int64 { return r.capacity }

// WriteTo inflates every grain of the stream into dst at its disk offset, up to the
// end-of-stream marker. Grains that inflate to zeros are not written, so a sparse file stays
// sparse where the disk holds zeros; the caller sizes dst to Capacity. A grain beyond the
// capacity, one that inflates to more than a grain, a bad marker or a stream that ends before
// its end-of-stream marker is an error wrapping ErrFormat (or the read error).
func (r *Reader) WriteTo(dst io.WriterAt) (ReadStats, error) {
	var st ReadStats
	grainBytes := int64(r.h.GrainSize) * SectorSize
	out := make([]byte, grainBytes+1)
	var buf []byte
	sec := make([]byte, SectorSize)
	var zr io.ReadCloser
	for {
		start := r.pos
		if err := r.full(sec); err != nil {
			return st, err
		}
		val := binary.LittleEndian.Uint64(sec[0:])
		size := binary.LittleEndian.Uint32(sec[8:])
		if size == 0 {
			typ := binary.LittleEndian.Uint32(sec[12:])
			switch typ {
			case markerEOS:
				st.StreamSize = r.pos
				return st, nil
			case markerGT, markerGD, markerFooter:
				if val > maxMetadataSectors {
					return st, fmt.Errorf("%w: marker %d of %d sectors at byte %d", ErrFormat, typ, val, start)
				}
				if err := r.skip(int64(val) * SectorSize); err != nil {
					return st, err
				}
				continue
			default:
				return st, fmt.Errorf("%w: unknown marker %d at byte %d", ErrFormat, typ, start)
			}
		}
		// A grain: 12 bytes of marker, the compressed bytes, padding to a sector.
		if int64(size) > maxCompressed(grainBytes) {
			return st, fmt.Errorf("%w: grain of %d compressed bytes at byte %d", ErrFormat, size, start)
		}
		off := int64(val) * SectorSize
		if val >= r.h.Capacity || val%r.h.GrainSize != 0 {
			return st, fmt.Errorf("%w: grain at sector %d (capacity %d, grain %d sectors)", ErrFormat, val, r.h.Capacity, r.h.GrainSize)
		}
		total := sectors(12+int64(size)) * SectorSize
		buf = append(buf[:0], sec...)
		buf = append(buf, make([]byte, total-SectorSize)...)
		if err := r.full(buf[SectorSize:]); err != nil {
			return st, err
		}
		comp := buf[12 : 12+int64(size)]
		var err error
		if zr == nil {
			zr, err = zlib.NewReader(bytes.NewReader(comp))
		} else {
			err = zr.(zlib.Resetter).Reset(bytes.NewReader(comp), nil)
		}
		if err != nil {
			return st, fmt.Errorf("%w: grain at sector %d: %v", ErrFormat, val, err)
		}
		n, err := io.ReadFull(zr, out)
		if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			if err == nil {
				err = errors.New("inflates to more than a grain")
			}
			return st, fmt.Errorf("%w: grain at sector %d: %v", ErrFormat, val, err)
		}
		st.DataGrains++
		n = int(min(int64(n), r.capacity-off))
		if isZero(out[:n]) {
			continue
		}
		if _, err := dst.WriteAt(out[:n], off); err != nil {
			return st, fmt.Errorf("write grain at byte %d: %w", off, err)
		}
		st.WrittenBytes += int64(n)
	}
}

func (r *Reader) full(b []byte) error {
	n, err := io.ReadFull(r.in, b)
	r.pos += int64(n)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the stream ends at byte %d, before its end-of-stream marker", ErrFormat, r.pos)
	}
	if err != nil {
		return fmt.Errorf("read vmdk stream: %w", err)
	}
	return nil
}

func (r *Reader) skip(n int64) error {
	got, err := io.CopyN(io.Discard, r.in, n)
	r.pos += got
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: the stream ends at byte %d, before its end-of-stream marker", ErrFormat, r.pos)
	}
	if err != nil {
		return fmt.Errorf("read vmdk stream: %w", err)
	}
	return nil
}
