package files

import (
	"errors"
	"fmt"
	"slices"
	"strings"
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
	out, _, err := listTree(t, n, names)
	return out, err
}

// listTree lists the directory node dir, at names, by name: its entries and the node of each. Of
// entries sharing a name only the first counts, as a lookup finds only it. The names and
// symlink targets of one listing take at most maxListBytes. An entry that cannot be read fails
// the listing, naming it.
func listTree[N, D any](t dirTree[N, D], dir N, names []string) ([]Entry, []N, error) {
	var ds []D
	if err := t.readDir(dir, func(d D) bool { ds = append(ds, d); return false }); err != nil {
		if errors.Is(err, ErrNotDir) {
			return nil, nil, fmt.Errorf("%s: %w", joinPath(names), ErrNotDir)
		}
		return nil, nil, err
	}
	out := make([]Entry, 0, len(ds))
	nodes := make([]N, 0, len(ds))
	seen := make(map[string]struct{}, len(ds))
	size := 0
	for _, d := range ds {
		name := t.direntName(d)
		if _, dup := seen[name]; dup {
			continue
		}
		seen[name] = struct{}{}
		p := joinPath(append(names[:len(names):len(names)], name))
		child, err := t.childNode(d)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p, err)
		}
		e, err := t.entry(name, child)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p, err)
		}
		if size += len(e.Name) + len(e.Target); size > maxListBytes {
			return nil, nil, fmt.Errorf("%s: names and link targets of over %d bytes: %w", joinPath(names), maxListBytes, ErrTooLarge)
		}
		out = append(out, e)
		nodes = append(nodes, child)
	}
	idx := make([]int, len(out))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return strings.Compare(out[a].Name, out[b].Name) })
	sorted, sortedNodes := make([]Entry, len(out)), make([]N, len(out))
	for i, j := range idx {
		sorted[i], sortedNodes[i] = out[j], nodes[j]
	}
	return sorted, sortedNodes, nil
}

// listNodes is listTree with the nodes as a filesystem's opaque nodes (filesystem.list).
func listNodes[N, D any](t dirTree[N, D], dir any, names []string) ([]Entry, []any, error) {
	n, ok := dir.(N)
	if !ok {
		return nil, nil, fmt.Errorf("%s: not a node of this filesystem", joinPath(names))
	}
	out, nodes, err := listTree(t, n, names)
	if err != nil {
		return nil, nil, err
	}
	anys := make([]any, len(nodes))
	for i, n := range nodes {
		anys[i] = n
	}
	return out, anys, nil
}
