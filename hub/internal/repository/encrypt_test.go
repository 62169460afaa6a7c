package repository

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/hub/internal/repository/store/local"
	"github.com/sendense/sendense/shared/chunk"
)

// testKDF keeps argon2id cheap in tests; the slot records it, so opening uses it too.
var testKDF = KDF{Name: "argon2id", Time: 1, MemoryKiB: 64, Threads: 1}

// newEncryptedRepo creates an encrypted repository whose first slot opens with password.
func newEncryptedRepo(t testing.TB, chunkSize int64, password string) (*Repository, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	r, err := InitDir(context.Background(), dir, chunkSize, nil, Encrypt(), WithSecret([]byte(password+"\n")), WithKDFCost(testKDF))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r, dir
}

func reopen(t testing.TB, dir string, secret []byte) (*Repository, error) {
	t.Helper()
	r, err := OpenDir(context.Background(), dir, nil, WithSecret(secret), WithKDFCost(testKDF))
	if err == nil {
		t.Cleanup(func() { _ = r.Close() })
	}
	return r, err
}

// distinctive returns compressible data carrying marker many times, so that a plaintext leak of
// either the raw or (short runs of) the compressed form would show it.
func distinctive(marker string, n int) []byte {
	b := bytes.Repeat([]byte(marker+" "), n/(len(marker)+1)+1)
	return b[:n]
}

// walkFiles returns every regular file under dir with its content.
func walkFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Everything the repository stores is sealed: no plaintext, no plaintext digest, no VM id in
// any file's content; chunk files are named by keyed digest; and everything reads back.
func TestEncryptedRoundTrip(t *testing.T) {
	ctx := t.Context()
	const cs = 64 * kib
	r, dir := newEncryptedRepo(t, cs, "correct horse")
	if !r.Encrypted() || r.UnlockedBy() == "" {
		t.Fatalf("Encrypted %v, unlocked by %q", r.Encrypted(), r.UnlockedBy())
	}
	plains := [][]byte{distinctive("SECRET-ZSTD-MARKER", cs), randomData(7, cs), distinctive("SECRET-SHORT-RAW", 1000)}
	blobs := [][]byte{frame(t, chunk.CodecZstd, plains[0]), frame(t, chunk.CodecRaw, plains[1]), frame(t, chunk.CodecRaw, plains[2])}
	idx, err := fidx.New(2*cs+1000, cs)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range plains {
		d := chunk.Sum(p)
		if stored, err := r.PutChunk(ctx, d, blobs[i]); !stored || err != nil {
			t.Fatalf("PutChunk %d = %v, %v", i, stored, err)
		}
		if stored, err := r.PutChunk(ctx, d, blobs[i]); stored || err != nil {
			t.Fatalf("PutChunk %d again = %v, %v: equal chunks must deduplicate", i, stored, err)
		}
		idx.Digests[i] = d
	}
	ref := IndexRef{VMUUID: "5012abcd-aaaa-bbbb-cccc-SECRETVMUUID", DiskID: "disk-2000", BackupID: "bk-1"}
	idxDigest, err := r.WriteIndex(ctx, ref, idx)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := r.WriteIndex(ctx, ref, idx); err != nil || again != idxDigest {
		t.Fatalf("same index again = %q, %v", again, err)
	}
	other := idx.Clone()
	other.Digests[0] = other.Digests[1]
	if _, err := r.WriteIndex(ctx, ref, other); !errors.Is(err, ErrIndexExists) {
		t.Fatalf("a different index under the same reference: %v", err)
	}
	cfg := []byte(`{"name":"SECRET-VM-NAME","num_cpu":2}`)
	cfgDigest, err := r.WriteVMConfig(ctx, ref.VMUUID, ref.BackupID, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.WriteVMConfig(ctx, ref.VMUUID, ref.BackupID, cfg); err != nil {
		t.Fatalf("same configuration again: %v", err)
	}

	for p, b := range walkFiles(t, dir) {
		for _, leak := range []string{"SECRET", "correct horse", chunk.Sum(plains[0]).String()} {
			if bytes.Contains(b, []byte(leak)) {
				t.Errorf("%s holds %q", p, leak)
			}
		}
		rel, _ := filepath.Rel(dir, p)
		for _, pl := range plains {
			if strings.Contains(rel, chunk.Sum(pl).String()) {
				t.Errorf("file %s is named by a plaintext digest", rel)
			}
		}
		if strings.HasPrefix(rel, "chunks/") {
			h, _, err := chunk.OpenBlob(b)
			if err != nil || !h.Sealed() {
				t.Errorf("chunk file %s: sealed %v, %v", rel, h.Sealed(), err)
			}
		}
	}

	// Reopened with the password, everything reads back.
	r2, err := reopen(t, dir, []byte("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range plains {
		got, err := r2.ReadChunk(ctx, chunk.Sum(p), nil)
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("ReadChunk %d: %d bytes, %v", i, len(got), err)
		}
	}
	back, err := r2.ReadIndex(ctx, ref)
	if err != nil || back.Digests[0] != idx.Digests[0] || back.Digests[2] != idx.Digests[2] {
		t.Fatalf("ReadIndex = %v", err)
	}
	if b, err := r2.ReadVMConfig(ctx, ref.VMUUID, ref.BackupID, cfgDigest); err != nil || !bytes.Equal(b, cfg) {
		t.Fatalf("ReadVMConfig = %q, %v", b, err)
	}
	missing, err := r2.MissingChunks(ctx, []chunk.Digest{chunk.Sum(plains[0]), chunk.Sum([]byte("absent"))})
	if err != nil || len(missing) != 1 || missing[0] != chunk.Sum([]byte("absent")) {
		t.Fatalf("MissingChunks = %v, %v", missing, err)
	}
	// The walk reports keyed names, which is what ChunkName maps digests to.
	names := map[chunk.Digest]bool{}
	if err := r2.WalkChunks(ctx, func(n chunk.Digest, _ int64, _ time.Time) error { names[n] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, p := range plains {
		if d := chunk.Sum(p); !names[r2.ChunkName(d)] || names[d] || r2.ChunkName(d) == d {
			t.Fatalf("walk %v: the name of %s is not its keyed digest", names, d)
		}
	}
}

// A flipped bit in any sealed object, or an object moved under another's name, fails its read
// with the damage sentinel and the object's name.
func TestEncryptedDamage(t *testing.T) {
	ctx := t.Context()
	const cs = 64 * kib
	r, dir := newEncryptedRepo(t, cs, "pw")
	a, b := distinctive("chunk-a", cs), distinctive("chunk-b", cs)
	da, db := chunk.Sum(a), chunk.Sum(b)
	for _, p := range [][]byte{a, b} {
		if _, err := r.PutChunk(ctx, chunk.Sum(p), frame(t, chunk.CodecZstd, p)); err != nil {
			t.Fatal(err)
		}
	}
	idx, _ := fidx.New(2*cs, cs)
	idx.Digests[0], idx.Digests[1] = da, db
	ref1 := IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: "bk-1"}
	ref2 := IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: "bk-2"}
	idx2 := idx.Clone()
	idx2.Digests[1] = da
	for ref, x := range map[IndexRef]*fidx.Index{ref1: idx, ref2: idx2} {
		if _, err := r.WriteIndex(ctx, ref, x); err != nil {
			t.Fatal(err)
		}
	}
	cfgDigest, err := r.WriteVMConfig(ctx, "vm", "bk-1", []byte(`{"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	path := func(key string) string { return filepath.Join(dir, filepath.FromSlash(key)) }

	t.Run("chunk swapped under another name", func(t *testing.T) {
		orig, _ := os.ReadFile(path(r.keyOf(db)))
		other, _ := os.ReadFile(path(r.keyOf(da)))
		overwrite(t, path(r.keyOf(db)), other)
		defer overwrite(t, path(r.keyOf(db)), orig)
		// Refused by the seal (the name is authenticated), before the digest would refuse it.
		_, err := r.ReadChunk(ctx, db, nil)
		if !errors.Is(err, ErrChunkDamaged) || !strings.Contains(err.Error(), db.String()) || !strings.Contains(err.Error(), "authenticated decryption") {
			t.Fatalf("ReadChunk of a swapped blob: %v", err)
		}
	})
	t.Run("index swapped under another backup", func(t *testing.T) {
		orig, _ := os.ReadFile(path(indexKey(ref2)))
		other, _ := os.ReadFile(path(indexKey(ref1)))
		overwrite(t, path(indexKey(ref2)), other)
		defer overwrite(t, path(indexKey(ref2)), orig)
		if _, err := r.ReadIndex(ctx, ref2); !errors.Is(err, ErrIndexDamaged) || !strings.Contains(err.Error(), ref2.String()) {
			t.Fatalf("ReadIndex of a swapped index: %v", err)
		}
	})
	// Every byte position class of each object: header, nonce, ciphertext, tag.
	for _, tc := range []struct {
		name string
		key  string
		read func() error
		want error
		what string
	}{
		{"chunk", r.keyOf(da), func() error { _, err := r.ReadChunk(ctx, da, nil); return err }, ErrChunkDamaged, da.String()},
		{"index", indexKey(ref1), func() error { _, err := r.ReadIndex(ctx, ref1); return err }, ErrIndexDamaged, ref1.String()},
		{"vm config", VMConfigKey("vm", "bk-1"), func() error { _, err := r.ReadVMConfig(ctx, "vm", "bk-1", cfgDigest); return err }, ErrVMConfigDamaged, VMConfigKey("vm", "bk-1")},
	} {
		orig, err := os.ReadFile(path(tc.key))
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range []int{5, 9, 14, 25, len(orig) / 2, len(orig) - 1} {
			t.Run(tc.name, func(t *testing.T) {
				flipByte(t, path(tc.key), off)
				defer overwrite(t, path(tc.key), orig)
				err := tc.read()
				if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.what) {
					t.Fatalf("bit flipped at %d of %d: %v, want %v naming %s", off, len(orig), err, tc.want, tc.what)
				}
			})
		}
		if err := tc.read(); err != nil {
			t.Fatalf("%s restored: %v", tc.name, err)
		}
	}

	// Quarantine moves a damaged chunk aside under its keyed name, and a fresh upload heals it.
	flipByte(t, path(r.keyOf(da)), -1)
	key, err := r.QuarantineChunk(ctx, da)
	if err != nil || strings.Contains(key, da.String()) || !strings.Contains(key, r.ChunkName(da).String()) {
		t.Fatalf("QuarantineChunk = %q, %v", key, err)
	}
	if has, _ := r.HasChunk(ctx, da); has {
		t.Fatal("a quarantined chunk is still there")
	}
	if stored, err := r.PutChunk(ctx, da, frame(t, chunk.CodecZstd, a)); !stored || err != nil {
		t.Fatalf("upload again: %v, %v", stored, err)
	}
	if got, err := r.ReadChunk(ctx, da, nil); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("healed chunk: %v", err)
	}
	// A sound chunk is put back: QuarantineChunk opens it with the key.
	if _, err := r.QuarantineChunk(ctx, db); !errors.Is(err, ErrChunkSound) {
		t.Fatalf("QuarantineChunk of a sound chunk: %v", err)
	}
}

// recordingStore records every key read from a store.
type recordingStore struct {
	store.Store
	mu    sync.Mutex
	reads []string
}

func (s *recordingStore) Get(ctx context.Context, key string, dst []byte, limit int64) ([]byte, error) {
	s.mu.Lock()
	s.reads = append(s.reads, key)
	s.mu.Unlock()
	return s.Store.Get(ctx, key, dst, limit)
}

// A wrong password, a missing one, or another repository's exported key is refused by Open,
// which reads nothing but repo.json and the key slots to find out.
func TestEncryptedUnlockRefused(t *testing.T) {
	ctx := t.Context()
	r, dir := newEncryptedRepo(t, 64*kib, "right")
	p := distinctive("x", 64*kib)
	if _, err := r.PutChunk(ctx, chunk.Sum(p), frame(t, chunk.CodecRaw, p)); err != nil {
		t.Fatal(err)
	}
	other, _ := newEncryptedRepo(t, 64*kib, "right")
	otherKey, err := other.ExportKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		opts   []Option
		want   error
		reason string
	}{
		{"wrong password", []Option{WithSecret([]byte("wrong"))}, ErrWrongKey, ""},
		{"no password", nil, ErrKeyRequired, ""},
		{"a key file of no slot", []Option{WithSecret(must(GenerateKeyFile()))}, ErrWrongKey, ""},
		{"another repository's exported key", []Option{WithSecret([]byte(otherKey))}, ErrWrongKey, other.ID()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := local.Open(ctx, dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			rec := &recordingStore{Store: s}
			defer rec.Close()
			_, err = Open(ctx, rec, tc.opts...)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
			for _, k := range rec.reads {
				if k != descriptorKey && !strings.HasPrefix(k, keyPrefix) {
					t.Fatalf("Open read %s before refusing the key", k)
				}
			}
		})
	}
	if _, err := reopen(t, dir, []byte("right\r\n")); err != nil {
		t.Fatalf("the right password with a CRLF: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Key slots: added passwords and key files open the repository, removing the last slot is
// refused, a change rewraps without re-encrypting, and the exported key opens it and adds a slot.
func TestKeySlots(t *testing.T) {
	ctx := t.Context()
	r, dir := newEncryptedRepo(t, 64*kib, "first")
	p := distinctive("slot data", 64*kib)
	d := chunk.Sum(p)
	if _, err := r.PutChunk(ctx, d, frame(t, chunk.CodecZstd, p)); err != nil {
		t.Fatal(err)
	}
	readable := func(secret []byte) error {
		r2, err := reopen(t, dir, secret)
		if err != nil {
			return err
		}
		got, err := r2.ReadChunk(ctx, d, nil)
		if err == nil && !bytes.Equal(got, p) {
			err = errors.New("wrong bytes")
		}
		return err
	}
	first := r.UnlockedBy()
	if err := r.RemoveKeySlot(ctx, first); !errors.Is(err, ErrLastKeySlot) {
		t.Fatalf("removing the only slot: %v", err)
	}
	keyFile := must(GenerateKeyFile())
	kf, err := r.AddKeySlot(ctx, keyFile)
	if err != nil || kf.Kind != SlotKeyFile {
		t.Fatalf("AddKeySlot(key file) = %+v, %v", kf, err)
	}
	pw, err := r.AddKeySlot(ctx, []byte("second\n"))
	if err != nil || pw.Kind != SlotPassword || pw.KDF.Name != "argon2id" || pw.KDF.Time != testKDF.Time || len(pw.KDF.Salt) != 16 {
		t.Fatalf("AddKeySlot(password) = %+v, %v", pw, err)
	}
	for _, s := range [][]byte{[]byte("first"), keyFile, []byte("second")} {
		if err := readable(s); err != nil {
			t.Fatalf("open with %q: %v", s, err)
		}
	}
	slots, err := r.KeySlots(ctx)
	if err != nil || len(slots) != 3 {
		t.Fatalf("KeySlots = %d, %v", len(slots), err)
	}

	// change: "first" becomes "third"; the data is untouched and reads with the new password.
	before := listing(t, filepath.Join(dir, "chunks"))
	nw, err := r.ChangeKey(ctx, first, []byte("third"))
	if err != nil {
		t.Fatal(err)
	}
	assertUnchanged(t, before, filepath.Join(dir, "chunks"))
	if err := readable([]byte("first")); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("the old password after a change: %v", err)
	}
	if err := readable([]byte("third")); err != nil {
		t.Fatalf("the new password: %v", err)
	}

	// Down to one slot, which cannot go.
	for _, id := range []string{kf.ID, pw.ID} {
		if err := r.RemoveKeySlot(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.RemoveKeySlot(ctx, nw.ID); !errors.Is(err, ErrLastKeySlot) {
		t.Fatalf("removing the last slot: %v", err)
	}
	if err := r.RemoveKeySlot(ctx, "slot-nonexistent"); !errors.Is(err, ErrKeySlotNotFound) {
		t.Fatalf("removing an unknown slot: %v", err)
	}
	if err := readable(keyFile); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("a removed key file: %v", err)
	}

	// Escrow: the exported key opens the repository without a slot and adds one.
	exported, err := r.ExportKey()
	if err != nil {
		t.Fatal(err)
	}
	r3, err := reopen(t, dir, []byte(exported+"\n"))
	if err != nil {
		t.Fatalf("open with the exported key: %v", err)
	}
	if _, err := r3.AddKeySlot(ctx, []byte("recovered")); err != nil {
		t.Fatal(err)
	}
	if err := readable([]byte("recovered")); err != nil {
		t.Fatalf("the password added with the exported key: %v", err)
	}
	if _, err := r3.AddKeySlot(ctx, []byte(exported)); err == nil {
		t.Fatal("the exported master key was accepted as a slot secret")
	}
}

// A plain repository refuses sealed objects and key operations.
func TestPlainRepositoryRefusesKeys(t *testing.T) {
	r := newRepo(t, 64*kib)
	if r.Encrypted() {
		t.Fatal("plain repository reports encryption")
	}
	if _, err := r.AddKeySlot(t.Context(), []byte("x")); !errors.Is(err, ErrNotEncrypted) {
		t.Fatalf("AddKeySlot: %v", err)
	}
	if _, err := r.ExportKey(); !errors.Is(err, ErrNotEncrypted) {
		t.Fatalf("ExportKey: %v", err)
	}
}

// A damaged slot file, or a slot whose parameters were tampered with, keeps no other slot from
// opening the repository, is listed, and can be removed.
func TestDamagedKeySlot(t *testing.T) {
	ctx := t.Context()
	r, dir := newEncryptedRepo(t, 64*kib, "good")
	good := r.UnlockedBy()
	if err := os.WriteFile(filepath.Join(dir, "keys", "slot-garbage.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	greedy := &KeySlot{ID: "slot-greedy", Kind: SlotPassword, KDF: KDF{Name: "argon2id", Salt: make([]byte, 16), Time: 1, MemoryKiB: 1 << 30, Threads: 1}, Wrapped: make([]byte, 60)}
	if err := putSlot(ctx, r.store, greedy); err != nil {
		t.Fatal(err)
	}
	if _, err := reopen(t, dir, []byte("good")); err != nil {
		t.Fatalf("the good slot with a damaged and a greedy one beside it: %v", err)
	}
	_, err := reopen(t, dir, []byte("bad"))
	if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), "slot-garbage") || !strings.Contains(err.Error(), "out of bounds") {
		t.Fatalf("wrong password: %v", err)
	}
	slots, err := r.KeySlots(ctx)
	if err != nil || len(slots) != 3 || !slices.ContainsFunc(slots, func(s KeySlot) bool { return s.ID == "slot-garbage" && s.Kind == SlotDamaged }) {
		t.Fatalf("KeySlots = %+v, %v", slots, err)
	}
	for _, id := range []string{"slot-garbage", "slot-greedy"} {
		if err := r.RemoveKeySlot(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.RemoveKeySlot(ctx, good); !errors.Is(err, ErrLastKeySlot) {
		t.Fatalf("removing the last good slot: %v", err)
	}
}
