package files

import (
	"errors"
	"fmt"
)

// dirTree is what path walks and listings need of a filesystem reader: N is its node (an
// inode, an MFT record), D an entry of a directory.
type dirTree[N, D any] interface {
	rootNode() (N, error)
	// readDir calls fn with each entry of the directory dir in order until fn returns true;
	// a node that is not a directory → ErrNotDir.
	readDir(dir N, fn func(D) (stop bool)) error
	direntName(d D) string
	// childNode reads the node an entry names.
	childNode(d D) (N, error)
	// entry describes node n as an Entry named name.
	entry(name string, n N) (Entry, error)
}

// walkTree resolves names from the root of t without following symlinks.
func walkTree[N, D any](t dirTree[N, D], names []string) (N, error) {
	var zero N
	n, err := t.rootNode()
	if err != nil {
		return zero, err
	}
	for i, name := range names {
		var found D
		var ok bool
		if err := t.readDir(n, func(d D) bool {
			if t.direntName(d) == name {
				found, ok = d, true
				return true
			}
			return false
		}); err != nil {
			if errors.Is(err, ErrNotDir) {
				return zero, fmt.Errorf("%s: %w", joinPath(names[:i]), ErrNotDir)
			}
			return zero, err
		}
		if !ok {
			return zero, fmt.Errorf("%s: %w", joinPath(names[:i+1]), ErrNotFound)
		}
		if n, err = t.childNode(found); err != nil {
			return zero, fmt.Errorf("%s: %w", joinPath(names[:i+1]), err)
		}
	}
	return n, nil
}

// statTree describes the file at names.
func statTree[N, D any](t dirTree[N, D], names []string) (Entry, error) {
	n, err := walkTree(t, names)
	if err != nil {
		return Entry{}, err
	}
	name := "/"
	if len(names) > 0 {
		name = names[len(names)-1]
	}
	return t.entry(name, n)
}

// readDirTree lists the directory at names; an entry that cannot be read fails the listing,
// naming it.
func readDirTree[N, D any](t dirTree[N, D], names []string) ([]Entry, error) {
	n, err := walkTree(t, names)
	if err != nil {
		return nil, err
	}
	var ds []D
	if err := t.readDir(n, func(d D) bool { ds = append(ds, d); return false }); err != nil {
		if errors.Is(err, ErrNotDir) {
			return nil, fmt.Errorf("%s: %w", joinPath(names), ErrNotDir)
		}
		return nil, err
	}
	out := make([]Entry, 0, len(ds))
	for _, d := range ds {
		name := t.direntName(d)
		p := joinPath(append(names[:len(names):len(names)], name))
		child, err := t.childNode(d)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		e, err := t.entry(name, child)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, e)
	}
	return out, nil
}
