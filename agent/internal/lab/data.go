package lab

import (
	"cmp"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"

	"golang.org/x/sync/errgroup"
)

// Extent is a byte range of a disk.
type Extent struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// End is the offset just past the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

const (
	// slotSize is the grid that fill kinds alternate on and WritePercent picks blocks from: the
	// repository's default chunk slot, so one slot holds one kind of data.
	slotSize = 4 * mib
	// sparseExtent is the typical extent of a sparse fill: 2 GiB of data become 64 extents.
	sparseExtent = 32 * mib
	// dictSize is the dictionary compressible data is cut from: small enough to stay in any
	// compressor's window, large enough that the output does not repeat.
	dictSize = 64 << 10
)

// generator produces deterministic disk content: AES-128-CTR keystream (about 8 GB/s with AES-NI)
// for random bytes, and pieces of a text-like dictionary mixed with keystream words for
// compressible bytes. The content of a range depends only on the key and the stream number.
type generator struct {
	block cipher.Block
	dict  []byte
}

// newGenerator derives a generator from a seed; domain separates uses of the same seed (disk
// fill, overwrites).
func newGenerator(domain string, seed int64) *generator {
	h := sha256.New()
	fmt.Fprintf(h, "sendense-lab %s %d", domain, seed)
	key := h.Sum(nil)
	block, err := aes.NewCipher(key[:16])
	if err != nil {
		panic(fmt.Sprintf("aes with a 16-byte key: %v", err)) // cannot happen
	}
	g := &generator{block: block, dict: make([]byte, dictSize)}
	// Letters, digits and punctuation with English-like frequencies: compresses well, but not to
	// nothing.
	const alphabet = "eeeettttaaaooiinnsshhrrddllu  \n\tcmfwypvbgkjqxzETAOIN_0123456789.,;:(){}=+-*/"
	ks := make([]byte, dictSize)
	g.keystream(ks, 1<<63)
	for i, b := range ks {
		g.dict[i] = alphabet[int(b)%len(alphabet)]
	}
	return g
}

// keystream fills p with the keystream of stream number stream.
func (g *generator) keystream(p []byte, stream uint64) {
	clear(p)
	var iv [aes.BlockSize]byte
	binary.BigEndian.PutUint64(iv[:8], stream)
	cipher.NewCTR(g.block, iv[:]).XORKeyStream(p, p)
}

// random fills p with incompressible bytes of stream number stream.
func (g *generator) random(p []byte, stream uint64) { g.keystream(p, stream) }

// compressible fills p with bytes of stream number stream that compress about 2.5x with zstd
// level 1 and do not deduplicate: dictionary pieces of 32-287 bytes, each followed by 8-64
// keystream bytes. ks is scratch space of at least len(p)+64 bytes.
func (g *generator) compressible(p, ks []byte, stream uint64) {
	n := len(p)
	ks = ks[:n+64]
	g.keystream(ks, stream)
	// Each round reads 8 control bytes and copies m keystream bytes while writing at least
	// min(32, n-w)+m bytes, so the keystream cursor k stays behind w until the last round.
	w, k := 0, 0
	for w < n {
		v := binary.LittleEndian.Uint64(ks[k:])
		k += 8
		l := 32 + int(v%256)
		off := int((v >> 16) % uint64(dictSize-l))
		w += copy(p[w:], g.dict[off:off+l])
		m := min(8*(1+int(v>>48)%8), n-w)
		w += copy(p[w:w+m], ks[k:k+m])
		k += m
	}
}

// piece is a range of a disk that gets one kind of content.
type piece struct {
	off, n int64
	random bool
}

// fillPieces cuts extents on the slot grid; mixed alternates random and compressible by slot,
// otherwise every piece gets random (or compressible, if !random).
func fillPieces(extents []Extent, mixed, random bool) []piece {
	var out []piece
	for _, e := range extents {
		for off := e.Offset; off < e.End(); {
			end := min((off/slotSize+1)*slotSize, e.End())
			r := random
			if mixed {
				r = (off/slotSize)%2 == 0
			}
			out = append(out, piece{off: off, n: end - off, random: r})
			off = end
		}
	}
	return out
}

// writePieces generates and writes pieces to f with one worker per CPU.
func writePieces(ctx context.Context, f *os.File, g *generator, pieces []piece) error {
	work := make(chan piece)
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		defer close(work)
		for _, p := range pieces {
			select {
			case work <- p:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for range max(1, runtime.GOMAXPROCS(0)) {
		eg.Go(func() error {
			buf := make([]byte, slotSize)
			scratch := make([]byte, slotSize+64)
			for p := range work {
				b := buf[:p.n]
				if p.random {
					g.random(b, uint64(p.off))
				} else {
					g.compressible(b, scratch, uint64(p.off))
				}
				if _, err := f.WriteAt(b, p.off); err != nil {
					return fmt.Errorf("write %d bytes at %d: %w", p.n, p.off, err)
				}
			}
			return nil
		})
	}
	return eg.Wait()
}

// fillDisk sizes the flat file at path to the disk's capacity (sparse) and writes its content.
func fillDisk(ctx context.Context, path string, d diskPlan) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open disk file: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(d.capacity); err != nil {
		return fmt.Errorf("size disk file %s to %d bytes: %w", path, d.capacity, err)
	}
	var pieces []piece
	whole := []Extent{{Offset: 0, Length: d.data}}
	switch d.fill {
	case FillZeros:
	case FillRandom:
		pieces = fillPieces(whole, false, true)
	case FillCompressible:
		pieces = fillPieces(whole, false, false)
	case FillSparse:
		pieces = fillPieces(sparseLayout(d.capacity, d.data, d.seed), true, false)
	}
	if len(pieces) > 0 {
		if err := writePieces(ctx, f, newGenerator("fill", d.seed), pieces); err != nil {
			return fmt.Errorf("fill %s: %w", path, err)
		}
	}
	return f.Close()
}

// sparseLayout spreads data bytes over a disk of capacity bytes, both whole MiB: the disk is cut
// into equal regions, one per sparseExtent of data, and each region holds one extent at a
// seeded random MiB-aligned position (the first one at offset 0, like a boot block).
func sparseLayout(capacity, data int64, seed int64) []Extent {
	capM, dataM := capacity/mib, data/mib
	if dataM <= 0 {
		return nil
	}
	if dataM >= capM {
		return []Extent{{Offset: 0, Length: capM * mib}}
	}
	n := max(1, dataM/(sparseExtent/mib))
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	var out []Extent
	carry := int64(0)
	for i := range n {
		lo, hi := i*capM/n, (i+1)*capM/n
		want := dataM/n + carry
		if i < dataM%n {
			want++
		}
		size := min(want, hi-lo)
		carry = want - size
		if size == 0 {
			continue
		}
		start := lo
		if i > 0 {
			start += rng.Int64N(hi - lo - size + 1)
		}
		out = append(out, Extent{Offset: start * mib, Length: size * mib})
	}
	return out
}

// copyData copies the allocated areas of the first n bytes of src to dst at the same offsets, so
// holes stay holes (the kernel may share or copy the blocks: copy_file_range).
func copyData(dst, src *os.File, n int64) error {
	areas, err := dataExtents(src, 0, n)
	if err != nil {
		return err
	}
	for _, a := range areas {
		if _, err := src.Seek(a.Offset, io.SeekStart); err != nil {
			return fmt.Errorf("seek %s: %w", src.Name(), err)
		}
		if _, err := dst.Seek(a.Offset, io.SeekStart); err != nil {
			return fmt.Errorf("seek %s: %w", dst.Name(), err)
		}
		if _, err := dst.ReadFrom(io.LimitReader(src, a.Length)); err != nil {
			return fmt.Errorf("copy %d bytes at %d from %s: %w", a.Length, a.Offset, src.Name(), err)
		}
	}
	return nil
}

// mergeExtents sorts extents and merges overlapping or touching ones. It reorders its argument.
func mergeExtents(es []Extent) []Extent {
	if len(es) == 0 {
		return nil
	}
	slices.SortFunc(es, func(a, b Extent) int { return cmp.Compare(a.Offset, b.Offset) })
	out := []Extent{es[0]}
	for _, e := range es[1:] {
		last := &out[len(out)-1]
		if e.Offset <= last.End() {
			last.Length = max(last.End(), e.End()) - last.Offset
			continue
		}
		out = append(out, e)
	}
	return out
}

// clipExtents returns the parts of sorted, merged extents inside [start, end).
func clipExtents(es []Extent, start, end int64) []Extent {
	var out []Extent
	for _, e := range es {
		lo, hi := max(e.Offset, start), min(e.End(), end)
		if lo < hi {
			out = append(out, Extent{Offset: lo, Length: hi - lo})
		}
	}
	return out
}
