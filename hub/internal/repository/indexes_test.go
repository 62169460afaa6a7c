package repository

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/shared/chunk"
)

// diskIndex builds the index of a disk of size bytes whose non-zero slots hold data, stores
// nothing, and returns the index with the blobs its chunks need.
func diskIndex(t testing.TB, chunkSize, size int64, data map[int][]byte) (*fidx.Index, map[chunk.Digest][]byte) {
	t.Helper()
	x, err := fidx.New(size, chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	x.Created = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	blobs := map[chunk.Digest][]byte{}
	for i, plain := range data {
		if len(plain) != x.SlotLen(i) {
			t.Fatalf("slot %d: %d bytes of data for a %d-byte slot", i, len(plain), x.SlotLen(i))
		}
		d := chunk.Sum(plain)
		x.Digests[i] = d
		blobs[d] = agentFrame(t, plain)
	}
	return x, blobs
}

func putAll(t testing.TB, l *Repository, blobs map[chunk.Digest][]byte) {
	t.Helper()
	for d, b := range blobs {
		if _, err := l.PutChunk(t.Context(), d, b); err != nil {
			t.Fatal(err)
		}
	}
}

func TestIndexRoundTrip(t *testing.T) {
	const cs = 64 * kib
	l := newRepo(t, cs)
	ctx := t.Context()
	size := int64(10*cs + 1000) // 11 slots, the last one 1000 bytes
	shared := textData(1, cs)
	x, blobs := diskIndex(t, cs, size, map[int][]byte{
		0:  textData(2, cs),
		3:  shared,
		4:  shared, // dedup inside one disk
		7:  randomData(3, cs),
		10: randomData(4, 1000),
	})
	ref := IndexRef{VMUUID: "4213a3b5-aa1c-cbb2-5e43-1e9e9c1e1e9e", DiskID: "disk-2000", BackupID: "backup-20261126-120000"}

	// Every chunk but one stored: WriteIndex refuses and writes nothing.
	var missing chunk.Digest
	for d, b := range blobs {
		if missing == (chunk.Digest{}) {
			missing = d
			continue
		}
		if _, err := l.PutChunk(ctx, d, b); err != nil {
			t.Fatal(err)
		}
	}
	before := listing(t, root(l))
	_, err := l.WriteIndex(ctx, ref, x)
	if !errors.Is(err, ErrMissingChunk) || !strings.Contains(err.Error(), missing.String()) {
		t.Fatalf("WriteIndex with chunk %s missing: %v, want ErrMissingChunk naming it", missing, err)
	}
	assertUnchanged(t, before, root(l))
	if _, err := l.ReadIndex(ctx, ref); !errors.Is(err, ErrIndexNotFound) {
		t.Fatalf("ReadIndex after a refused write: %v, want ErrIndexNotFound", err)
	}

	if _, err := l.PutChunk(ctx, missing, blobs[missing]); err != nil {
		t.Fatal(err)
	}
	digest, err := l.WriteIndex(ctx, ref, x)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root(l), "indexes", ref.VMUUID, ref.DiskID, ref.BackupID+".fidx")
	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(onDisk); hex.EncodeToString(sum[:]) != digest {
		t.Fatalf("WriteIndex digest %s is not the SHA-256 of the file", digest)
	}

	got, err := l.ReadIndex(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if got.ChunkSize != x.ChunkSize || got.DiskSize != x.DiskSize || !got.Created.Equal(x.Created) || !slices.Equal(got.Digests, x.Digests) {
		t.Fatalf("ReadIndex = %+v, want %+v", got, x)
	}
	// Restore as a user would: every slot from its chunk or as zeros, compared with the data.
	for i := range got.SlotCount() {
		var slot []byte
		if got.IsZeroSlot(i) {
			slot = make([]byte, got.SlotLen(i))
		} else if slot, err = l.ReadChunk(ctx, got.Digests[i], nil); err != nil {
			t.Fatalf("slot %d: %v", i, err)
		}
		if chunk.Sum(slot) != x.Digests[i] || len(slot) != x.SlotLen(i) {
			t.Fatalf("slot %d restores to other bytes", i)
		}
	}

	// Idempotent for identical content, refused for different content.
	if again, err := l.WriteIndex(ctx, ref, x.Clone()); err != nil || again != digest {
		t.Fatalf("rewriting the same index = %s, %v; want %s, nil", again, err, digest)
	}
	changed := x.Clone()
	changed.Digests[3] = changed.Digests[0]
	before = listing(t, root(l))
	if _, err := l.WriteIndex(ctx, ref, changed); !errors.Is(err, ErrIndexExists) {
		t.Fatalf("overwriting an index with other content: %v, want ErrIndexExists", err)
	}
	assertUnchanged(t, before, root(l))

	// An incremental: derived from the parent, one slot changed, stored under a new backup id.
	child, err := fidx.Derive(got, size)
	if err != nil {
		t.Fatal(err)
	}
	newData := textData(9, cs)
	child.Digests[5] = chunk.Sum(newData)
	childRef := ref
	childRef.BackupID = "backup-20261127-120000"
	if _, err := l.WriteIndex(ctx, childRef, child); !errors.Is(err, ErrMissingChunk) {
		t.Fatalf("incremental before its chunk: %v, want ErrMissingChunk", err)
	}
	if _, err := l.PutChunk(ctx, child.Digests[5], agentFrame(t, newData)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WriteIndex(ctx, childRef, child); err != nil {
		t.Fatal(err)
	}

	// An index of another chunk size does not belong in this repository.
	other, _ := diskIndex(t, 2*cs, size, nil)
	if _, err := l.WriteIndex(ctx, IndexRef{VMUUID: "vm", DiskID: "d", BackupID: "b"}, other); !errors.Is(err, ErrInvalidIndex) {
		t.Fatalf("WriteIndex of another chunk size: %v, want ErrInvalidIndex", err)
	}
	broken := x.Clone()
	broken.Digests = broken.Digests[:3]
	if _, err := l.WriteIndex(ctx, IndexRef{VMUUID: "vm", DiskID: "d", BackupID: "b"}, broken); !errors.Is(err, ErrInvalidIndex) {
		t.Fatalf("WriteIndex of an inconsistent index: %v, want ErrInvalidIndex", err)
	}
}

func TestTamperedIndex(t *testing.T) {
	const cs = 64 * kib
	l := newRepo(t, cs)
	x, blobs := diskIndex(t, cs, 4*cs, map[int][]byte{1: textData(1, cs)})
	putAll(t, l, blobs)
	ref := IndexRef{VMUUID: "vm-1", DiskID: "disk-2000", BackupID: "b1"}
	if _, err := l.WriteIndex(t.Context(), ref, x); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root(l), filepath.FromSlash(indexKey(ref)))
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	resealed := func(b []byte) []byte {
		sum := sha256.Sum256(b[:len(b)-fidx.TrailerSize])
		copy(b[len(b)-fidx.TrailerSize:], sum[:])
		return b
	}
	for _, tc := range []struct {
		name   string
		damage func() []byte
		want   error
	}{
		{"digest byte", func() []byte { b := slices.Clone(good); b[fidx.HeaderSize+40] ^= 1; return b }, fidx.ErrCorrupt},
		{"trailer byte", func() []byte { b := slices.Clone(good); b[len(b)-1] ^= 1; return b }, fidx.ErrCorrupt},
		{"truncated", func() []byte { return good[:len(good)-10] }, fidx.ErrCorrupt},
		{"empty", func() []byte { return nil }, fidx.ErrCorrupt},
		{"magic", func() []byte { b := slices.Clone(good); b[0] = 'X'; return b }, fidx.ErrBadMagic},
		// A consistent index file of another chunk size, trailer and all.
		{"other chunk size, resealed", func() []byte {
			y, _ := fidx.New(4*cs, 2*cs)
			b, _ := y.MarshalBinary()
			return resealed(b)
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			overwrite(t, path, tc.damage())
			_, err := l.ReadIndex(t.Context(), ref)
			if !errors.Is(err, ErrIndexDamaged) || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("ReadIndex of a tampered file: %v, want ErrIndexDamaged and %v", err, tc.want)
			}
			// And a writer of the true index is told, not silently "succeeding".
			if _, err := l.WriteIndex(t.Context(), ref, x); !errors.Is(err, ErrIndexExists) {
				t.Fatalf("WriteIndex over a tampered file: %v, want ErrIndexExists", err)
			}
		})
	}
}

func TestIndexRefValidation(t *testing.T) {
	l := newRepo(t, 64*kib)
	ctx := t.Context()
	x, _ := diskIndex(t, 64*kib, 64*kib, nil)
	parent := filepath.Dir(root(l))
	before := listing(t, parent)
	good := IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: "b1"}
	for _, tc := range []struct {
		name string
		edit func(r *IndexRef)
	}{
		{"empty vm", func(r *IndexRef) { r.VMUUID = "" }},
		{"empty disk", func(r *IndexRef) { r.DiskID = "" }},
		{"empty backup", func(r *IndexRef) { r.BackupID = "" }},
		{"dot", func(r *IndexRef) { r.DiskID = "." }},
		{"dot dot", func(r *IndexRef) { r.VMUUID = ".." }},
		{"dot dot backup", func(r *IndexRef) { r.BackupID = ".." }},
		{"traversal", func(r *IndexRef) { r.VMUUID = "../../etc" }},
		{"slash", func(r *IndexRef) { r.BackupID = "a/b" }},
		{"absolute", func(r *IndexRef) { r.DiskID = "/tmp" }},
		{"backslash", func(r *IndexRef) { r.BackupID = `..\..\x` }},
		{"nul", func(r *IndexRef) { r.BackupID = "b\x00c" }},
		{"newline", func(r *IndexRef) { r.DiskID = "d\nx" }},
		{"hidden", func(r *IndexRef) { r.BackupID = ".b1" }},
		{"invalid utf-8", func(r *IndexRef) { r.VMUUID = "vm\xff" }},
		{"201 bytes", func(r *IndexRef) { r.BackupID = strings.Repeat("b", 201) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := good
			tc.edit(&ref)
			if _, err := l.WriteIndex(ctx, ref, x); !errors.Is(err, ErrInvalidRef) {
				t.Errorf("WriteIndex(%q): %v, want ErrInvalidRef", ref, err)
			}
			if _, err := l.ReadIndex(ctx, ref); !errors.Is(err, ErrInvalidRef) {
				t.Errorf("ReadIndex(%q): %v, want ErrInvalidRef", ref, err)
			}
			if err := l.RemoveIndex(ctx, ref); !errors.Is(err, ErrInvalidRef) {
				t.Errorf("RemoveIndex(%q): %v, want ErrInvalidRef", ref, err)
			}
		})
	}
	assertUnchanged(t, before, parent)

	for _, ref := range []IndexRef{
		good,
		{VMUUID: strings.Repeat("v", 200), DiskID: strings.Repeat("d", 200), BackupID: strings.Repeat("b", 200)},
		{VMUUID: "Prod DB (ü)", DiskID: "Hard disk 1", BackupID: "b..1"},
	} {
		if _, err := l.WriteIndex(ctx, ref, x); err != nil {
			t.Errorf("WriteIndex(%q): %v", ref, err)
		}
		if _, err := l.ReadIndex(ctx, ref); err != nil {
			t.Errorf("ReadIndex(%q): %v", ref, err)
		}
	}
}

func TestWalkAndRemoveIndexes(t *testing.T) {
	const cs = 64 * kib
	l := newRepo(t, cs)
	ctx := t.Context()
	x, _ := diskIndex(t, cs, 3*cs, nil)
	var want []IndexRef
	for _, vm := range []string{"vm-a", "vm-b"} {
		for _, disk := range []string{"disk-2000", "disk-2001"} {
			for _, b := range []string{"b1", "b2", "b3"} {
				ref := IndexRef{VMUUID: vm, DiskID: disk, BackupID: b}
				if _, err := l.WriteIndex(ctx, ref, x); err != nil {
					t.Fatal(err)
				}
				want = append(want, ref)
			}
		}
	}
	// Strays that are not indexes.
	for _, p := range []string{"indexes/README", "indexes/vm-a/notes.txt", "indexes/vm-a/disk-2000/b9.fidx.tmp", "indexes/vm-a/disk-2000/.b9.fidx"} {
		if err := os.WriteFile(filepath.Join(root(l), p), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	walk := func() []IndexRef {
		var got []IndexRef
		if err := l.WalkIndexes(ctx, func(r IndexRef) error { got = append(got, r); return nil }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := walk(); !slices.Equal(got, want) {
		t.Fatalf("WalkIndexes = %v\nwant %v", got, want)
	}
	stop := errors.New("stop")
	if err := l.WalkIndexes(ctx, func(IndexRef) error { return stop }); err != stop {
		t.Fatalf("WalkIndexes with a failing fn: %v", err)
	}

	for _, ref := range want[:3] {
		if err := l.RemoveIndex(ctx, ref); err != nil {
			t.Fatal(err)
		}
		if err := l.RemoveIndex(ctx, ref); !errors.Is(err, ErrIndexNotFound) {
			t.Fatalf("second RemoveIndex: %v, want ErrIndexNotFound", err)
		}
		if _, err := l.ReadIndex(ctx, ref); !errors.Is(err, ErrIndexNotFound) {
			t.Fatalf("ReadIndex after RemoveIndex: %v", err)
		}
	}
	if got := walk(); !slices.Equal(got, want[3:]) {
		t.Fatalf("WalkIndexes after removals = %v\nwant %v", got, want[3:])
	}
	// A directory still holding other files stays; one emptied by the removals goes, but not
	// its VM directory while that holds another disk.
	if _, err := os.Stat(filepath.Join(root(l), "indexes", "vm-a", "disk-2000", "b9.fidx.tmp")); err != nil {
		t.Fatalf("RemoveIndex removed a file it does not own: %v", err)
	}
	for _, ref := range want[6:9] {
		if err := l.RemoveIndex(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(root(l), "indexes", "vm-b", "disk-2000")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("emptied disk directory still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root(l), "indexes", "vm-b")); err != nil {
		t.Fatalf("VM directory with another disk removed: %v", err)
	}
}

func TestConcurrentWriteIndex(t *testing.T) {
	const cs = 64 * kib
	l := newRepo(t, cs)
	ctx := t.Context()
	x, blobs := diskIndex(t, cs, 8*cs, map[int][]byte{2: textData(1, cs), 6: randomData(2, cs)})
	putAll(t, l, blobs)
	y := x.Clone()
	y.Digests[2] = x.Digests[6]
	ref := IndexRef{VMUUID: "vm", DiskID: "disk", BackupID: "b"}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		results = map[string]int{}
	)
	for i := range 16 {
		wg.Go(func() {
			idx := x
			if i%2 == 1 {
				idx = y
			}
			_, err := l.WriteIndex(ctx, ref, idx)
			key := "ok"
			if errors.Is(err, ErrIndexExists) {
				key = "exists"
			} else if err != nil {
				key = err.Error()
			}
			mu.Lock()
			results[key]++
			mu.Unlock()
		})
	}
	wg.Wait()
	// Whichever content landed first wins; all 8 writers of it succeed, the 8 others are told.
	if results["ok"] != 8 || results["exists"] != 8 || len(results) != 2 {
		t.Fatalf("16 concurrent writers of two contents: %v; want 8 ok, 8 exists", results)
	}
	got, err := l.ReadIndex(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Digests, x.Digests) && !slices.Equal(got.Digests, y.Digests) {
		t.Fatal("stored index is neither of the written ones")
	}
	if n, err := l.CleanTemp(t.Context(), true); err != nil || n != 0 {
		t.Fatalf("temp files left behind: %d, %v", n, err)
	}
}

func ExampleIndexRef_String() {
	fmt.Println(IndexRef{VMUUID: "4213a3b5", DiskID: "disk-2000", BackupID: "b1"})
	// Output: 4213a3b5/disk-2000/b1
}
