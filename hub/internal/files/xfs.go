package files

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"strings"
	"time"
)

// xfs reads an XFS filesystem, version 5 (metadata CRCs, the default since 2014) or version 4:
// superblock, inodes (v2 and v3), data forks in local, extents and btree format, directories in
// short form and in data blocks (block, leaf and node directories: the data blocks are read
// linearly, the hash indexes are not needed to list or look up a name), local and remote
// symlinks, sparse files and unwritten extents (read as zeros), timestamps with nanoseconds and
// bigtime. On version 5 every structure read that carries a CRC is checked and a mismatch is an
// ErrCorrupt naming the structure. Not read: realtime files, the log (a filesystem that needs
// log recovery is read as it is on disk, as xfs_db would).
type xfs struct {
	r         io.ReaderAt
	bs        int64  // block size, 512 bytes to 64 KiB
	dblocks   uint64 // blocks in the filesystem
	agblocks  uint64 // blocks per allocation group
	agcount   uint64
	agblklog  uint
	inopblog  uint
	inodeSize int64
	rootIno   uint64
	v5        bool
	ftype     bool  // directory entries carry a file type byte
	dirBS     int64 // directory block size
}

const (
	xfsMagic = 0x58465342 // "XFSB"

	xfsIncompatFtype    = 0x1
	xfsIncompatSpinodes = 0x2
	xfsIncompatMetaUUID = 0x4
	xfsIncompatBigtime  = 0x8
	xfsIncompatRepair   = 0x10 // needsrepair: read as it is
	xfsIncompatNrext64  = 0x20
	xfsIncompatKnown    = xfsIncompatFtype | xfsIncompatSpinodes | xfsIncompatMetaUUID | xfsIncompatBigtime | xfsIncompatRepair | xfsIncompatNrext64

	xfsV4DirV2      = 0x2000 // sb_versionnum: version 2 directories
	xfsV4MoreBits   = 0x8000 // sb_versionnum: features2 is valid
	xfsF2Ftype      = 0x200  // sb_features2 of version 4: ftype
	xfsFmtLocal     = 1
	xfsFmtExtents   = 2
	xfsFmtBtree     = 3
	xfsDiRealtime   = 0x1  // di_flags
	xfsDi2Bigtime   = 0x8  // di_flags2
	xfsDi2Nrext64   = 0x10 // di_flags2
	xfsBigtimeEpoch = 1 << 31

	// xfsLeafOffset is where a directory's leaf and free-index blocks start: its data blocks
	// lie below 32 GiB of its logical space.
	xfsLeafOffset  = 32 << 30
	xfsMaxLinkSize = 1024 // XFS_SYMLINK_MAXLEN
	xfsMaxBtree    = 9    // levels of a data fork btree (XFS_BM_MAXLEVELS with 64-bit counts is 9)
	// xfsMaxExtents bounds the extents of one file held in memory (40 MiB with their records).
	xfsMaxExtents = 1 << 20
	// xfsMaxBtreeBlocks bounds the blocks of one data fork btree read: 1<<20 extents fill at
	// most 38,837 leaves of the smallest blocks.
	xfsMaxBtreeBlocks = 1 << 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// xfsCRCOK checks the CRC32C of a v5 structure b whose checksum is stored little-endian at
// off, computed with those four bytes as zero.
func xfsCRCOK(b []byte, off int) bool {
	if off+4 > len(b) {
		return false
	}
	want := binary.LittleEndian.Uint32(b[off:])
	c := crc32.Update(0, castagnoli, b[:off])
	c = crc32.Update(c, castagnoli, []byte{0, 0, 0, 0})
	c = crc32.Update(c, castagnoli, b[off+4:])
	return c == want
}

func log2(v uint64) uint {
	n := uint(0)
	for v > 1 {
		v >>= 1
		n++
	}
	return n
}

// openXFS reads the superblock of the filesystem in r; ErrUnsupported when r holds no XFS
// filesystem or one with features this reader does not know.
func openXFS(r io.ReaderAt, size int64) (*xfs, error) {
	sb := make([]byte, 512)
	if n, err := r.ReadAt(sb, 0); n < len(sb) {
		if err == nil || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("xfs: volume of %d bytes: %w", size, ErrUnsupported)
		}
		return nil, fmt.Errorf("read xfs superblock: %w", err)
	}
	be := binary.BigEndian
	if be.Uint32(sb[0:]) != xfsMagic {
		return nil, fmt.Errorf("no xfs superblock: %w", ErrUnsupported)
	}
	fs := &xfs{r: r}
	version := be.Uint16(sb[100:])
	switch version & 0xf {
	case 5:
		fs.v5 = true
	case 4:
	default:
		return nil, fmt.Errorf("xfs: superblock version %d: %w", version&0xf, ErrUnsupported)
	}
	sect := int64(be.Uint16(sb[102:]))
	if sect < 512 || sect > 32768 || sect&(sect-1) != 0 {
		return nil, fmt.Errorf("xfs: sector size %d: %w", sect, ErrCorrupt)
	}
	if fs.v5 {
		full := make([]byte, sect)
		if _, err := r.ReadAt(full, 0); err != nil {
			return nil, fmt.Errorf("read xfs superblock: %w", err)
		}
		if !xfsCRCOK(full, 224) {
			return nil, fmt.Errorf("xfs: superblock CRC mismatch: %w", ErrCorrupt)
		}
		incompat := be.Uint32(sb[216:])
		if incompat&^xfsIncompatKnown != 0 {
			return nil, fmt.Errorf("xfs: unknown incompatible features %#x: %w", incompat&^xfsIncompatKnown, ErrUnsupported)
		}
		fs.ftype = incompat&xfsIncompatFtype != 0
	} else {
		if version&xfsV4DirV2 == 0 {
			return nil, fmt.Errorf("xfs: version 1 directories are not read: %w", ErrUnsupported)
		}
		fs.ftype = version&xfsV4MoreBits != 0 && be.Uint32(sb[200:])&xfsF2Ftype != 0
	}
	fs.bs = int64(be.Uint32(sb[4:]))
	fs.dblocks = be.Uint64(sb[8:])
	fs.rootIno = be.Uint64(sb[56:])
	fs.agblocks = uint64(be.Uint32(sb[84:]))
	fs.agcount = uint64(be.Uint32(sb[88:]))
	fs.inodeSize = int64(be.Uint16(sb[104:]))
	inopblock := int64(be.Uint16(sb[106:]))
	blocklog, inodelog, inopblog, agblklog, dirblklog := uint(sb[120]), uint(sb[122]), uint(sb[123]), uint(sb[124]), uint(sb[192])
	fs.agblklog, fs.inopblog = agblklog, inopblog
	minInode := int64(256)
	if fs.v5 {
		minInode = 512
	}
	switch {
	case fs.bs < 512 || fs.bs > 65536 || fs.bs&(fs.bs-1) != 0 || int64(1)<<blocklog != fs.bs:
		return nil, fmt.Errorf("xfs: block size %d: %w", fs.bs, ErrCorrupt)
	case fs.inodeSize < minInode || fs.inodeSize > 2048 || int64(1)<<inodelog != fs.inodeSize || fs.inodeSize > fs.bs:
		return nil, fmt.Errorf("xfs: inode size %d: %w", fs.inodeSize, ErrCorrupt)
	case inopblock != fs.bs/fs.inodeSize || int64(1)<<inopblog != inopblock:
		return nil, fmt.Errorf("xfs: %d inodes per block: %w", inopblock, ErrCorrupt)
	case fs.agblocks < 5 || fs.agblocks > 1<<31 || agblklog != log2(fs.agblocks-1)+1:
		return nil, fmt.Errorf("xfs: %d blocks per allocation group (log %d): %w", fs.agblocks, agblklog, ErrCorrupt)
	case fs.agcount == 0 || fs.dblocks == 0 || fs.dblocks > fs.agcount*fs.agblocks || fs.dblocks <= (fs.agcount-1)*fs.agblocks:
		return nil, fmt.Errorf("xfs: %d blocks in %d allocation groups of %d: %w", fs.dblocks, fs.agcount, fs.agblocks, ErrCorrupt)
	case fs.dblocks > uint64(size/fs.bs):
		return nil, fmt.Errorf("xfs: %d blocks of %d bytes in a volume of %d bytes: %w", fs.dblocks, fs.bs, size, ErrCorrupt)
	case dirblklog > 16 || fs.bs<<dirblklog > 65536:
		return nil, fmt.Errorf("xfs: directory block log %d: %w", dirblklog, ErrCorrupt)
	}
	fs.dirBS = fs.bs << dirblklog
	if _, _, err := fs.inodeAddr(fs.rootIno); err != nil {
		return nil, fmt.Errorf("xfs: root inode: %w", err)
	}
	return fs, nil
}

// read fills p from the filesystem at off; a short read is damage.
func (fs *xfs) read(p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > int64(fs.dblocks)*fs.bs {
		return fmt.Errorf("read %d bytes at %d, past the filesystem's end: %w", len(p), off, ErrCorrupt)
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

// fsbOff turns a filesystem block number (allocation group in the high bits) of an extent of
// n blocks into a byte offset, checking that the extent lies inside its group and the filesystem.
func (fs *xfs) fsbOff(fsb, n uint64) (int64, error) {
	ag, agbno := fsb>>fs.agblklog, fsb&(1<<fs.agblklog-1)
	if ag >= fs.agcount || agbno >= fs.agblocks || n > fs.agblocks-agbno {
		return 0, fmt.Errorf("block %#x (+%d) outside its allocation group: %w", fsb, n, ErrCorrupt)
	}
	lin := ag*fs.agblocks + agbno
	if lin+n > fs.dblocks {
		return 0, fmt.Errorf("block %#x (+%d) past the filesystem's end: %w", fsb, n, ErrCorrupt)
	}
	return int64(lin) * fs.bs, nil
}

// inodeAddr returns where inode ino lies.
func (fs *xfs) inodeAddr(ino uint64) (int64, uint64, error) {
	if ino>>(fs.agblklog+fs.inopblog) >= fs.agcount {
		return 0, 0, fmt.Errorf("inode %d: %w", ino, ErrCorrupt)
	}
	fsb := ino >> fs.inopblog
	off, err := fs.fsbOff(fsb, 1)
	if err != nil {
		return 0, 0, fmt.Errorf("inode %d: %w", ino, err)
	}
	return off + int64(ino&(1<<fs.inopblog-1))*fs.inodeSize, fsb, nil
}

// xfsInode is the part of an inode this reader uses.
type xfsInode struct {
	ino      uint64
	mode     uint16
	format   uint8
	size     int64
	nextents uint64
	flags    uint16
	mtime    time.Time
	fork     []byte // the data fork
}

func (in *xfsInode) kind() string {
	switch in.mode & 0xf000 {
	case 0x8000:
		return TypeFile
	case 0x4000:
		return TypeDir
	case 0xa000:
		return TypeSymlink
	}
	return TypeOther
}

func (fs *xfs) inode(ino uint64) (*xfsInode, error) {
	off, _, err := fs.inodeAddr(ino)
	if err != nil {
		return nil, fmt.Errorf("xfs: %w", err)
	}
	raw := make([]byte, fs.inodeSize)
	if err := fs.read(raw, off); err != nil {
		return nil, fmt.Errorf("xfs: inode %d: %w", ino, err)
	}
	be := binary.BigEndian
	if be.Uint16(raw[0:]) != 0x494e { // "IN"
		return nil, fmt.Errorf("xfs: inode %d: bad magic: %w", ino, ErrCorrupt)
	}
	version := raw[4]
	core := 100
	var flags2 uint64
	switch {
	case version == 3 && fs.v5:
		if !xfsCRCOK(raw, 100) {
			return nil, fmt.Errorf("xfs: inode %d: CRC mismatch: %w", ino, ErrCorrupt)
		}
		if be.Uint64(raw[152:]) != ino {
			return nil, fmt.Errorf("xfs: inode %d: claims to be inode %d: %w", ino, be.Uint64(raw[152:]), ErrCorrupt)
		}
		core, flags2 = 176, be.Uint64(raw[120:])
	case (version == 1 || version == 2) && !fs.v5:
	default:
		return nil, fmt.Errorf("xfs: inode %d: version %d: %w", ino, version, ErrCorrupt)
	}
	in := &xfsInode{ino: ino, mode: be.Uint16(raw[2:]), format: raw[5], flags: be.Uint16(raw[90:])}
	size := be.Uint64(raw[56:])
	if size > 1<<62 {
		return nil, fmt.Errorf("xfs: inode %d: size %d: %w", ino, size, ErrCorrupt)
	}
	in.size = int64(size)
	in.nextents = uint64(be.Uint32(raw[76:]))
	if flags2&xfsDi2Nrext64 != 0 {
		in.nextents = be.Uint64(raw[24:])
	}
	fork := int64(len(raw)) - int64(core)
	if fo := int64(raw[82]); fo != 0 {
		if fo*8 > fork {
			return nil, fmt.Errorf("xfs: inode %d: fork offset %d: %w", ino, fo, ErrCorrupt)
		}
		fork = fo * 8
	}
	in.fork = raw[core : int64(core)+fork]
	in.mtime = fs.time(raw[40:48], flags2&xfsDi2Bigtime != 0)
	return in, nil
}

// time decodes an inode timestamp: seconds and nanoseconds since 1970 (both 32 bits), or with
// bigtime nanoseconds since 1901-12-13 in 64 bits.
func (fs *xfs) time(b []byte, big bool) time.Time {
	be := binary.BigEndian
	if big {
		v := be.Uint64(b)
		return time.Unix(int64(v/1e9)-xfsBigtimeEpoch, int64(v%1e9)).UTC()
	}
	nsec := int64(be.Uint32(b[4:]))
	if nsec > 999999999 {
		nsec = 0
	}
	return time.Unix(int64(int32(be.Uint32(b))), nsec).UTC()
}

// xfsExtent maps count blocks of a file from block startoff to byte off of the filesystem.
type xfsExtent struct {
	startoff, count uint64
	off             int64
	unwritten       bool
}

// extents returns the extents of the data fork of in, sorted and not overlapping.
func (fs *xfs) extents(in *xfsInode) ([]xfsExtent, error) {
	var recs []byte // records of 16 bytes
	switch in.format {
	case xfsFmtExtents:
		if in.nextents > uint64(len(in.fork)/16) {
			return nil, fmt.Errorf("xfs: inode %d: %d extents in a fork of %d bytes: %w", in.ino, in.nextents, len(in.fork), ErrCorrupt)
		}
		recs = in.fork[:16*in.nextents]
	case xfsFmtBtree:
		var err error
		if recs, err = fs.btree(in); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("xfs: inode %d: data fork format %d: %w", in.ino, in.format, ErrCorrupt)
	}
	be := binary.BigEndian
	out := make([]xfsExtent, 0, len(recs)/16)
	var end uint64
	for i := 0; i < len(recs); i += 16 {
		r := recs[i : i+16]
		l0, l1 := be.Uint64(r), be.Uint64(r[8:])
		e := xfsExtent{
			unwritten: l0>>63 != 0,
			startoff:  (l0 >> 9) & (1<<54 - 1),
			count:     l1 & (1<<21 - 1),
		}
		start := (l0&0x1ff)<<43 | l1>>21
		if e.count == 0 || e.startoff < end {
			return nil, fmt.Errorf("xfs: inode %d: extent at block %d of %d: %w", in.ino, e.startoff, e.count, ErrCorrupt)
		}
		off, err := fs.fsbOff(start, e.count)
		if err != nil {
			return nil, fmt.Errorf("xfs: inode %d: extent: %w", in.ino, err)
		}
		e.off = off
		end = e.startoff + e.count
		out = append(out, e)
	}
	return out, nil
}

// btree returns the leaf records of the data fork btree of in, 16 bytes each, at most
// xfsMaxExtents, visiting each block once and at most xfsMaxBtree levels deep.
func (fs *xfs) btree(in *xfsInode) ([]byte, error) {
	be := binary.BigEndian
	root := in.fork
	if len(root) < 4+16 {
		return nil, fmt.Errorf("xfs: inode %d: btree root: %w", in.ino, ErrCorrupt)
	}
	level, n := int(be.Uint16(root)), int(be.Uint16(root[2:]))
	maxr := (len(root) - 4) / 16
	if level == 0 || level > xfsMaxBtree || n > maxr {
		return nil, fmt.Errorf("xfs: inode %d: btree root of %d entries at level %d: %w", in.ino, n, level, ErrCorrupt)
	}
	ptrs := make([]uint64, n)
	for i := range n {
		ptrs[i] = be.Uint64(root[4+8*maxr+8*i:])
	}
	hdr, magic := 24, uint32(0x424d4150) // "BMAP"
	if fs.v5 {
		hdr, magic = 72, 0x424d4133 // "BMA3"
	}
	var recs []byte
	seen := map[uint64]bool{}
	var walk func(fsb uint64, level int) error
	walk = func(fsb uint64, level int) error {
		if seen[fsb] {
			return fmt.Errorf("xfs: inode %d: btree block %#x linked twice: %w", in.ino, fsb, ErrCorrupt)
		}
		seen[fsb] = true
		off, err := fs.fsbOff(fsb, 1)
		if err != nil {
			return fmt.Errorf("xfs: inode %d: btree: %w", in.ino, err)
		}
		b := make([]byte, fs.bs)
		if err := fs.read(b, off); err != nil {
			return fmt.Errorf("xfs: inode %d: btree block: %w", in.ino, err)
		}
		if be.Uint32(b) != magic || int(be.Uint16(b[4:])) != level {
			return fmt.Errorf("xfs: inode %d: btree block %#x: bad magic or level: %w", in.ino, fsb, ErrCorrupt)
		}
		if fs.v5 && (!xfsCRCOK(b, 64) || be.Uint64(b[56:]) != in.ino) {
			return fmt.Errorf("xfs: inode %d: btree block %#x: CRC mismatch or wrong owner: %w", in.ino, fsb, ErrCorrupt)
		}
		n := int(be.Uint16(b[6:]))
		maxr := (len(b) - hdr) / 16
		if n > maxr {
			return fmt.Errorf("xfs: inode %d: btree block %#x of %d entries: %w", in.ino, fsb, n, ErrCorrupt)
		}
		if level == 0 {
			if len(recs)/16+n > xfsMaxExtents {
				return fmt.Errorf("xfs: inode %d: more than %d extents: %w", in.ino, xfsMaxExtents, ErrTooLarge)
			}
			recs = append(recs, b[hdr:hdr+16*n]...)
			return nil
		}
		if len(seen) > xfsMaxBtreeBlocks {
			return fmt.Errorf("xfs: inode %d: btree of more than %d blocks: %w", in.ino, len(seen), ErrTooLarge)
		}
		for i := range n {
			if err := walk(be.Uint64(b[hdr+8*maxr+8*i:]), level-1); err != nil {
				return err
			}
		}
		return nil
	}
	for _, p := range ptrs {
		if err := walk(p, level-1); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// xfsFile reads the bytes of an inode through its extents.
type xfsFile struct {
	fs  *xfs
	in  *xfsInode
	ext []xfsExtent
}

func (fs *xfs) file(in *xfsInode) (*xfsFile, error) {
	if in.flags&xfsDiRealtime != 0 {
		return nil, fmt.Errorf("xfs: inode %d: realtime files are not read: %w", in.ino, ErrUnsupported)
	}
	ext, err := fs.extents(in)
	if err != nil {
		return nil, err
	}
	return &xfsFile{fs: fs, in: in, ext: ext}, nil
}

// find returns the index of the extent holding block lblk, or of the first after it (len(ext)
// when none), and whether lblk is mapped.
func (f *xfsFile) find(lblk uint64) (int, bool) {
	i := sort.Search(len(f.ext), func(i int) bool { return f.ext[i].startoff+f.ext[i].count > lblk })
	return i, i < len(f.ext) && f.ext[i].startoff <= lblk
}

func (f *xfsFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	bs := f.fs.bs
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= f.in.size {
			return n, io.EOF
		}
		lblk := uint64(pos / bs)
		i, mapped := f.find(lblk)
		want := min(int64(len(p)-n), f.in.size-pos)
		if !mapped {
			if i < len(f.ext) {
				// Bounded so that the product cannot overflow: a hostile extent may start at 2^54.
				want = min(want, int64(min(f.ext[i].startoff-lblk, 1<<30))*bs-pos%bs)
			}
			clear(p[n : n+int(want)])
			n += int(want)
			continue
		}
		e := f.ext[i]
		want = min(want, int64(e.startoff+e.count-lblk)*bs-pos%bs)
		if e.unwritten {
			clear(p[n : n+int(want)])
		} else if err := f.fs.read(p[n:n+int(want)], e.off+int64(lblk-e.startoff)*bs+pos%bs); err != nil {
			return n, fmt.Errorf("xfs: inode %d at %d: %w", f.in.ino, pos, err)
		}
		n += int(want)
	}
	return n, nil
}

// entry describes in as an Entry named name.
func (fs *xfs) entry(name string, in *xfsInode) (Entry, error) {
	e := Entry{Name: name, Type: in.kind(), Size: in.size, Mtime: in.mtime, Mode: uint32(in.mode & 0o7777), id: in.ino}
	if e.Type == TypeSymlink {
		t, err := fs.readlink(in)
		if err != nil {
			return Entry{}, err
		}
		e.Target = t
	}
	return e, nil
}

func (fs *xfs) readlink(in *xfsInode) (string, error) {
	if in.size > xfsMaxLinkSize {
		return "", fmt.Errorf("xfs: symlink inode %d of %d bytes: %w", in.ino, in.size, ErrCorrupt)
	}
	if in.format == xfsFmtLocal {
		if in.size > int64(len(in.fork)) {
			return "", fmt.Errorf("xfs: symlink inode %d of %d bytes in a fork of %d: %w", in.ino, in.size, len(in.fork), ErrCorrupt)
		}
		return string(in.fork[:in.size]), nil
	}
	if in.format != xfsFmtExtents {
		// 1024 bytes take at most two blocks: never a btree.
		return "", fmt.Errorf("xfs: symlink inode %d: data fork of format %d: %w", in.ino, in.format, ErrCorrupt)
	}
	ext, err := fs.extents(in)
	if err != nil {
		return "", err
	}
	if len(ext) > 2 {
		return "", fmt.Errorf("xfs: symlink inode %d: %d extents: %w", in.ino, len(ext), ErrCorrupt)
	}
	// Remote: each block holds a piece of the target, after a header on version 5.
	var out []byte
	for _, e := range ext {
		if int64(len(out)) >= in.size {
			break
		}
		if e.count > 2 { // 1024 bytes take at most two blocks (512-byte blocks on version 4)
			return "", fmt.Errorf("xfs: symlink inode %d: extent of %d blocks: %w", in.ino, e.count, ErrCorrupt)
		}
		buf := make([]byte, int64(e.count)*fs.bs)
		if err := fs.read(buf, e.off); err != nil {
			return "", fmt.Errorf("xfs: symlink inode %d: %w", in.ino, err)
		}
		for b := int64(0); b < int64(e.count) && int64(len(out)) < in.size; b++ {
			blk := buf[b*fs.bs : (b+1)*fs.bs]
			if fs.v5 {
				be := binary.BigEndian
				if be.Uint32(blk) != 0x58534c4d || !xfsCRCOK(blk, 12) || be.Uint64(blk[16:]) != in.ino {
					return "", fmt.Errorf("xfs: symlink inode %d: remote block: bad magic, CRC mismatch or wrong owner: %w", in.ino, ErrCorrupt)
				}
				blk = blk[56:]
			}
			out = append(out, blk[:min(int64(len(blk)), in.size-int64(len(out)))]...)
		}
	}
	if int64(len(out)) != in.size {
		return "", fmt.Errorf("xfs: symlink inode %d: %d of %d bytes mapped: %w", in.ino, len(out), in.size, ErrCorrupt)
	}
	return string(out), nil
}

// xfsDirent is one name of a directory.
type xfsDirent struct {
	name string
	ino  uint64
}

// readDir calls fn with the names of directory in, without "." and "..", at most maxDirEntries.
func (fs *xfs) readDir(in *xfsInode, fn func(xfsDirent) (stop bool)) error {
	if in.kind() != TypeDir {
		return fmt.Errorf("inode %d: %w", in.ino, ErrNotDir)
	}
	count := 0
	emit := func(name []byte, ino uint64) (stop bool, err error) {
		if len(name) == 0 || bytes.ContainsAny(name, "/\x00") || string(name) == "." || string(name) == ".." {
			// The links up, or a name no filesystem writes (a hostile image's "../x" would
			// escape the directory an archive is extracted into).
			return false, nil
		}
		if count++; count > maxDirEntries {
			return true, fmt.Errorf("xfs: directory inode %d holds more than %d entries: %w", in.ino, maxDirEntries, ErrTooLarge)
		}
		return fn(xfsDirent{name: string(name), ino: ino}), nil
	}
	if in.format == xfsFmtLocal {
		return fs.readShortDir(in, emit)
	}
	if in.size > maxDirBytes {
		return fmt.Errorf("xfs: directory inode %d of %d bytes, over %d: %w", in.ino, in.size, maxDirBytes, ErrTooLarge)
	}
	f, err := fs.file(in)
	if err != nil {
		return err
	}
	blk := make([]byte, fs.dirBS)
	for off := int64(0); off < min(in.size, xfsLeafOffset); off += fs.dirBS {
		if _, mapped := f.find(uint64(off / fs.bs)); !mapped {
			continue // a data block freed from a leaf or node directory
		}
		n, err := f.ReadAt(blk, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		clear(blk[n:]) // a short last block: nothing of the one before may remain
		stop, err := fs.dataBlock(in, blk, off, emit)
		if stop || err != nil {
			return err
		}
	}
	return nil
}

// readShortDir reads a directory kept in its inode.
func (fs *xfs) readShortDir(in *xfsInode, emit func([]byte, uint64) (bool, error)) error {
	b := in.fork
	if in.size > int64(len(b)) || in.size < 6 {
		return fmt.Errorf("xfs: directory inode %d: short form of %d bytes: %w", in.ino, in.size, ErrCorrupt)
	}
	b = b[:in.size]
	n, isz := int(b[0]), 4
	if b[1] != 0 {
		isz = 8
	}
	p := 2 + isz
	ft := 0
	if fs.ftype {
		ft = 1
	}
	for range n {
		if p+3 > len(b) {
			return fmt.Errorf("xfs: directory inode %d: short form entry at %d: %w", in.ino, p, ErrCorrupt)
		}
		nl := int(b[p])
		end := p + 3 + nl + ft + isz
		if end > len(b) {
			return fmt.Errorf("xfs: directory inode %d: short form entry at %d: %w", in.ino, p, ErrCorrupt)
		}
		name := b[p+3 : p+3+nl]
		var ino uint64
		if isz == 8 {
			ino = binary.BigEndian.Uint64(b[end-8:])
		} else {
			ino = uint64(binary.BigEndian.Uint32(b[end-4:]))
		}
		p = end
		if stop, err := emit(name, ino); stop || err != nil {
			return err
		}
	}
	return nil
}

// dataBlock reads the entries of one directory data block at off: the single block of a
// block directory (with its hash index at the end) or a data block of a leaf or node directory.
func (fs *xfs) dataBlock(in *xfsInode, b []byte, off int64, emit func([]byte, uint64) (bool, error)) (bool, error) {
	be := binary.BigEndian
	hdr, end := 16, len(b)
	switch magic := be.Uint32(b); {
	case fs.v5 && (magic == 0x58444233 || magic == 0x58444433): // "XDB3", "XDD3"
		if !xfsCRCOK(b, 4) || be.Uint64(b[40:]) != in.ino {
			return false, fmt.Errorf("xfs: directory inode %d: block at %d: CRC mismatch or wrong owner: %w", in.ino, off, ErrCorrupt)
		}
		hdr = 64
		if magic == 0x58444233 {
			end = -1
		}
	case !fs.v5 && (magic == 0x58443242 || magic == 0x58443244): // "XD2B", "XD2D"
		if magic == 0x58443242 {
			end = -1
		}
	default:
		return false, fmt.Errorf("xfs: directory inode %d: block at %d: bad magic %#x: %w", in.ino, off, magic, ErrCorrupt)
	}
	if end < 0 {
		// A block directory ends in its hash index: count entries of 8 bytes, then the tail.
		n := int64(be.Uint32(b[len(b)-8:]))
		if n > int64(len(b)) {
			return false, fmt.Errorf("xfs: directory inode %d: block index of %d entries: %w", in.ino, n, ErrCorrupt)
		}
		end = len(b) - 8 - 8*int(n)
		if end < hdr {
			return false, fmt.Errorf("xfs: directory inode %d: block index of %d entries: %w", in.ino, n, ErrCorrupt)
		}
	}
	ft := 0
	if fs.ftype {
		ft = 1
	}
	for p := hdr; p < end; {
		if p+8 > end {
			return false, fmt.Errorf("xfs: directory inode %d: entry at %d: %w", in.ino, off+int64(p), ErrCorrupt)
		}
		if be.Uint16(b[p:]) == 0xffff { // unused space
			l := int(be.Uint16(b[p+2:]))
			if l < 8 || l%8 != 0 || p+l > end {
				return false, fmt.Errorf("xfs: directory inode %d: free space at %d: %w", in.ino, off+int64(p), ErrCorrupt)
			}
			p += l
			continue
		}
		if p+16 > end { // the smallest entry: inode, length, a name of one byte, tag
			return false, fmt.Errorf("xfs: directory inode %d: entry at %d: %w", in.ino, off+int64(p), ErrCorrupt)
		}
		nl := int(b[p+8])
		size := (8 + 1 + nl + ft + 2 + 7) &^ 7
		if p+size > end {
			return false, fmt.Errorf("xfs: directory inode %d: entry at %d: %w", in.ino, off+int64(p), ErrCorrupt)
		}
		ino, name := be.Uint64(b[p:]), b[p+9:p+9+nl]
		p += size
		if stop, err := emit(name, ino); stop || err != nil {
			return stop, err
		}
	}
	return false, nil
}

func (fs *xfs) rootNode() (*xfsInode, error)             { return fs.inode(fs.rootIno) }
func (fs *xfs) direntName(d xfsDirent) string            { return d.name }
func (fs *xfs) childNode(d xfsDirent) (*xfsInode, error) { return fs.inode(d.ino) }

// walk resolves names from the root without following symlinks.
func (fs *xfs) walk(names []string) (*xfsInode, error) {
	return walkTree[*xfsInode, xfsDirent](fs, names)
}

// Stat describes the file at names.
func (fs *xfs) Stat(names []string) (Entry, error) { return statTree[*xfsInode, xfsDirent](fs, names) }

// ReadDir lists the directory at names.
func (fs *xfs) ReadDir(names []string) ([]Entry, error) {
	return readDirTree[*xfsInode, xfsDirent](fs, names)
}

// Open returns the bytes of the regular file at names.
func (fs *xfs) Open(names []string) (Entry, io.ReaderAt, error) {
	in, err := fs.walk(names)
	if err != nil {
		return Entry{}, nil, err
	}
	return fs.openNode(in, names)
}

func (fs *xfs) lookup(names []string) (any, error) { return fs.walk(names) }

func (fs *xfs) list(dir any, names []string) ([]Entry, []any, error) {
	return listNodes[*xfsInode, xfsDirent](fs, dir, names)
}

// openNode returns the bytes of the regular file node n, at names.
func (fs *xfs) openNode(n any, names []string) (Entry, io.ReaderAt, error) {
	in, ok := n.(*xfsInode)
	if !ok {
		return Entry{}, nil, fmt.Errorf("%s: not an xfs node", joinPath(names))
	}
	if in.kind() != TypeFile {
		return Entry{}, nil, fmt.Errorf("%s is a %s: %w", joinPath(names), in.kind(), ErrNotFile)
	}
	e, err := fs.entry(names[len(names)-1], in)
	if err != nil {
		return Entry{}, nil, err
	}
	if in.format == xfsFmtLocal && in.size == 0 {
		return e, strings.NewReader(""), nil
	}
	f, err := fs.file(in)
	if err != nil {
		return Entry{}, nil, err
	}
	return e, f, nil
}
