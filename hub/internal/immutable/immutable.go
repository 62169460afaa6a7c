// Package immutable reads and sets the immutable attribute of files (chattr +i): an immutable
// file cannot be written, renamed, linked to, removed, or have its times or permissions
// changed, by any user — root included — until a process with CAP_LINUX_IMMUTABLE clears the
// attribute. It is the local repositories' hardened mode (see package harden).
package immutable

import "errors"

// ErrUnsupported: the file system holding the file has no immutable attribute (tmpfs, NFS,
// most FUSE file systems), or the platform has none.
var ErrUnsupported = errors.New("the file system does not support the immutable attribute")

// ErrNotPermitted: setting or clearing the attribute needs CAP_LINUX_IMMUTABLE (root).
var ErrNotPermitted = errors.New("changing the immutable attribute needs CAP_LINUX_IMMUTABLE (run as root)")
