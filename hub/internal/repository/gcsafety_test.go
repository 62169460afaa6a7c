package repository

import (
	"bytes"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/chunk"
)

// TestReuseRacesGCAcrossProcesses runs what a backup does with chunks it reuses (PutChunk of a
// chunk the repository holds, TouchChunk of one the agent skipped) in one repository instance,
// against garbage collection's RemoveChunkIfOlder in another instance over the same directory,
// the way "repo gc" on the command line races with a serving hub. Every chunk is older than the
// collection's cutoff and referenced by nothing, so the collection removes each one it gets to
// first. The backup must never lose a chunk it was told is there: every chunk PutChunk accepted
// and every chunk TouchChunk returned nil for is read back intact afterwards.
func TestReuseRacesGCAcrossProcesses(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "repo")
	backup, err := InitDir(t.Context(), dir, 64*kib, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = backup.Close() })
	gc, err := OpenDir(t.Context(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gc.Close() })
	ctx := t.Context()

	const n = 300
	plains := make([][]byte, n)
	blobs := make([][]byte, n)
	for i := range n {
		plains[i] = randomData(uint64(1000+i), 2*kib)
		blobs[i] = frame(t, chunk.CodecRaw, plains[i])
		if _, err := backup.PutChunk(ctx, chunk.Sum(plains[i]), blobs[i]); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2500 * time.Millisecond) // every chunk is now older than the cutoff
	cutoff := time.Now().Add(-time.Second)

	// Only one collection at a time, across instances.
	release, err := gc.LockGC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backup.LockGC(ctx); !errors.Is(err, ErrLocked) {
		t.Fatalf("a second collection took the lock: %v, want ErrLocked", err)
	}
	defer func() { _ = release() }()

	var kept [n]atomic.Bool
	var removed, touchMissed atomic.Int64
	const batch = 50
	for first := 0; first < n; first += batch {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := first; i < first+batch; i++ {
			d := chunk.Sum(plains[i])
			reuse := func() {
				<-start
				if i%2 == 0 {
					// The agent uploaded it again: stored afresh or touched, either way kept.
					if _, err := backup.PutChunk(ctx, d, blobs[i]); err != nil {
						t.Error(err)
						return
					}
					kept[i].Store(true)
					return
				}
				// The agent skipped it as known: the hub touches it, or learns it is gone.
				switch err := backup.TouchChunk(ctx, d); {
				case err == nil:
					kept[i].Store(true)
				case errors.Is(err, ErrChunkNotFound):
					touchMissed.Add(1)
				default:
					t.Error(err)
				}
			}
			remove := func() {
				<-start
				ok, _, err := gc.RemoveChunkIfOlder(ctx, d, cutoff)
				if err != nil {
					t.Error(err)
				}
				if ok {
					removed.Add(1)
				}
			}
			// Either side starts first for half of the chunks: the goroutines started first
			// tend to run first, and on a loaded machine one order alone may never race.
			if i%4 < 2 {
				wg.Go(reuse)
				wg.Go(remove)
			} else {
				wg.Go(remove)
				wg.Go(reuse)
			}
		}
		close(start)
		wg.Wait()
	}
	lost := 0
	for i := range n {
		if !kept[i].Load() {
			continue
		}
		got, err := gc.ReadChunk(ctx, chunk.Sum(plains[i]), nil)
		if err != nil || !bytes.Equal(got, plains[i]) {
			lost++
			t.Errorf("chunk %d was kept for the backup and then lost: %v", i, err)
		}
	}
	t.Logf("%d chunks: %d removed, %d touches found the chunk gone, %d lost", n, removed.Load(), touchMissed.Load(), lost)
	if removed.Load() == 0 {
		t.Error("the collection removed nothing: the race was not exercised")
	}
}
