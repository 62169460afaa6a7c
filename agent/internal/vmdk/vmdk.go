// Package vmdk writes (and reads back) stream-optimized VMDK images: the sparse, deflated,
// marker-framed form that vSphere's import (NFC) accepts, produced in one pass from a raw disk
// image so that grains of zeros never travel and a thin disk stays thin. The layout follows
// VMware's published Virtual Disk Format 1.1 (hosted sparse extents, stream-optimized).
//
// A stream is, in order: the sparse extent header (grain directory "at the end"), the embedded
// descriptor, then for each grain table's 32 MiB of disk its non-zero grains (a 12-byte grain
// marker and the zlib-compressed grain, padded to a sector) followed by a grain table marker
// and the table; then the grain directory marker and directory, the footer marker and a copy
// of the header that names the directory, and the end-of-stream marker.
package vmdk

import (
	"encoding/binary"
	"errors"
)

const (
	// SectorSize is the unit of every offset and size in a VMDK.
	SectorSize = 512
	// GrainSize is the bytes of disk one grain holds (128 sectors, as vSphere writes them).
	GrainSize = 64 << 10
	// grainSectors is GrainSize in sectors.
	grainSectors = GrainSize / SectorSize
	// gtEntries is the number of grains one grain table covers (512: 32 MiB of disk).
	gtEntries = 512
	// gtBytes is one grain table on disk: 512 entries of 4 bytes, 4 sectors.
	gtBytes = gtEntries * 4
	// gtCoverage is the bytes of disk one grain table covers.
	gtCoverage = gtEntries * GrainSize

	magic   = 0x564d444b // "KDMV" little-endian
	version = 3          // stream-optimized extents are version 3

	flagNewlineTest = 1 << 0
	flagCompressed  = 1 << 16
	flagMarkers     = 1 << 17

	compressDeflate = 1
	gdAtEnd         = ^uint64(0)

	markerEOS    = 0
	markerGT     = 1
	markerGD     = 2
	markerFooter = 3

	// MaxCapacity bounds the disks the writer accepts: 62 TiB, vSphere's largest virtual disk.
	MaxCapacity = int64(62) << 40
)

// Errors callers branch on; test with errors.Is.
var (
	// ErrCapacity: a capacity that is not a positive multiple of 512 bytes, or above MaxCapacity.
	ErrCapacity = errors.New("bad disk capacity")
	// ErrShortImage: the raw image ended before the capacity.
	ErrShortImage = errors.New("the image ended before the disk's capacity")
	// ErrFormat: a stream that is not a well-formed stream-optimized VMDK.
	ErrFormat = errors.New("not a stream-optimized vmdk")
)

// header is the sparse extent header: the first sector of the stream and, with the grain
// directory's offset filled in, the footer.
type header struct {
	Flags            uint32
	Capacity         uint64 // sectors
	GrainSize        uint64 // sectors
	DescriptorOffset uint64 // sectors
	DescriptorSize   uint64 // sectors
	NumGTEsPerGT     uint32
	GDOffset         uint64 // sectors; gdAtEnd in the leading header
	OverHead         uint64 // sectors before the first grain
	CompressAlgo     uint16
}

func (h *header) marshal() []byte {
	b := make([]byte, SectorSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], magic)
	le.PutUint32(b[4:], version)
	le.PutUint32(b[8:], h.Flags)
	le.PutUint64(b[12:], h.Capacity)
	le.PutUint64(b[20:], h.GrainSize)
	le.PutUint64(b[28:], h.DescriptorOffset)
	le.PutUint64(b[36:], h.DescriptorSize)
	le.PutUint32(b[44:], h.NumGTEsPerGT)
	le.PutUint64(b[48:], 0) // no redundant grain directory
	le.PutUint64(b[56:], h.GDOffset)
	le.PutUint64(b[64:], h.OverHead)
	b[72] = 0 // cleanly closed
	// The newline detection characters: a transfer that mangled line ends shows here.
	b[73], b[74], b[75], b[76] = '\n', ' ', '\r', '\n'
	le.PutUint16(b[77:], h.CompressAlgo)
	return b
}

func parseHeader(b []byte) (header, error) {
	le := binary.LittleEndian
	var h header
	if len(b) < SectorSize || le.Uint32(b[0:]) != magic {
		return h, errors.Join(ErrFormat, errors.New("no sparse extent header"))
	}
	if v := le.Uint32(b[4:]); v != version {
		return h, errors.Join(ErrFormat, errors.New("sparse extent version is not 3"))
	}
	h.Flags = le.Uint32(b[8:])
	h.Capacity = le.Uint64(b[12:])
	h.GrainSize = le.Uint64(b[20:])
	h.DescriptorOffset = le.Uint64(b[28:])
	h.DescriptorSize = le.Uint64(b[36:])
	h.NumGTEsPerGT = le.Uint32(b[44:])
	h.GDOffset = le.Uint64(b[56:])
	h.OverHead = le.Uint64(b[64:])
	h.CompressAlgo = le.Uint16(b[77:])
	if b[73] != '\n' || b[75] != '\r' || b[76] != '\n' {
		return h, errors.Join(ErrFormat, errors.New("line end characters were changed in transfer"))
	}
	return h, nil
}

// marker is a metadata marker's sector: value (a sector count or LBA), size (a grain's
// compressed bytes; 0 for metadata) and type.
func marker(val uint64, typ uint32) []byte {
	b := make([]byte, SectorSize)
	binary.LittleEndian.PutUint64(b[0:], val)
	binary.LittleEndian.PutUint32(b[12:], typ)
	return b
}

// sectors rounds n bytes up to whole sectors.
func sectors(n int64) int64 { return (n + SectorSize - 1) / SectorSize }
