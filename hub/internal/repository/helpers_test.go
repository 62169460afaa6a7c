package repository

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/sendense/sendense/hub/internal/repository/store/local"
	"github.com/sendense/sendense/shared/chunk"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

// newRepo creates a repository with the given chunk size (0: the 4 MiB default) in a temp dir.
func newRepo(t testing.TB, chunkSize int64) *Repository {
	t.Helper()
	l, err := InitDir(context.Background(), filepath.Join(t.TempDir(), "repo"), chunkSize, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// root is the directory of a local repository.
func root(l *Repository) string { return l.store.(*local.Store).Dir() }

// randomData returns n incompressible bytes, different for every seed.
func randomData(seed uint64, n int) []byte {
	b := make([]byte, n)
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	rand.NewChaCha8(s).Read(b)
	return b
}

// textData returns n bytes of compressible pseudo-text (about 3-4× with zstd's fastest level),
// different for every seed.
func textData(seed uint64, n int) []byte {
	words := strings.Fields("backup restore snapshot vmdk datastore chunk index slot digest repository " +
		"agent hub vcenter esxi changed block tracking incremental full verify retention the of and a to")
	rng := rand.New(rand.NewPCG(seed, 99))
	var b bytes.Buffer
	b.Grow(n + 16)
	for b.Len() < n {
		b.WriteString(words[rng.IntN(len(words))])
		if rng.IntN(12) == 0 {
			fmt.Fprintf(&b, " %d\n", rng.IntN(100000))
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

var encoder = sync.OnceValue(func() *zstd.Encoder {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		panic(err)
	}
	return enc
})

// frame returns the blob of plain with codec (zstd compresses with the fastest level, like the
// agent).
func frame(t testing.TB, codec chunk.Codec, plain []byte) []byte {
	t.Helper()
	payload := plain
	if codec == chunk.CodecZstd {
		payload = encoder().EncodeAll(plain, nil)
	}
	blob, err := chunk.AppendBlob(nil, codec, len(plain), payload)
	if err != nil {
		t.Fatal(err)
	}
	return blob
}

// agentFrame frames plain the way an agent should: zstd when it saves space, raw otherwise.
func agentFrame(t testing.TB, plain []byte) []byte {
	t.Helper()
	payload := encoder().EncodeAll(plain, nil)
	codec := chunk.CodecZstd
	if len(payload) >= len(plain) {
		codec, payload = chunk.CodecRaw, plain
	}
	blob, err := chunk.AppendBlob(nil, codec, len(plain), payload)
	if err != nil {
		t.Fatal(err)
	}
	return blob
}

// listing describes every file and directory under root (path, mode, size, content hash), so
// that a test can assert that an operation changed nothing.
func listing(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%s %v", rel, fi.Mode())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %d %s", fi.Size(), chunk.Sum(b))
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func assertUnchanged(t testing.TB, before []string, root string) {
	t.Helper()
	if after := listing(t, root); !slices.Equal(before, after) {
		t.Fatalf("repository changed:\nbefore %q\n after %q", before, after)
	}
}

// flipByte XORs the byte at off (negative: from the end) of a read-only file with 0x01.
func flipByte(t testing.TB, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += len(b)
	}
	b[off] ^= 0x01
	overwrite(t, path, b)
}

// overwrite replaces the content of a (read-only) file in place.
func overwrite(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// sealedFrame reframes the payload of blob as a sealed blob (FlagSealed, the payload extended by
// the nonce and tag room), well formed but sealed by nobody: what a hostile agent could upload.
func sealedFrame(t *testing.T, blob []byte) []byte {
	t.Helper()
	h, payload, err := chunk.OpenBlob(blob)
	if err != nil {
		t.Fatal(err)
	}
	payload = append(bytes.Clone(payload), make([]byte, chunk.SealOverhead)...)
	sh, err := chunk.NewSealedHeader(h.Codec, int(h.PlaintextLen), payload)
	if err != nil {
		t.Fatal(err)
	}
	return append(chunk.EncodeHeader(sh), payload...)
}
