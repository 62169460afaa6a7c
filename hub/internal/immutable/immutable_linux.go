package immutable

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// fsImmutableFL is FS_IMMUTABLE_FL of linux/fs.h, the inode flag chattr's "i" sets.
const fsImmutableFL = 0x00000010

// Is reports whether the file at path is immutable. A symlink is not followed, and anything but
// a regular file or a directory is refused.
func Is(path string) (bool, error) {
	fd, err := unix.Open(path, openFlags, 0)
	if err != nil {
		return false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	flags, err := flagsOf(fd, path)
	if err != nil {
		return false, err
	}
	return flags&fsImmutableFL != 0, nil
}

// Set makes the file at path immutable (on) or lifts that (off). Setting what is set is a
// no-op that needs no privilege. path must lie under root and is resolved beneath it without
// following any symlink (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS): whoever can write
// below root must not make a root process change the attribute of a file elsewhere.
func Set(root, path string, on bool) error {
	rel, err := filepath.Rel(root, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return fmt.Errorf("%s: not under %s", path, root)
	}
	dir, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(dir)
	fd, err := unix.Openat2(dir, rel, &unix.OpenHow{Flags: openFlags,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV})
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	flags, err := flagsOf(fd, path)
	if err != nil {
		return err
	}
	want := flags &^ fsImmutableFL
	if on {
		want = flags | fsImmutableFL
	}
	if want == flags {
		return nil
	}
	if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, want); err != nil {
		return mapErr(path, err)
	}
	return nil
}

// openFlags open a file to read or change its attributes: never its last symlink, never blocking
// (a FIFO), never as a controlling terminal.
const openFlags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC

// flagsOf reads the inode flags of fd, a regular file or a directory.
func flagsOf(fd int, path string) (int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if m := st.Mode & unix.S_IFMT; m != unix.S_IFREG && m != unix.S_IFDIR {
		return 0, fmt.Errorf("%s: not a regular file or a directory", path)
	}
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return 0, mapErr(path, err)
	}
	return flags, nil
}

func mapErr(path string, err error) error {
	switch {
	case errors.Is(err, unix.ENOTTY), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("%s: %w (%w)", path, ErrUnsupported, err)
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("%s: %w (%w)", path, ErrNotPermitted, err)
	}
	return fmt.Errorf("%s: immutable attribute: %w", path, err)
}
