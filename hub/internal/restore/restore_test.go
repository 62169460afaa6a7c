package restore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/chunk"
)

const slot = 64 << 10

// storeImage writes img into a new repository as one index and returns the image.
func storeImage(t *testing.T, img []byte) (*repository.Repository, repository.IndexRef) {
	t.Helper()
	return storeImageIn(t, filepath.Join(t.TempDir(), "repo"), img)
}

// storeImageIn is storeImage with the repository in dir.
func storeImageIn(t *testing.T, dir string, img []byte) (*repository.Repository, repository.IndexRef) {
	t.Helper()
	repo, err := repository.InitDir(t.Context(), dir, slot, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = repo.Close() })
	idx, err := fidx.New(int64(len(img)), slot)
	if err != nil {
		t.Fatal(err)
	}
	for i := range idx.SlotCount() {
		p := img[idx.SlotOffset(i) : idx.SlotOffset(i)+int64(idx.SlotLen(i))]
		d := chunk.Sum(p)
		idx.Digests[i] = d
		if d == chunk.ZeroDigest(len(p)) {
			continue
		}
		blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(p), p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := repo.PutChunk(t.Context(), d, blob); err != nil {
			t.Fatal(err)
		}
	}
	ref := repository.IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: "bk-1"}
	if _, err := repo.WriteIndex(t.Context(), ref, idx); err != nil {
		t.Fatal(err)
	}
	return repo, ref
}

func testImage(t *testing.T) []byte {
	img := make([]byte, 9*slot+1234) // a short last slot
	_, _ = rand.Read(img)
	clear(img[2*slot : 4*slot]) // zero slots become holes
	return img
}

func TestToFileAndStream(t *testing.T) {
	img := testImage(t)
	repo, ref := storeImage(t, img)
	var last int64
	im, finish := toFileAsync(t, repo, ref, 3, func(d int64) { last = d })
	finish(img)
	if last != int64(len(img)) {
		t.Fatalf("progress %d of %d", last, len(img))
	}

	for _, r := range [][2]int64{{0, int64(len(img))}, {5, 10}, {slot - 3, slot + 7}, {2 * slot, 2 * slot}, {int64(len(img)) - 100, 100}, {0, 0}} {
		var buf bytes.Buffer
		n, err := im.Stream(t.Context(), &buf, r[0], r[1], 2)
		if err != nil || n != r[1] || !bytes.Equal(buf.Bytes(), img[r[0]:r[0]+r[1]]) {
			t.Fatalf("stream %v: n=%d err=%v", r, n, err)
		}
		p := make([]byte, r[1])
		if m, err := im.ReadAt(t.Context(), p, r[0]); m != len(p) || (err != nil && m != len(p)) || !bytes.Equal(p, img[r[0]:r[0]+r[1]]) {
			t.Fatalf("ReadAt %v: n=%d err=%v", r, m, err)
		}
	}
	if _, err := im.Stream(t.Context(), &bytes.Buffer{}, int64(len(img))-1, 2, 1); err == nil {
		t.Fatal("a range past the end was streamed")
	}
}

func TestDamageFailsToFileAndStream(t *testing.T) {
	img := testImage(t)
	repo, ref := storeImage(t, img)
	im, err := OpenImage(t.Context(), repo, ref)
	if err != nil {
		t.Fatal(err)
	}
	d := chunk.Sum(img[6*slot : 7*slot])
	if err := repo.RemoveChunk(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Create(filepath.Join(t.TempDir(), "disk.raw"))
	defer f.Close()
	if err := im.ToFile(t.Context(), f, 2, nil); !errors.Is(err, repository.ErrChunkNotFound) {
		t.Fatalf("restore with a missing chunk: %v", err)
	}
	var buf bytes.Buffer
	n, err := im.Stream(t.Context(), &buf, 0, int64(len(img)), 2)
	if !errors.Is(err, repository.ErrChunkNotFound) || n > 6*slot || !bytes.Equal(buf.Bytes(), img[:n]) {
		t.Fatalf("stream with a missing chunk: n=%d err=%v", n, err)
	}
}

// stallingRepo serves the index of a real repository but holds every chunk read until the
// reader's context ends, as a slow or hung storage would.
type stallingRepo struct {
	*repository.Repository
	started chan struct{}
}

func (r stallingRepo) ReadChunk(ctx context.Context, _ chunk.Digest, _ []byte) ([]byte, error) {
	select {
	case r.started <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// A download whose client goes away stops its chunk reads: the reads run under the request's
// context, not the one the image was opened with.
func TestCancelledStreamStopsItsReads(t *testing.T) {
	repo, ref := storeImage(t, testImage(t))
	stall := stallingRepo{Repository: repo, started: make(chan struct{}, 1)}
	im, err := OpenImage(context.Background(), stall, ref)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := im.Stream(ctx, io.Discard, 0, im.Size(), 4)
		done <- err
	}()
	<-stall.started
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Stream after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled stream kept waiting for its chunk reads")
	}
	if _, err := im.Reader(ctx).ReadAt(make([]byte, 10), 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadAt under a cancelled context: %v", err)
	}
}

// A damaged chunk fails the restore loudly and is quarantined, so that it counts as missing and
// the next upload of its data stores it again; then the image restores whole.
func TestDamageQuarantinesTheChunk(t *testing.T) {
	img := testImage(t)
	dir := filepath.Join(t.TempDir(), "repo")
	repo, ref := storeImageIn(t, dir, img)
	im, err := OpenImage(t.Context(), repo, ref)
	if err != nil {
		t.Fatal(err)
	}
	plain := img[5*slot : 6*slot]
	d := chunk.Sum(plain)
	blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "chunks", d.String()[:2], d.String()[2:4], d.String())
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(blob)
	bad[100] ^= 0xff
	if err := os.WriteFile(path, bad, 0o640); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Create(filepath.Join(t.TempDir(), "disk.raw"))
	defer f.Close()
	err = im.ToFile(t.Context(), f, 2, nil)
	if !errors.Is(err, repository.ErrChunkDamaged) || !strings.Contains(err.Error(), "quarantined as quarantine/"+d.String()) {
		t.Fatalf("restore of a damaged chunk: %v", err)
	}
	if has, err := repo.HasChunk(t.Context(), d); has || err != nil {
		t.Fatalf("the damaged chunk still counts as present: %v %v", has, err)
	}
	if stored, err := repo.PutChunk(t.Context(), d, blob); !stored || err != nil {
		t.Fatalf("upload again: %v %v", stored, err)
	}
	var buf bytes.Buffer
	if _, err := im.Stream(t.Context(), &buf, 0, im.Size(), 3); err != nil || !bytes.Equal(buf.Bytes(), img) {
		t.Fatalf("stream after the chunk was uploaded again: %v", err)
	}
}

// damagedOnce reports the first read of one chunk damaged, as a read of a damaged copy that
// another process then quarantined and a backup replaced with a good one.
type damagedOnce struct {
	*repository.Repository
	d    chunk.Digest
	done atomic.Bool
}

func (r *damagedOnce) ReadChunk(ctx context.Context, d chunk.Digest, dst []byte) ([]byte, error) {
	if d == r.d && !r.done.Swap(true) {
		return nil, fmt.Errorf("read chunk %s: %w: crc mismatch", d, repository.ErrChunkDamaged)
	}
	return r.Repository.ReadChunk(ctx, d, dst)
}

// A chunk read damaged but sound when quarantined (a good copy uploaded meanwhile) is not
// quarantined; the read is retried and the restore succeeds.
func TestSoundChunkIsNotQuarantined(t *testing.T) {
	img := testImage(t)
	repo, ref := storeImage(t, img)
	d := chunk.Sum(img[7*slot : 8*slot])
	im, err := OpenImage(t.Context(), &damagedOnce{Repository: repo, d: d}, ref)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := im.Stream(t.Context(), &buf, 0, im.Size(), 1); err != nil || !bytes.Equal(buf.Bytes(), img) {
		t.Fatalf("stream: %v", err)
	}
	if has, err := repo.HasChunk(t.Context(), d); !has || err != nil {
		t.Fatalf("a sound chunk was quarantined: %v %v", has, err)
	}
	n := 0
	_ = repo.WalkQuarantine(t.Context(), func(repository.Quarantined) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d objects in quarantine, want none", n)
	}
}

// gatedRepo holds every chunk read until release is closed (or its context ends) and counts the
// reads under way.
type gatedRepo struct {
	*repository.Repository
	release      chan struct{}
	inside, peak atomic.Int32
}

func (r *gatedRepo) ReadChunk(ctx context.Context, d chunk.Digest, dst []byte) ([]byte, error) {
	n := r.inside.Add(1)
	defer r.inside.Add(-1)
	for {
		p := r.peak.Load()
		if n <= p || r.peak.CompareAndSwap(p, n) {
			break
		}
	}
	select {
	case <-r.release:
	case <-ctx.Done(): // the test ended without releasing
		return nil, ctx.Err()
	}
	return r.Repository.ReadChunk(ctx, d, dst)
}

// openForRestore opens the image ref of repo and creates the empty file to restore it to.
func openForRestore(t *testing.T, repo Repository, ref repository.IndexRef) (*Image, *os.File) {
	t.Helper()
	im, err := OpenImage(t.Context(), repo, ref)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.raw"))
	if err != nil {
		t.Fatal(err)
	}
	return im, f
}

// toFileAsync opens the image of ref in repo and starts ToFile into a new file. finish waits
// for ToFile and checks that the file holds want.
func toFileAsync(t *testing.T, repo Repository, ref repository.IndexRef, parallel int, progress Progress) (im *Image, finish func(want []byte)) {
	t.Helper()
	im, f := openForRestore(t, repo, ref)
	out := f.Name()
	done := make(chan error, 1)
	go func() { done <- im.ToFile(t.Context(), f, parallel, progress) }()
	return im, func(want []byte) {
		t.Helper()
		err := <-done
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
			t.Fatal("restored file differs")
		}
	}
}

// ToFile leaves one processor free for its writer: it reads with at most GOMAXPROCS-1 workers
// however many reads it is allowed, and the image is still restored whole.
func TestToFileLeavesTheWriterAProcessor(t *testing.T) {
	img := testImage(t) // 8 slots to read
	for _, tc := range []struct{ procs, parallel, want int }{{3, 8, 2}, {2, 8, 1}, {1, 8, 1}, {5, 3, 3}} {
		t.Run(fmt.Sprintf("GOMAXPROCS %d parallel %d", tc.procs, tc.parallel), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(tc.procs))
			repo, ref := storeImage(t, img)
			gated := &gatedRepo{Repository: repo, release: make(chan struct{})}
			_, finish := toFileAsync(t, gated, ref, tc.parallel, nil)
			for deadline := time.Now().Add(10 * time.Second); gated.inside.Load() < int32(tc.want); {
				if time.Now().After(deadline) {
					t.Fatalf("%d reads under way, want %d", gated.inside.Load(), tc.want)
				}
				time.Sleep(time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // room for any read beyond the limit to start
			if got := gated.peak.Load(); got != int32(tc.want) {
				t.Fatalf("%d reads at once, want %d", got, tc.want)
			}
			close(gated.release)
			finish(img)
		})
	}
}

// prefetchingRepo is a gatedRepo that records the chunks it is asked to prefetch.
type prefetchingRepo struct {
	*gatedRepo
	mu         sync.Mutex
	prefetched []chunk.Digest
}

func (r *prefetchingRepo) PrefetchChunk(d chunk.Digest) {
	r.mu.Lock()
	r.prefetched = append(r.prefetched, d)
	r.mu.Unlock()
	r.Repository.PrefetchChunk(d)
}

func (r *prefetchingRepo) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.prefetched)
}

// ToFile asks the repository to read chunks ahead of its workers, in slot order, each once, and
// never more than prefetchAhead beyond the slots it has handed out.
func TestToFilePrefetchesAhead(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3)) // two workers
	img := make([]byte, 40*slot)
	_, _ = rand.Read(img)
	clear(img[5*slot : 7*slot]) // zero slots are not read
	repo, ref := storeImage(t, img)
	pr := &prefetchingRepo{gatedRepo: &gatedRepo{Repository: repo, release: make(chan struct{})}}
	im, finish := toFileAsync(t, pr, ref, 2, nil)
	// With both workers held in their first read, two slots are handed out: the prefetches
	// stop at prefetchAhead beyond them.
	want := prefetchAhead + 2
	for deadline := time.Now().Add(10 * time.Second); pr.inside.Load() < 2 || pr.count() < want; {
		if time.Now().After(deadline) {
			t.Fatalf("%d reads under way and %d chunks prefetched, want 2 and %d", pr.inside.Load(), pr.count(), want)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // room for any prefetch beyond the lead to start
	if got := pr.count(); got != want {
		t.Fatalf("%d chunks prefetched while 2 slots were handed out, want %d", got, want)
	}
	close(pr.release)
	finish(img)
	idx := im.Index()
	var order []chunk.Digest
	for s := range idx.SlotCount() {
		if !idx.IsZeroSlot(s) {
			order = append(order, idx.Digests[s])
		}
	}
	if !slices.Equal(pr.prefetched, order) { // ToFile has returned: no prefetch is under way
		t.Fatalf("prefetched %d chunks, want the %d non-zero slots once each in slot order", len(pr.prefetched), len(order))
	}
}

// A stream prefetches only the chunks of its own range: a small read of an instant recovery or
// a file costs no reads beyond it.
func TestStreamPrefetchesItsRangeOnly(t *testing.T) {
	img := make([]byte, 40*slot)
	_, _ = rand.Read(img)
	clear(img[5*slot : 7*slot])
	repo, ref := storeImage(t, img)
	for _, r := range [][2]int{{3, 3}, {4, 8}, {30, 39}} {
		pr := &prefetchingRepo{gatedRepo: &gatedRepo{Repository: repo, release: make(chan struct{})}}
		close(pr.release)
		im, err := OpenImage(t.Context(), pr, ref)
		if err != nil {
			t.Fatal(err)
		}
		off, n := int64(r[0])*slot+5, int64(r[1]-r[0])*slot+10
		var buf bytes.Buffer
		if _, err := im.Stream(t.Context(), &buf, off, n, 2); err != nil || !bytes.Equal(buf.Bytes(), img[off:off+n]) {
			t.Fatalf("stream of slots %v: %v", r, err)
		}
		var want []chunk.Digest
		for s := r[0]; s <= r[1]; s++ {
			if !im.Index().IsZeroSlot(s) {
				want = append(want, im.Index().Digests[s])
			}
		}
		if got := pr.prefetched; !slices.Equal(got, want) { // Stream has returned: no prefetch is under way
			t.Fatalf("slots %v: prefetched %d chunks, want the %d of the range, in order", r, len(got), len(want))
		}
	}
}
