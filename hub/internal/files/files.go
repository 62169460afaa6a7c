// Package files reads files out of the disk images of restore points without restoring them:
// it finds the volumes of a disk (MBR and GPT partition tables, or a filesystem on the whole
// disk), reads ext2/3/4, XFS and NTFS filesystems through the image's verified random-access reader, and
// lists directories, serves files and streams directories as tar archives.
//
// Every structure comes from an image that may be damaged or hostile: every number read from
// it is checked before it is used, every loop over on-disk data is bounded (entries, depth,
// chains) and every allocation is sized by a constant of this package, never by the image.
package files

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Errors callers branch on.
var (
	// ErrBadPath: the path is not one this package accepts (NUL, too long, or ".." above the
	// root). Answered with 400.
	ErrBadPath = errors.New("bad path")
	// ErrNotFound: no file or volume has that path.
	ErrNotFound = errors.New("no such file or directory")
	// ErrNotDir: a directory was expected (a listing, or a path component) and something else found.
	ErrNotDir = errors.New("not a directory")
	// ErrNotFile: a download asked for something that is not a regular file.
	ErrNotFile = errors.New("not a regular file")
	// ErrUnsupported: the volume holds no filesystem this package reads, or uses a feature it
	// does not read.
	ErrUnsupported = errors.New("filesystem not supported")
	// ErrCorrupt: the filesystem's structures are inconsistent. The bytes were read as the
	// backup stored them (every chunk is verified): the guest's filesystem itself is damaged
	// or the image is hostile.
	ErrCorrupt = errors.New("filesystem structure damaged")
	// ErrTooLarge: a structure exceeds a bound of this package (maxDirEntries, maxTreeDepth).
	ErrTooLarge = errors.New("beyond this reader's limits")
)

// Limits that keep a hostile image from exhausting the hub.
const (
	maxPathBytes  = 4096
	maxDirEntries = 1 << 20 // entries of one directory listed (about 300 MiB at most of names)
	// maxDirBytes bounds the blocks of one directory read: a hostile directory can map one block
	// at every offset of a 16 TiB size. 1<<20 entries of the longest name take 264 MiB.
	maxDirBytes  = 512 << 20
	maxTreeDepth = 256 // directory levels an archive descends
	// maxListBytes bounds the names and symlink targets of one listing: many names of one
	// symlink (hard links) would repeat its target.
	maxListBytes = 320 << 20
)

// Entry types, as the API names them.
const (
	TypeFile    = "file"
	TypeDir     = "dir"
	TypeSymlink = "symlink"
	TypeOther   = "other"
)

// Entry describes one file, directory, symlink or other node, or one volume at the top level.
type Entry struct {
	Name   string
	Type   string
	Size   int64
	Mtime  time.Time
	Mode   uint32 // permission bits, with setuid, setgid and sticky (07777)
	Target string // a symlink's target
	id     uint64 // inode number: an archive visits each directory once
}

// filesystem is one volume's filesystem. Paths are the names below its root, already
// normalised; symlinks are never followed.
type filesystem interface {
	Stat(names []string) (Entry, error)
	ReadDir(names []string) ([]Entry, error)
	Open(names []string) (Entry, io.ReaderAt, error)
	// A walk over a tree (an archive) goes node by node, not path by path from the root: lookup
	// resolves names to a node, list lists a directory node by name with the node of each
	// entry, openNode reads a regular file node. Nodes are the filesystem's own; names are for
	// errors.
	lookup(names []string) (any, error)
	list(dir any, names []string) ([]Entry, []any, error)
	openNode(n any, names []string) (Entry, io.ReaderAt, error)
}

// SplitPath normalises p, an absolute path in the tree of a disk ("/p1/etc/hosts"; empty means
// "/"), into its names. "." and empty names are dropped, ".." goes up one level; a path that
// would go above the root, holds NUL or exceeds 4096 bytes is an ErrBadPath.
func SplitPath(p string) ([]string, error) {
	switch {
	case strings.IndexByte(p, 0) >= 0:
		return nil, fmt.Errorf("path holds NUL: %w", ErrBadPath)
	case len(p) > maxPathBytes:
		return nil, fmt.Errorf("path of %d bytes, over %d: %w", len(p), maxPathBytes, ErrBadPath)
	}
	var names []string
	for _, n := range strings.Split(p, "/") {
		switch n {
		case "", ".":
		case "..":
			if len(names) == 0 {
				return nil, fmt.Errorf("path %q goes above the root: %w", p, ErrBadPath)
			}
			names = names[:len(names)-1]
		default:
			names = append(names, n)
		}
	}
	return names, nil
}

func joinPath(names []string) string { return "/" + strings.Join(names, "/") }

// Disk is the tree of one disk image: a directory per volume at the top, each volume's
// filesystem below it. Its methods may be called from one goroutine at a time.
type Disk struct {
	vols []volume
	r    io.ReaderAt
	fss  map[string]filesystem
	errs map[string]error // volumes whose filesystem could not be opened: tried once
}

// OpenDisk reads the partition table of the image r of size bytes. pageSize is the size of
// the reads made of r (a restore point's chunk size is best: each read of the image reads a
// whole chunk) and pages how many are kept.
func OpenDisk(r io.ReaderAt, size, pageSize int64, pages int) (*Disk, error) {
	if pageSize <= 0 || pages <= 0 {
		return nil, errors.New("open disk: page size and count must be positive")
	}
	c := newPageCache(r, size, pageSize, pages)
	vols, err := findVolumes(c, size)
	if err != nil {
		return nil, fmt.Errorf("partition table: %w", err)
	}
	return &Disk{vols: vols, r: c, fss: map[string]filesystem{}, errs: map[string]error{}}, nil
}

// openFS reads the filesystem of a volume with the first reader that recognises it: each
// answers ErrUnsupported for a volume that does not hold its filesystem.
func openFS(r io.ReaderAt, size int64) (filesystem, error) {
	f, err := openExt4(r, size)
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, ErrUnsupported) {
		return nil, err
	}
	x, xerr := openXFS(r, size)
	if xerr == nil {
		return x, nil
	}
	if !errors.Is(xerr, ErrUnsupported) {
		return nil, xerr
	}
	n, nerr := openNTFS(r, size)
	if nerr == nil {
		return n, nil
	}
	if !errors.Is(nerr, ErrUnsupported) {
		return nil, nerr
	}
	return nil, fmt.Errorf("%v; %v; %w", err, xerr, nerr)
}

// fs returns the filesystem of the volume named name.
func (d *Disk) fs(name string) (filesystem, volume, error) {
	for _, v := range d.vols {
		if v.Name != name {
			continue
		}
		if f, ok := d.fss[name]; ok {
			return f, v, nil
		}
		if err, ok := d.errs[name]; ok {
			return nil, v, err
		}
		f, err := openFS(section{d.r, v.Off, v.Size}, v.Size)
		if err != nil {
			err = fmt.Errorf("volume %s: %w", name, err)
			if errors.Is(err, ErrUnsupported) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTooLarge) {
				d.errs[name] = err // what the volume's bytes hold; a read error may pass
			}
			return nil, v, err
		}
		d.fss[name] = f
		return f, v, nil
	}
	return nil, volume{}, fmt.Errorf("/%s: no such volume: %w", name, ErrNotFound)
}

func (d *Disk) volumeEntry(v volume) (Entry, error) {
	e := Entry{Name: v.Name, Type: TypeDir, Size: v.Size, Mode: 0o555}
	if _, _, err := d.fs(v.Name); err != nil {
		if !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrCorrupt) {
			return Entry{}, err
		}
		e.Type, e.Mode = TypeOther, 0 // a volume whose filesystem this package does not read
	}
	return e, nil
}

// Stat describes the node at p.
func (d *Disk) Stat(p string) (Entry, error) {
	names, err := SplitPath(p)
	if err != nil {
		return Entry{}, err
	}
	if len(names) == 0 {
		return Entry{Name: "/", Type: TypeDir, Mode: 0o555}, nil
	}
	if len(names) == 1 {
		for _, v := range d.vols {
			if v.Name == names[0] {
				return d.volumeEntry(v)
			}
		}
		return Entry{}, fmt.Errorf("%s: %w", joinPath(names), ErrNotFound)
	}
	f, _, err := d.fs(names[0])
	if err != nil {
		return Entry{}, err
	}
	e, err := f.Stat(names[1:])
	return e, prefix(names[0], err)
}

// ReadDir lists the directory at p, sorted by name.
func (d *Disk) ReadDir(p string) ([]Entry, error) {
	names, err := SplitPath(p)
	if err != nil {
		return nil, err
	}
	var out []Entry
	if len(names) == 0 {
		for _, v := range d.vols {
			e, err := d.volumeEntry(v)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
	} else {
		f, _, err := d.fs(names[0])
		if err != nil {
			return nil, err
		}
		if out, err = f.ReadDir(names[1:]); err != nil {
			return nil, prefix(names[0], err)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Open returns the regular file at p and a reader of its bytes. A read of bytes under a
// damaged chunk fails; it never returns wrong bytes.
func (d *Disk) Open(p string) (Entry, io.ReaderAt, error) {
	names, err := SplitPath(p)
	if err != nil {
		return Entry{}, nil, err
	}
	if len(names) < 2 {
		if _, err := d.Stat(p); err != nil {
			return Entry{}, nil, err
		}
		return Entry{}, nil, fmt.Errorf("%s is a volume: %w", joinPath(names), ErrNotFile)
	}
	f, _, err := d.fs(names[0])
	if err != nil {
		return Entry{}, nil, err
	}
	e, r, err := f.Open(names[1:])
	return e, r, prefix(names[0], err)
}

// prefix puts the volume's name in front of the paths a filesystem's errors name.
func prefix(vol string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("volume %s: %w", vol, err)
}

// WriteTar writes the directory at p and everything below it to w as a tar archive, names
// relative to p's parent (p = /p1/etc gives etc/, etc/hosts, …). Symlinks are stored as
// symlinks (but one whose target holds NUL, which tar cannot store, is left out); other nodes
// are left out. Each directory is visited once (a hostile image can link a directory into
// itself) and at most maxTreeDepth levels deep. Any error (a damaged chunk under a file) stops
// the archive: the caller must not let it pass as complete.
func (d *Disk) WriteTar(w io.Writer, p string, copied func(n int64)) error {
	names, err := SplitPath(p)
	if err != nil {
		return err
	}
	root, err := d.Stat(p)
	if err != nil {
		return err
	}
	if root.Type != TypeDir {
		return fmt.Errorf("%s: %w", joinPath(names), ErrNotDir)
	}
	a := &archive{d: d, tw: tar.NewWriter(w), seen: map[string]bool{}, copied: copied}
	if len(names) == 0 {
		err = a.disk(root)
	} else {
		err = a.volumeDir(names, names[len(names)-1], root, 0)
	}
	if err != nil {
		return err
	}
	return a.tw.Close()
}

// archive is one WriteTar.
type archive struct {
	d      *Disk
	tw     *tar.Writer
	seen   map[string]bool // volume and inode of each directory written
	copied func(int64)
}

func (a *archive) dirHeader(rel string, e Entry) error {
	return a.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: int64(e.Mode), ModTime: e.Mtime, Format: tar.FormatPAX})
}

// disk writes the whole disk: a directory per volume whose filesystem this package reads.
func (a *archive) disk(root Entry) error {
	if err := a.dirHeader("disk", root); err != nil {
		return err
	}
	vols, err := a.d.ReadDir("/")
	if err != nil {
		return err
	}
	for _, v := range vols {
		if v.Type == TypeDir {
			if err := a.volumeDir([]string{v.Name}, "disk/"+v.Name, v, 1); err != nil {
				return err
			}
		}
	}
	return nil
}

// volumeDir writes the directory at names (a volume, and the names below its root), entry dir,
// as rel.
func (a *archive) volumeDir(names []string, rel string, dir Entry, depth int) error {
	f, _, err := a.d.fs(names[0])
	if err != nil {
		return err
	}
	n, err := f.lookup(names[1:])
	if err != nil {
		return prefix(names[0], err)
	}
	return a.dir(f, n, names, rel, dir, depth)
}

// dir writes the directory node n of filesystem f, at names, entry e, as rel, and what is
// below it, node by node.
func (a *archive) dir(f filesystem, n any, names []string, rel string, e Entry, depth int) error {
	if depth > maxTreeDepth {
		return fmt.Errorf("%s: deeper than %d levels: %w", joinPath(names), maxTreeDepth, ErrTooLarge)
	}
	if len(names) >= 2 {
		key := fmt.Sprintf("%s/%d", names[0], e.id)
		if a.seen[key] {
			return nil // a directory linked twice: written once
		}
		a.seen[key] = true
	}
	if err := a.dirHeader(rel, e); err != nil {
		return err
	}
	entries, nodes, err := f.list(n, names[1:])
	if err != nil {
		return prefix(names[0], err)
	}
	for i, ce := range entries {
		child := append(names[:len(names):len(names)], ce.Name)
		crel := rel + "/" + ce.Name
		switch ce.Type {
		case TypeDir:
			if err := a.dir(f, nodes[i], child, crel, ce, depth+1); err != nil {
				return err
			}
		case TypeSymlink:
			if strings.IndexByte(ce.Target, 0) >= 0 {
				continue
			}
			if err := a.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: crel, Linkname: ce.Target, Mode: int64(ce.Mode), ModTime: ce.Mtime, Format: tar.FormatPAX}); err != nil {
				return err
			}
		case TypeFile:
			fe, r, err := f.openNode(nodes[i], child[1:])
			if err != nil {
				return prefix(names[0], err)
			}
			if err := a.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: crel, Size: fe.Size, Mode: int64(fe.Mode), ModTime: fe.Mtime, Format: tar.FormatPAX}); err != nil {
				return err
			}
			n, err := io.Copy(a.tw, io.NewSectionReader(r, 0, fe.Size))
			if a.copied != nil {
				a.copied(n)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", joinPath(child), err)
			}
		}
	}
	return nil
}
