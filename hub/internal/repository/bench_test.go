package repository

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/shared/chunk"
)

// benchData is a 4 MiB slot of each kind the benchmarks measure: random data (the agent stores
// it raw) and compressible text (stored with zstd).
var benchKinds = []struct {
	name string
	gen  func(seed uint64, n int) []byte
}{
	{"random-raw", randomData},
	{"compressible-zstd", textData},
}

// BenchmarkPutChunk measures PutChunk of distinct 4 MiB chunks, each written durably (new), and
// of chunks the repository holds already (existing: verification only, no write). Throughput is
// in plaintext bytes.
func BenchmarkPutChunk(b *testing.B) {
	for _, kind := range benchKinds {
		base := kind.gen(1, DefaultChunkSize)
		b.Run(kind.name+"/new", func(b *testing.B) {
			l := newRepo(b, 0)
			b.SetBytes(DefaultChunkSize)
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				plain := base
				binary.LittleEndian.PutUint64(plain, uint64(i)) // a new chunk every time
				d, blob := chunk.Sum(plain), agentFrame(b, plain)
				b.StartTimer()
				if stored, err := l.PutChunk(b.Context(), d, blob); err != nil || !stored {
					b.Fatalf("PutChunk = %v, %v", stored, err)
				}
			}
		})
		b.Run(kind.name+"/existing", func(b *testing.B) {
			l := newRepo(b, 0)
			d, blob := chunk.Sum(base), agentFrame(b, base)
			if _, err := l.PutChunk(b.Context(), d, blob); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(DefaultChunkSize)
			for b.Loop() {
				if stored, err := l.PutChunk(b.Context(), d, blob); err != nil || stored {
					b.Fatalf("PutChunk = %v, %v", stored, err)
				}
			}
		})
	}
}

// BenchmarkReadChunk measures ReadChunk of a 4 MiB chunk from a hot page cache, into a reused
// buffer, single-threaded and from all CPUs. Throughput is in plaintext bytes.
func BenchmarkReadChunk(b *testing.B) {
	for _, kind := range benchKinds {
		plain := kind.gen(2, DefaultChunkSize)
		l := newRepo(b, 0)
		d := chunk.Sum(plain)
		if _, err := l.PutChunk(b.Context(), d, agentFrame(b, plain)); err != nil {
			b.Fatal(err)
		}
		b.Run(kind.name, func(b *testing.B) {
			b.SetBytes(DefaultChunkSize)
			buf := make([]byte, DefaultChunkSize)
			for b.Loop() {
				out, err := l.ReadChunk(b.Context(), d, buf)
				if err != nil || len(out) != DefaultChunkSize {
					b.Fatalf("ReadChunk: %d bytes, %v", len(out), err)
				}
			}
		})
		b.Run(kind.name+"/parallel", func(b *testing.B) {
			b.SetBytes(DefaultChunkSize)
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, DefaultChunkSize)
				for pb.Next() {
					if _, err := l.ReadChunk(b.Context(), d, buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// benchModes are the repository modes the encryption benchmark compares.
var benchModes = []struct {
	name string
	open func(b *testing.B) *Repository
}{
	{"plain", func(b *testing.B) *Repository { return newRepo(b, 0) }},
	{"encrypted", func(b *testing.B) *Repository { r, _ := newEncryptedRepo(b, 0, "bench"); return r }},
}

// BenchmarkChunkEncryption states the cost of encryption at rest: PutChunk of a new 4 MiB chunk
// (written durably) and ReadChunk of it back, in a plain and in an encrypted repository, and
// ReadChunk alone from a hot page cache, where the cipher's share is largest. Throughput is in
// plaintext bytes; the ratio encrypted/plain of ns/op is the cost.
func BenchmarkChunkEncryption(b *testing.B) {
	for _, kind := range benchKinds {
		base := kind.gen(3, DefaultChunkSize)
		for _, mode := range benchModes {
			b.Run(kind.name+"/write+read/"+mode.name, func(b *testing.B) {
				l := mode.open(b)
				buf := make([]byte, DefaultChunkSize)
				b.SetBytes(DefaultChunkSize)
				for i := 0; b.Loop(); i++ {
					b.StopTimer()
					plain := base
					binary.LittleEndian.PutUint64(plain, uint64(i))
					d, blob := chunk.Sum(plain), agentFrame(b, plain)
					b.StartTimer()
					if stored, err := l.PutChunk(b.Context(), d, blob); err != nil || !stored {
						b.Fatalf("PutChunk = %v, %v", stored, err)
					}
					if out, err := l.ReadChunk(b.Context(), d, buf); err != nil || len(out) != DefaultChunkSize {
						b.Fatalf("ReadChunk: %d bytes, %v", len(out), err)
					}
				}
			})
			b.Run(kind.name+"/read/"+mode.name, func(b *testing.B) {
				l := mode.open(b)
				d := chunk.Sum(base)
				if _, err := l.PutChunk(b.Context(), d, agentFrame(b, base)); err != nil {
					b.Fatal(err)
				}
				buf := make([]byte, DefaultChunkSize)
				b.SetBytes(DefaultChunkSize)
				for b.Loop() {
					if out, err := l.ReadChunk(b.Context(), d, buf); err != nil || len(out) != DefaultChunkSize {
						b.Fatalf("ReadChunk: %d bytes, %v", len(out), err)
					}
				}
			})
		}
	}
}

// BenchmarkCommitDurability measures a backup's write path in each durability mode: 16 new
// random 4 MiB chunks (stored raw, as the agent sends them) and the index that names them.
// Throughput is in plaintext bytes.
func BenchmarkCommitDurability(b *testing.B) {
	const n = 16
	base := randomData(3, DefaultChunkSize)
	for _, mode := range []Durability{DurabilityChunk, DurabilityCommit} {
		b.Run(string(mode), func(b *testing.B) {
			l, err := InitDir(b.Context(), filepath.Join(b.TempDir(), "repo"), 0, nil, WithDurability(mode))
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			b.SetBytes(n * DefaultChunkSize)
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				idx, err := fidx.New(n*DefaultChunkSize, DefaultChunkSize)
				if err != nil {
					b.Fatal(err)
				}
				blobs := make([][]byte, n)
				for j := range n {
					plain := base
					binary.LittleEndian.PutUint64(plain, uint64(i*n+j))
					idx.Digests[j], blobs[j] = chunk.Sum(plain), agentFrame(b, plain)
				}
				b.StartTimer()
				for j := range n {
					if _, err := l.PutChunk(b.Context(), idx.Digests[j], blobs[j]); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := l.WriteIndex(b.Context(), IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: fmt.Sprintf("bk-%d", i)}, idx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
