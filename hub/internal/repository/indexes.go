package repository

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/shared/atomicfile"
)

// Errors of the index store. Callers branch on them with errors.Is; every returned error names
// the index concerned.
var (
	// ErrIndexNotFound: no index is stored under that reference.
	ErrIndexNotFound = errors.New("index not found")
	// ErrIndexExists: a different index is stored under that reference already. Indexes are
	// immutable; writing identical content again is not an error.
	ErrIndexExists = errors.New("a different index exists under this reference")
	// ErrIndexDamaged: the stored index file fails its checks (wrapping the fidx.Err* cause).
	ErrIndexDamaged = errors.New("index damaged")
	// ErrMissingChunk: WriteIndex was given an index naming a chunk the repository lacks.
	ErrMissingChunk = errors.New("index names a missing chunk")
	// ErrInvalidIndex: an index that does not fit this repository (another chunk size, or sizes
	// fidx refuses).
	ErrInvalidIndex = errors.New("invalid index")
	// ErrInvalidRef: an IndexRef component that is not a safe file name.
	ErrInvalidRef = errors.New("invalid index reference")
)

// MaxRefComponentLen bounds each IndexRef component, in bytes (file systems allow 255).
const MaxRefComponentLen = 200

const indexExt = ".fidx"

// IndexRef names one index: one disk of one VM at one backup. Each component becomes a path
// component of indexes/<VMUUID>/<DiskID>/<BackupID>.fidx.
type IndexRef struct {
	VMUUID   string
	DiskID   string
	BackupID string
}

// String returns the reference as "vm/disk/backup".
func (r IndexRef) String() string {
	return r.VMUUID + "/" + r.DiskID + "/" + r.BackupID
}

// Validate checks that every component is a safe file name: 1 to MaxRefComponentLen bytes of
// valid UTF-8, not starting with "." (which also excludes "." and ".."), and without "/", "\",
// NUL or other control characters.
func (r IndexRef) Validate() error {
	for _, c := range []struct{ name, v string }{{"vm uuid", r.VMUUID}, {"disk id", r.DiskID}, {"backup id", r.BackupID}} {
		if err := checkComponent(c.v); err != nil {
			return fmt.Errorf("%w: %s %q: %s", ErrInvalidRef, c.name, c.v, err)
		}
	}
	return nil
}

func checkComponent(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > MaxRefComponentLen:
		return fmt.Errorf("%d bytes, more than %d", len(s), MaxRefComponentLen)
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	case strings.HasPrefix(s, "."):
		return errors.New(`starts with "."`)
	}
	for _, c := range s {
		if c == '/' || c == '\\' || c < 0x20 || c == 0x7f {
			return fmt.Errorf("contains %q", c)
		}
	}
	return nil
}

func (l *Local) indexDir(r IndexRef) string {
	return filepath.Join(l.root, "indexes", r.VMUUID, r.DiskID)
}

func (l *Local) indexPath(r IndexRef) string {
	return filepath.Join(l.indexDir(r), r.BackupID+indexExt)
}

// WriteIndex stores idx under ref and returns the SHA-256 (lowercase hex) of the index file,
// which the catalog can record to check the file later.
//
// It first checks that every chunk idx names (fidx.Index.Referenced: all but zero slots) is in
// the repository, and refuses with ErrMissingChunk naming one that is not, writing nothing.
// It then writes durably (temp file → fsync → rename → fsync directory): when it returns nil the
// index survives a crash. Indexes are immutable: writing the same content again returns nil,
// different content ErrIndexExists. An index of another chunk size returns ErrInvalidIndex. Safe
// for concurrent use.
func (l *Local) WriteIndex(ctx context.Context, ref IndexRef, idx *fidx.Index) (digest string, err error) {
	if err := ref.Validate(); err != nil {
		return "", fmt.Errorf("write index: %w", err)
	}
	if idx.ChunkSize != l.desc.ChunkSize {
		return "", fmt.Errorf("write index %s: %w: chunk size %d, repository uses %d", ref, ErrInvalidIndex, idx.ChunkSize, l.desc.ChunkSize)
	}
	b, err := idx.MarshalBinary()
	if err != nil {
		return "", fmt.Errorf("write index %s: %w: %w", ref, ErrInvalidIndex, err)
	}
	for i, d := range idx.Referenced() {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return "", fmt.Errorf("write index %s: %w", ref, err)
			}
		}
		ok, err := l.HasChunk(d)
		if err != nil {
			return "", fmt.Errorf("write index %s: %w", ref, err)
		}
		if !ok {
			return "", fmt.Errorf("write index %s: %w: %s", ref, ErrMissingChunk, d)
		}
	}
	sum := sha256.Sum256(b)
	digest = hex.EncodeToString(sum[:])

	l.indexMu.Lock()
	defer l.indexMu.Unlock()
	path := l.indexPath(ref)
	old, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(old, b):
		return digest, nil
	case err == nil:
		return "", fmt.Errorf("write index %s: %w", ref, ErrIndexExists)
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("write index %s: %w", ref, err)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("write index %s: %w", ref, err)
	}
	if err := l.writeIndexFile(ref, b); err != nil {
		return "", fmt.Errorf("write index %s: %w", ref, err)
	}
	return digest, nil
}

// writeIndexFile writes b to ref's path durably, creating and fsyncing the directories on the
// way. The caller holds indexMu.
func (l *Local) writeIndexFile(ref IndexRef, b []byte) (err error) {
	tmp, err := l.writeTemp("index-", b)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	indexes := filepath.Join(l.root, "indexes")
	vmDir := filepath.Join(indexes, ref.VMUUID)
	for _, dir := range []string{indexes, vmDir, l.indexDir(ref)} {
		if err := os.Mkdir(dir, dirPerm); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create index directory: %w", err)
		}
		if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, l.indexPath(ref)); err != nil {
		return fmt.Errorf("rename into place: %w", err)
	}
	return atomicfile.SyncDir(l.indexDir(ref))
}

// ReadIndex reads and checks the index stored under ref: ErrIndexNotFound when there is none,
// ErrIndexDamaged when the file fails fidx's checks (magic, sizes, trailer) or does not match
// the repository's chunk size.
func (l *Local) ReadIndex(ctx context.Context, ref IndexRef) (*fidx.Index, error) {
	if err := ref.Validate(); err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read index %s: %w", ref, err)
	}
	b, err := os.ReadFile(l.indexPath(ref))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read index %s: %w", ref, ErrIndexNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", ref, err)
	}
	var x fidx.Index
	if err := x.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("read index %s: %w: %w", ref, ErrIndexDamaged, err)
	}
	if x.ChunkSize != l.desc.ChunkSize {
		return nil, fmt.Errorf("read index %s: %w: chunk size %d, repository uses %d", ref, ErrIndexDamaged, x.ChunkSize, l.desc.ChunkSize)
	}
	return &x, nil
}

// RemoveIndex deletes the index stored under ref durably (ErrIndexNotFound when there is none)
// and then the VM and disk directories if they became empty. The chunks it named stay until
// garbage collection.
func (l *Local) RemoveIndex(ctx context.Context, ref IndexRef) error {
	if err := ref.Validate(); err != nil {
		return fmt.Errorf("remove index: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove index %s: %w", ref, err)
	}
	l.indexMu.Lock()
	defer l.indexMu.Unlock()
	if err := os.Remove(l.indexPath(ref)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove index %s: %w", ref, ErrIndexNotFound)
	} else if err != nil {
		return fmt.Errorf("remove index %s: %w", ref, err)
	}
	if err := atomicfile.SyncDir(l.indexDir(ref)); err != nil {
		return fmt.Errorf("remove index %s: %w", ref, err)
	}
	// Empty directories are harmless; removing them keeps WalkIndexes fast. A directory that is
	// not empty stays, which os.Remove reports as an error we do not need.
	if os.Remove(l.indexDir(ref)) == nil {
		_ = os.Remove(filepath.Dir(l.indexDir(ref)))
	}
	return nil
}

// WalkIndexes calls fn for every index of the repository, sorted by VM, disk and file name.
// Entries that are not index files with valid reference components are skipped. Indexes written
// or removed during the walk may or may not be visited. An error from fn stops the walk and is
// returned as is.
func (l *Local) WalkIndexes(ctx context.Context, fn func(ref IndexRef) error) error {
	root := filepath.Join(l.root, "indexes")
	vms, err := readDir(root)
	if err != nil {
		return fmt.Errorf("walk indexes: %w", err)
	}
	for _, vm := range vms {
		if !vm.IsDir() || checkComponent(vm.Name()) != nil {
			continue
		}
		disks, err := readDir(filepath.Join(root, vm.Name()))
		if err != nil {
			return fmt.Errorf("walk indexes: %w", err)
		}
		for _, disk := range disks {
			if !disk.IsDir() || checkComponent(disk.Name()) != nil {
				continue
			}
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("walk indexes: %w", err)
			}
			files, err := readDir(filepath.Join(root, vm.Name(), disk.Name()))
			if err != nil {
				return fmt.Errorf("walk indexes: %w", err)
			}
			for _, f := range files {
				backup, ok := strings.CutSuffix(f.Name(), indexExt)
				if !ok || !f.Type().IsRegular() || checkComponent(backup) != nil {
					continue
				}
				if err := fn(IndexRef{VMUUID: vm.Name(), DiskID: disk.Name(), BackupID: backup}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
