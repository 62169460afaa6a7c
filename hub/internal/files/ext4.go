package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ext4 reads an ext2, ext3 or ext4 filesystem: superblock, group descriptors (32 and 64 bit),
// inodes, extent trees and the older block maps, linear directories (a hashed directory's
// blocks read linearly too), fast and slow symlinks. It reads through an io.ReaderAt, one block
// at a time, and checks every number it takes from the image against the filesystem's bounds
// before using it. Not read: inline data, encryption, meta_bg, journal replay (a filesystem
// that needs recovery is read as it is on disk, as `debugfs` would).
type ext4 struct {
	r         io.ReaderAt
	bs        int64  // block size, 1 KiB to 64 KiB
	blocks    uint64 // blocks in the filesystem
	inodes    uint32
	ipg       uint32 // inodes per group
	inodeSize int64
	descSize  int64
	groups    uint64
	gdtOff    int64 // byte offset of the group descriptor table
	filetype  bool  // directory entries carry a file type byte
}

const (
	ext4Magic = 0xef53

	ext4IncompatCompression = 0x1
	ext4IncompatFiletype    = 0x2
	ext4IncompatJournalDev  = 0x8
	ext4IncompatMetaBG      = 0x10
	ext4Incompat64Bit       = 0x80
	ext4IncompatDirData     = 0x1000
	// Features this reader knows: anything else is refused, since it may change the layout.
	ext4IncompatKnown = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000

	ext4FlagExtents = 0x80000
	ext4FlagInline  = 0x10000000
	ext4FlagEncrypt = 0x800

	ext4RootIno     = 2
	ext4MaxDepth    = 5    // an extent tree is at most 5 levels deep (the kernel's limit)
	ext4MaxLinkSize = 4096 // PATH_MAX: a longer symlink target is damage
)

// openExt4 reads the superblock of the filesystem in r; ErrUnsupported when r holds no ext
// filesystem or one with features this reader does not know.
func openExt4(r io.ReaderAt, size int64) (*ext4, error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, 1024); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("ext4: volume of %d bytes: %w", size, ErrUnsupported)
		}
		return nil, fmt.Errorf("read ext4 superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[56:]) != ext4Magic {
		return nil, fmt.Errorf("no ext4 superblock: %w", ErrUnsupported)
	}
	fs := &ext4{r: r}
	logBS := le.Uint32(sb[24:])
	if logBS > 6 {
		return nil, fmt.Errorf("ext4: block size 2^%d KiB: %w", logBS, ErrCorrupt)
	}
	fs.bs = 1024 << logBS
	incompat := le.Uint32(sb[96:])
	switch {
	case incompat&^ext4IncompatKnown != 0:
		return nil, fmt.Errorf("ext4: unknown incompatible features %#x: %w", incompat&^ext4IncompatKnown, ErrUnsupported)
	case incompat&(ext4IncompatCompression|ext4IncompatJournalDev|ext4IncompatMetaBG|ext4IncompatDirData) != 0:
		return nil, fmt.Errorf("ext4: features %#x (compression, journal device, meta_bg or dirdata) are not read: %w", incompat, ErrUnsupported)
	}
	fs.filetype = incompat&ext4IncompatFiletype != 0
	fs.blocks = uint64(le.Uint32(sb[4:]))
	fs.descSize = 32
	if incompat&ext4Incompat64Bit != 0 {
		fs.blocks |= uint64(le.Uint32(sb[0x150:])) << 32
		fs.descSize = int64(le.Uint16(sb[254:]))
		if fs.descSize < 64 || fs.descSize > 1024 || fs.descSize&(fs.descSize-1) != 0 {
			return nil, fmt.Errorf("ext4: group descriptor size %d: %w", fs.descSize, ErrCorrupt)
		}
	}
	fs.inodes = le.Uint32(sb[0:])
	fs.ipg = le.Uint32(sb[40:])
	bpg := uint64(le.Uint32(sb[32:]))
	first := uint64(le.Uint32(sb[20:]))
	fs.inodeSize = 128
	if le.Uint32(sb[76:]) >= 1 {
		fs.inodeSize = int64(le.Uint16(sb[88:]))
	}
	switch {
	case fs.blocks == 0 || fs.blocks > uint64(size/fs.bs)+1:
		// One block of slack: a filesystem may end in a partial block of its volume.
		return nil, fmt.Errorf("ext4: %d blocks of %d bytes in a volume of %d bytes: %w", fs.blocks, fs.bs, size, ErrCorrupt)
	case fs.ipg == 0 || int64(fs.ipg) > fs.bs*8, bpg == 0 || bpg > uint64(fs.bs)*8, first >= fs.blocks:
		return nil, fmt.Errorf("ext4: %d inodes and %d blocks per group: %w", fs.ipg, bpg, ErrCorrupt)
	case fs.inodeSize < 128 || fs.inodeSize > fs.bs || fs.inodeSize&(fs.inodeSize-1) != 0:
		return nil, fmt.Errorf("ext4: inode size %d: %w", fs.inodeSize, ErrCorrupt)
	}
	fs.groups = (fs.blocks - first + bpg - 1) / bpg
	if uint64(fs.inodes) > fs.groups*uint64(fs.ipg) || fs.inodes < ext4RootIno {
		return nil, fmt.Errorf("ext4: %d inodes in %d groups of %d: %w", fs.inodes, fs.groups, fs.ipg, ErrCorrupt)
	}
	fs.gdtOff = int64(first+1) * fs.bs
	return fs, nil
}

// ext4Inode is the part of an inode this reader uses.
type ext4Inode struct {
	ino   uint32
	mode  uint16
	size  int64
	flags uint32
	mtime time.Time
	block [60]byte
}

func (in *ext4Inode) kind() string {
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

func (fs *ext4) inode(ino uint32) (*ext4Inode, error) {
	if ino == 0 || ino > fs.inodes {
		return nil, fmt.Errorf("ext4: inode %d of %d: %w", ino, fs.inodes, ErrCorrupt)
	}
	g := uint64(ino-1) / uint64(fs.ipg)
	desc := make([]byte, fs.descSize)
	if err := fs.read(desc, fs.gdtOff+int64(g)*fs.descSize); err != nil {
		return nil, fmt.Errorf("ext4: group descriptor %d: %w", g, err)
	}
	le := binary.LittleEndian
	table := uint64(le.Uint32(desc[8:]))
	if fs.descSize >= 64 {
		table |= uint64(le.Uint32(desc[0x28:])) << 32
	}
	tableBlocks := (uint64(fs.ipg)*uint64(fs.inodeSize) + uint64(fs.bs) - 1) / uint64(fs.bs)
	if table == 0 || table >= fs.blocks || table+tableBlocks > fs.blocks {
		return nil, fmt.Errorf("ext4: inode table of group %d at block %d: %w", g, table, ErrCorrupt)
	}
	raw := make([]byte, fs.inodeSize)
	off := int64(table)*fs.bs + int64(uint64(ino-1)%uint64(fs.ipg))*fs.inodeSize
	if err := fs.read(raw, off); err != nil {
		return nil, fmt.Errorf("ext4: inode %d: %w", ino, err)
	}
	in := &ext4Inode{ino: ino, mode: le.Uint16(raw[0:]), flags: le.Uint32(raw[32:])}
	in.size = int64(uint64(le.Uint32(raw[4:])) | uint64(le.Uint32(raw[108:]))<<32)
	if in.size < 0 {
		return nil, fmt.Errorf("ext4: inode %d: size %d: %w", ino, in.size, ErrCorrupt)
	}
	copy(in.block[:], raw[40:100])
	sec, nsec := int64(int32(le.Uint32(raw[16:]))), int64(0)
	if fs.inodeSize > 128 {
		if extra := int64(le.Uint16(raw[128:])); extra >= 12 && 128+extra <= fs.inodeSize {
			x := le.Uint32(raw[0x88:])
			sec += int64(x&3) << 32
			nsec = int64(x >> 2)
			if nsec > 999999999 {
				nsec = 0
			}
		}
	}
	in.mtime = time.Unix(sec, nsec).UTC()
	return in, nil
}

// read fills p from the filesystem at off; a short read is damage.
func (fs *ext4) read(p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > int64(fs.blocks)*fs.bs {
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

// mapBlock returns the physical block holding logical block lblk of in and how many blocks
// from there are contiguous in both; phys 0 is a hole (or unwritten extent), read as zeros.
func (fs *ext4) mapBlock(in *ext4Inode, lblk uint64) (phys, run uint64, err error) {
	if in.flags&ext4FlagExtents != 0 {
		return fs.mapExtent(in, lblk)
	}
	return fs.mapIndirect(in, lblk)
}

func (fs *ext4) mapExtent(in *ext4Inode, lblk uint64) (phys, run uint64, err error) {
	le := binary.LittleEndian
	node := in.block[:]
	depth := -1
	for level := 0; ; level++ {
		if len(node) < 12 || le.Uint16(node[0:]) != 0xf30a {
			return 0, 0, fmt.Errorf("ext4: inode %d: extent header: %w", in.ino, ErrCorrupt)
		}
		n := int(le.Uint16(node[2:]))
		d := int(le.Uint16(node[6:]))
		if 12+12*n > len(node) || d > ext4MaxDepth || (depth >= 0 && d != depth-1) || level > ext4MaxDepth {
			return 0, 0, fmt.Errorf("ext4: inode %d: extent node of %d entries at depth %d: %w", in.ino, n, d, ErrCorrupt)
		}
		depth = d
		// The last entry starting at or before lblk; entries are sorted by logical block.
		pick := -1
		for i := 0; i < n; i++ {
			if uint64(le.Uint32(node[12+12*i:])) > lblk {
				break
			}
			pick = i
		}
		if d == 0 {
			next := uint64(1 << 32) // the hole runs to the next extent, or the end
			if pick+1 < n {
				next = uint64(le.Uint32(node[12+12*(pick+1):]))
			}
			if pick < 0 {
				return 0, next - lblk, nil
			}
			e := node[12+12*pick:]
			start, l := uint64(le.Uint32(e[0:])), uint64(le.Uint16(e[4:]))
			unwritten := l > 32768
			if unwritten {
				l -= 32768
			}
			if lblk >= start+l {
				return 0, max(next-lblk, 1), nil
			}
			p := uint64(le.Uint16(e[6:]))<<32 | uint64(le.Uint32(e[8:]))
			if p == 0 || p+l > fs.blocks {
				return 0, 0, fmt.Errorf("ext4: inode %d: extent at block %d of %d: %w", in.ino, p, l, ErrCorrupt)
			}
			if unwritten {
				return 0, start + l - lblk, nil
			}
			return p + (lblk - start), start + l - lblk, nil
		}
		if pick < 0 {
			// Before the first index entry: a hole up to it.
			return 0, max(uint64(le.Uint32(node[12:]))-lblk, 1), nil
		}
		e := node[12+12*pick:]
		child := uint64(le.Uint16(e[8:]))<<32 | uint64(le.Uint32(e[4:]))
		if child == 0 || child >= fs.blocks {
			return 0, 0, fmt.Errorf("ext4: inode %d: extent index to block %d: %w", in.ino, child, ErrCorrupt)
		}
		buf := make([]byte, fs.bs)
		if err := fs.read(buf, int64(child)*fs.bs); err != nil {
			return 0, 0, fmt.Errorf("ext4: inode %d: extent node: %w", in.ino, err)
		}
		node = buf
	}
}

// mapIndirect maps through the block map of ext2/ext3 files: 12 direct blocks, then single,
// double and triple indirect blocks.
func (fs *ext4) mapIndirect(in *ext4Inode, lblk uint64) (phys, run uint64, err error) {
	le := binary.LittleEndian
	per := uint64(fs.bs / 4)
	var ptr uint64
	var levels int
	switch {
	case lblk < 12:
		ptr, levels = uint64(le.Uint32(in.block[4*lblk:])), 0
	case lblk-12 < per:
		ptr, levels, lblk = uint64(le.Uint32(in.block[48:])), 1, lblk-12
	case lblk-12-per < per*per:
		ptr, levels, lblk = uint64(le.Uint32(in.block[52:])), 2, lblk-12-per
	case lblk-12-per-per*per < per*per*per:
		ptr, levels, lblk = uint64(le.Uint32(in.block[56:])), 3, lblk-12-per-per*per
	default:
		return 0, 1, nil
	}
	var b [4]byte
	for l := levels; l > 0; l-- {
		if ptr == 0 {
			return 0, 1, nil
		}
		if ptr >= fs.blocks {
			return 0, 0, fmt.Errorf("ext4: inode %d: indirect block %d: %w", in.ino, ptr, ErrCorrupt)
		}
		span := uint64(1)
		for range l - 1 {
			span *= per
		}
		if err := fs.read(b[:], int64(ptr)*fs.bs+int64(lblk/span)*4); err != nil {
			return 0, 0, fmt.Errorf("ext4: inode %d: indirect block: %w", in.ino, err)
		}
		ptr, lblk = uint64(le.Uint32(b[:])), lblk%span
	}
	if ptr >= fs.blocks {
		return 0, 0, fmt.Errorf("ext4: inode %d: data block %d: %w", in.ino, ptr, ErrCorrupt)
	}
	return ptr, 1, nil
}

// ext4File reads the bytes of an inode.
type ext4File struct {
	fs *ext4
	in *ext4Inode
}

func (f ext4File) ReadAt(p []byte, off int64) (int, error) {
	if f.in.flags&(ext4FlagInline|ext4FlagEncrypt) != 0 {
		return 0, fmt.Errorf("ext4: inode %d: inline or encrypted data is not read: %w", f.in.ino, ErrUnsupported)
	}
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= f.in.size {
			return n, io.EOF
		}
		lblk := uint64(pos / f.fs.bs)
		in := pos % f.fs.bs
		phys, run, err := f.fs.mapBlock(f.in, lblk)
		if err != nil {
			return n, err
		}
		run = max(run, 1)                            // a hostile tree must not stall the loop
		avail := int64(min(run, 1<<20))*f.fs.bs - in // bounded so that the product cannot overflow
		want := min(int64(len(p)-n), f.in.size-pos, avail)
		if phys == 0 {
			clear(p[n : n+int(want)])
		} else if err := f.fs.read(p[n:n+int(want)], int64(phys)*f.fs.bs+in); err != nil {
			return n, fmt.Errorf("ext4: inode %d at %d: %w", f.in.ino, pos, err)
		}
		n += int(want)
	}
	return n, nil
}

// entry describes in as an Entry named name.
func (fs *ext4) entry(name string, in *ext4Inode) (Entry, error) {
	e := Entry{Name: name, Type: in.kind(), Size: in.size, Mtime: in.mtime, Mode: uint32(in.mode & 0o7777), id: uint64(in.ino)}
	if e.Type == TypeSymlink {
		t, err := fs.readlink(in)
		if err != nil {
			return Entry{}, err
		}
		e.Target = t
	}
	return e, nil
}

func (fs *ext4) readlink(in *ext4Inode) (string, error) {
	if in.size > ext4MaxLinkSize {
		return "", fmt.Errorf("ext4: symlink inode %d of %d bytes: %w", in.ino, in.size, ErrCorrupt)
	}
	// A fast symlink keeps its target in the block array.
	if in.size < 60 && in.flags&(ext4FlagExtents|ext4FlagInline) == 0 {
		return string(in.block[:in.size]), nil
	}
	buf := make([]byte, in.size)
	if _, err := (ext4File{fs, in}).ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return string(buf), nil
}

// dirent is one name of a directory.
type dirent struct {
	name string
	ino  uint32
}

// readDir returns the names of directory in, without "." and "..", at most maxDirEntries.
func (fs *ext4) readDir(in *ext4Inode, fn func(dirent) (stop bool)) error {
	if in.kind() != TypeDir {
		return fmt.Errorf("inode %d: %w", in.ino, ErrNotDir)
	}
	if in.flags&(ext4FlagInline|ext4FlagEncrypt) != 0 {
		return fmt.Errorf("ext4: directory inode %d: inline or encrypted directories are not read: %w", in.ino, ErrUnsupported)
	}
	if in.size > maxDirBytes {
		return fmt.Errorf("ext4: directory inode %d of %d bytes, over %d: %w", in.ino, in.size, maxDirBytes, ErrTooLarge)
	}
	le := binary.LittleEndian
	f := ext4File{fs, in}
	blk := make([]byte, fs.bs)
	count := 0
	for off := int64(0); off < in.size; off += fs.bs {
		n, err := f.ReadAt(blk, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		b := blk[:n]
		for p := 0; p+8 <= len(b); {
			ino := le.Uint32(b[p:])
			rec := int(le.Uint16(b[p+4:]))
			if rec == 0 || (rec == 65535 && fs.bs == 65536) {
				rec = 65536
			}
			nameLen := int(b[p+6])
			if !fs.filetype {
				nameLen |= int(b[p+7]) << 8
			}
			if rec < 8 || rec%4 != 0 || p+rec > len(b) || 8+nameLen > rec {
				return fmt.Errorf("ext4: directory inode %d: entry at %d: %w", in.ino, off+int64(p), ErrCorrupt)
			}
			name := string(b[p+8 : p+8+nameLen])
			p += rec
			if ino == 0 || name == "." || name == ".." || nameLen == 0 || strings.ContainsAny(name, "/\x00") {
				// Unused, the links up, or a name no filesystem writes (a hostile image's "../x"
				// would escape the directory an archive is extracted into).
				continue
			}
			if count++; count > maxDirEntries {
				return fmt.Errorf("ext4: directory inode %d holds more than %d entries: %w", in.ino, maxDirEntries, ErrTooLarge)
			}
			if fn(dirent{name: name, ino: ino}) {
				return nil
			}
		}
	}
	return nil
}

func (fs *ext4) rootNode() (*ext4Inode, error)          { return fs.inode(ext4RootIno) }
func (fs *ext4) direntName(d dirent) string             { return d.name }
func (fs *ext4) childNode(d dirent) (*ext4Inode, error) { return fs.inode(d.ino) }

// walk resolves names from the root without following symlinks.
func (fs *ext4) walk(names []string) (*ext4Inode, error) {
	return walkTree[*ext4Inode, dirent](fs, names)
}

// Stat describes the file at names.
func (fs *ext4) Stat(names []string) (Entry, error) { return statTree[*ext4Inode, dirent](fs, names) }

// ReadDir lists the directory at names.
func (fs *ext4) ReadDir(names []string) ([]Entry, error) {
	return readDirTree[*ext4Inode, dirent](fs, names)
}

// Open returns the bytes of the regular file at names.
func (fs *ext4) Open(names []string) (Entry, io.ReaderAt, error) {
	in, err := fs.walk(names)
	if err != nil {
		return Entry{}, nil, err
	}
	return fs.openNode(in, names)
}

func (fs *ext4) lookup(names []string) (any, error) { return fs.walk(names) }

func (fs *ext4) list(dir any, names []string) ([]Entry, []any, error) {
	return listNodes[*ext4Inode, dirent](fs, dir, names)
}

// openNode returns the bytes of the regular file node n, at names.
func (fs *ext4) openNode(n any, names []string) (Entry, io.ReaderAt, error) {
	in, ok := n.(*ext4Inode)
	if !ok {
		return Entry{}, nil, fmt.Errorf("%s: not an ext4 node", joinPath(names))
	}
	if in.kind() != TypeFile {
		return Entry{}, nil, fmt.Errorf("%s is a %s: %w", joinPath(names), in.kind(), ErrNotFile)
	}
	e, err := fs.entry(names[len(names)-1], in)
	if err != nil {
		return Entry{}, nil, err
	}
	return e, ext4File{fs, in}, nil
}
