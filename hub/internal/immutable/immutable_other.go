//go:build !linux

package immutable

// Is reports whether the file at path is immutable: never on this platform.
func Is(path string) (bool, error) { return false, ErrUnsupported }

// Set is not supported on this platform.
func Set(root, path string, on bool) error { return ErrUnsupported }
