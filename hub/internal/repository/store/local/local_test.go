package local

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/hub/internal/repository/store/storetest"
	"github.com/sendense/sendense/shared/atomicfile"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func(t *testing.T) store.Store {
		dir := t.TempDir()
		return func(t *testing.T) store.Store { return open(t, dir) }
	})
}

func TestLayout(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.Put(t.Context(), "chunks/ab/cd/abcd", []byte("x")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "chunks", "ab", "cd", "abcd"))
	if err != nil {
		t.Fatalf("the object is not at the path of its key: %v", err)
	}
	if fi.Mode().Perm()&0o222 != 0 {
		t.Fatalf("object file mode %v is writable", fi.Mode())
	}
	for _, key := range []string{"tmp/x", "locks/gc"} {
		if err := s.Put(t.Context(), key, []byte("x")); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Put %s: %v, want ErrInvalidKey (reserved)", key, err)
		}
	}
	// Temp files and crash leftovers are not objects.
	for _, p := range []string{"tmp/put-1", "chunks/ab/cd/.abcd.tmp-1", "chunks/ab/cd/abcd~1"} {
		if err := os.WriteFile(filepath.Join(dir, p), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	if err := s.List(t.Context(), "", func(i store.Info) error { keys = append(keys, i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, " ") != "chunks/ab/cd/abcd chunks/ab/cd/abcd~1" {
		t.Fatalf("List = %q", keys)
	}
}

// TestRemoveIndexPrunesDirectories: emptied directories go, top-level ones stay, and a Put
// into a pruned place works.
func TestRemovePrunes(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := t.Context()
	for _, k := range []string{"indexes/vm-a/d/1.fidx", "indexes/vm-a/e/1.fidx", "indexes/vm-b/d/1.fidx"} {
		if err := s.Put(ctx, k, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Remove(ctx, "indexes/vm-b/d/1.fidx"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "indexes/vm-a/d/1.fidx"); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{"indexes/vm-b": false, "indexes/vm-a/d": false, "indexes/vm-a/e": true, "indexes": true} {
		if _, err := os.Stat(filepath.Join(dir, p)); (err == nil) != want {
			t.Errorf("%s exists: %v, want %v", p, err == nil, want)
		}
	}
	if err := s.Put(ctx, "indexes/vm-b/d/2.fidx", []byte("y")); err != nil {
		t.Fatalf("Put into a pruned directory: %v", err)
	}
}

// TestTempFilesOfDeadWriters: an instance that died (its temp directory's lock is free) leaves
// temp files that the next Open removes, and objects it had set aside, which the next Open puts
// back; a live instance's temp files stay.
func TestTempFilesOfDeadWriters(t *testing.T) {
	dir := t.TempDir()
	live := open(t, dir)
	liveTemp := filepath.Join(live.tmp, "put-inflight")
	if err := os.WriteFile(liveTemp, []byte("being written"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A dead instance: its directory and lock file exist, nobody holds the lock.
	dead := filepath.Join(dir, "tmp", "i-dead")
	if err := os.MkdirAll(filepath.Join(dead, "aside", "chunks", "ab", "cd"), 0o750); err != nil {
		t.Fatal(err)
	}
	for p, content := range map[string]string{"lock": "", "put-1": "partial", "put-2": "partial", "aside/chunks/ab/cd/abcd~7": "set aside"} {
		if err := os.WriteFile(filepath.Join(dead, p), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A hub before per-instance directories: old leftovers go, a fresh file may be in flight.
	old := time.Now().Add(-2 * time.Hour)
	for _, name := range []string{"chunk-1.tmp", "fresh.tmp"} {
		p := filepath.Join(dir, "tmp", name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if name != "fresh.tmp" {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n, err := live.CleanTemp(t.Context(), true); err != nil || n != 3 {
		t.Fatalf("CleanTemp(dry run) = %d, %v; want 3 stale temp files", n, err)
	}
	s := open(t, dir)
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a dead instance's temp directory survived Open: %v", err)
	}
	if _, err := os.Stat(liveTemp); err != nil {
		t.Fatalf("a live instance's temp file was removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tmp", "fresh.tmp")); err != nil {
		t.Fatalf("a fresh legacy temp file was removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tmp", "chunk-1.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an old legacy temp file survived: %v", err)
	}
	b, err := s.Get(t.Context(), "chunks/ab/cd/abcd", nil, 0)
	if err != nil || string(b) != "set aside" {
		t.Fatalf("the object a dead instance set aside: %q, %v; want it back", b, err)
	}
	if n, err := s.CleanTemp(t.Context(), true); err != nil || n != 0 {
		t.Fatalf("CleanTemp after Open = %d, %v; want nothing stale", n, err)
	}
	// Closing an instance removes its own temp directory.
	if err := live.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(live.tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Close left the temp directory: %v", err)
	}
}

// TestTempDirRemoved: an operator removing tmp/ does not break writes.
func TestTempDirRemoved(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if err := os.RemoveAll(filepath.Join(dir, "tmp")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), "a/b", []byte("x")); err != nil {
		t.Fatalf("Put without tmp/: %v", err)
	}
	if n, err := s.CleanTemp(t.Context(), true); err != nil || n != 0 {
		t.Fatalf("CleanTemp after a Put = %d, %v; want nothing left behind", n, err)
	}
}

const childEnv = "SENDENSE_LOCAL_STORE_CHILD"

// childHolds keeps the child's store and lock reachable while it waits: unreachable, the
// collector would close their files and so release the locks the parent must find held.
var childHolds []any

// TestMain lets the test binary act as a second process: it opens the store, takes the lock,
// writes a temp file, says "ready" and waits to be killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		s, err := Open(context.Background(), dir, nil)
		if err != nil {
			panic(err)
		}
		release, err := s.Lock(context.Background(), "gc")
		if err != nil {
			panic(err)
		}
		childHolds = append(childHolds, s, release)
		if err := os.WriteFile(filepath.Join(s.tmp, "put-child"), []byte("partial"), 0o600); err != nil {
			panic(err)
		}
		// Collect first, so that a lock kept only by garbage would show as released.
		runtime.GC()
		runtime.GC()
		os.Stdout.WriteString("ready\n")
		select {}
	}
	os.Exit(m.Run())
}

// TestOtherProcess: a lock held by another process excludes this one until that process dies,
// and its temp files are removed only after it died.
func TestOtherProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	s := open(t, dir)
	if _, err := s.Lock(t.Context(), "gc"); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Lock held by another process: %v, want ErrLocked", err)
	}
	if n, err := s.CleanTemp(t.Context(), false); err != nil || n != 0 {
		t.Fatalf("CleanTemp with the other process alive = %d, %v; want 0", n, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	release, err := s.Lock(t.Context(), "gc")
	if err != nil {
		t.Fatalf("Lock after the holder died: %v", err)
	}
	_ = release()
	if n, err := s.CleanTemp(t.Context(), false); err != nil || n != 1 {
		t.Fatalf("CleanTemp after the other process died = %d, %v; want its 1 temp file", n, err)
	}
}

// TestDirectoriesAreNotObjects: a key naming a directory (a prefix of other keys) is refused by
// every operation that would change it.
func TestDirectoriesAreNotObjects(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := t.Context()
	if err := s.Put(ctx, "chunks/ab/cd/abcd", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RemoveIfOlder(ctx, "chunks/ab", time.Now().Add(time.Hour)); err == nil {
		t.Error("RemoveIfOlder of a directory succeeded")
	}
	if err := s.Touch(ctx, "chunks/ab"); err == nil {
		t.Error("Touch of a directory succeeded")
	}
	if err := s.Remove(ctx, "chunks"); err == nil {
		t.Error("Remove of a directory succeeded")
	}
	if _, err := s.Stat(ctx, "chunks/ab/cd/abcd"); err != nil {
		t.Fatalf("the object under the directory: %v", err)
	}
}

// syncRecorder replaces a store's fsync, syncfs and directory sync with recorders that still do
// the work.
type syncRecorder struct {
	mu      sync.Mutex
	fsynced []string
	syncfs  int
	fail    error // returned by the next fsync
}

func recordSyncs(s *Store) *syncRecorder {
	rec := &syncRecorder{}
	s.fsync = func(path string) error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if err := rec.fail; err != nil {
			rec.fail = nil
			return err
		}
		rec.fsynced = append(rec.fsynced, path)
		return fsyncPath(path)
	}
	s.syncfs = func(root string) error {
		rec.mu.Lock()
		rec.syncfs++
		rec.mu.Unlock()
		return syncfsPath(root)
	}
	s.dirSync = func(dir string) error {
		rec.mu.Lock()
		rec.fsynced = append(rec.fsynced, dir)
		rec.mu.Unlock()
		return atomicfile.SyncDir(dir)
	}
	return rec
}

func (rec *syncRecorder) take() (fsynced []string, syncfs int) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	fsynced, syncfs = rec.fsynced, rec.syncfs
	rec.fsynced, rec.syncfs = nil, 0
	slices.Sort(fsynced)
	return fsynced, syncfs
}

// SyncOwn fsyncs exactly the files this store put deferred since the last sync, their
// directories, and each directory on their way that it made or found without knowing it durable
// (another writer's, here chunks/99/99) with the directory holding it, never the file system;
// beyond its bound, or after a failed fsync, it falls back to syncfs; Sync forgets what it made
// durable.
func TestSyncOwn(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := open(t, dir)
	other := open(t, dir) // another writer of the same directory
	rec := recordSyncs(s)
	p := func(key string) string { return filepath.Join(dir, filepath.FromSlash(key)) }

	for _, key := range []string{"chunks/ab/cd/abcd1", "chunks/ab/cd/abcd2", "chunks/ef/01/ef011"} {
		if err := s.PutDeferred(ctx, key, []byte(key)); err != nil {
			t.Fatal(err)
		}
	}
	if got, n := rec.take(); len(got) != 0 || n != 0 {
		t.Fatalf("deferred puts fsynced %q, syncfs %d; want nothing before the sync", got, n)
	}
	if err := s.Put(ctx, "indexes/x", []byte("durable already")); err != nil {
		t.Fatal(err)
	}
	if got, _ := rec.take(); !slices.Equal(got, []string{dir}) {
		t.Fatalf("a durable put into a new directory synced %q, want the root, which holds it", got)
	}
	if err := other.PutDeferred(ctx, "chunks/99/99/9999", []byte("not ours")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDeferred(ctx, "chunks/99/99/mine", []byte("ours")); err != nil {
		t.Fatal(err)
	}
	if got, n := rec.take(); len(got) != 0 || n != 0 {
		t.Fatalf("deferred puts fsynced %q, syncfs %d; want nothing before the sync", got, n)
	}
	if err := s.SyncOwn(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{dir, p("chunks"), p("chunks/99"), p("chunks/99/99"), p("chunks/99/99/mine"), p("chunks/ab"), p("chunks/ab/cd"),
		p("chunks/ab/cd/abcd1"), p("chunks/ab/cd/abcd2"), p("chunks/ef"), p("chunks/ef/01"), p("chunks/ef/01/ef011")}
	if got, n := rec.take(); !slices.Equal(got, want) || n != 0 {
		t.Fatalf("SyncOwn fsynced %q and ran syncfs %d times, want %q and none", got, n, want)
	}
	// Directories synced once are not synced again for the next file put into them.
	if err := s.PutDeferred(ctx, "chunks/ab/cd/abcd4", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncOwn(ctx); err != nil {
		t.Fatal(err)
	}
	if got, n := rec.take(); !slices.Equal(got, []string{p("chunks/ab/cd"), p("chunks/ab/cd/abcd4")}) || n != 0 {
		t.Fatalf("SyncOwn of one more file fsynced %q, syncfs %d; want the file and its directory", got, n)
	}
	if err := s.SyncOwn(ctx); err != nil {
		t.Fatal(err)
	}
	if got, n := rec.take(); len(got) != 0 || n != 0 {
		t.Fatalf("a second SyncOwn fsynced %q, syncfs %d; want nothing", got, n)
	}

	// A file removed before the sync needs none.
	if err := s.PutDeferred(ctx, "chunks/ab/cd/gone", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "chunks/ab/cd/gone"); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncOwn(ctx); err != nil {
		t.Fatal(err)
	}
	rec.take()

	// A failed fsync is an error, and the next SyncOwn syncs the file system.
	if err := s.PutDeferred(ctx, "chunks/ab/cd/abcd3", []byte("x")); err != nil {
		t.Fatal(err)
	}
	rec.fail = errors.New("injected fsync failure")
	if err := s.SyncOwn(ctx); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("SyncOwn with a failing fsync: %v", err)
	}
	rec.take()
	if err := s.SyncOwn(ctx); err != nil {
		t.Fatal(err)
	}
	if got, n := rec.take(); len(got) != 0 || n != 1 {
		t.Fatalf("after a failed fsync: fsynced %q, syncfs %d; want one syncfs", got, n)
	}

	// Beyond the bound: one syncfs, then tracking starts again.
	s.pending.max = 2
	for i := range 3 {
		if err := s.PutDeferred(ctx, "chunks/77/77/o"+strconv.Itoa(i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SyncOwn(ctx); err != nil {
		t.Fatal(err)
	}
	if got, n := rec.take(); len(got) != 0 || n != 1 {
		t.Fatalf("overflowed: fsynced %q, syncfs %d; want one syncfs", got, n)
	}
	if err := s.PutDeferred(ctx, "chunks/77/77/o9", []byte("x")); err != nil {
		t.Fatal(err)
	}
	// Sync covers what was pending: SyncOwn has nothing left.
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncOwn(ctx); err != nil {
		t.Fatal(err)
	}
	if got, n := rec.take(); len(got) != 0 || n != 1 {
		t.Fatalf("Sync then SyncOwn: fsynced %q, syncfs %d; want the one syncfs", got, n)
	}
}

// resident reports how many of the file's pages are in the page cache, and how many it has.
func resident(t *testing.T, path string) (in, pages int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Munmap(m) }()
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	for _, v := range vec {
		in += int(v & 1)
	}
	return in, len(vec)
}

// Prefetch brings an object's file into the page cache without the caller waiting for it, and
// ignores keys that are missing or invalid.
func TestPrefetchReadsIntoThePageCache(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	key := "chunks/ab/cd/abcd"
	data := make([]byte, 4<<20)
	_, _ = rand.Read(data)
	if err := s.Put(t.Context(), key, data); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, key)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if in, n := resident(t, path); in > n/10 {
		t.Fatalf("%d of %d pages still cached after dropping them: cannot tell what Prefetch does", in, n)
	}
	s.Prefetch("chunks/ab/cd/missing")
	s.Prefetch("../outside")
	s.Prefetch(key)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		in, n := resident(t, path)
		if in == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d pages cached 10 s after Prefetch", in, n)
		}
	}
	got, err := s.Get(t.Context(), key, nil, 0)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get after Prefetch: %v", err)
	}
}
