package immutable

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// fsImmutableFL is FS_IMMUTABLE_FL of linux/fs.h, the inode flag chattr's "i" sets.
const fsImmutableFL = 0x00000010

// Is reports whether the file at path is immutable.
func Is(path string) (bool, error) {
	flags, err := getFlags(path)
	if err != nil {
		return false, err
	}
	return flags&fsImmutableFL != 0, nil
}

// Set makes the file at path immutable (on) or lifts that (off). Setting what is set is a
// no-op that needs no privilege.
func Set(path string, on bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return mapErr(path, err)
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

func getFlags(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	flags, err := unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
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
