// Package storetest is the conformance suite of store.Store: every implementation runs it, so
// that the repository format on top can rely on the contract alone.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/repository/store"
)

// NewBacking makes new, empty backing storage (a directory, a bucket prefix) for one test and
// returns a function that opens an instance of the store over it. Each call of open returns an
// independent instance, as another process or host would open it: instances share nothing but
// the backing storage. open closes its instance when the test ends.
type NewBacking func(t *testing.T) (open func(t *testing.T) store.Store)

// Settle is how long the suite waits where it needs stored times to be apart. Store clocks may
// have a granularity of up to 2 s (some file systems), which the margins below absorb.
const settle = 2500 * time.Millisecond

// Run runs the conformance suite.
func Run(t *testing.T, newBacking NewBacking) {
	t.Run("PutGet", func(t *testing.T) { testPutGet(t, newBacking(t)(t)) })
	t.Run("PutIdempotentAndReplaces", func(t *testing.T) { testPutReplace(t, newBacking(t)(t)) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, newBacking(t)(t)) })
	t.Run("InvalidKeys", func(t *testing.T) { testInvalidKeys(t, newBacking(t)(t)) })
	t.Run("List", func(t *testing.T) { testList(t, newBacking(t)(t)) })
	t.Run("CanceledContext", func(t *testing.T) { testCanceled(t, newBacking(t)(t)) })
	t.Run("ConcurrentPutsOfOneKey", func(t *testing.T) { testConcurrentPuts(t, newBacking(t)(t)) })
	t.Run("VisibleToOtherInstances", func(t *testing.T) { testOtherInstance(t, newBacking(t)) })
	t.Run("Lock", func(t *testing.T) { testLock(t, newBacking(t)) })
	t.Run("Rename", func(t *testing.T) { testRename(t, newBacking(t)(t)) })
	t.Run("ConcurrentRenamesOfOneKey", func(t *testing.T) { testConcurrentRenames(t, newBacking(t)) })
	t.Run("RenameRacesPut", func(t *testing.T) { testRenameRacesPut(t, newBacking(t)) })
	t.Run("Times", func(t *testing.T) {
		t.Parallel() // waits for stored times to be apart
		testTimes(t, newBacking(t)(t))
	})
	t.Run("TouchRacesRemoveIfOlder", func(t *testing.T) {
		t.Parallel()
		testTouchRacesRemove(t, newBacking(t))
	})
}

// retains reports whether s keeps touched objects by retention dates rather than times (an S3
// store under Object Lock): its Touch need not move the time, and a removal of a touched object
// answers store.ErrRetained.
func retains(s store.Store) bool {
	l, ok := s.(interface{ ObjectLock() string })
	return ok && l.ObjectLock() != ""
}

func data(seed uint64, n int) []byte {
	b := make([]byte, n)
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	rand.NewChaCha8(s).Read(b)
	return b
}

func mustPut(t *testing.T, s store.Store, key string, b []byte) {
	t.Helper()
	if err := s.Put(t.Context(), key, b); err != nil {
		t.Fatalf("Put %s: %v", key, err)
	}
}

func mustGet(t *testing.T, s store.Store, key string) []byte {
	t.Helper()
	b, err := s.Get(t.Context(), key, nil, 0)
	if err != nil {
		t.Fatalf("Get %s: %v", key, err)
	}
	return b
}

func testPutGet(t *testing.T, s store.Store) {
	ctx := t.Context()
	for i, n := range []int{0, 1, 4095, 4096, 64 << 10, 1<<20 + 123} {
		key := fmt.Sprintf("chunks/%02x/ab/obj-%d", i, n)
		b := data(uint64(i), n)
		mustPut(t, s, key, b)
		if got := mustGet(t, s, key); !bytes.Equal(got, b) {
			t.Fatalf("Get %s: %d bytes differ from the %d put", key, len(got), n)
		}
		info, err := s.Stat(ctx, key)
		if err != nil || info.Key != key || info.Size != int64(n) {
			t.Fatalf("Stat %s = %+v, %v; want size %d", key, info, err, n)
		}
		if d := time.Since(info.ModTime); d > time.Minute || d < -time.Minute {
			t.Fatalf("Stat %s: ModTime %v is not the time of the Put", key, info.ModTime)
		}
		// dst with room is reused; a limit of exactly the size is fine, one byte less is not.
		dst := make([]byte, 0, n+10)
		got, err := s.Get(ctx, key, dst, int64(n))
		if err != nil || !bytes.Equal(got, b) || n > 0 && &got[0] != &dst[:1][0] {
			t.Fatalf("Get %s into a large enough buffer: %v (reused: %v)", key, err, n > 0 && err == nil && &got[0] == &dst[:1][0])
		}
		if n > 1 {
			if _, err := s.Get(ctx, key, nil, int64(n-1)); !errors.Is(err, store.ErrTooLarge) {
				t.Fatalf("Get %s with a limit below its size: %v, want ErrTooLarge", key, err)
			}
		}
	}
}

func testPutReplace(t *testing.T, s store.Store) {
	const key = "indexes/vm/disk-2000/bk-1.fidx"
	a, b := data(1, 1000), data(2, 2000)
	mustPut(t, s, key, a)
	mustPut(t, s, key, a)
	if got := mustGet(t, s, key); !bytes.Equal(got, a) {
		t.Fatal("a second Put of the same content changed the object")
	}
	mustPut(t, s, key, b)
	if got := mustGet(t, s, key); !bytes.Equal(got, b) {
		t.Fatal("Put over an existing object did not replace it")
	}
	n := 0
	if err := s.List(t.Context(), "", func(store.Info) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("List after three Puts of one key: %d objects, %v; want 1", n, err)
	}
}

func testNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	const key = "chunks/00/00/missing"
	mustPut(t, s, "chunks/00/00/present", []byte("x"))
	if _, err := s.Get(ctx, key, nil, 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of a missing object: %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat of a missing object: %v, want ErrNotFound", err)
	}
	if err := s.Touch(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Touch of a missing object: %v, want ErrNotFound", err)
	}
	if err := s.Remove(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Remove of a missing object: %v, want ErrNotFound", err)
	}
	if removed, _, err := s.RemoveIfOlder(ctx, key, time.Now().Add(time.Hour)); removed || err != nil {
		t.Errorf("RemoveIfOlder of a missing object = %v, %v; want false, nil", removed, err)
	}
	if _, err := s.Get(ctx, "chunks/00/00/missing/deeper", nil, 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get below a missing prefix: %v, want ErrNotFound", err)
	}
	if err := s.Remove(ctx, "chunks/00/00/present"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "chunks/00/00/present", nil, 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Remove: %v, want ErrNotFound", err)
	}
}

func testInvalidKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, key := range []string{"", "/abs", "a//b", "a/", "a/../b", "./a", ".hidden", "a/.b", `a\b`, "a\x00b", "a\nb", string([]byte{0xff}),
		string(bytes.Repeat([]byte("k"), store.MaxKeyLen+1))} {
		if err := s.Put(ctx, key, []byte("x")); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Put %q: %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Get(ctx, key, nil, 0); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Get %q: %v, want ErrInvalidKey", key, err)
		}
	}
	for _, name := range []string{"", "a/b", ".x"} {
		if _, err := s.Lock(ctx, name); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Lock %q: %v, want ErrInvalidKey", name, err)
		}
	}
	n := 0
	if err := s.List(ctx, "", func(store.Info) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("List after refused Puts: %d objects, %v", n, err)
	}
}

func testList(t *testing.T, s store.Store) {
	ctx := t.Context()
	keys := []string{
		"repo.json",
		"chunks/00/01/0001aa",
		"chunks/00/0a/000abb",
		"chunks/ab/cd/abcdef",
		"chunks/ab/cd/abcd00",
		"indexes/vm/disk-2000/bk-1.fidx",
		"indexes/vm/disk-2000/bk-2.fidx",
		"indexes/vm/disk/bk-1.fidx",
		"indexes/vm-a/disk-2000/bk-1.fidx",
		"indexes/vm.b/disk/bk-9.fidx",
		"z",
	}
	for i, k := range keys {
		mustPut(t, s, k, data(uint64(i), i+1))
	}
	list := func(prefix string) []string {
		t.Helper()
		var got []string
		err := s.List(ctx, prefix, func(info store.Info) error {
			got = append(got, info.Key)
			if want := int64(slices.Index(keys, info.Key) + 1); info.Size != want {
				t.Errorf("List: %s has size %d, want %d", info.Key, info.Size, want)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("List %q: %v", prefix, err)
		}
		return got
	}
	for _, prefix := range []string{"", "chunks/", "chunks/ab", "chunks/ab/cd/abcd0", "indexes/vm", "indexes/vm/", "indexes/vm/disk", "indexes/vm/disk/", "r", "z", "nope/", "nope", "indexes/vm/disk-2000/bk-1.fidx"} {
		var want []string
		for _, k := range keys {
			if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
				want = append(want, k)
			}
		}
		slices.Sort(want)
		if got := list(prefix); !slices.Equal(got, want) {
			t.Errorf("List %q = %q, want %q (every object once, in byte order)", prefix, got, want)
		}
	}
	stop := errors.New("stop")
	calls := 0
	if err := s.List(ctx, "", func(store.Info) error { calls++; return stop }); err != stop || calls != 1 {
		t.Fatalf("List with a failing fn: %v after %d calls; want the error as is after 1", err, calls)
	}
}

func testCanceled(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Put(ctx, "a/b", []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a canceled context: %v", err)
	}
	if _, err := s.Stat(t.Context(), "a/b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a Put with a canceled context left an object: %v", err)
	}
}

func testConcurrentPuts(t *testing.T, s store.Store) {
	const key, n = "chunks/12/34/1234", 16
	contents := make([][]byte, n)
	for i := range contents {
		contents[i] = data(uint64(100+i), 256<<10)
	}
	var wg sync.WaitGroup
	var done atomic.Bool
	errs := make(chan error, 2*n)
	// A reader sees no object or one whole content, never a mix.
	wg.Go(func() {
		for !done.Load() {
			b, err := s.Get(t.Context(), key, nil, 0)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				errs <- err
				return
			}
			if !slices.ContainsFunc(contents, func(c []byte) bool { return bytes.Equal(c, b) }) {
				errs <- fmt.Errorf("a reader saw %d bytes that no Put wrote", len(b))
				return
			}
		}
	})
	var puts sync.WaitGroup
	for i := range n {
		puts.Go(func() {
			if err := s.Put(t.Context(), key, contents[i]); err != nil {
				errs <- err
			}
		})
	}
	puts.Wait()
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := mustGet(t, s, key); !slices.ContainsFunc(contents, func(c []byte) bool { return bytes.Equal(c, got) }) {
		t.Fatal("after concurrent Puts the object is none of their contents")
	}
}

func testOtherInstance(t *testing.T, open func(t *testing.T) store.Store) {
	a, b := open(t), open(t)
	ctx := t.Context()
	mustPut(t, a, "indexes/v/d/x.fidx", []byte("from a"))
	if got := mustGet(t, b, "indexes/v/d/x.fidx"); string(got) != "from a" {
		t.Fatalf("another instance reads %q", got)
	}
	if err := b.Remove(ctx, "indexes/v/d/x.fidx"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Stat(ctx, "indexes/v/d/x.fidx"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an object another instance removed: %v, want ErrNotFound", err)
	}
	// A Put into a place another instance just emptied.
	mustPut(t, a, "indexes/v/d/y.fidx", []byte("again"))
	if got := mustGet(t, b, "indexes/v/d/y.fidx"); string(got) != "again" {
		t.Fatalf("another instance reads %q", got)
	}
}

func testLock(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := t.Context()
	a, b := open(t), open(t)
	release, err := a.Lock(ctx, "gc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lock(ctx, "gc"); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("a second instance took a held lock: %v, want ErrLocked", err)
	}
	if _, err := a.Lock(ctx, "gc"); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("the holding instance took its lock twice: %v, want ErrLocked", err)
	}
	relOther, err := b.Lock(ctx, "other")
	if err != nil {
		t.Fatalf("a lock of another name: %v", err)
	}
	if err := relOther(); err != nil {
		t.Fatal(err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	relB, err := b.Lock(ctx, "gc")
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	if err := relB(); err != nil {
		t.Fatal(err)
	}
	// Closing the holder releases its locks, as the end of its process would.
	c := open(t)
	if _, err := c.Lock(ctx, "gc"); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	relA, err := a.Lock(ctx, "gc")
	if err != nil {
		t.Fatalf("Lock after the holder closed: %v", err)
	}
	_ = relA()
	// No object is listed for a lock.
	n := 0
	if err := a.List(ctx, "", func(store.Info) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("List after locking: %d objects, %v; want none", n, err)
	}
}

func testTimes(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustPut(t, s, "old", []byte("old"))
	mustPut(t, s, "touched", []byte("touched"))
	before, err := s.Stat(ctx, "touched")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(settle)
	// One second of margin below now, as garbage collection keeps one for clock granularity.
	cutoff := time.Now().Add(-time.Second)
	mustPut(t, s, "new", []byte("new"))
	touchStart := time.Now()
	if err := s.Touch(ctx, "touched"); err != nil {
		t.Fatal(err)
	}
	after, err := s.Stat(ctx, "touched")
	if err != nil {
		t.Fatal(err)
	}
	if !retains(s) && (!after.ModTime.After(before.ModTime) || after.ModTime.Before(touchStart.Add(-2*time.Second))) {
		t.Fatalf("Touch: ModTime %v → %v, touched at %v", before.ModTime, after.ModTime, touchStart)
	}
	for _, tc := range []struct {
		key     string
		removed bool
	}{{"new", false}, {"touched", false}, {"old", true}} {
		removed, size, err := s.RemoveIfOlder(ctx, tc.key, cutoff)
		if tc.key == "touched" && retains(s) {
			if !errors.Is(err, store.ErrRetained) || removed {
				t.Errorf("RemoveIfOlder of a retained touched object = %v, %v; want ErrRetained", removed, err)
			}
			err = nil
		}
		if err != nil || removed != tc.removed || removed && size != int64(len(tc.key)) {
			t.Errorf("RemoveIfOlder %s = %v, %d, %v; want removed %v", tc.key, removed, size, err, tc.removed)
		}
		_, err = s.Stat(ctx, tc.key)
		if exists := err == nil; exists == tc.removed {
			t.Errorf("after RemoveIfOlder %s: Stat %v", tc.key, err)
		}
	}
}

// testTouchRacesRemove runs Touch on one instance against RemoveIfOlder on another, over many
// objects older than the cutoff, the way a backup reusing chunks races with a garbage
// collection in another process. Every object whose Touch returned nil must survive.
func testTouchRacesRemove(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := t.Context()
	gc, backup := open(t), open(t)
	const n = 400
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("chunks/%02x/%02x/obj%04d", i%4, i%3, i)
		mustPut(t, backup, keys[i], data(uint64(i), 512))
	}
	time.Sleep(settle)
	cutoff := time.Now().Add(-time.Second)
	var touched, notFound, removed atomic.Int64
	kept := make([]atomic.Bool, n)
	// Each object gets one Touch and one RemoveIfOlder released at the same moment, in batches.
	const batch = 50
	for first := 0; first < n; first += batch {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := first; i < first+batch; i++ {
			wg.Go(func() {
				<-start
				switch err := backup.Touch(ctx, keys[i]); {
				case err == nil:
					kept[i].Store(true)
					touched.Add(1)
				case errors.Is(err, store.ErrNotFound):
					notFound.Add(1)
				default:
					t.Error(err)
				}
			})
			wg.Go(func() {
				<-start
				ok, _, err := gc.RemoveIfOlder(ctx, keys[i], cutoff)
				if err != nil && !(retains(gc) && errors.Is(err, store.ErrRetained)) {
					t.Error(err)
				}
				if ok {
					removed.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
	}
	lost := 0
	for i, k := range keys {
		if !kept[i].Load() {
			continue
		}
		if _, err := gc.Stat(ctx, k); err != nil {
			lost++
			t.Errorf("%s was touched successfully and then lost: %v", k, err)
		}
	}
	t.Logf("%d objects: %d touches succeeded, %d found nothing, %d removals, %d lost", n, touched.Load(), notFound.Load(), removed.Load(), lost)
	switch {
	case touched.Load() == 0:
		t.Error("the race was not exercised: want some objects touched")
	case removed.Load() == 0 && !retains(gc):
		// A store that retains touched objects may see no removal win: its touch takes a few
		// metadata requests, a removal of every version more. Losing nothing touched is what
		// counts there.
		t.Error("the race was not exercised: want some objects touched and some removed")
	}
}

func testRename(t *testing.T, s store.Store) {
	ctx := t.Context()
	a, b := data(1, 3000), data(2, 100)
	mustPut(t, s, "chunks/ab/cd/obj", a)
	mustPut(t, s, "quarantine/taken", b)
	if err := s.Rename(ctx, "chunks/ab/cd/obj", "quarantine/taken"); !errors.Is(err, store.ErrExists) {
		t.Fatalf("Rename onto an object: %v, want ErrExists", err)
	}
	if !bytes.Equal(mustGet(t, s, "chunks/ab/cd/obj"), a) || !bytes.Equal(mustGet(t, s, "quarantine/taken"), b) {
		t.Fatal("a refused Rename changed an object")
	}
	// The destination's directories are created as needed.
	if err := s.Rename(ctx, "chunks/ab/cd/obj", "quarantine/x/y/obj.1"); err != nil {
		t.Fatalf("Rename: %v", err)
	}
	if _, err := s.Stat(ctx, "chunks/ab/cd/obj"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Stat of the source after Rename: %v, want ErrNotFound", err)
	}
	if !bytes.Equal(mustGet(t, s, "quarantine/x/y/obj.1"), a) {
		t.Fatal("the renamed object's content changed")
	}
	if err := s.Touch(ctx, "chunks/ab/cd/obj"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Touch of the source after Rename: %v, want ErrNotFound", err)
	}
	if err := s.Rename(ctx, "chunks/ab/cd/obj", "quarantine/z"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Rename of a missing object: %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx, "quarantine/z"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a Rename of nothing created its destination: %v", err)
	}
	// And back: the source key is free again.
	if err := s.Rename(ctx, "quarantine/x/y/obj.1", "chunks/ab/cd/obj"); err != nil || !bytes.Equal(mustGet(t, s, "chunks/ab/cd/obj"), a) {
		t.Fatalf("Rename back: %v", err)
	}
	for _, k := range [][2]string{{"", "x"}, {"x", ""}, {"chunks/ab/cd/obj", "../x"}, {"../x", "y"}} {
		if err := s.Rename(ctx, k[0], k[1]); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Rename %q → %q: %v, want ErrInvalidKey", k[0], k[1], err)
		}
	}
	var keys []string
	if err := s.List(ctx, "", func(i store.Info) error { keys = append(keys, i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"chunks/ab/cd/obj", "quarantine/taken"}; !slices.Equal(keys, want) {
		t.Fatalf("List after the renames: %q, want %q", keys, want)
	}
}

// testConcurrentRenames moves one object from several instances at once, each to a key of its
// own, as two verifications in different processes quarantining one chunk do: exactly one
// moves it and the object is whole under that one's key.
func testConcurrentRenames(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := t.Context()
	a, b := open(t), open(t)
	for round := range 20 {
		key := fmt.Sprintf("chunks/00/%02x/obj", round)
		want := data(uint64(round), 4096)
		mustPut(t, a, key, want)
		var moved atomic.Int64
		var winner atomic.Value
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 8 {
			s := a
			if i%2 == 1 {
				s = b
			}
			wg.Go(func() {
				<-start
				to := fmt.Sprintf("quarantine/%d.%d", round, i)
				switch err := s.Rename(ctx, key, to); {
				case err == nil:
					moved.Add(1)
					winner.Store(to)
				case !errors.Is(err, store.ErrNotFound):
					t.Error(err)
				}
			})
		}
		close(start)
		wg.Wait()
		if moved.Load() != 1 {
			t.Fatalf("round %d: %d Renames of one object succeeded, want 1", round, moved.Load())
		}
		if got := mustGet(t, b, winner.Load().(string)); !bytes.Equal(got, want) {
			t.Fatalf("round %d: the moved object differs", round)
		}
		if _, err := a.Stat(ctx, key); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("round %d: the source is still there: %v", round, err)
		}
	}
}

// testRenameRacesPut moves an object while another instance puts new content under its key:
// whichever order they take, the new content is not lost.
func testRenameRacesPut(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := t.Context()
	a, b := open(t), open(t)
	for round := range 30 {
		key := fmt.Sprintf("chunks/01/%02x/obj", round)
		to := fmt.Sprintf("quarantine/put-race.%d", round)
		old, fresh := data(uint64(1000+round), 2048), data(uint64(2000+round), 2048)
		mustPut(t, a, key, old)
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			if err := a.Rename(ctx, key, to); err != nil {
				t.Errorf("Rename: %v", err)
			}
		})
		wg.Go(func() {
			<-start
			if err := b.Put(ctx, key, fresh); err != nil {
				t.Errorf("Put: %v", err)
			}
		})
		close(start)
		wg.Wait()
		var found bool
		for _, k := range []string{key, to} {
			if got, err := b.Get(ctx, k, nil, 0); err == nil && bytes.Equal(got, fresh) {
				found = true
			}
		}
		if !found {
			t.Fatalf("round %d: the object put during a Rename is lost", round)
		}
	}
}
