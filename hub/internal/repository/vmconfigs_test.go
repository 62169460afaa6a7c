package repository

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A VM configuration is stored durably under its key, immutable like an index, read back only
// when it matches the catalog's digest, and invisible to the index walk that GC and check use.
func TestVMConfigBlob(t *testing.T) {
	ctx := t.Context()
	r := newRepo(t, 0)
	const vm, bk = "5012abcd-1111-2222-3333-444455556666", "bk-1"
	data := []byte(`{"version":1,"num_cpu":2}`)
	digest, err := r.WriteVMConfig(ctx, vm, bk, data)
	sum := sha256.Sum256(data)
	if err != nil || digest != hex.EncodeToString(sum[:]) {
		t.Fatalf("WriteVMConfig = %q, %v", digest, err)
	}
	onDisk, err := os.ReadFile(filepath.Join(root(r), filepath.FromSlash(VMConfigKey(vm, bk))))
	if err != nil || string(onDisk) != string(data) {
		t.Fatalf("file under the key: %q, %v", onDisk, err)
	}
	if d, err := r.WriteVMConfig(ctx, vm, bk, data); err != nil || d != digest {
		t.Fatalf("same content again: %q, %v", d, err)
	}
	if _, err := r.WriteVMConfig(ctx, vm, bk, []byte(`{"version":1,"num_cpu":3}`)); !errors.Is(err, ErrVMConfigExists) {
		t.Fatalf("different content: %v", err)
	}
	if _, err := r.WriteVMConfig(ctx, "../x", bk, data); !errors.Is(err, ErrInvalidRef) {
		t.Fatalf("bad uuid: %v", err)
	}
	if b, err := r.ReadVMConfig(ctx, vm, bk, digest); err != nil || string(b) != string(data) {
		t.Fatalf("ReadVMConfig = %q, %v", b, err)
	}
	if _, err := r.ReadVMConfig(ctx, vm, bk, "00"+digest[2:]); !errors.Is(err, ErrVMConfigDamaged) {
		t.Fatalf("wrong digest: %v", err)
	}
	if _, err := r.ReadVMConfig(ctx, vm, "bk-2", digest); !errors.Is(err, ErrVMConfigNotFound) {
		t.Fatalf("missing: %v", err)
	}
	n := 0
	if err := r.WalkIndexes(ctx, func(IndexRef) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("the index walk saw %d entries (%v)", n, err)
	}
	if err := r.RemoveVMConfig(ctx, vm, bk); err != nil {
		t.Fatal(err)
	}
	if err := r.RemoveVMConfig(ctx, vm, bk); err != nil {
		t.Fatalf("removing again: %v", err)
	}
	if _, err := r.ReadVMConfig(ctx, vm, bk, digest); !errors.Is(err, ErrVMConfigNotFound) {
		t.Fatalf("after remove: %v", err)
	}
}
