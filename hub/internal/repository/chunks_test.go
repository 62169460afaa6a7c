package repository

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/sendense/sendense/shared/chunk"
)

func TestPutReadRoundTrip(t *testing.T) {
	l := newRepo(t, 0) // 4 MiB slots
	for _, tc := range []struct {
		name      string
		plain     []byte
		blob      func(t testing.TB, plain []byte) []byte
		wantCodec chunk.Codec
	}{
		{"random 4 MiB stored raw", randomData(1, 4*mib), agentFrame, chunk.CodecRaw},
		{"compressible 4 MiB stored zstd", textData(2, 4*mib), agentFrame, chunk.CodecZstd},
		{"short last slot, random", randomData(3, 1*mib+123), agentFrame, chunk.CodecRaw},
		{"short last slot, compressible", textData(4, 1*mib+511), agentFrame, chunk.CodecZstd},
		{"one byte raw", []byte{7}, agentFrame, chunk.CodecRaw},
		{"mostly zero slot", append(make([]byte, 4*mib-1), 1), agentFrame, chunk.CodecZstd},
		{"random forced zstd", randomData(5, 1*mib), func(t testing.TB, p []byte) []byte { return frame(t, chunk.CodecZstd, p) }, chunk.CodecZstd},
		{"zstd stream frame, no content size, 8 MiB window", textData(7, 1*mib), func(t testing.TB, p []byte) []byte {
			return rawBlob(t, chunk.CodecZstd, len(p), zstdStreamOf(t, p))
		}, chunk.CodecZstd},
		{"compressible forced raw", textData(6, 1*mib), func(t testing.TB, p []byte) []byte { return frame(t, chunk.CodecRaw, p) }, chunk.CodecRaw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			d := chunk.Sum(tc.plain)
			blob := tc.blob(t, tc.plain)
			if h, _ := chunk.ParseHeader(blob); h.Codec != tc.wantCodec {
				t.Fatalf("test blob has codec %v, want %v", h.Codec, tc.wantCodec)
			}
			stored, err := l.PutChunk(ctx, d, blob)
			if err != nil || !stored {
				t.Fatalf("PutChunk = %v, %v; want stored", stored, err)
			}
			// The chunk sits at chunks/ab/cd/<hex>, read-only, holding exactly the blob.
			hexd := d.String()
			p := filepath.Join(root(l), "chunks", hexd[:2], hexd[2:4], hexd)
			onDisk, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(onDisk, blob) {
				t.Fatalf("stored file %s: %v (equal to the blob: %v)", p, err, bytes.Equal(onDisk, blob))
			}
			if fi, _ := os.Stat(p); fi.Mode().Perm()&0o222 != 0 {
				t.Fatalf("chunk file mode %v is writable", fi.Mode())
			}

			stored, err = l.PutChunk(ctx, d, tc.blob(t, tc.plain))
			if err != nil || stored {
				t.Fatalf("second PutChunk = %v, %v; want not stored, no error", stored, err)
			}
			if ok, err := l.HasChunk(t.Context(), d); !ok || err != nil {
				t.Fatalf("HasChunk = %v, %v", ok, err)
			}
			for _, dst := range [][]byte{nil, make([]byte, 10, 5*mib)} {
				got, err := l.ReadChunk(ctx, d, dst)
				if err != nil {
					t.Fatalf("ReadChunk(dst cap %d): %v", cap(dst), err)
				}
				if !bytes.Equal(got, tc.plain) {
					t.Fatalf("ReadChunk(dst cap %d) returned %d bytes that differ from the %d stored", cap(dst), len(got), len(tc.plain))
				}
				if cap(dst) >= len(tc.plain) && &got[0] != &dst[0] {
					t.Fatalf("ReadChunk did not reuse a large enough dst")
				}
			}
			if err := l.VerifyChunk(ctx, d); err != nil {
				t.Fatalf("VerifyChunk: %v", err)
			}
		})
	}
}

// PutBlob names a blob by the SHA-256 of its plaintext and stores it as PutChunk would under
// that name; what PutChunk refuses it refuses, storing nothing.
func TestPutBlobNamesByPlaintext(t *testing.T) {
	l := newRepo(t, 0)
	ctx := t.Context()
	before := listing(t, root(l))
	for name, blob := range map[string][]byte{
		"garbage":    []byte("not a blob"),
		"zero chunk": frame(t, chunk.CodecZstd, make([]byte, 4*mib)),
		"sealed":     sealedFrame(t, agentFrame(t, randomData(9, mib))),
	} {
		if _, _, err := l.PutBlob(ctx, blob); err == nil {
			t.Errorf("%s: PutBlob succeeded", name)
		}
	}
	assertUnchanged(t, before, root(l))
	for _, plain := range [][]byte{randomData(1, 4*mib), textData(2, 4*mib), randomData(3, mib+123)} {
		want := chunk.Sum(plain)
		for i, wantStored := range []bool{true, false} {
			d, stored, err := l.PutBlob(ctx, agentFrame(t, plain))
			if err != nil || d != want || stored != wantStored {
				t.Fatalf("PutBlob #%d = %s, %v, %v; want %s, %v", i+1, d, stored, err, want, wantStored)
			}
		}
		if stored, err := l.PutChunk(ctx, want, agentFrame(t, plain)); err != nil || stored {
			t.Fatalf("PutChunk under the name PutBlob gave = %v, %v; want held", stored, err)
		}
		got, err := l.ReadChunk(ctx, want, nil)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("ReadChunk after PutBlob: %v (equal: %v)", err, bytes.Equal(got, plain))
		}
	}
}

func TestZeroChunksAreNeverStored(t *testing.T) {
	l := newRepo(t, 0)
	before := listing(t, root(l))
	for _, n := range []int{4 * mib, 1*mib + 123, 1} {
		zeros := make([]byte, n)
		for _, codec := range []chunk.Codec{chunk.CodecRaw, chunk.CodecZstd} {
			d := chunk.ZeroDigest(n)
			_, err := l.PutChunk(t.Context(), d, frame(t, codec, zeros))
			if !errors.Is(err, ErrZeroChunk) {
				t.Fatalf("PutChunk of %d zero bytes (%v): %v, want ErrZeroChunk", n, codec, err)
			}
			if _, err := l.ReadChunk(t.Context(), d, nil); !errors.Is(err, ErrChunkNotFound) {
				t.Fatalf("ReadChunk of a zero digest: %v, want ErrChunkNotFound", err)
			}
		}
	}
	assertUnchanged(t, before, root(l))
}

// zstdStream compresses n zero bytes as a stream, without a content size in the frame header: a
// decoder cannot know the output size before it decodes.
func zstdStream(t testing.TB, n int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(w, zeroReader{}, n); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zstdStreamOf compresses p as a stream with an 8 MiB window and no content size in the frame
// header, as a streaming encoder would.
func zstdStreamOf(t testing.TB, p []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithWindowSize(8*mib))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// rawBlob frames payload as it is, with a valid CRC, whatever it decodes to: what a hostile or
// buggy client can send.
func rawBlob(t testing.TB, codec chunk.Codec, plainLen int, payload []byte) []byte {
	t.Helper()
	blob, err := chunk.AppendBlob(nil, codec, plainLen, payload)
	if err != nil {
		t.Fatalf("rawBlob: %v", err)
	}
	return blob
}

func TestPutChunkRejects(t *testing.T) {
	const cs = 64 * kib
	l := newRepo(t, cs)
	plain := textData(1, cs)
	d := chunk.Sum(plain)
	good := frame(t, chunk.CodecZstd, plain)
	goodRaw := frame(t, chunk.CodecRaw, plain)
	mut := func(b []byte, f func(b []byte)) []byte {
		b = bytes.Clone(b)
		f(b)
		return b
	}
	bomb := zstdStream(t, 256*mib) // 4096 × the chunk size, in a payload smaller than one chunk
	if len(bomb) > chunk.MaxPayloadLen(cs) {
		t.Fatalf("test bomb is %d bytes, too large for the payload bound", len(bomb))
	}
	declared := encoder().EncodeAll(make([]byte, 16*mib), nil) // content size in the frame header

	for _, tc := range []struct {
		name string
		d    chunk.Digest
		blob []byte
		want []error
	}{
		{"wrong digest zstd", chunk.Sum([]byte("other")), good, []error{ErrDigestMismatch}},
		{"wrong digest raw", chunk.Sum([]byte("other")), goodRaw, []error{ErrDigestMismatch}},
		{"other chunk's blob", d, frame(t, chunk.CodecZstd, textData(2, cs)), []error{ErrDigestMismatch}},
		{"empty blob", d, nil, []error{ErrBadBlob, chunk.ErrCorrupt}},
		{"truncated header", d, good[:10], []error{ErrBadBlob, chunk.ErrCorrupt}},
		{"truncated payload", d, good[:len(good)-1], []error{ErrBadBlob, chunk.ErrCorrupt}},
		{"truncated raw payload", d, goodRaw[:len(goodRaw)-100], []error{ErrBadBlob, chunk.ErrCorrupt}},
		{"bad magic", d, mut(good, func(b []byte) { copy(b, "ZZZZ") }), []error{ErrBadBlob, chunk.ErrBadMagic}},
		{"bad crc", d, mut(good, func(b []byte) { b[16] ^= 0xff }), []error{ErrBadBlob, chunk.ErrCorrupt}},
		{"payload bit flip", d, mut(good, func(b []byte) { b[len(b)/2] ^= 0x04 }), []error{ErrBadBlob, chunk.ErrCorrupt}},
		{"unknown codec", d, mut(good, func(b []byte) { b[5] = 9 }), []error{ErrBadBlob, chunk.ErrUnknownCodec}},
		{"unknown flag", d, mut(good, func(b []byte) { b[6] = 2 }), []error{ErrBadBlob, chunk.ErrUnsupportedFlags}},
		{"sealed by the agent", d, sealedFrame(t, good), []error{ErrBadBlob}},
		{"version 2", d, mut(good, func(b []byte) { b[4] = 2 }), []error{ErrBadBlob, chunk.ErrUnsupportedVersion}},
		{"plaintext larger than chunk size", d, frame(t, chunk.CodecRaw, textData(1, cs+1)), []error{ErrBadBlob}},
		{"zstd bomb, size unknown", d, rawBlob(t, chunk.CodecZstd, cs, bomb), []error{ErrBadBlob}},
		{"zstd bomb, size declared", d, rawBlob(t, chunk.CodecZstd, cs, declared), []error{ErrBadBlob}},
		{"zstd bomb, header claims 32 MiB", d, rawBlob(t, chunk.CodecZstd, 32*mib, bomb), []error{ErrBadBlob}},
		{"zstd decodes short", d, rawBlob(t, chunk.CodecZstd, cs, encoder().EncodeAll(plain[:cs-1], nil)), []error{ErrBadBlob}},
		{"zstd garbage payload", d, rawBlob(t, chunk.CodecZstd, cs, []byte("this is not zstd at all")), []error{ErrBadBlob}},
		{"blob over the size bound", d, make([]byte, chunk.MaxBlobLen(cs)+1), []error{ErrBadBlob}},
		{"zero chunk", chunk.ZeroDigest(cs), frame(t, chunk.CodecZstd, make([]byte, cs)), []error{ErrZeroChunk}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := listing(t, root(l))
			stored, err := l.PutChunk(t.Context(), tc.d, tc.blob)
			if stored {
				t.Fatal("PutChunk reported stored")
			}
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Fatalf("PutChunk error = %v, want %v", err, want)
				}
			}
			if !strings.Contains(err.Error(), tc.d.String()) {
				t.Fatalf("error %q does not name the digest", err)
			}
			t.Log(err)
			assertUnchanged(t, before, root(l))
			if ok, _ := l.HasChunk(t.Context(), tc.d); ok {
				t.Fatal("HasChunk after a rejected PutChunk")
			}
		})
	}

	// A good blob is still accepted after all that.
	if stored, err := l.PutChunk(t.Context(), d, good); !stored || err != nil {
		t.Fatalf("PutChunk of the good blob = %v, %v", stored, err)
	}
}

// TestPutChunkBombMemory checks that a payload expanding to 4096 × the chunk size is refused
// after decoding about one chunk, not after allocating the whole expansion.
func TestPutChunkBombMemory(t *testing.T) {
	const cs = 64 * kib
	l := newRepo(t, cs)
	blob := rawBlob(t, chunk.CodecZstd, cs, zstdStream(t, 256*mib))
	d := chunk.Sum([]byte("anything"))
	if _, err := l.PutChunk(t.Context(), d, blob); !errors.Is(err, ErrBadBlob) { // warm pools and decoders
		t.Fatalf("PutChunk: %v, want ErrBadBlob", err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 4 {
		if _, err := l.PutChunk(t.Context(), d, blob); !errors.Is(err, ErrBadBlob) {
			t.Fatalf("PutChunk: %v, want ErrBadBlob", err)
		}
	}
	runtime.ReadMemStats(&after)
	t.Logf("allocated %d bytes", after.TotalAlloc-before.TotalAlloc)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32*mib {
		t.Fatalf("4 refused bombs allocated %d bytes; each would decode to 256 MiB", alloc)
	}
}

func TestPutChunkCanceled(t *testing.T) {
	l := newRepo(t, 64*kib)
	plain := randomData(1, 64*kib)
	before := listing(t, root(l))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := l.PutChunk(ctx, chunk.Sum(plain), frame(t, chunk.CodecRaw, plain)); !errors.Is(err, context.Canceled) {
		t.Fatalf("PutChunk with a canceled context: %v", err)
	}
	assertUnchanged(t, before, root(l))
}

func TestDamagedChunk(t *testing.T) {
	const cs = 256 * kib
	l := newRepo(t, cs)
	other := textData(99, cs)
	for _, codec := range []chunk.Codec{chunk.CodecRaw, chunk.CodecZstd} {
		for _, tc := range []struct {
			name   string
			damage func(t *testing.T, path string)
		}{
			{"magic", func(t *testing.T, p string) { flipByte(t, p, 0) }},
			{"version", func(t *testing.T, p string) { flipByte(t, p, 4) }},
			{"codec", func(t *testing.T, p string) { flipByte(t, p, 5) }},
			{"plaintext length", func(t *testing.T, p string) { flipByte(t, p, 9) }},
			{"payload length", func(t *testing.T, p string) { flipByte(t, p, 12) }},
			{"crc", func(t *testing.T, p string) { flipByte(t, p, 18) }},
			{"first payload byte", func(t *testing.T, p string) { flipByte(t, p, chunk.HeaderSize) }},
			{"middle", func(t *testing.T, p string) { flipByte(t, p, -1000) }},
			{"last byte", func(t *testing.T, p string) { flipByte(t, p, -1) }},
			{"truncated", func(t *testing.T, p string) {
				b, _ := os.ReadFile(p)
				overwrite(t, p, b[:len(b)-1])
			}},
			{"header only", func(t *testing.T, p string) {
				b, _ := os.ReadFile(p)
				overwrite(t, p, b[:chunk.HeaderSize])
			}},
			{"empty file", func(t *testing.T, p string) { overwrite(t, p, nil) }},
			{"appended byte", func(t *testing.T, p string) {
				b, _ := os.ReadFile(p)
				overwrite(t, p, append(b, 0))
			}},
			{"oversized file", func(t *testing.T, p string) { overwrite(t, p, make([]byte, chunk.MaxBlobLen(cs)+1)) }},
			// A well-formed blob with a valid CRC but other content: only the re-hash catches it.
			{"valid blob of other content", func(t *testing.T, p string) { overwrite(t, p, frame(t, codec, other)) }},
		} {
			t.Run(fmt.Sprintf("%v/%s", codec, tc.name), func(t *testing.T) {
				plain := append(textData(uint64(len(tc.name)), cs-100), tc.name...) // unique per case
				d := chunk.Sum(plain)
				if _, err := l.PutChunk(t.Context(), d, frame(t, codec, plain)); err != nil {
					t.Fatal(err)
				}
				tc.damage(t, filepath.Join(root(l), filepath.FromSlash(chunkKey(d))))
				got, err := l.ReadChunk(t.Context(), d, nil)
				if !errors.Is(err, ErrChunkDamaged) || got != nil {
					t.Fatalf("ReadChunk of a damaged chunk = %d bytes, %v; want nil, ErrChunkDamaged", len(got), err)
				}
				if !strings.Contains(err.Error(), d.String()) {
					t.Fatalf("error %q does not name the digest", err)
				}
				if err := l.VerifyChunk(t.Context(), d); !errors.Is(err, ErrChunkDamaged) {
					t.Fatalf("VerifyChunk of a damaged chunk: %v, want ErrChunkDamaged", err)
				}
				if err := l.RemoveChunk(t.Context(), d); err != nil {
					t.Fatal(err)
				}
				if _, err := l.ReadChunk(t.Context(), d, nil); !errors.Is(err, ErrChunkNotFound) {
					t.Fatalf("ReadChunk after RemoveChunk: %v, want ErrChunkNotFound", err)
				}
				if err := l.VerifyChunk(t.Context(), d); !errors.Is(err, ErrChunkNotFound) {
					t.Fatalf("VerifyChunk after RemoveChunk: %v, want ErrChunkNotFound", err)
				}
			})
		}
	}
}

func TestConcurrentPut(t *testing.T) {
	const cs = 128 * kib
	l := newRepo(t, cs)
	ctx := t.Context()

	t.Run("same digest", func(t *testing.T) {
		plain := textData(7, cs)
		d := chunk.Sum(plain)
		blobs := [][]byte{frame(t, chunk.CodecZstd, plain), frame(t, chunk.CodecRaw, plain)}
		var (
			wg     sync.WaitGroup
			mu     sync.Mutex
			stored int
			errs   []error
		)
		for i := range 16 {
			wg.Go(func() {
				s, err := l.PutChunk(ctx, d, blobs[i%2])
				mu.Lock()
				defer mu.Unlock()
				if s {
					stored++
				}
				if err != nil {
					errs = append(errs, err)
				}
			})
		}
		wg.Wait()
		if stored != 1 || len(errs) != 0 {
			t.Fatalf("16 concurrent puts of one digest: %d stored, errors %v; want exactly 1 stored", stored, errs)
		}
		got, err := l.ReadChunk(ctx, d, nil)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("ReadChunk after concurrent puts: %v", err)
		}
	})

	t.Run("different digests", func(t *testing.T) {
		const n = 48
		plains := make([][]byte, n)
		blobs := make([][]byte, n)
		for i := range n {
			if i%2 == 0 {
				plains[i] = randomData(uint64(100+i), cs-i)
			} else {
				plains[i] = textData(uint64(100+i), cs-i)
			}
			blobs[i] = agentFrame(t, plains[i])
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		for w := range 4 {
			wg.Go(func() {
				// Every worker puts and reads every chunk, in a different order.
				for k := range n {
					i := (k*7 + w*13) % n
					if _, err := l.PutChunk(ctx, chunk.Sum(plains[i]), blobs[i]); err != nil {
						errs[i] = err
						return
					}
					got, err := l.ReadChunk(ctx, chunk.Sum(plains[i]), nil)
					if err != nil || !bytes.Equal(got, plains[i]) {
						errs[i] = fmt.Errorf("read back: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if ok, err := l.HasChunk(t.Context(), chunk.Sum(plains[i])); !ok || err != nil {
				t.Fatalf("chunk %d missing after concurrent puts: %v", i, err)
			}
		}
	})

	t.Run("put and remove", func(t *testing.T) {
		plain := randomData(9, cs)
		d := chunk.Sum(plain)
		blob := frame(t, chunk.CodecRaw, plain)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 20 {
					if _, err := l.PutChunk(ctx, d, blob); err != nil {
						t.Error(err)
						return
					}
					if err := l.RemoveChunk(ctx, d); err != nil && !errors.Is(err, ErrChunkNotFound) {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		// Whatever interleaving happened, the chunk is either absent or intact.
		if got, err := l.ReadChunk(ctx, d, nil); err != nil && !errors.Is(err, ErrChunkNotFound) || err == nil && !bytes.Equal(got, plain) {
			t.Fatalf("after concurrent put and remove: %v", err)
		}
	})
}

func TestMissingChunks(t *testing.T) {
	l := newRepo(t, 64*kib)
	var have, lack []chunk.Digest
	for i := range 6 {
		plain := randomData(uint64(i), 1000+i)
		d := chunk.Sum(plain)
		if i%2 == 0 {
			if _, err := l.PutChunk(t.Context(), d, frame(t, chunk.CodecRaw, plain)); err != nil {
				t.Fatal(err)
			}
			have = append(have, d)
		} else {
			lack = append(lack, d)
		}
	}
	ask := []chunk.Digest{have[0], lack[0], lack[1], have[1], lack[0], have[2], lack[2], lack[1]}
	got, err := l.MissingChunks(t.Context(), ask)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(lack) {
		t.Fatalf("MissingChunks = %v, want %v (each once, in order)", got, lack)
	}
	if got, err := l.MissingChunks(t.Context(), nil); err != nil || len(got) != 0 {
		t.Fatalf("MissingChunks(nil) = %v, %v", got, err)
	}
}

func TestWalkChunksStatsRemove(t *testing.T) {
	l := newRepo(t, 64*kib)
	ctx := t.Context()
	want := map[chunk.Digest]int64{}
	var total int64
	for i := range 20 {
		plain := textData(uint64(i), 10*kib+i)
		blob := agentFrame(t, plain)
		d := chunk.Sum(plain)
		if _, err := l.PutChunk(ctx, d, blob); err != nil {
			t.Fatal(err)
		}
		want[d] = int64(len(blob))
		total += int64(len(blob))
	}
	// Things in chunks/ that are not chunks in their place, and a crash leftover in tmp/ that
	// holds a perfectly valid blob: none of them may be taken for a chunk.
	plain := randomData(500, 4*kib)
	stray := chunk.Sum(plain)
	hexs := stray.String()
	blob := frame(t, chunk.CodecRaw, plain)
	for _, p := range []string{
		filepath.Join("chunks", "README"),
		filepath.Join("chunks", "zz", "yy", hexs),
		filepath.Join("chunks", hexs[:2], "xx", hexs),
		filepath.Join("chunks", "00", "00", hexs),
		filepath.Join("chunks", hexs[:2], hexs[2:4], strings.ToUpper(hexs)),
		filepath.Join("chunks", hexs[:2], hexs[2:4], hexs+".tmp"),
		filepath.Join("tmp", "chunk-123456.tmp"),
		filepath.Join("tmp", hexs),
	} {
		full := filepath.Join(root(l), p)
		if err := os.MkdirAll(filepath.Dir(full), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, blob, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := l.HasChunk(t.Context(), stray); ok {
		t.Fatal("HasChunk finds a chunk that is not in its place")
	}

	got := map[chunk.Digest]int64{}
	var last string
	err := l.WalkChunks(ctx, func(d chunk.Digest, size int64, mod time.Time) error {
		if d.String() <= last {
			t.Errorf("WalkChunks out of order: %s after %s", d, last)
		}
		last = d.String()
		if time.Since(mod) > time.Hour || mod.After(time.Now().Add(time.Minute)) {
			t.Errorf("modTime %v is not the time of storing", mod)
		}
		got[d] = size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("WalkChunks visited %v, want %v", got, want)
	}
	n, b, err := l.Stats(ctx)
	if err != nil || n != 20 || b != total {
		t.Fatalf("Stats = %d chunks, %d bytes, %v; want 20, %d", n, b, err, total)
	}

	stop := errors.New("stop")
	calls := 0
	if err := l.WalkChunks(ctx, func(chunk.Digest, int64, time.Time) error { calls++; return stop }); err != stop || calls != 1 {
		t.Fatalf("WalkChunks with a failing fn: %v after %d calls", err, calls)
	}

	for d := range want {
		if err := l.RemoveChunk(ctx, d); err != nil {
			t.Fatal(err)
		}
		if err := l.RemoveChunk(ctx, d); !errors.Is(err, ErrChunkNotFound) {
			t.Fatalf("second RemoveChunk: %v, want ErrChunkNotFound", err)
		}
		if ok, err := l.HasChunk(t.Context(), d); ok || err != nil {
			t.Fatalf("HasChunk after RemoveChunk = %v, %v", ok, err)
		}
	}
	if n, b, err := l.Stats(ctx); n != 0 || b != 0 || err != nil {
		t.Fatalf("Stats after removing everything = %d, %d, %v", n, b, err)
	}
}

func TestCleanTemp(t *testing.T) {
	l := newRepo(t, 64*kib)
	tmp := filepath.Join(root(l), "tmp")
	// Leftovers of hubs before per-instance temp directories: old ones are stale, a fresh one
	// may be in flight.
	old := time.Now().Add(-2 * time.Hour)
	for _, name := range []string{"chunk-1.tmp", "index-2.tmp", ".repo.json.tmp-3"} {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, "chunk-fresh.tmp"), []byte("in flight"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := l.CleanTemp(t.Context(), true); err != nil || n != 3 {
		t.Fatalf("CleanTemp(dry run) = %d, %v; want 3 found", n, err)
	}
	if n, err := l.CleanTemp(t.Context(), false); err != nil || n != 3 {
		t.Fatalf("CleanTemp = %d, %v; want 3 removed", n, err)
	}
	es, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	if len(names) != 1 || names[0] != "chunk-fresh.tmp" {
		t.Fatalf("tmp/ after CleanTemp holds %v; want only the fresh file", names)
	}

	// tmp/ removed by an operator: the next write recreates it.
	if err := os.RemoveAll(tmp); err != nil {
		t.Fatal(err)
	}
	plain := randomData(1, 1000)
	if _, err := l.PutChunk(t.Context(), chunk.Sum(plain), frame(t, chunk.CodecRaw, plain)); err != nil {
		t.Fatalf("PutChunk without tmp/: %v", err)
	}
	if n, err := l.CleanTemp(t.Context(), true); err != nil || n != 0 {
		t.Fatalf("CleanTemp after a successful put = %d, %v; want nothing left behind", n, err)
	}
}

func TestReopenKeepsAPI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	l, err := InitDir(t.Context(), dir, 128*kib, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	plain := textData(1, 100*kib)
	d := chunk.Sum(plain)
	if _, err := l.PutChunk(t.Context(), d, agentFrame(t, plain)); err != nil {
		t.Fatal(err)
	}
	if _, err := InitDir(t.Context(), dir, 0, nil); err == nil {
		t.Fatal("Init over an existing repository succeeded")
	}
	r, err := OpenDir(t.Context(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.ID() != l.ID() || r.ChunkSize() != 128*kib || root(r) != dir {
		t.Fatalf("reopened repository: id %s chunk size %d root %s", r.ID(), r.ChunkSize(), root(r))
	}
	if err := r.CheckWritable(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, err := r.ReadChunk(t.Context(), d, nil)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("ReadChunk from the reopened repository: %v", err)
	}
	empty := t.TempDir()
	if _, err := OpenDir(t.Context(), empty, nil); !errors.Is(err, ErrNotRepository) {
		t.Fatalf("Open of an empty directory: %v, want ErrNotRepository", err)
	}
}

// Uploads verified at once decode one chunk per CPU at a time, so they hold no more plaintext
// buffers than CPUs: more decodes at once would only hold more memory.
func TestPutChunkDecodesOnePerCPU(t *testing.T) {
	const cs, uploads = 16 * mib, 12
	l := newRepo(t, cs)
	plain := textData(1, cs)
	blob, d := frame(t, chunk.CodecZstd, plain), chunk.Sum(plain)
	start := make(chan struct{})
	errs := make(chan error, uploads)
	for range uploads {
		go func() { // the same chunk each time: every upload is verified before it is stored
			<-start
			_, err := l.PutChunk(t.Context(), d, slices.Clone(blob))
			errs <- err
		}()
	}
	close(start)
	for range uploads {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// The list keeps every plaintext buffer that was ever taken: as many as were in use at once.
	if n, p := l.plainBufs.Len(), runtime.GOMAXPROCS(0); n > p {
		t.Fatalf("%d plaintext buffers of %d MiB taken for %d uploads at once, more than the %d CPUs", n, cs/mib, uploads, p)
	}
}
