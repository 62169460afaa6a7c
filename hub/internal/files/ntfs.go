package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
)

// ntfs reads an NTFS filesystem (NTFS 3.x, Windows 2000 and later): the boot sector, the MFT
// (itself mapped by its own data runs, so a fragmented MFT reads), MFT records with their update
// sequence fixups checked, resident and non-resident attributes with their data runs (sparse
// runs, and bytes past the initialized size, read as zeros), $ATTRIBUTE_LIST (attributes
// spilled to extension records), directories through their B+ tree index ($INDEX_ROOT,
// $INDEX_ALLOCATION with its INDX fixups, $BITMAP), and symbolic links and junctions from their
// reparse points (and the Interix symlinks ntfs-3g writes). Boot sector bounds: sectors of 256
// bytes to 4 KiB, clusters up to 2 MiB, MFT records of 1 KiB to 64 KiB, index records of 512
// bytes to 64 KiB.
//
// What a listing shows, and why:
//   - Each file once, under its Win32 or POSIX name: DOS 8.3 names (namespace 2) are the
//     second name Windows gives a long name and are skipped. Hard links show under each name.
//   - The metadata files (MFT records 0–15: $MFT, $LogFile, $Bitmap, $Secure, $UpCase, $Extend
//     with the journal and quotas below it, …) are not listed and cannot be opened: they are
//     the filesystem's own structures, not the guest's files.
//   - Only the unnamed $DATA stream of a file: alternate data streams (Zone.Identifier, …) are
//     not listed.
//   - mtime is $STANDARD_INFORMATION's modification time, 100 ns resolution.
//   - mode: NTFS keeps no POSIX permissions, so they are derived from the file attributes:
//     directories 0755, files 0644, or 0444 with the read-only attribute, symlinks 0777.
//   - Names are matched exactly, case-sensitively (NTFS compares them case-insensitively
//     through its upcase table; the exact name always matches).
//
// Compressed files (LZNT1, a compression unit at a time) are read. Encrypted (EFS) files are
// listed, but reading them is an ErrUnsupported naming the feature, as is a file behind another
// reparse point (deduplicated, compressed by Windows' "compact", a cloud placeholder): its
// unnamed $DATA does not hold its bytes.
type ntfs struct {
	r           io.ReaderAt
	size        int64 // bytes of the volume the boot sector describes
	clusterSize int64
	clusters    int64
	recordSize  int64 // MFT record size
	indexSize   int64 // index record (INDX) size
	mft         *ntfsStream
	mftRecords  int64
	// reads counts down the MFT records one request may read (Stat, ReadDir, Open): a hostile
	// directory of a million entries, each naming a file of thousands of extension records,
	// would otherwise keep the hub busy for hours.
	reads int64
}

const (
	ntfsAttrStandardInfo = 0x10
	ntfsAttrList         = 0x20
	ntfsAttrFileName     = 0x30
	ntfsAttrData         = 0x80
	ntfsAttrIndexRoot    = 0x90
	ntfsAttrIndexAlloc   = 0xa0
	ntfsAttrBitmap       = 0xb0
	ntfsAttrReparse      = 0xc0
	ntfsAttrEnd          = 0xffffffff

	ntfsFlagCompressed = 0x0001 // attribute flags
	ntfsFlagEncrypted  = 0x4000

	ntfsFileReadOnly  = 0x0001 // file attributes ($STANDARD_INFORMATION)
	ntfsFileSystem    = 0x0004
	ntfsFileEncrypted = 0x4000

	ntfsRecordInUse = 0x0001
	ntfsRecordDir   = 0x0002

	ntfsTagSymlink    = 0xa000000c
	ntfsTagMountPoint = 0xa0000003

	ntfsRootRecord   = 5
	ntfsFirstUser    = 16 // records below are the metadata files
	ntfsNamespaceDOS = 2

	ntfsSector        = 512      // the update sequence protects every 512 bytes
	ntfsMaxCluster    = 2 << 20  // Windows formats clusters up to 2 MiB
	ntfsMaxRecord     = 64 << 10 // MFT and index records
	ntfsMaxRuns       = 1 << 20  // runs of one attribute held in memory (24 MiB)
	ntfsMaxExtents    = 4096     // extension records of one file ($ATTRIBUTE_LIST)
	ntfsMaxAttrList   = 1 << 20  // bytes of one $ATTRIBUTE_LIST
	ntfsMaxIndexDepth = 32       // levels of a directory's B+ tree
	ntfsMaxLinkSize   = 32 << 10 // bytes of a reparse point's data (16 KiB on Windows)
	ntfsMaxIndexBytes = maxDirBytes
	ntfsMaxUnit       = 1 << 20 // bytes of a compression unit (64 KiB in practice)
	// ntfsMaxRecordReads bounds the MFT records read for one request: a listing of
	// maxDirEntries files, each with a few extension records (about 10 s of parsing).
	ntfsMaxRecordReads = 4 * maxDirEntries
	ntfsEpochDelta     = 11644473600 // seconds from 1601-01-01 to 1970-01-01
)

// openNTFS reads the boot sector of the volume r of size bytes and the start of its MFT;
// ErrUnsupported when r holds no NTFS.
func openNTFS(r io.ReaderAt, size int64) (*ntfs, error) {
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, 0); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("ntfs: volume of %d bytes: %w", size, ErrUnsupported)
		}
		return nil, fmt.Errorf("read ntfs boot sector: %w", err)
	}
	if string(bs[3:11]) != "NTFS    " {
		return nil, fmt.Errorf("no ntfs boot sector: %w", ErrUnsupported)
	}
	le := binary.LittleEndian
	bps := int64(le.Uint16(bs[11:]))
	if bps < 256 || bps > 4096 || bps&(bps-1) != 0 {
		return nil, fmt.Errorf("ntfs: %d bytes per sector: %w", bps, ErrCorrupt)
	}
	spc := int64(bs[13])
	if spc > 0x80 {
		// Clusters over 64 KiB: the byte is a negative power of two.
		if 256-spc > 20 {
			return nil, fmt.Errorf("ntfs: sectors per cluster 2^%d: %w", 256-spc, ErrCorrupt)
		}
		spc = 1 << (256 - spc)
	}
	fs := &ntfs{r: r, clusterSize: bps * spc}
	if spc == 0 || spc&(spc-1) != 0 || fs.clusterSize > ntfsMaxCluster {
		return nil, fmt.Errorf("ntfs: %d sectors per cluster of %d bytes: %w", spc, bps, ErrCorrupt)
	}
	sectors := le.Uint64(bs[40:])
	if sectors == 0 || sectors > uint64(size/bps) {
		return nil, fmt.Errorf("ntfs: %d sectors of %d bytes in a volume of %d bytes: %w", sectors, bps, size, ErrCorrupt)
	}
	fs.size = int64(sectors) * bps
	fs.clusters = fs.size / fs.clusterSize
	var err error
	if fs.recordSize, err = fs.recordBytes(int8(bs[64]), "MFT record"); err != nil {
		return nil, err
	}
	if fs.indexSize, err = fs.recordBytes(int8(bs[68]), "index record"); err != nil {
		return nil, err
	}
	if fs.recordSize < 1024 || fs.indexSize < ntfsSector {
		return nil, fmt.Errorf("ntfs: MFT records of %d bytes, index records of %d: %w", fs.recordSize, fs.indexSize, ErrCorrupt)
	}
	mftLCN := le.Uint64(bs[48:])
	if mftLCN == 0 || mftLCN >= uint64(fs.clusters) {
		return nil, fmt.Errorf("ntfs: MFT at cluster %d of %d: %w", mftLCN, fs.clusters, ErrCorrupt)
	}
	fs.reads = ntfsMaxRecordReads
	if err := fs.loadMFT(int64(mftLCN)); err != nil {
		return nil, err
	}
	return fs, nil
}

// recordBytes decodes a record size of the boot sector: clusters when positive, 2^-v bytes
// when negative.
func (fs *ntfs) recordBytes(v int8, what string) (int64, error) {
	var n int64
	switch {
	case v > 0:
		n = int64(v) * fs.clusterSize
	case v < 0 && v >= -16:
		n = 1 << -int(v)
	}
	if n < ntfsSector || n > ntfsMaxRecord || n&(n-1) != 0 {
		return 0, fmt.Errorf("ntfs: %s size %d (boot sector value %d): %w", what, n, v, ErrCorrupt)
	}
	return n, nil
}

// loadMFT reads record 0, $MFT, at its cluster and maps the MFT by its $DATA: first by the
// runs in record 0 itself, then, when it has an attribute list, by all its extents (read
// through the runs known so far).
func (fs *ntfs) loadMFT(lcn int64) error {
	raw := make([]byte, fs.recordSize)
	if err := fs.read(raw, lcn*fs.clusterSize); err != nil {
		return fmt.Errorf("ntfs: MFT record 0: %w", err)
	}
	rec, err := fs.parseRecord(raw, 0)
	if err != nil {
		return err
	}
	var first *ntfsAttr
	for i := range rec.attrs {
		a := &rec.attrs[i]
		if a.typ == ntfsAttrData && a.name == "" && a.nonResident && a.startVCN == 0 {
			first = a
			break
		}
	}
	if first == nil {
		return fmt.Errorf("ntfs: $MFT has no data runs: %w", ErrCorrupt)
	}
	s, err := fs.stream(0, []ntfsAttr{*first})
	if err != nil {
		return fmt.Errorf("ntfs: $MFT: %w", err)
	}
	fs.mft = s
	fs.mftRecords = s.size / fs.recordSize
	if fs.mftRecords < ntfsFirstUser {
		return fmt.Errorf("ntfs: MFT of %d records: %w", fs.mftRecords, ErrCorrupt)
	}
	if rec.hasList {
		f, err := fs.file(0)
		if err != nil {
			return err
		}
		if s, err = fs.dataStream(f, ""); err != nil {
			return fmt.Errorf("ntfs: $MFT: %w", err)
		}
		fs.mft = s
		fs.mftRecords = s.size / fs.recordSize
	}
	return nil
}

// read fills p from the volume at off; a short read is damage.
func (fs *ntfs) read(p []byte, off int64) error {
	if off < 0 || off > fs.size || int64(len(p)) > fs.size-off {
		return fmt.Errorf("read %d bytes at %d, past the volume's end: %w", len(p), off, ErrCorrupt)
	}
	n, err := fs.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if errors.Is(err, io.EOF) || err == nil {
		return fmt.Errorf("read %d bytes at %d: short: %w", len(p), off, ErrCorrupt)
	}
	return err
}

// fixup checks and undoes the update sequence of a multi-sector record (MFT "FILE" or index
// "INDX") of len(b) bytes: the last two bytes of every 512 must hold the sequence number,
// and are replaced by the saved bytes. A mismatch is a torn write, or damage.
func fixup(b []byte, what string) error {
	le := binary.LittleEndian
	off, count := int(le.Uint16(b[4:])), int(le.Uint16(b[6:]))
	if count != len(b)/ntfsSector+1 || off < 8 || off%2 != 0 || off+2*count > ntfsSector-2 {
		return fmt.Errorf("%s: update sequence of %d at %d for %d bytes: %w", what, count, off, len(b), ErrCorrupt)
	}
	usn := b[off : off+2]
	for i := 1; i < count; i++ {
		end := i*ntfsSector - 2
		if b[end] != usn[0] || b[end+1] != usn[1] {
			return fmt.Errorf("%s: update sequence mismatch in sector %d (torn write or damage): %w", what, i-1, ErrCorrupt)
		}
		b[end], b[end+1] = b[off+2*i], b[off+2*i+1]
	}
	return nil
}

// ntfsAttr is one attribute of an MFT record.
type ntfsAttr struct {
	typ         uint32
	name        string
	flags       uint16
	id          uint16
	nonResident bool
	value       []byte // resident
	// non-resident
	startVCN, lastVCN int64
	runs              []ntfsRun
	compUnit          uint16 // log2 of the clusters of a compression unit
	allocSize         int64
	dataSize          int64
	initSize          int64
}

// ntfsRun maps length clusters from vcn to lcn; lcn < 0 is sparse.
type ntfsRun struct {
	vcn, lcn, length int64
}

// ntfsRecord is one parsed MFT record.
type ntfsRecord struct {
	num     int64
	seq     uint16
	flags   uint16
	base    int64 // the base record of an extension record, 0 for a base record
	attrs   []ntfsAttr
	hasList bool
}

// record reads and parses MFT record num.
func (fs *ntfs) record(num int64) (*ntfsRecord, error) {
	if num < 0 || num >= fs.mftRecords {
		return nil, fmt.Errorf("ntfs: MFT record %d of %d: %w", num, fs.mftRecords, ErrCorrupt)
	}
	if fs.reads--; fs.reads < 0 {
		return nil, fmt.Errorf("ntfs: more than %d MFT records read for one request: %w", ntfsMaxRecordReads, ErrTooLarge)
	}
	raw := make([]byte, fs.recordSize)
	if _, err := fs.mft.ReadAt(raw, num*fs.recordSize); err != nil {
		return nil, fmt.Errorf("ntfs: MFT record %d: %w", num, err)
	}
	return fs.parseRecord(raw, num)
}

func (fs *ntfs) parseRecord(raw []byte, num int64) (*ntfsRecord, error) {
	what := fmt.Sprintf("ntfs: MFT record %d", num)
	if string(raw[:4]) != "FILE" {
		return nil, fmt.Errorf("%s: no FILE signature: %w", what, ErrCorrupt)
	}
	if err := fixup(raw, what); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	rec := &ntfsRecord{num: num, seq: le.Uint16(raw[16:]), flags: le.Uint16(raw[22:])}
	rec.base = int64(le.Uint64(raw[32:]) & (1<<48 - 1))
	used := int64(le.Uint32(raw[24:]))
	off := int64(le.Uint16(raw[20:]))
	if used > fs.recordSize || used < 48 || off < 42 || off >= used || off%8 != 0 {
		return nil, fmt.Errorf("%s: %d bytes used, attributes at %d: %w", what, used, off, ErrCorrupt)
	}
	b := raw[:used]
	for {
		if off+4 > used {
			return nil, fmt.Errorf("%s: attributes run past the record: %w", what, ErrCorrupt)
		}
		typ := le.Uint32(b[off:])
		if typ == ntfsAttrEnd {
			break
		}
		if off+16 > used {
			return nil, fmt.Errorf("%s: attribute at %d: %w", what, off, ErrCorrupt)
		}
		l := int64(le.Uint32(b[off+4:]))
		if l < 24 || l%8 != 0 || l > used-off {
			return nil, fmt.Errorf("%s: attribute %#x at %d of %d bytes: %w", what, typ, off, l, ErrCorrupt)
		}
		a, err := parseAttr(b[off:off+l], fs)
		if err != nil {
			return nil, fmt.Errorf("%s: attribute %#x: %w", what, typ, err)
		}
		if a.typ == ntfsAttrList {
			rec.hasList = true
		}
		rec.attrs = append(rec.attrs, a)
		off += l
	}
	return rec, nil
}

func parseAttr(b []byte, fs *ntfs) (ntfsAttr, error) {
	le := binary.LittleEndian
	a := ntfsAttr{typ: le.Uint32(b), nonResident: b[8] != 0, flags: le.Uint16(b[12:]), id: le.Uint16(b[14:])}
	nameLen, nameOff := int(b[9]), int(le.Uint16(b[10:]))
	if nameLen > 0 {
		if nameOff+2*nameLen > len(b) {
			return a, fmt.Errorf("name at %d: %w", nameOff, ErrCorrupt)
		}
		a.name = utf16Name(b[nameOff : nameOff+2*nameLen])
	}
	if !a.nonResident {
		vl, vo := int(le.Uint32(b[16:])), int(le.Uint16(b[20:]))
		if vo > len(b) || vl > len(b)-vo {
			return a, fmt.Errorf("resident value of %d bytes at %d: %w", vl, vo, ErrCorrupt)
		}
		a.value = b[vo : vo+vl]
		return a, nil
	}
	if len(b) < 64 {
		return a, fmt.Errorf("non-resident header of %d bytes: %w", len(b), ErrCorrupt)
	}
	a.startVCN, a.lastVCN = int64(le.Uint64(b[16:])), int64(le.Uint64(b[24:]))
	runsOff := int(le.Uint16(b[32:]))
	a.compUnit = le.Uint16(b[34:])
	a.allocSize, a.dataSize, a.initSize = int64(le.Uint64(b[40:])), int64(le.Uint64(b[48:])), int64(le.Uint64(b[56:]))
	// A sparse file's VCNs may run past the volume's clusters: bounded by 2^48 only.
	if a.startVCN < 0 || a.startVCN > 1<<48 || a.lastVCN < a.startVCN-1 || a.lastVCN > 1<<48 ||
		a.allocSize < 0 || a.dataSize < 0 || a.initSize < 0 || runsOff > len(b) || runsOff < 64 {
		return a, fmt.Errorf("non-resident header (VCN %d-%d, runs at %d): %w", a.startVCN, a.lastVCN, runsOff, ErrCorrupt)
	}
	if a.startVCN == 0 && (a.dataSize > a.allocSize || a.initSize > a.dataSize || a.allocSize > 1<<60) {
		return a, fmt.Errorf("sizes %d allocated, %d data, %d initialized: %w", a.allocSize, a.dataSize, a.initSize, ErrCorrupt)
	}
	runs, err := decodeRuns(b[runsOff:], a.startVCN, fs.clusters, fs.clusterSize)
	if err != nil {
		return a, err
	}
	a.runs = runs
	return a, nil
}

// decodeRuns decodes a run list starting at vcn: each run a header byte (the sizes of its
// length and offset fields), a length, and an offset signed relative to the previous run's
// cluster; no offset field is a sparse run.
func decodeRuns(b []byte, vcn, clusters, clusterSize int64) ([]ntfsRun, error) {
	maxVCN := int64(1<<62) / clusterSize // so that a VCN's byte offset cannot overflow
	var out []ntfsRun
	var lcn int64
	for p := 0; p < len(b); {
		h := b[p]
		if h == 0 {
			return out, nil
		}
		ls, os := int(h&0xf), int(h>>4)
		if ls == 0 || ls > 8 || os > 8 || p+1+ls+os > len(b) {
			return nil, fmt.Errorf("data run at %d (header %#x): %w", p, h, ErrCorrupt)
		}
		length := int64(0)
		for i := ls - 1; i >= 0; i-- {
			length = length<<8 | int64(b[p+1+i])
		}
		if length <= 0 || length > 1<<48 || vcn > maxVCN-length {
			return nil, fmt.Errorf("data run of %d clusters: %w", length, ErrCorrupt)
		}
		r := ntfsRun{vcn: vcn, lcn: -1, length: length}
		if os > 0 {
			var d int64
			for i := os - 1; i >= 0; i-- {
				d = d<<8 | int64(b[p+1+ls+i])
			}
			if shift := 64 - 8*os; shift > 0 {
				d = d << shift >> shift // sign-extend
			}
			lcn += d
			if lcn < 0 || lcn >= clusters || length > clusters-lcn {
				return nil, fmt.Errorf("data run of %d clusters at cluster %d of %d: %w", length, lcn, clusters, ErrCorrupt)
			}
			r.lcn = lcn
		}
		if len(out) >= ntfsMaxRuns {
			return nil, fmt.Errorf("more than %d data runs: %w", ntfsMaxRuns, ErrTooLarge)
		}
		out = append(out, r)
		vcn += length
		p += 1 + ls + os
	}
	return nil, fmt.Errorf("data runs without an end: %w", ErrCorrupt)
}

// ntfsFile is a file's base record with every attribute of it, its extension records' too.
type ntfsFile struct {
	num   int64
	seq   uint16
	flags uint16
	attrs []ntfsAttr
}

// file reads the base record num and, when it has an attribute list, the extension records the
// list names (each must name num as its base).
func (fs *ntfs) file(num int64) (*ntfsFile, error) {
	rec, err := fs.record(num)
	if err != nil {
		return nil, err
	}
	if rec.flags&ntfsRecordInUse == 0 {
		return nil, fmt.Errorf("ntfs: MFT record %d is not in use: %w", num, ErrCorrupt)
	}
	if rec.base != 0 {
		return nil, fmt.Errorf("ntfs: MFT record %d is an extension of record %d: %w", num, rec.base, ErrCorrupt)
	}
	f := &ntfsFile{num: num, seq: rec.seq, flags: rec.flags}
	if !rec.hasList {
		f.attrs = rec.attrs
		return f, nil
	}
	var list []byte
	for _, a := range rec.attrs {
		if a.typ != ntfsAttrList {
			continue
		}
		if !a.nonResident {
			list = a.value
		} else {
			if a.dataSize > ntfsMaxAttrList {
				return nil, fmt.Errorf("ntfs: MFT record %d: attribute list of %d bytes: %w", num, a.dataSize, ErrTooLarge)
			}
			s, err := fs.stream(num, []ntfsAttr{a})
			if err != nil {
				return nil, fmt.Errorf("ntfs: MFT record %d: attribute list: %w", num, err)
			}
			list = make([]byte, s.size)
			if _, err := s.ReadAt(list, 0); err != nil && !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("ntfs: MFT record %d: attribute list: %w", num, err)
			}
		}
		break
	}
	// Which attributes live where: each entry names type, name, first VCN, record and id.
	type key struct {
		rec int64
		id  uint16
	}
	want := map[key]bool{}
	var order []int64
	le := binary.LittleEndian
	for p := 0; p+26 <= len(list); {
		l := int(le.Uint16(list[p+4:]))
		if l < 26 || p+l > len(list) {
			return nil, fmt.Errorf("ntfs: MFT record %d: attribute list entry at %d: %w", num, p, ErrCorrupt)
		}
		ref := int64(le.Uint64(list[p+16:]) & (1<<48 - 1))
		k := key{ref, le.Uint16(list[p+24:])}
		if !want[k] && ref != num {
			if !slices.Contains(order, ref) {
				if len(order) >= ntfsMaxExtents {
					return nil, fmt.Errorf("ntfs: MFT record %d: more than %d extension records: %w", num, ntfsMaxExtents, ErrTooLarge)
				}
				order = append(order, ref)
			}
		}
		want[k] = true
		p += l
	}
	for _, a := range rec.attrs {
		if a.typ != ntfsAttrList {
			f.attrs = append(f.attrs, a)
		}
	}
	for _, ref := range order {
		ext, err := fs.record(ref)
		if err != nil {
			return nil, fmt.Errorf("ntfs: extension of MFT record %d: %w", num, err)
		}
		if ext.base != num || ext.flags&ntfsRecordInUse == 0 {
			return nil, fmt.Errorf("ntfs: MFT record %d is not an extension of record %d: %w", ref, num, ErrCorrupt)
		}
		for _, a := range ext.attrs {
			if want[key{ref, a.id}] && a.typ != ntfsAttrList {
				f.attrs = append(f.attrs, a)
			}
		}
	}
	return f, nil
}

// ntfsStream reads a non-resident attribute's bytes: its runs, which may come from several
// extents of it, joined by VCN. Bytes past the initialized size read as zeros, as do sparse
// runs; a run list that leaves a gap before the data size's end is damage.
type ntfsStream struct {
	fs         *ntfs
	num        int64
	runs       []ntfsRun
	size, init int64
	resident   []byte
	isResident bool

	// A compressed stream is read a compression unit (unit bytes) at a time; the last unit
	// decompressed is kept.
	unit      int64
	mu        sync.Mutex
	cached    []byte
	cachedIdx int64
}

// stream joins the extents of one non-resident attribute (sorted by their first VCN) or
// returns the one resident value.
func (fs *ntfs) stream(num int64, extents []ntfsAttr) (*ntfsStream, error) {
	if len(extents) == 0 {
		return nil, fmt.Errorf("no such attribute: %w", ErrCorrupt)
	}
	if !extents[0].nonResident {
		if len(extents) != 1 {
			return nil, fmt.Errorf("a resident attribute in %d parts: %w", len(extents), ErrCorrupt)
		}
		v := extents[0].value
		return &ntfsStream{fs: fs, num: num, size: int64(len(v)), init: int64(len(v)), resident: v, isResident: true}, nil
	}
	sort.Slice(extents, func(i, j int) bool { return extents[i].startVCN < extents[j].startVCN })
	first := extents[0]
	if first.startVCN != 0 {
		return nil, fmt.Errorf("first extent at VCN %d: %w", first.startVCN, ErrCorrupt)
	}
	s := &ntfsStream{fs: fs, num: num, size: first.dataSize, init: first.initSize, cachedIdx: -1}
	if first.flags&ntfsFlagCompressed != 0 {
		// Compression units are 2^compUnit clusters: 16 (64 KiB of 4 KiB clusters) in practice.
		if first.compUnit == 0 || first.compUnit > 8 || fs.clusterSize<<first.compUnit > ntfsMaxUnit {
			return nil, fmt.Errorf("compression units of 2^%d clusters of %d bytes: %w", first.compUnit, fs.clusterSize, ErrUnsupported)
		}
		s.unit = fs.clusterSize << first.compUnit
	}
	next := int64(0)
	for _, e := range extents {
		if !e.nonResident || e.startVCN != next {
			return nil, fmt.Errorf("extent at VCN %d, expected %d: %w", e.startVCN, next, ErrCorrupt)
		}
		for _, r := range e.runs {
			if len(s.runs) >= ntfsMaxRuns {
				return nil, fmt.Errorf("more than %d data runs: %w", ntfsMaxRuns, ErrTooLarge)
			}
			s.runs = append(s.runs, r)
		}
		if len(e.runs) > 0 {
			last := e.runs[len(e.runs)-1]
			next = last.vcn + last.length
		}
		if e.lastVCN+1 > next {
			// An extent whose runs stop before its last VCN: the rest is not mapped.
			return nil, fmt.Errorf("extent VCN %d-%d mapped to %d: %w", e.startVCN, e.lastVCN, next, ErrCorrupt)
		}
	}
	if next > 1<<62/fs.clusterSize || s.init > next*fs.clusterSize {
		return nil, fmt.Errorf("%d bytes initialized in %d clusters: %w", s.init, next, ErrCorrupt)
	}
	return s, nil
}

// ReadAt reads the stream's bytes at off.
func (s *ntfsStream) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if s.isResident {
		if off >= s.size {
			return 0, io.EOF
		}
		n := copy(p, s.resident[off:])
		if n < len(p) {
			return n, io.EOF
		}
		return n, nil
	}
	cs := s.fs.clusterSize
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= s.size {
			return n, io.EOF
		}
		want := min(int64(len(p)-n), s.size-pos)
		if pos >= s.init {
			clear(p[n : n+int(want)])
			n += int(want)
			continue
		}
		want = min(want, s.init-pos)
		if s.unit > 0 {
			k, err := s.readCompressed(p[n:n+int(want)], pos)
			n += k
			if err != nil {
				return n, err
			}
			continue
		}
		vcn := pos / cs
		i := sort.Search(len(s.runs), func(i int) bool { return s.runs[i].vcn+s.runs[i].length > vcn })
		if i == len(s.runs) || s.runs[i].vcn > vcn {
			return n, fmt.Errorf("ntfs: MFT record %d: byte %d is not mapped: %w", s.num, pos, ErrCorrupt)
		}
		r := s.runs[i]
		want = min(want, (r.vcn+r.length)*cs-pos)
		if want <= 0 { // cannot happen with the bounds of decodeRuns; a loop must not stall
			return n, fmt.Errorf("ntfs: MFT record %d: run at VCN %d: %w", s.num, r.vcn, ErrCorrupt)
		}
		if r.lcn < 0 {
			clear(p[n : n+int(want)])
		} else if err := s.fs.read(p[n:n+int(want)], r.lcn*cs+(pos-r.vcn*cs)); err != nil {
			return n, fmt.Errorf("ntfs: MFT record %d at %d: %w", s.num, pos, err)
		}
		n += int(want)
	}
	return n, nil
}

// readCompressed reads into p, at pos, from the compression unit holding pos, and returns how
// many bytes it read (up to the unit's end).
func (s *ntfsStream) readCompressed(p []byte, pos int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := pos / s.unit
	if s.cachedIdx != idx {
		if s.cached == nil {
			s.cached = make([]byte, s.unit)
		}
		s.cachedIdx = -1
		if err := s.decodeUnit(s.cached, idx); err != nil {
			return 0, fmt.Errorf("ntfs: MFT record %d: compression unit at %d: %w", s.num, idx*s.unit, err)
		}
		s.cachedIdx = idx
	}
	return copy(p, s.cached[pos-idx*s.unit:]), nil
}

// decodeUnit fills dst with compression unit idx: all sparse, zeros; all allocated, stored as
// it is; allocated then sparse, its allocated clusters hold LZNT1 data.
func (s *ntfsStream) decodeUnit(dst []byte, idx int64) error {
	cs := s.fs.clusterSize
	clusters := s.unit / cs
	type seg struct{ lcn, n int64 }
	var segs []seg
	allocated, sparseSeen := int64(0), false
	for vcn := idx * clusters; vcn < (idx+1)*clusters; {
		i := sort.Search(len(s.runs), func(i int) bool { return s.runs[i].vcn+s.runs[i].length > vcn })
		if i == len(s.runs) || s.runs[i].vcn > vcn {
			return fmt.Errorf("cluster %d is not mapped: %w", vcn, ErrCorrupt)
		}
		r := s.runs[i]
		n := min(r.vcn+r.length-vcn, (idx+1)*clusters-vcn)
		if r.lcn < 0 {
			sparseSeen = true
		} else {
			if sparseSeen {
				return fmt.Errorf("clusters after a sparse run: %w", ErrCorrupt)
			}
			segs = append(segs, seg{r.lcn + vcn - r.vcn, n})
			allocated += n
		}
		vcn += n
	}
	if allocated == 0 {
		clear(dst)
		return nil
	}
	src := dst
	if allocated < clusters {
		src = make([]byte, allocated*cs)
	}
	at := int64(0)
	for _, g := range segs {
		if err := s.fs.read(src[at:at+g.n*cs], g.lcn*cs); err != nil {
			return err
		}
		at += g.n * cs
	}
	if allocated == clusters {
		return nil // stored uncompressed
	}
	n, err := lznt1(dst, src)
	if err != nil {
		return err
	}
	clear(dst[n:])
	return nil
}

// lznt1 decompresses src, a sequence of LZNT1 chunks (each a 16-bit header: its size less
// one in the low 12 bits, bit 15 set when compressed; a zero header ends them), into dst and
// returns the bytes written. Each chunk stands for 4 KiB at most: a compressed chunk is groups
// of a flag byte and eight items, a literal byte (flag bit 0) or a 16-bit back-reference whose
// split between offset and length depends on how far into its 4 KiB the chunk has got.
func lznt1(dst, src []byte) (int, error) {
	le := binary.LittleEndian
	out := 0
	for p := 0; p+2 <= len(src); {
		h := le.Uint16(src[p:])
		if h == 0 {
			break
		}
		size := int(h&0xfff) + 1
		if p+2+size > len(src) {
			return out, fmt.Errorf("LZNT1 chunk of %d bytes at %d: %w", size, p, ErrCorrupt)
		}
		chunk := src[p+2 : p+2+size]
		p += 2 + size
		if h&0x8000 == 0 { // stored
			if out+len(chunk) > len(dst) {
				return out, fmt.Errorf("LZNT1 data past the unit's end: %w", ErrCorrupt)
			}
			out += copy(dst[out:], chunk)
			continue
		}
		start, limit := out, min(len(dst), out+4096)
		for q := 0; q < len(chunk); {
			flags := chunk[q]
			q++
			for bit := 0; bit < 8 && q < len(chunk); bit++ {
				if flags&(1<<bit) == 0 {
					if out >= limit {
						return out, fmt.Errorf("LZNT1 chunk over 4 KiB: %w", ErrCorrupt)
					}
					dst[out] = chunk[q]
					out++
					q++
					continue
				}
				if q+2 > len(chunk) {
					return out, fmt.Errorf("LZNT1 back-reference cut: %w", ErrCorrupt)
				}
				tok := int(le.Uint16(chunk[q:]))
				q += 2
				pos := out - start
				lenMask, offShift := 0xfff, 12
				for i := pos - 1; i >= 0x10; i >>= 1 {
					lenMask >>= 1
					offShift--
				}
				off, n := tok>>offShift+1, tok&lenMask+3
				if pos == 0 || off > pos || out+n > limit {
					return out, fmt.Errorf("LZNT1 back-reference of %d bytes at -%d from %d: %w", n, off, pos, ErrCorrupt)
				}
				for range n { // byte by byte: the copy may overlap what it writes
					dst[out] = dst[out-off]
					out++
				}
			}
		}
	}
	return out, nil
}

// find returns the parts of the attributes of f of type typ named name.
func (f *ntfsFile) find(typ uint32, name string) []ntfsAttr {
	var out []ntfsAttr
	for _, a := range f.attrs {
		if a.typ == typ && a.name == name {
			out = append(out, a)
		}
	}
	return out
}

// dataStream returns the stream of the attribute of f of type $DATA named name.
func (fs *ntfs) dataStream(f *ntfsFile, name string) (*ntfsStream, error) {
	parts := f.find(ntfsAttrData, name)
	if len(parts) == 0 {
		return nil, fmt.Errorf("ntfs: MFT record %d has no data: %w", f.num, ErrCorrupt)
	}
	return fs.stream(f.num, parts)
}

// ntfsInfo is what a listing shows of a file.
type ntfsInfo struct {
	typ       string
	size      int64
	mtime     time.Time
	fileAttrs uint32
	target    string
	reparse   uint32 // a reparse point's tag; 0 without one
	dataFlags uint16 // the unnamed $DATA's attribute flags
}

// info reads what a listing shows of f.
func (fs *ntfs) info(f *ntfsFile) (ntfsInfo, error) {
	var in ntfsInfo
	le := binary.LittleEndian
	si := f.find(ntfsAttrStandardInfo, "")
	if len(si) != 1 || si[0].nonResident || len(si[0].value) < 36 {
		return in, fmt.Errorf("ntfs: MFT record %d: $STANDARD_INFORMATION: %w", f.num, ErrCorrupt)
	}
	in.mtime = filetime(le.Uint64(si[0].value[8:]))
	in.fileAttrs = le.Uint32(si[0].value[32:])
	in.typ = TypeFile
	if f.flags&ntfsRecordDir != 0 {
		in.typ = TypeDir
	}
	if rp := f.find(ntfsAttrReparse, ""); len(rp) > 0 {
		data, err := fs.attrBytes(f, rp, ntfsMaxLinkSize)
		if err != nil {
			return in, fmt.Errorf("ntfs: MFT record %d: reparse point: %w", f.num, err)
		}
		if len(data) < 8 {
			return in, fmt.Errorf("ntfs: MFT record %d: reparse point of %d bytes: %w", f.num, len(data), ErrCorrupt)
		}
		in.reparse = le.Uint32(data)
		if in.reparse == ntfsTagSymlink || in.reparse == ntfsTagMountPoint {
			t, err := reparseTarget(data)
			if err != nil {
				return in, fmt.Errorf("ntfs: MFT record %d: %w", f.num, err)
			}
			in.typ, in.target, in.size = TypeSymlink, t, int64(len(t))
			return in, nil
		}
	}
	if in.typ == TypeDir {
		return in, nil
	}
	parts := f.find(ntfsAttrData, "")
	if len(parts) == 0 {
		return in, fmt.Errorf("ntfs: MFT record %d: file without data: %w", f.num, ErrCorrupt)
	}
	for _, p := range parts {
		if p.nonResident && p.startVCN == 0 {
			in.size, in.dataFlags = p.dataSize, p.flags
		} else if !p.nonResident {
			in.size, in.dataFlags = int64(len(p.value)), p.flags
		}
	}
	if in.fileAttrs&ntfsFileSystem != 0 && in.reparse == 0 && in.size >= 8 && in.size <= 8+2*4096 {
		// An Interix symlink, as ntfs-3g writes them: a system file holding "IntxLNK\x01" and the
		// target in UTF-16.
		s, err := fs.stream(f.num, parts)
		if err == nil && !in.transformed() {
			b := make([]byte, in.size)
			if _, err := s.ReadAt(b, 0); err == nil && string(b[:8]) == "IntxLNK\x01" && len(b)%2 == 0 {
				t := utf16Name(b[8:])
				in.typ, in.target, in.size = TypeSymlink, t, int64(len(t))
			}
		}
	}
	return in, nil
}

// transformed tells whether the unnamed $DATA is compressed or encrypted: its runs do not
// hold the file's bytes as they are.
func (in ntfsInfo) transformed() bool {
	return in.dataFlags&(ntfsFlagCompressed|ntfsFlagEncrypted) != 0
}

// attrBytes reads an attribute whole, at most limit bytes.
func (fs *ntfs) attrBytes(f *ntfsFile, parts []ntfsAttr, limit int64) ([]byte, error) {
	s, err := fs.stream(f.num, parts)
	if err != nil {
		return nil, err
	}
	if s.size > limit {
		return nil, fmt.Errorf("%d bytes, over %d: %w", s.size, limit, ErrCorrupt)
	}
	b := make([]byte, s.size)
	if _, err := s.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b, nil
}

// reparseTarget reads the target of a symlink or junction reparse point: the name Windows
// shows (the print name), or the substitute name without its \??\ prefix when there is none.
func reparseTarget(d []byte) (string, error) {
	le := binary.LittleEndian
	tag := le.Uint32(d)
	body := d[8:]
	if l := int(le.Uint16(d[4:])); l < len(body) {
		body = body[:l]
	}
	hdr := 8
	if tag == ntfsTagSymlink {
		hdr = 12 // and a flags word
	}
	if len(body) < hdr {
		return "", fmt.Errorf("reparse point %#x of %d bytes: %w", tag, len(body), ErrCorrupt)
	}
	buf := body[hdr:]
	field := func(at int) (string, error) {
		o, l := int(le.Uint16(body[at:])), int(le.Uint16(body[at+2:]))
		if o%2 != 0 || l%2 != 0 || o > len(buf) || l > len(buf)-o {
			return "", fmt.Errorf("reparse point %#x: name of %d bytes at %d: %w", tag, l, o, ErrCorrupt)
		}
		return utf16Name(buf[o : o+l]), nil
	}
	sub, err := field(0)
	if err != nil {
		return "", err
	}
	print, err := field(4)
	if err != nil {
		return "", err
	}
	t := print
	if t == "" {
		t = strings.TrimPrefix(sub, `\??\`)
	}
	if t == "" || strings.IndexByte(t, 0) >= 0 {
		return "", fmt.Errorf("reparse point %#x: empty target or NUL in it: %w", tag, ErrCorrupt)
	}
	return t, nil
}

// filetime converts an NTFS time (100 ns since 1601-01-01 UTC) to a time.
func filetime(t uint64) time.Time {
	return time.Unix(int64(t/1e7)-ntfsEpochDelta, int64(t%1e7)*100).UTC()
}

// utf16Name decodes little-endian UTF-16 (surrogate pairs included; an unpaired surrogate
// becomes U+FFFD) to UTF-8.
func utf16Name(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// ntfsDirent is one name of a directory's index.
type ntfsDirent struct {
	name string
	ref  int64
	seq  uint16
}

// readDir calls fn for each name of directory f in index order (the collation of NTFS), DOS
// names and the metadata files left out, until fn returns true.
func (fs *ntfs) readDir(f *ntfsFile, fn func(ntfsDirent) bool) error {
	roots := f.find(ntfsAttrIndexRoot, "$I30")
	if f.flags&ntfsRecordDir == 0 || len(roots) == 0 || fs.isLink(f) {
		// A junction is a directory too, but shown as the symlink it is, never followed.
		return fmt.Errorf("MFT record %d: %w", f.num, ErrNotDir)
	}
	root := roots[0]
	le := binary.LittleEndian
	if root.nonResident || len(root.value) < 32 || le.Uint32(root.value) != ntfsAttrFileName {
		return fmt.Errorf("ntfs: directory %d: index root: %w", f.num, ErrCorrupt)
	}
	blockSize := int64(le.Uint32(root.value[8:]))
	if blockSize != fs.indexSize && (blockSize < ntfsSector || blockSize > ntfsMaxRecord || blockSize&(blockSize-1) != 0) {
		return fmt.Errorf("ntfs: directory %d: index blocks of %d bytes: %w", f.num, blockSize, ErrCorrupt)
	}
	d := &ntfsDirWalk{fs: fs, f: f, fn: fn, blockSize: blockSize, seen: map[int64]bool{}}
	// VCNs of index blocks count clusters, or 512-byte units when blocks are smaller than a cluster.
	d.vcnSize = fs.clusterSize
	if blockSize < fs.clusterSize {
		d.vcnSize = ntfsSector
	}
	_, err := d.node(root.value[16:], 0, "index root")
	return err
}

// isLink tells whether f is a symlink or junction by its reparse point's tag.
func (fs *ntfs) isLink(f *ntfsFile) bool {
	rp := f.find(ntfsAttrReparse, "")
	if len(rp) == 0 {
		return false
	}
	b := make([]byte, 4)
	s, err := fs.stream(f.num, rp)
	if err != nil {
		return false
	}
	if _, err := s.ReadAt(b, 0); err != nil {
		return false
	}
	tag := binary.LittleEndian.Uint32(b)
	return tag == ntfsTagSymlink || tag == ntfsTagMountPoint
}

type ntfsDirWalk struct {
	fs        *ntfs
	f         *ntfsFile
	fn        func(ntfsDirent) bool
	blockSize int64
	vcnSize   int64
	alloc     *ntfsStream
	bitmap    []byte
	seen      map[int64]bool
	count     int
	bytes     int64
}

// node walks the entries of an index node (its header at h[0]) in order, descending into the
// sub-node before each entry that has one. It returns true when fn stopped the walk.
func (d *ntfsDirWalk) node(h []byte, depth int, what string) (bool, error) {
	le := binary.LittleEndian
	fail := func(format string, args ...any) (bool, error) {
		return false, fmt.Errorf("ntfs: directory %d: %s: %s: %w", d.f.num, what, fmt.Sprintf(format, args...), ErrCorrupt)
	}
	if depth > ntfsMaxIndexDepth {
		return false, fmt.Errorf("ntfs: directory %d: index deeper than %d levels: %w", d.f.num, ntfsMaxIndexDepth, ErrTooLarge)
	}
	if len(h) < 16 {
		return fail("header of %d bytes", len(h))
	}
	first, total := int64(le.Uint32(h[0:])), int64(le.Uint32(h[4:]))
	if first < 16 || total > int64(len(h)) || first > total {
		return fail("entries at %d to %d of %d", first, total, len(h))
	}
	for p := first; ; {
		if p+16 > total {
			return fail("entry at %d past the node's end %d", p, total)
		}
		e := h[p:]
		l, keyLen, flags := int64(le.Uint16(e[8:])), int64(le.Uint16(e[10:])), le.Uint16(e[12:])
		if l < 16 || l%8 != 0 || p+l > total || 16+keyLen > l {
			return fail("entry at %d of %d bytes", p, l)
		}
		if flags&1 != 0 { // a sub-node before this entry
			if l < 24 || 16+keyLen > l-8 {
				return fail("entry at %d of %d bytes with a sub-node", p, l)
			}
			if stop, err := d.child(int64(le.Uint64(e[l-8:])), depth+1); stop || err != nil {
				return stop, err
			}
		}
		if flags&2 != 0 { // the last entry holds no key
			return false, nil
		}
		if keyLen < 66 {
			return fail("entry at %d with a key of %d bytes", p, keyLen)
		}
		key := e[16 : 16+keyLen]
		nameLen, ns := int64(key[64]), key[65]
		if 66+2*nameLen > keyLen {
			return fail("entry at %d: name of %d characters", p, nameLen)
		}
		ref := le.Uint64(e[0:])
		num := int64(ref & (1<<48 - 1))
		name := utf16Name(key[66 : 66+2*nameLen])
		p += l
		if ns == ntfsNamespaceDOS || num < ntfsFirstUser || name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			// A DOS 8.3 alias, a metadata file, or a name no filesystem writes (a hostile image's
			// "../x" would escape the directory an archive is extracted into).
			continue
		}
		if d.count++; d.count > maxDirEntries {
			return false, fmt.Errorf("ntfs: directory %d holds more than %d entries: %w", d.f.num, maxDirEntries, ErrTooLarge)
		}
		if d.fn(ntfsDirent{name: name, ref: num, seq: uint16(ref >> 48)}) {
			return true, nil
		}
	}
}

// child reads the index block at vcn of $INDEX_ALLOCATION, once per walk, and walks it.
func (d *ntfsDirWalk) child(vcn int64, depth int) (bool, error) {
	fs := d.fs
	if d.alloc == nil {
		parts := d.f.find(ntfsAttrIndexAlloc, "$I30")
		if len(parts) == 0 {
			return false, fmt.Errorf("ntfs: directory %d: a sub-node without an index allocation: %w", d.f.num, ErrCorrupt)
		}
		s, err := fs.stream(d.f.num, parts)
		if err != nil {
			return false, fmt.Errorf("ntfs: directory %d: index allocation: %w", d.f.num, err)
		}
		if s.isResident {
			return false, fmt.Errorf("ntfs: directory %d: resident index allocation: %w", d.f.num, ErrCorrupt)
		}
		d.alloc = s
		if bm := d.f.find(ntfsAttrBitmap, "$I30"); len(bm) > 0 {
			b, err := fs.attrBytes(d.f, bm, ntfsMaxIndexBytes/ntfsSector/8+8)
			if err != nil {
				return false, fmt.Errorf("ntfs: directory %d: index bitmap: %w", d.f.num, err)
			}
			d.bitmap = b
		}
	}
	what := fmt.Sprintf("index block at VCN %d", vcn)
	if vcn < 0 || vcn > d.alloc.size/d.vcnSize {
		return false, fmt.Errorf("ntfs: directory %d: %s: outside the allocation: %w", d.f.num, what, ErrCorrupt)
	}
	off := vcn * d.vcnSize
	if off%d.blockSize != 0 || off+d.blockSize > d.alloc.size {
		return false, fmt.Errorf("ntfs: directory %d: %s: outside the allocation: %w", d.f.num, what, ErrCorrupt)
	}
	idx := off / d.blockSize
	if d.bitmap != nil && (idx/8 >= int64(len(d.bitmap)) || d.bitmap[idx/8]&(1<<(idx%8)) == 0) {
		return false, fmt.Errorf("ntfs: directory %d: %s: not in use: %w", d.f.num, what, ErrCorrupt)
	}
	if d.seen[off] {
		return false, fmt.Errorf("ntfs: directory %d: %s: linked twice: %w", d.f.num, what, ErrCorrupt)
	}
	d.seen[off] = true
	if d.bytes += d.blockSize; d.bytes > ntfsMaxIndexBytes {
		return false, fmt.Errorf("ntfs: directory %d: index over %d bytes: %w", d.f.num, ntfsMaxIndexBytes, ErrTooLarge)
	}
	b := make([]byte, d.blockSize)
	if _, err := d.alloc.ReadAt(b, off); err != nil {
		return false, fmt.Errorf("ntfs: directory %d: %s: %w", d.f.num, what, err)
	}
	if string(b[:4]) != "INDX" {
		return false, fmt.Errorf("ntfs: directory %d: %s: no INDX signature: %w", d.f.num, what, ErrCorrupt)
	}
	if err := fixup(b, fmt.Sprintf("ntfs: directory %d: %s", d.f.num, what)); err != nil {
		return false, err
	}
	if got := int64(binary.LittleEndian.Uint64(b[16:])); got != vcn {
		return false, fmt.Errorf("ntfs: directory %d: %s: names VCN %d: %w", d.f.num, what, got, ErrCorrupt)
	}
	return d.node(b[24:], depth, what)
}

func (fs *ntfs) rootNode() (*ntfsFile, error)              { return fs.file(ntfsRootRecord) }
func (fs *ntfs) direntName(d ntfsDirent) string            { return d.name }
func (fs *ntfs) childNode(d ntfsDirent) (*ntfsFile, error) { return fs.child(&d) }

// walk resolves names from the root without following symlinks.
func (fs *ntfs) walk(names []string) (*ntfsFile, error) {
	return walkTree[*ntfsFile, ntfsDirent](fs, names)
}

// child reads the file an index entry names; a sequence number that does not match the
// record's is a stale entry.
func (fs *ntfs) child(d *ntfsDirent) (*ntfsFile, error) {
	f, err := fs.file(d.ref)
	if err != nil {
		return nil, err
	}
	if d.seq != 0 && f.seq != d.seq {
		return nil, fmt.Errorf("ntfs: index entry for record %d of sequence %d, the record is at %d: %w", d.ref, d.seq, f.seq, ErrCorrupt)
	}
	return f, nil
}

// entry describes f as an Entry named name.
func (fs *ntfs) entry(name string, f *ntfsFile) (Entry, error) {
	in, err := fs.info(f)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Name: name, Type: in.typ, Mtime: in.mtime, Target: in.target, id: uint64(f.num)}
	switch in.typ {
	case TypeDir:
		e.Mode = 0o755
	case TypeSymlink:
		e.Mode, e.Size = 0o777, in.size
	default:
		e.Mode, e.Size = 0o644, in.size
		if in.fileAttrs&ntfsFileReadOnly != 0 {
			e.Mode = 0o444
		}
	}
	return e, nil
}

// Stat describes the file at names.
func (fs *ntfs) Stat(names []string) (Entry, error) {
	fs.reads = ntfsMaxRecordReads
	return statTree[*ntfsFile, ntfsDirent](fs, names)
}

// ReadDir lists the directory at names.
func (fs *ntfs) ReadDir(names []string) ([]Entry, error) {
	fs.reads = ntfsMaxRecordReads
	return readDirTree[*ntfsFile, ntfsDirent](fs, names)
}

// Open returns the bytes of the regular file at names.
func (fs *ntfs) Open(names []string) (Entry, io.ReaderAt, error) {
	fs.reads = ntfsMaxRecordReads
	f, err := fs.walk(names)
	if err != nil {
		return Entry{}, nil, err
	}
	return fs.openFile(f, names)
}

// lookup, list and openNode are each one request, with a budget of MFT record reads of its own.
func (fs *ntfs) lookup(names []string) (any, error) {
	fs.reads = ntfsMaxRecordReads
	return fs.walk(names)
}

func (fs *ntfs) list(dir any, names []string) ([]Entry, []any, error) {
	fs.reads = ntfsMaxRecordReads
	return listNodes[*ntfsFile, ntfsDirent](fs, dir, names)
}

func (fs *ntfs) openNode(n any, names []string) (Entry, io.ReaderAt, error) {
	fs.reads = ntfsMaxRecordReads
	f, ok := n.(*ntfsFile)
	if !ok {
		return Entry{}, nil, fmt.Errorf("%s: not an ntfs node", joinPath(names))
	}
	return fs.openFile(f, names)
}

// openFile returns the bytes of the regular file f, at names.
func (fs *ntfs) openFile(f *ntfsFile, names []string) (Entry, io.ReaderAt, error) {
	e, err := fs.entry(names[len(names)-1], f)
	if err != nil {
		return Entry{}, nil, err
	}
	if e.Type != TypeFile {
		return Entry{}, nil, fmt.Errorf("%s is a %s: %w", joinPath(names), e.Type, ErrNotFile)
	}
	in, err := fs.info(f)
	if err != nil {
		return Entry{}, nil, err
	}
	switch {
	case in.dataFlags&ntfsFlagEncrypted != 0 || in.fileAttrs&ntfsFileEncrypted != 0:
		return Entry{}, nil, fmt.Errorf("%s: ntfs: encrypted (EFS) files are not read: %w", joinPath(names), ErrUnsupported)
	case in.reparse != 0:
		return Entry{}, nil, fmt.Errorf("%s: ntfs: a file behind reparse point %#x (deduplicated, compressed by Windows or a cloud placeholder) is not read: %w", joinPath(names), in.reparse, ErrUnsupported)
	}
	s, err := fs.dataStream(f, "")
	if err != nil {
		return Entry{}, nil, fmt.Errorf("%s: %w", joinPath(names), err)
	}
	if s.size != e.Size {
		return Entry{}, nil, fmt.Errorf("%s: ntfs: data of %d bytes, %d listed: %w", joinPath(names), s.size, e.Size, ErrCorrupt)
	}
	return e, s, nil
}
