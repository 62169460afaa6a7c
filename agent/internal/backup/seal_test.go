package backup

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/sendense/sendense/shared/chunk"
)

// seal stores random data raw without compressing all of it, compresses compressible data, and
// judges a slot by its three samples: random samples over compressible data still go raw (the
// price of skipping the pass), compressible samples over random data get a full pass that then
// finds no gain and goes raw too. Every blob opens to the slot's bytes.
func TestSealSkipsIncompressible(t *testing.T) {
	const n = 4 << 20
	pool := NewBufferPool(16 << 20)
	random := func(k int) []byte {
		b := make([]byte, k)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	text := []byte(strings.Repeat("a compressible line of a guest's log file\n", n/42+1))[:n]
	randomSamples := bytes.Clone(text)
	for _, off := range []int{0, n/2 - sampleLen/2, n - sampleLen} {
		copy(randomSamples[off:], random(sampleLen))
	}
	textSamples := random(n)
	for _, off := range []int{0, n/2 - sampleLen/2, n - sampleLen} {
		copy(textSamples[off:], text[:sampleLen])
	}
	for _, tc := range []struct {
		name  string
		p     []byte
		codec chunk.Codec
	}{
		{"random", random(n), chunk.CodecRaw},
		{"text", text, chunk.CodecZstd},
		{"random samples over text", randomSamples, chunk.CodecRaw},
		{"text samples over random", textSamples, chunk.CodecRaw},
		{"short text", text[:2*sampleLen], chunk.CodecZstd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var blob []byte
			err := pool.withSealer(t.Context(), func(s *sealer) error {
				var err error
				blob, err = s.seal(append(make([]byte, chunk.HeaderSize), tc.p...))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			h, payload, err := chunk.OpenBlob(blob)
			if err != nil {
				t.Fatal(err)
			}
			if h.Codec != tc.codec {
				t.Fatalf("codec %v, want %v", h.Codec, tc.codec)
			}
			plain := payload
			if h.Codec == chunk.CodecZstd {
				dec, err := zstd.NewReader(nil)
				if err != nil {
					t.Fatal(err)
				}
				defer dec.Close()
				if plain, err = dec.DecodeAll(payload, nil); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(plain, tc.p) {
				t.Fatal("the blob does not hold the slot's bytes")
			}
		})
	}
}
