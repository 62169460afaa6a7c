package repository

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/hub/internal/repository/store/s3"
	"github.com/sendense/sendense/hub/internal/repository/store/s3/s3test"
	"github.com/sendense/sendense/shared/chunk"
)

func chunkPath(r *Repository, d chunk.Digest) string {
	return filepath.Join(root(r), filepath.FromSlash(chunkKey(d)))
}

func quarantined(t *testing.T, r *Repository) []Quarantined {
	t.Helper()
	var out []Quarantined
	if err := r.WalkQuarantine(t.Context(), func(q Quarantined) error { out = append(out, q); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// A damaged chunk is moved out of the way: every existence check says it is missing, the next
// upload stores it again, and the damaged blob stays in quarantine, apart from the chunks.
func TestQuarantineDamagedChunk(t *testing.T) {
	ctx := t.Context()
	r := newRepo(t, 64*kib)
	plain := randomData(1, 64*kib)
	d := chunk.Sum(plain)
	blob := frame(t, chunk.CodecRaw, plain)
	if _, err := r.PutChunk(ctx, d, blob); err != nil {
		t.Fatal(err)
	}
	flipByte(t, chunkPath(r, d), -1)
	damaged, _ := os.ReadFile(chunkPath(r, d))
	if err := r.VerifyChunk(ctx, d); !errors.Is(err, ErrChunkDamaged) {
		t.Fatalf("verify: %v, want ErrChunkDamaged", err)
	}
	// Before: the damaged chunk counts as present, so a backup would reuse it.
	before := time.Now()
	key, err := r.QuarantineChunk(ctx, d)
	if err != nil || !strings.HasPrefix(key, "quarantine/"+d.String()+".") {
		t.Fatalf("QuarantineChunk = %q, %v", key, err)
	}
	if has, err := r.HasChunk(ctx, d); has || err != nil {
		t.Fatalf("HasChunk after quarantine = %v, %v", has, err)
	}
	if err := r.TouchChunk(ctx, d); !errors.Is(err, ErrChunkNotFound) {
		t.Fatalf("TouchChunk after quarantine: %v, want ErrChunkNotFound", err)
	}
	if m, err := r.MissingChunks(ctx, []chunk.Digest{d}); err != nil || len(m) != 1 {
		t.Fatalf("MissingChunks after quarantine = %v, %v", m, err)
	}
	if _, err := r.ReadChunk(ctx, d, nil); !errors.Is(err, ErrChunkNotFound) {
		t.Fatalf("ReadChunk after quarantine: %v, want ErrChunkNotFound", err)
	}
	if n, _, err := r.Stats(ctx); err != nil || n != 0 {
		t.Fatalf("Stats counts %d chunks, %v; a quarantined object is not a chunk", n, err)
	}
	qs := quarantined(t, r)
	if len(qs) != 1 || qs[0].Key != key || qs[0].Digest != d || qs[0].Size != int64(len(damaged)) || qs[0].At.Before(before.Add(-time.Second)) {
		t.Fatalf("quarantine holds %+v", qs)
	}
	if b, err := os.ReadFile(filepath.Join(root(r), filepath.FromSlash(key))); err != nil || !bytes.Equal(b, damaged) {
		t.Fatalf("the quarantined object is not the damaged blob: %v", err)
	}
	// The next backup of the same bytes stores them again.
	if stored, err := r.PutChunk(ctx, d, blob); err != nil || !stored {
		t.Fatalf("PutChunk after quarantine = %v, %v; want stored", stored, err)
	}
	if got, err := r.ReadChunk(ctx, d, nil); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("ReadChunk of the fresh copy: %v", err)
	}
	if _, err := r.QuarantineChunk(ctx, chunk.Sum([]byte("never stored"))); !errors.Is(err, ErrChunkNotFound) {
		t.Fatalf("QuarantineChunk of a missing chunk: %v, want ErrChunkNotFound", err)
	}
}

// A sound chunk is never quarantined: it is put back, and the caller learns it is sound.
func TestQuarantineSoundChunkPutsItBack(t *testing.T) {
	ctx := t.Context()
	r := newRepo(t, 64*kib)
	plain := textData(2, 64*kib)
	d := chunk.Sum(plain)
	if _, err := r.PutChunk(ctx, d, frame(t, chunk.CodecZstd, plain)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.QuarantineChunk(ctx, d); !errors.Is(err, ErrChunkSound) {
		t.Fatalf("QuarantineChunk of a sound chunk: %v, want ErrChunkSound", err)
	}
	if got, err := r.ReadChunk(ctx, d, nil); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("the sound chunk after a refused quarantine: %v", err)
	}
	if qs := quarantined(t, r); len(qs) != 0 {
		t.Fatalf("quarantine holds %+v", qs)
	}
}

// A verification saw the chunk damaged; before it quarantines, another process quarantined
// the damaged blob and a backup uploaded a good copy. The late quarantine must not take the
// good copy away.
func TestQuarantineSparesAGoodCopyUploadedMeanwhile(t *testing.T) {
	ctx := t.Context()
	a := newRepo(t, 64*kib)
	b, err := OpenDir(ctx, root(a), nil) // another process on the same repository
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	plain := randomData(3, 64*kib)
	d := chunk.Sum(plain)
	blob := frame(t, chunk.CodecRaw, plain)
	if _, err := a.PutChunk(ctx, d, blob); err != nil {
		t.Fatal(err)
	}
	flipByte(t, chunkPath(a, d), 30)
	if err := a.VerifyChunk(ctx, d); !errors.Is(err, ErrChunkDamaged) {
		t.Fatalf("verify: %v", err)
	}
	if _, err := b.QuarantineChunk(ctx, d); err != nil {
		t.Fatal(err)
	}
	if stored, err := b.PutChunk(ctx, d, blob); err != nil || !stored {
		t.Fatalf("re-upload = %v, %v", stored, err)
	}
	if _, err := a.QuarantineChunk(ctx, d); !errors.Is(err, ErrChunkSound) {
		t.Fatalf("the late quarantine: %v, want ErrChunkSound", err)
	}
	if got, err := a.ReadChunk(ctx, d, nil); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("the good copy after the late quarantine: %v", err)
	}
	if qs := quarantined(t, a); len(qs) != 1 {
		t.Fatalf("quarantine holds %d objects, want the damaged one only", len(qs))
	}
}

// Quarantines of a damaged chunk race with uploads of a good copy from another process. Nothing
// sound ever ends in quarantine, and once the uploads are done the chunk is either sound or
// absent (to be uploaded again), never damaged.
func TestQuarantineRacesUpload(t *testing.T) {
	ctx := t.Context()
	a := newRepo(t, 64*kib)
	b, err := OpenDir(ctx, root(a), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	plain := randomData(4, 64*kib)
	d := chunk.Sum(plain)
	blob := frame(t, chunk.CodecRaw, plain)
	for round := range 30 {
		if _, err := a.PutChunk(ctx, d, blob); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(chunkPath(a, d)); err == nil {
			flipByte(t, chunkPath(a, d), 40+round)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 2 {
			wg.Go(func() {
				<-start
				_, err := a.QuarantineChunk(ctx, d)
				if err != nil && !errors.Is(err, ErrChunkNotFound) && !errors.Is(err, ErrChunkSound) {
					t.Error(err)
				}
			})
		}
		wg.Go(func() {
			<-start
			if _, err := b.PutChunk(ctx, d, blob); err != nil {
				t.Error(err)
			}
		})
		close(start)
		wg.Wait()
		if err := a.VerifyChunk(ctx, d); err != nil && !errors.Is(err, ErrChunkNotFound) {
			t.Fatalf("round %d: after the race the chunk is %v", round, err)
		}
	}
	for _, q := range quarantined(t, a) {
		b, err := a.store.Get(context.Background(), q.Key, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.openStored(d, b, nil); !errors.Is(err, ErrChunkDamaged) {
			t.Fatalf("%s in quarantine is sound", q.Key)
		}
	}
}

// TestQuarantineUnderObjectLock: a damaged chunk whose version is retained (S3 Object Lock)
// cannot be deleted, but it is still moved out of the way: hidden under its key, kept in
// quarantine, and the next backup of its bytes stores a fresh copy instead of reusing it.
func TestQuarantineUnderObjectLock(t *testing.T) {
	ctx := t.Context()
	st, r := lockedRepository(t)
	plain := bytes.Repeat([]byte("retained"), 400)
	d := chunk.Sum(plain)
	good, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutChunk(ctx, d, good); err != nil {
		t.Fatal(err)
	}
	// The stored object goes bad: a new version with a flipped byte, retained like the first.
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 0xff
	if err := st.Put(ctx, r.keyOf(d), bad); err != nil {
		t.Fatal(err)
	}
	if err := st.Retain(ctx, r.keyOf(d), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadChunk(ctx, d, nil); !errors.Is(err, ErrChunkDamaged) {
		t.Fatalf("read of the damaged chunk: %v", err)
	}
	if _, err := r.QuarantineChunk(ctx, d); err != nil {
		t.Fatalf("quarantine of a retained chunk: %v", err)
	}
	if has, err := r.HasChunk(ctx, d); err != nil || has {
		t.Fatalf("after quarantine the chunk is still there (%v, %v): backups would reuse it", has, err)
	}
	if q := quarantined(t, r); len(q) != 1 || q[0].Digest != r.ChunkName(d) {
		t.Fatalf("quarantine holds %v", q)
	}
	if stored, err := r.PutChunk(ctx, d, good); err != nil || !stored {
		t.Fatalf("the next upload of the chunk: stored %v, %v", stored, err)
	}
	idx, err := fidx.New(64<<10, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	idx.Digests[0] = d
	if _, err := r.WriteIndex(ctx, IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: "job-new"}, idx); err != nil {
		t.Fatal(err)
	}
	if got, err := r.ReadChunk(ctx, d, nil); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("the chunk after its fresh upload: %v", err)
	}
}

// TestDamagedIndexUnderObjectLockIsReplaced: a damaged index or VM configuration whose versions
// are retained cannot be removed before their dates, which used to stop a copy's repair (and
// its policy's pruning) until then. It is hidden instead, written again, and reads sound; a
// sound one is left as it is.
func TestDamagedIndexUnderObjectLockIsReplaced(t *testing.T) {
	ctx := t.Context()
	st, r := lockedRepository(t)
	plain := bytes.Repeat([]byte("indexed!"), 8<<10)
	d := chunk.Sum(plain)
	blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutChunk(ctx, d, blob); err != nil {
		t.Fatal(err)
	}
	idx, err := fidx.New(64<<10, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	idx.Digests[0] = d
	const vm, backup = "4213f1a2-0000-0000-0000-0000000000aa", "bk-locked"
	ref := IndexRef{VMUUID: vm, DiskID: "disk-2000", BackupID: backup}
	if _, err := r.WriteIndex(ctx, ref, idx); err != nil {
		t.Fatal(err)
	}
	config := []byte(`{"name":"locked"}`)
	cfgDigest, err := r.WriteVMConfig(ctx, vm, backup, config)
	if err != nil {
		t.Fatal(err)
	}
	// Sound, each is left as it is.
	if err := r.RemoveDamagedIndex(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if err := r.RemoveDamagedVMConfig(ctx, vm, backup, cfgDigest); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadIndex(ctx, ref); err != nil {
		t.Fatalf("a sound index after RemoveDamagedIndex: %v", err)
	}
	// Retained (dates in real time, short: the objects outlive the test), then damaged: a new
	// version of garbage, retained like the first.
	until := time.Now().Add(30 * time.Second)
	for _, key := range []string{indexKey(ref), VMConfigKey(vm, backup)} {
		if err := st.Retain(ctx, key, until); err != nil {
			t.Fatal(err)
		}
		if err := st.Put(ctx, key, []byte("not what was written")); err != nil {
			t.Fatal(err)
		}
		if err := st.Retain(ctx, key, until); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.ReadIndex(ctx, ref); !errors.Is(err, ErrIndexDamaged) {
		t.Fatalf("read of the damaged index: %v", err)
	}
	if err := r.RemoveIndex(ctx, ref); !errors.Is(err, store.ErrRetained) {
		t.Fatalf("RemoveIndex of the retained index: %v, want ErrRetained", err)
	}
	if err := r.RemoveDamagedIndex(ctx, ref); err != nil {
		t.Fatalf("RemoveDamagedIndex under retention: %v", err)
	}
	if err := r.RemoveDamagedVMConfig(ctx, vm, backup, cfgDigest); err != nil {
		t.Fatalf("RemoveDamagedVMConfig under retention: %v", err)
	}
	if _, err := r.ReadIndex(ctx, ref); !errors.Is(err, ErrIndexNotFound) {
		t.Fatalf("read of the hidden index: %v, want ErrIndexNotFound", err)
	}
	if _, err := r.WriteIndex(ctx, ref, idx); err != nil {
		t.Fatalf("write of the index again: %v", err)
	}
	if got, err := r.ReadIndex(ctx, ref); err != nil || got.Digests[0] != d {
		t.Fatalf("the index written again: %v", err)
	}
	if _, err := r.WriteVMConfig(ctx, vm, backup, config); err != nil {
		t.Fatalf("write of the vm config again: %v", err)
	}
	if got, err := r.ReadVMConfig(ctx, vm, backup, cfgDigest); err != nil || !bytes.Equal(got, config) {
		t.Fatalf("the vm config written again: %q %v", got, err)
	}
	// The objects written again have no date yet: the backup is not taken for one retained
	// whole, even with its index dated again, so the next retention run dates them all.
	if err := st.Retain(ctx, indexKey(ref), until); err != nil {
		t.Fatal(err)
	}
	if got, err := r.BackupRetainedAllUntil(ctx, vm, backup, []string{"disk-2000"}); err != nil || !got.IsZero() {
		t.Fatalf("BackupRetainedAllUntil with the VM configuration undated: %v, %v; want zero", got, err)
	}
	if err := st.Retain(ctx, VMConfigKey(vm, backup), until); err != nil {
		t.Fatal(err)
	}
	if got, err := r.BackupRetainedAllUntil(ctx, vm, backup, []string{"disk-2000"}); err != nil || got.IsZero() {
		t.Fatalf("BackupRetainedAllUntil with every object dated: %v, %v", got, err)
	}
	if time.Now().After(until) {
		t.Fatal("the retention passed before the checks: the test proved nothing")
	}
}

// lockedRepository is a repository of 64 KiB chunks in a bucket of the tests' S3 server with
// Object Lock, in governance mode, and its store.
func lockedRepository(t *testing.T) (*s3.Store, *Repository) {
	t.Helper()
	st, err := s3.Open(t.Context(), s3test.LockedConfig(t, s3.LockGovernance), nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Init(t.Context(), st, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return st, r
}
