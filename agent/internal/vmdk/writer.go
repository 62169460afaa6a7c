package vmdk

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"

	"github.com/klauspost/compress/zlib"
)

// Options tune Write.
type Options struct {
	// Name is the extent's file name in the embedded descriptor; default "disk.vmdk". vSphere
	// names the imported file itself.
	Name string
	// AdapterType is the descriptor's ddb.adapterType ("lsilogic", "buslogic", "ide",
	// "legacyESX"); default "lsilogic". vSphere takes the controller from the VM, not from it.
	AdapterType string
	// Level is the zlib level; default zlib.BestSpeed: disk images are large and the
	// difference in size at higher levels is small next to the zero grains skipped.
	Level int
	// Workers deflate grains in parallel; default GOMAXPROCS, at most 4. The stream is the
	// same for any number.
	Workers int
}

// Stats describes one stream Write produced.
type Stats struct {
	Grains     int64 // grains of the disk, the last one maybe partial
	DataGrains int64 // grains with a non-zero byte, the only ones in the stream
	DataBytes  int64 // bytes of disk in those grains (the last one counted to the capacity)
	StreamSize int64 // bytes written to dst
}

var zeroGrain = make([]byte, GrainSize)

// Write reads exactly capacity bytes of a raw disk image from src and writes it to dst as a
// stream-optimized VMDK, in one pass, holding one grain table (32 MiB of disk's entries) and
// the grain directory (4 bytes per 32 MiB) in memory. Grains of zeros are left out: they read
// back as zeros and a thin disk they are imported into stays unallocated there. capacity must
// be a positive multiple of 512 bytes (every virtual disk is); the last grain may be partial.
//
// src ending early is ErrShortImage; ctx is checked between grain tables. dst sees only whole
// sectors, buffered; on an error it has received a truncated stream that no reader accepts
// (there is no end-of-stream marker).
func Write(ctx context.Context, dst io.Writer, src io.Reader, capacity int64, opts Options) (Stats, error) {
	if capacity <= 0 || capacity%SectorSize != 0 || capacity > MaxCapacity {
		return Stats{}, fmt.Errorf("%w: %d bytes (want a positive multiple of 512 up to %d)", ErrCapacity, capacity, MaxCapacity)
	}
	if opts.Name == "" {
		opts.Name = "disk.vmdk"
	}
	if opts.AdapterType == "" {
		opts.AdapterType = "lsilogic"
	}
	if opts.Level == 0 {
		opts.Level = zlib.BestSpeed
	}
	if _, err := zlib.NewWriterLevel(io.Discard, opts.Level); err != nil {
		return Stats{}, fmt.Errorf("zlib level %d: %w", opts.Level, err)
	}
	if opts.Workers <= 0 {
		opts.Workers = min(runtime.GOMAXPROCS(0), 4)
	}
	w := &writer{
		out:      bufio.NewWriterSize(dst, 1<<20),
		level:    opts.Level,
		grains:   (capacity + GrainSize - 1) / GrainSize,
		capacity: capacity,
	}
	w.gd = make([]uint32, (w.grains+gtEntries-1)/gtEntries)
	if err := w.run(ctx, src, opts); err != nil {
		return w.stats, err
	}
	return w.stats, nil
}

type writer struct {
	out      *bufio.Writer
	level    int
	grains   int64
	capacity int64
	pos      int64    // bytes written so far, always whole sectors between items
	gd       []uint32 // sector of each grain table; 0: every grain it covers is zero
	gt       [gtEntries]uint32
	gtUsed   bool
	stats    Stats
}

func (w *writer) run(ctx context.Context, src io.Reader, opts Options) error {
	desc := descriptor(w.capacity, opts)
	descSectors := sectors(int64(len(desc)))
	h := header{
		Flags:            flagNewlineTest | flagCompressed | flagMarkers,
		Capacity:         uint64(w.capacity / SectorSize),
		GrainSize:        grainSectors,
		DescriptorOffset: 1,
		DescriptorSize:   uint64(descSectors),
		NumGTEsPerGT:     gtEntries,
		GDOffset:         gdAtEnd,
		OverHead:         uint64(1 + descSectors),
		CompressAlgo:     compressDeflate,
	}
	if err := w.write(h.marshal()); err != nil {
		return err
	}
	if err := w.writePadded(desc); err != nil {
		return err
	}

	w.stats.Grains = w.grains
	if err := w.grainsFrom(ctx, src, opts.Workers); err != nil {
		return err
	}
	if err := w.flushGT((w.grains - 1) / gtEntries); err != nil {
		return err
	}

	// The grain directory, then the footer: the header again, now naming the directory.
	gdBytes := make([]byte, len(w.gd)*4)
	for i, s := range w.gd {
		binary.LittleEndian.PutUint32(gdBytes[i*4:], s)
	}
	if err := w.write(marker(uint64(sectors(int64(len(gdBytes)))), markerGD)); err != nil {
		return err
	}
	h.GDOffset = uint64(w.pos / SectorSize)
	if err := w.writePadded(gdBytes); err != nil {
		return err
	}
	if err := w.write(marker(1, markerFooter)); err != nil {
		return err
	}
	if err := w.write(h.marshal()); err != nil {
		return err
	}
	if err := w.write(marker(0, markerEOS)); err != nil {
		return err
	}
	if err := w.out.Flush(); err != nil {
		return fmt.Errorf("write vmdk stream: %w", err)
	}
	w.stats.StreamSize = w.pos
	return nil
}

// grain writes grain g as a grain marker and its deflated bytes.
func (w *writer) grain(g int64, deflated []byte) error {
	sector := w.pos / SectorSize
	if sector > math.MaxUint32 {
		return fmt.Errorf("grain %d at sector %d: a grain table entry holds 32 bits: the stream is beyond 2 TiB", g, sector)
	}
	w.gt[g%gtEntries] = uint32(sector)
	w.gtUsed = true
	var m [12]byte
	binary.LittleEndian.PutUint64(m[0:], uint64(g*grainSectors))
	binary.LittleEndian.PutUint32(m[8:], uint32(len(deflated)))
	if err := w.write(m[:]); err != nil {
		return err
	}
	if err := w.write(deflated); err != nil {
		return err
	}
	return w.pad()
}

// flushGT writes grain table i (with its marker) when it names a grain, and clears it.
func (w *writer) flushGT(i int64) error {
	if !w.gtUsed {
		return nil
	}
	if err := w.write(marker(gtBytes/SectorSize, markerGT)); err != nil {
		return err
	}
	w.gd[i] = uint32(w.pos / SectorSize)
	var b [gtBytes]byte
	for j, s := range w.gt {
		binary.LittleEndian.PutUint32(b[j*4:], s)
	}
	if err := w.write(b[:]); err != nil {
		return err
	}
	w.gt = [gtEntries]uint32{}
	w.gtUsed = false
	return nil
}

func (w *writer) write(b []byte) error {
	n, err := w.out.Write(b)
	w.pos += int64(n)
	if err != nil {
		return fmt.Errorf("write vmdk stream: %w", err)
	}
	return nil
}

func (w *writer) writePadded(b []byte) error {
	if err := w.write(b); err != nil {
		return err
	}
	return w.pad()
}

// pad fills the current sector with zeros.
func (w *writer) pad() error {
	if r := w.pos % SectorSize; r != 0 {
		return w.write(zeroGrain[:SectorSize-r])
	}
	return nil
}

// descriptor is the embedded descriptor of a stream-optimized disk of capacity bytes.
func descriptor(capacity int64, opts Options) []byte {
	secs := capacity / SectorSize
	// The legacy geometry vSphere records for SCSI disks: 255 heads, 63 sectors a track.
	cyl := min(secs/(255*63), 65535)
	var b strings.Builder
	fmt.Fprintf(&b, "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\n")
	fmt.Fprintf(&b, "# Extent description\nRW %d SPARSE %q\n\n", secs, opts.Name)
	fmt.Fprintf(&b, "# The Disk Data Base\n#DDB\n\nddb.adapterType = %q\nddb.geometry.cylinders = \"%d\"\n", opts.AdapterType, cyl)
	fmt.Fprintf(&b, "ddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\nddb.virtualHWVersion = \"4\"\n")
	return []byte(b.String())
}
