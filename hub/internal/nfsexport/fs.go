package nfsexport

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"sync"
	"syscall"
	"time"

	billy "github.com/go-git/go-billy/v5"
)

// sessionFS is the folder one session exports: real files in a directory (the .vmx, the disk
// descriptors, and whatever ESXi creates: logs, nvram, swap, lock files) plus one virtual flat
// file per disk backed by its copy-on-write overlay. The flat files can be read and written
// but not removed, renamed, resized or replaced.
type sessionFS struct {
	billy.Filesystem // the session's directory, bound to it (no path can leave it)
	disks            map[string]*cowDisk
	mtime            time.Time
	mu               sync.Mutex // serialises mtime updates

	// budget is the session's overlay limit, which the bytes of its other files count against
	// too (ESXi's swap file, a snapshot's delta disks): nil counts nothing. meter serialises
	// the changes of those files' sizes, so that each byte is counted once.
	budget *budget
	meter  sync.Mutex
}

var (
	_ billy.Filesystem = (*sessionFS)(nil)
	_ billy.Change     = (*sessionFS)(nil)
)

// disk returns the overlay of the flat file named by p, or nil.
func (s *sessionFS) disk(p string) (*cowDisk, string) {
	name := path.Clean("/" + p)[1:]
	return s.disks[name], name
}

func (s *sessionFS) Open(name string) (billy.File, error) {
	return s.OpenFile(name, os.O_RDONLY, 0)
}

func (s *sessionFS) Create(name string) (billy.File, error) {
	return s.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

func (s *sessionFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	d, clean := s.disk(name)
	if d == nil {
		return s.openMetered(name, flag, perm)
	}
	if flag&(os.O_TRUNC|os.O_EXCL) != 0 && flag&os.O_CREATE != 0 {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.EEXIST}
	}
	return &diskFile{d: d, name: clean, fs: s, write: flag&(os.O_WRONLY|os.O_RDWR) != 0}, nil
}

func (s *sessionFS) Stat(name string) (os.FileInfo, error) {
	if d, clean := s.disk(name); d != nil {
		return s.diskInfo(clean, d), nil
	}
	return s.Filesystem.Stat(name)
}

func (s *sessionFS) Lstat(name string) (os.FileInfo, error) {
	if d, clean := s.disk(name); d != nil {
		return s.diskInfo(clean, d), nil
	}
	return s.Filesystem.Lstat(name)
}

func (s *sessionFS) ReadDir(dir string) ([]os.FileInfo, error) {
	infos, err := s.Filesystem.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	clean := path.Clean("/" + dir)[1:]
	added := false
	for name, d := range s.disks {
		if path.Dir(name) == clean {
			infos = append(infos, s.diskInfo(name, d))
			added = true
		}
	}
	if added {
		sort.Slice(infos, func(i, j int) bool { return infos[i].Name() < infos[j].Name() })
	}
	return infos, nil
}

func (s *sessionFS) Remove(name string) error {
	if d, _ := s.disk(name); d != nil {
		return &os.PathError{Op: "remove", Path: name, Err: syscall.EPERM}
	}
	s.meter.Lock()
	defer s.meter.Unlock()
	size := s.fileSize(name)
	if err := s.Filesystem.Remove(name); err != nil {
		return err
	}
	s.release(size)
	return nil
}

func (s *sessionFS) Rename(from, to string) error {
	if d, _ := s.disk(from); d != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: syscall.EPERM}
	}
	if d, _ := s.disk(to); d != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: syscall.EPERM}
	}
	s.meter.Lock()
	defer s.meter.Unlock()
	replaced := s.fileSize(to)
	if err := s.Filesystem.Rename(from, to); err != nil {
		return err
	}
	s.release(replaced)
	return nil
}

// openMetered opens a file of the folder other than a flat disk; its growth counts against the
// session's budget.
func (s *sessionFS) openMetered(name string, flag int, perm os.FileMode) (billy.File, error) {
	if s.budget == nil {
		return s.Filesystem.OpenFile(name, flag, perm)
	}
	s.meter.Lock()
	defer s.meter.Unlock()
	before := s.fileSize(name)
	f, err := s.Filesystem.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	if flag&os.O_TRUNC != 0 {
		s.release(before - s.fileSize(name))
	}
	return &meteredFile{File: f, fs: s, name: name}, nil
}

// fileSize is the size of a regular file of the folder, 0 for anything else; the caller holds
// meter.
func (s *sessionFS) fileSize(name string) int64 {
	fi, err := s.Filesystem.Lstat(name)
	if err != nil || !fi.Mode().IsRegular() {
		return 0
	}
	return fi.Size()
}

func (s *sessionFS) release(n int64) {
	if n > 0 && s.budget != nil {
		s.budget.used.Add(-n)
	}
}

// resize takes what growing a file from size to end needs from the budget, or gives back what
// shrinking it frees; the caller holds meter.
func (s *sessionFS) resize(size, end int64) error {
	if end > size {
		return s.budget.reserve(end - size)
	}
	s.release(size - end)
	return nil
}

// meteredFile is an open file of the folder other than a flat disk. Its writes are synced before
// they are answered, as the NFS server answers every write as stable.
type meteredFile struct {
	billy.File
	fs   *sessionFS
	name string
}

func (f *meteredFile) Write(p []byte) (int, error) {
	f.fs.meter.Lock()
	defer f.fs.meter.Unlock()
	pos, err := f.File.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	size := f.fs.fileSize(f.name)
	end := max(size, pos+int64(len(p)))
	if err := f.fs.resize(size, end); err != nil {
		return 0, err
	}
	n, werr := f.File.Write(p)
	// What a failed write did not add goes back.
	f.fs.release(end - max(size, f.fs.fileSize(f.name)))
	if werr != nil {
		return n, werr
	}
	if sf, ok := f.File.(interface{ Sync() error }); ok {
		if err := sf.Sync(); err != nil {
			return n, err
		}
	}
	return n, nil
}

func (f *meteredFile) Truncate(size int64) error {
	f.fs.meter.Lock()
	defer f.fs.meter.Unlock()
	cur := f.fs.fileSize(f.name)
	if err := f.fs.resize(cur, size); err != nil {
		return err
	}
	if err := f.File.Truncate(size); err != nil {
		// Count the size the file has after all, without the limit: it holds those bytes.
		f.fs.budget.used.Add(f.fs.fileSize(f.name) - size)
		return err
	}
	return nil
}

// Symlink is refused: ESXi needs no links in a VM's folder, and a link the client made could
// point outside it between the export's check of a path and its open (swapped in by a rename).
func (s *sessionFS) Symlink(target, link string) error {
	return &os.LinkError{Op: "symlink", Old: target, New: link, Err: syscall.EPERM}
}

func (s *sessionFS) Chmod(name string, mode os.FileMode) error {
	if d, _ := s.disk(name); d != nil {
		return nil // a flat file's mode is fixed; ESXi sets it and needs no error
	}
	return s.change().Chmod(name, mode)
}

func (s *sessionFS) Lchown(name string, uid, gid int) error {
	if d, _ := s.disk(name); d != nil {
		return nil
	}
	return s.change().Lchown(name, uid, gid)
}

func (s *sessionFS) Chown(name string, uid, gid int) error {
	if d, _ := s.disk(name); d != nil {
		return nil
	}
	return s.change().Chown(name, uid, gid)
}

func (s *sessionFS) Chtimes(name string, atime, mtime time.Time) error {
	if d, _ := s.disk(name); d != nil {
		s.mu.Lock()
		s.mtime = mtime
		s.mu.Unlock()
		return nil
	}
	return s.change().Chtimes(name, atime, mtime)
}

func (s *sessionFS) change() billy.Change {
	if c, ok := s.Filesystem.(billy.Change); ok {
		return c
	}
	return noChange{}
}

// noChange refuses attribute changes on a filesystem that cannot make them.
type noChange struct{}

func (noChange) Chmod(string, os.FileMode) error            { return syscall.EPERM }
func (noChange) Lchown(string, int, int) error              { return syscall.EPERM }
func (noChange) Chown(string, int, int) error               { return syscall.EPERM }
func (noChange) Chtimes(string, time.Time, time.Time) error { return syscall.EPERM }

func (s *sessionFS) diskInfo(name string, d *cowDisk) os.FileInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return diskInfo{name: path.Base(name), size: d.size, mtime: s.mtime}
}

func (s *sessionFS) touch() {
	s.mu.Lock()
	s.mtime = time.Now()
	s.mu.Unlock()
}

// diskInfo describes a virtual flat file.
type diskInfo struct {
	name  string
	size  int64
	mtime time.Time
}

func (i diskInfo) Name() string       { return i.name }
func (i diskInfo) Size() int64        { return i.size }
func (i diskInfo) Mode() fs.FileMode  { return 0o644 }
func (i diskInfo) ModTime() time.Time { return i.mtime }
func (i diskInfo) IsDir() bool        { return false }
func (i diskInfo) Sys() any           { return nil }

// diskFile is an open flat file; the NFS server opens one per request.
type diskFile struct {
	d     *cowDisk
	name  string
	fs    *sessionFS
	write bool
	pos   int64
}

var _ billy.File = (*diskFile)(nil)

func (f *diskFile) Name() string { return f.name }

func (f *diskFile) Read(p []byte) (int, error) {
	n, err := f.d.ReadAt(p, f.pos)
	f.pos += int64(n)
	return n, err
}

func (f *diskFile) ReadAt(p []byte, off int64) (int, error) { return f.d.ReadAt(p, off) }

func (f *diskFile) Write(p []byte) (int, error) {
	if !f.write {
		return 0, &os.PathError{Op: "write", Path: f.name, Err: syscall.EBADF}
	}
	n, err := f.d.WriteAt(p, f.pos)
	f.pos += int64(n)
	if n > 0 {
		f.fs.touch()
	}
	return n, err
}

func (f *diskFile) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.pos
	case io.SeekEnd:
		offset += f.d.size
	default:
		return 0, fmt.Errorf("seek %s: whence %d: %w", f.name, whence, syscall.EINVAL)
	}
	if offset < 0 {
		return 0, fmt.Errorf("seek %s to %d: %w", f.name, offset, syscall.EINVAL)
	}
	f.pos = offset
	return offset, nil
}

// Truncate accepts only the disk's own size: a virtual disk does not change size under a
// running VM.
func (f *diskFile) Truncate(size int64) error {
	if size == f.d.size {
		return nil
	}
	return &os.PathError{Op: "truncate", Path: f.name, Err: syscall.EPERM}
}

func (f *diskFile) Close() error  { return nil }
func (f *diskFile) Lock() error   { return nil }
func (f *diskFile) Unlock() error { return nil }
