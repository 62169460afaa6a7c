package repository

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/hub/internal/repository/store/local"
	"github.com/sendense/sendense/shared/chunk"
)

// writeRecorder is a local store that records the writes the repository makes, in order.
type writeRecorder struct {
	*local.Store
	mu  sync.Mutex
	ops []string
}

func (s *writeRecorder) record(op string) {
	s.mu.Lock()
	s.ops = append(s.ops, op)
	s.mu.Unlock()
}

func (s *writeRecorder) Put(ctx context.Context, key string, data []byte) error {
	s.record("put " + key)
	return s.Store.Put(ctx, key, data)
}

func (s *writeRecorder) PutDeferred(ctx context.Context, key string, data []byte) error {
	s.record("deferred " + key)
	return s.Store.PutDeferred(ctx, key, data)
}

func (s *writeRecorder) Sync(ctx context.Context) error {
	s.record("sync")
	return s.Store.Sync(ctx)
}

func (s *writeRecorder) SyncOwn(ctx context.Context) error {
	s.record("syncown")
	return s.Store.SyncOwn(ctx)
}

func (s *writeRecorder) taken() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.ops
	s.ops = nil
	return out
}

// opKinds reduces recorded operations to their kind and the first component of their key.
func opKinds(ops []string) []string {
	var out []string
	for _, op := range ops {
		kind, key, _ := strings.Cut(op, " ")
		first, _, _ := strings.Cut(key, "/")
		out = append(out, strings.TrimSpace(kind+" "+first))
	}
	return out
}

// The per-commit mode writes chunks without durability and syncs its own files once before the
// index; the per-chunk mode puts every chunk durably and never syncs. Plain and encrypted repositories alike.
func TestDurabilityModes(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode Durability
		want []string
	}{
		{"commit", DurabilityCommit, []string{"put unsynced", "deferred chunks", "deferred chunks", "syncown", "put unsynced", "put indexes"}},
		{"chunk", DurabilityChunk, []string{"put chunks", "put chunks", "put indexes"}},
	} {
		for _, encrypted := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/encrypted=%v", tc.name, encrypted), func(t *testing.T) {
				ctx := context.Background()
				ls, err := local.Create(ctx, filepath.Join(t.TempDir(), "repo"), nil)
				if err != nil {
					t.Fatal(err)
				}
				rs := &writeRecorder{Store: ls}
				opts := []Option{WithDurability(tc.mode)}
				if encrypted {
					opts = append(opts, Encrypt(), WithSecret([]byte("correct horse\n")), WithKDFCost(testKDF))
				}
				r, err := Init(ctx, rs, 64*kib, opts...)
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				rs.taken()
				idx, err := fidx.New(128*kib, 64*kib)
				if err != nil {
					t.Fatal(err)
				}
				for i := range 2 {
					plain := randomData(uint64(i), 64*kib)
					d := chunk.Sum(plain)
					if stored, err := r.PutChunk(ctx, d, frame(t, chunk.CodecRaw, plain)); !stored || err != nil {
						t.Fatalf("PutChunk = %v, %v", stored, err)
					}
					idx.Digests[i] = d
				}
				if _, err := r.WriteIndex(ctx, IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: "bk-1"}, idx); err != nil {
					t.Fatal(err)
				}
				if got := opKinds(rs.taken()); !slices.Equal(got, tc.want) {
					t.Fatalf("writes %q, want %q", got, tc.want)
				}
				for _, d := range idx.Digests {
					if err := r.VerifyChunk(ctx, d); err != nil {
						t.Fatal(err)
					}
				}
				// Close syncs and removes the marker; a clean close leaves nothing to recover.
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
				if n := countMarkers(t, filepath.Join(ls.Dir())); n != 0 {
					t.Fatalf("%d unsynced markers after a clean close", n)
				}
			})
		}
	}
}

func countMarkers(t testing.TB, dir string) int {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(dir, "unsynced"))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// A host crash may leave a chunk written after the last sync present but damaged. The next Open
// after the reboot verifies the chunks written since that sync and quarantines the damaged one, so
// that no later backup trusts it as known; a chunk synced by a commit is kept. A process crash on
// the same boot only needs a sync: nothing is read back.
func TestHostCrashQuarantinesUnsyncedChunks(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", encrypted), func(t *testing.T) {
			ctx := context.Background()
			dir := filepath.Join(t.TempDir(), "repo")
			boot := "boot-1"
			opts := []Option{withBootID(func() (string, error) { return boot, nil })}
			if encrypted {
				opts = append(opts, Encrypt(), WithSecret([]byte("correct horse\n")), WithKDFCost(testKDF))
			}
			r, err := InitDir(ctx, dir, 64*kib, nil, opts...)
			if err != nil {
				t.Fatal(err)
			}
			put := func(r *Repository, seed uint64) chunk.Digest {
				plain := textData(seed, 64*kib)
				d := chunk.Sum(plain)
				if _, err := r.PutChunk(ctx, d, frame(t, chunk.CodecZstd, plain)); err != nil {
					t.Fatal(err)
				}
				return d
			}
			committed := put(r, 1)
			idx, err := fidx.New(64*kib, 64*kib)
			if err != nil {
				t.Fatal(err)
			}
			idx.Digests[0] = committed
			if _, err := r.WriteIndex(ctx, IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: "bk-1"}, idx); err != nil {
				t.Fatal(err)
			}
			written := put(r, 2)
			// The process dies without closing the repository: its store lock goes, its marker stays.
			if err := r.store.Close(); err != nil {
				t.Fatal(err)
			}
			if n := countMarkers(t, dir); n != 1 {
				t.Fatalf("%d markers after writing deferred chunks, want 1", n)
			}

			// Same boot: only the process died, the page cache kept everything; recovery syncs
			// and drops the marker.
			r2, err := OpenDir(ctx, dir, nil, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if n := countMarkers(t, dir); n != 0 {
				t.Fatalf("%d markers after recovery on the same boot", n)
			}
			for _, d := range []chunk.Digest{committed, written} {
				if err := r2.VerifyChunk(ctx, d); err != nil {
					t.Fatal(err)
				}
			}
			// r2 writes a chunk and the host crashes before any sync: the file is there, its
			// data blocks are not.
			unsynced := put(r2, 3)
			if err := r2.store.Close(); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, filepath.FromSlash(chunkKey(r2.ChunkName(unsynced))))
			if err := os.Truncate(path, 100); err != nil {
				t.Fatal(err)
			}
			boot = "boot-2"
			r3, err := OpenDir(ctx, dir, nil, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer r3.Close()
			if n := countMarkers(t, dir); n != 0 {
				t.Fatalf("%d markers after recovery from a host crash", n)
			}
			if ok, err := r3.HasChunk(ctx, unsynced); ok || err != nil {
				t.Fatalf("damaged unsynced chunk: HasChunk = %v, %v; it must be quarantined", ok, err)
			}
			var quarantined []chunk.Digest
			if err := r3.WalkQuarantine(ctx, func(q Quarantined) error {
				quarantined = append(quarantined, q.Digest)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(quarantined, []chunk.Digest{r3.ChunkName(unsynced)}) {
				t.Fatalf("quarantined %v, want only the damaged chunk", quarantined)
			}
			for _, d := range []chunk.Digest{committed, written} {
				if err := r3.VerifyChunk(ctx, d); err != nil {
					t.Fatalf("sound chunk after recovery: %v", err)
				}
			}
			// The next backup is told the chunk is missing and stores it again.
			plain := textData(3, 64*kib)
			if stored, err := r3.PutChunk(ctx, unsynced, frame(t, chunk.CodecZstd, plain)); !stored || err != nil {
				t.Fatalf("PutChunk of the quarantined chunk = %v, %v; want stored", stored, err)
			}
			if err := r3.VerifyChunk(ctx, unsynced); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A marker whose process lives is left alone by another process opening the repository.
func TestLiveMarkerIsNotRecovered(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, 64*kib)
	plain := randomData(1, 64*kib)
	if _, err := r.PutChunk(ctx, chunk.Sum(plain), frame(t, chunk.CodecRaw, plain)); err != nil {
		t.Fatal(err)
	}
	r2, err := OpenDir(ctx, root(r), nil, withBootID(func() (string, error) { return "another boot", nil }))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if n := countMarkers(t, root(r)); n != 1 {
		t.Fatalf("%d markers, want the live one", n)
	}
	if err := r2.VerifyChunk(ctx, chunk.Sum(plain)); err != nil {
		t.Fatal(err)
	}
}

const crashChildEnv = "SENDENSE_TEST_DURABILITY_CHILD"

// TestMain lets the kill -9 test run this binary as the process that dies.
func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	os.Exit(m.Run())
}

// crashChild opens the repository in dir, stores chunks without committing, says so and waits
// to be killed.
func crashChild(dir string) {
	ctx := context.Background()
	r, err := OpenDir(ctx, dir, nil)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	for i := range 8 {
		plain := textData(uint64(100+i), 64*kib)
		blob, err := encodeForChild(plain)
		if err == nil {
			_, err = r.PutChunk(ctx, chunk.Sum(plain), blob)
		}
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
	}
	fmt.Println("stored")
	select {}
}

func encodeForChild(plain []byte) ([]byte, error) {
	payload := encoder().EncodeAll(plain, nil)
	return chunk.AppendBlob(nil, chunk.CodecZstd, len(plain), payload)
}

// A hub killed with SIGKILL between chunk writes and the commit: after a restart the chunks it
// stored (never synced) are complete, a commit naming them succeeds, and every one verifies.
func TestKilledWriterThenCommit(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, 64*kib)
	dir := root(r)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "stored\n" {
		_ = cmd.Process.Kill()
		t.Fatalf("child: %q, %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if n := countMarkers(t, dir); n != 1 {
		t.Fatalf("%d markers left by the killed writer, want 1", n)
	}

	r2, err := OpenDir(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if n := countMarkers(t, dir); n != 0 {
		t.Fatalf("%d markers after the restart", n)
	}
	idx, err := fidx.New(8*64*kib, 64*kib)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		d := chunk.Sum(textData(uint64(100+i), 64*kib))
		// A later session finds them known: no upload.
		if stored, err := r2.PutChunk(ctx, d, mustEncode(t, textData(uint64(100+i), 64*kib))); stored || err != nil {
			t.Fatalf("chunk %d after the restart: stored=%v, %v; want present", i, stored, err)
		}
		idx.Digests[i] = d
	}
	if _, err := r2.WriteIndex(ctx, IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: "bk-" + strconv.Itoa(1)}, idx); err != nil {
		t.Fatal(err)
	}
	for _, d := range idx.Digests {
		if err := r2.VerifyChunk(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
}

func mustEncode(t testing.TB, plain []byte) []byte {
	t.Helper()
	b, err := encodeForChild(plain)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var _ store.Deferrer = (*local.Store)(nil)

// durabilityModel tracks, for local stores of one directory, which objects are not durable yet,
// as store.Deferrer's contract says: PutDeferred leaves an object not durable until a SyncOwn of
// the same store or a Sync of any store begun after it returned.
type durabilityModel struct {
	mu    sync.Mutex
	dirty map[string]*modelStore // key → the store that put it deferred
	// atIndex is, for each index key put, the chunk keys not durable at that moment.
	atIndex map[string][]string
}

// modelStore is one process's local store under the model; it records its syncs.
type modelStore struct {
	*local.Store
	m     *durabilityModel
	syncs []string
}

func (m *durabilityModel) store(s *local.Store) *modelStore { return &modelStore{Store: s, m: m} }

func (s *modelStore) PutDeferred(ctx context.Context, key string, data []byte) error {
	if err := s.Store.PutDeferred(ctx, key, data); err != nil {
		return err
	}
	s.m.mu.Lock()
	s.m.dirty[key] = s
	s.m.mu.Unlock()
	return nil
}

// settle makes durable, after a successful sync, the keys that were dirty when it began and that
// pick selects.
func (s *modelStore) settle(kind string, pick func(*modelStore) bool, sync func() error) error {
	s.m.mu.Lock()
	var keys []string
	for k, w := range s.m.dirty {
		if pick(w) {
			keys = append(keys, k)
		}
	}
	s.syncs = append(s.syncs, kind)
	s.m.mu.Unlock()
	if err := sync(); err != nil {
		return err
	}
	s.m.mu.Lock()
	for _, k := range keys {
		delete(s.m.dirty, k)
	}
	s.m.mu.Unlock()
	return nil
}

func (s *modelStore) SyncOwn(ctx context.Context) error {
	return s.settle("syncown", func(w *modelStore) bool { return w == s }, func() error { return s.Store.SyncOwn(ctx) })
}

func (s *modelStore) Sync(ctx context.Context) error {
	return s.settle("sync", func(*modelStore) bool { return true }, func() error { return s.Store.Sync(ctx) })
}

func (s *modelStore) Put(ctx context.Context, key string, data []byte) error {
	if strings.HasPrefix(key, "indexes/") {
		s.m.mu.Lock()
		var dirty []string
		for k := range s.m.dirty {
			dirty = append(dirty, k)
		}
		s.m.atIndex[key] = dirty
		s.m.mu.Unlock()
	}
	return s.Store.Put(ctx, key, data)
}

func (s *modelStore) takeSyncs() []string {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	out := s.syncs
	s.syncs = nil
	return out
}

// Every index is written only once every chunk it names is durable, whichever process put the
// chunk: a process alone syncs only its own files; another writer's marker, live or dead, makes
// it sync the file system, and a dead writer's marker of this boot is then removed.
func TestIndexWrittenAfterItsChunksAreDurable(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	m := &durabilityModel{dirty: map[string]*modelStore{}, atIndex: map[string][]string{}}
	open := func() (*Repository, *modelStore) {
		t.Helper()
		ls, err := local.Create(ctx, dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		ms := m.store(ls)
		var r *Repository
		if _, serr := os.Stat(filepath.Join(dir, "repo.json")); serr != nil {
			r, err = Init(ctx, ms, 64*kib)
		} else {
			r, err = Open(ctx, ms)
		}
		if err != nil {
			t.Fatal(err)
		}
		return r, ms
	}
	put := func(r *Repository, seed uint64) chunk.Digest {
		t.Helper()
		plain := randomData(seed, 64*kib)
		d := chunk.Sum(plain)
		if _, err := r.PutChunk(ctx, d, frame(t, chunk.CodecRaw, plain)); err != nil {
			t.Fatal(err)
		}
		return d
	}
	n := 0
	// commit writes an index naming ds and checks that none of them was dirty when it was put.
	commit := func(r *Repository, ds ...chunk.Digest) {
		t.Helper()
		idx, err := fidx.New(int64(len(ds))*64*kib, 64*kib)
		if err != nil {
			t.Fatal(err)
		}
		copy(idx.Digests, ds)
		n++
		ref := IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: "bk-" + strconv.Itoa(n)}
		if _, err := r.WriteIndex(ctx, ref, idx); err != nil {
			t.Fatal(err)
		}
		dirty, ok := m.atIndex[indexKey(ref)]
		if !ok {
			t.Fatalf("index %s was not put", ref)
		}
		for _, d := range ds {
			if slices.Contains(dirty, chunkKey(r.ChunkName(d))) {
				t.Fatalf("index %s was written while chunk %s was not durable", ref, d)
			}
		}
	}

	r1, s1 := open()
	defer r1.Close()
	r2, s2 := open()
	a1, a2 := put(r1, 1), put(r1, 2)
	y := put(r2, 3)
	s1.takeSyncs()
	// r1 names a chunk r2 put and has not synced: r2's live marker makes r1 sync the file system.
	commit(r1, a1, y)
	if got := s1.takeSyncs(); !slices.Equal(got, []string{"sync"}) {
		t.Fatalf("commit with another live writer: syncs %q, want one file-system sync", got)
	}
	if c := countMarkers(t, dir); c != 2 {
		t.Fatalf("%d markers after the commit, want both live writers'", c)
	}
	// r2 closes cleanly: r1 is alone and syncs only its own files.
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	if got := s2.takeSyncs(); !slices.Equal(got, []string{"syncown"}) {
		t.Fatalf("clean close: syncs %q, want its own files only", got)
	}
	a3 := put(r1, 4)
	commit(r1, a3, a2, y)
	if got := s1.takeSyncs(); !slices.Equal(got, []string{"syncown"}) {
		t.Fatalf("commit of the only writer: syncs %q, want its own files only", got)
	}
	// r3 puts a chunk and dies (its lock goes, its marker stays): r1's next commit naming it
	// syncs the file system and removes the dead writer's marker; the one after is alone again.
	r3, _ := open()
	z := put(r3, 5)
	if err := r3.store.Close(); err != nil {
		t.Fatal(err)
	}
	commit(r1, z, a1)
	if got := s1.takeSyncs(); !slices.Equal(got, []string{"sync"}) {
		t.Fatalf("commit after a writer died: syncs %q, want one file-system sync", got)
	}
	if c := countMarkers(t, dir); c != 1 {
		t.Fatalf("%d markers after the commit, want only r1's", c)
	}
	a4 := put(r1, 6)
	commit(r1, a4, z)
	if got := s1.takeSyncs(); !slices.Equal(got, []string{"syncown"}) {
		t.Fatalf("commit once the dead marker is gone: syncs %q, want its own files only", got)
	}
}
