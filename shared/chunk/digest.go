package chunk

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// DigestSize is the length of a Digest in bytes.
const DigestSize = sha256.Size

// ErrInvalidDigest is returned by ParseDigest for anything but 64 lowercase hex characters.
var ErrInvalidDigest = errors.New("invalid chunk digest")

// Digest names a chunk: the SHA-256 of its plaintext. Two chunks with equal plaintext have equal
// digests whatever their codec, which is what makes deduplication repository-wide.
type Digest [DigestSize]byte

// Sum returns the digest of plaintext.
func Sum(plaintext []byte) Digest {
	return sha256.Sum256(plaintext)
}

// String returns the digest as 64 lowercase hex characters, the form used in file names and on
// the wire.
func (d Digest) String() string {
	return hex.EncodeToString(d[:])
}

// MarshalText encodes the digest as lowercase hex, so that it appears as a string in JSON.
func (d Digest) MarshalText() ([]byte, error) {
	b := make([]byte, hex.EncodedLen(DigestSize))
	hex.Encode(b, d[:])
	return b, nil
}

// UnmarshalText decodes the form written by MarshalText, with the rules of ParseDigest.
func (d *Digest) UnmarshalText(b []byte) error {
	p, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// ParseDigest parses the form written by String. Only lowercase hex is accepted: a digest has
// exactly one spelling, so a file name or URL built from it is canonical.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 2*DigestSize {
		return d, fmt.Errorf("%w: %d characters, want %d", ErrInvalidDigest, len(s), 2*DigestSize)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return d, fmt.Errorf("%w: character %q at %d is not lowercase hex", ErrInvalidDigest, c, i)
		}
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("%w: %w", ErrInvalidDigest, err)
	}
	return d, nil
}

// zeroCache holds the digests of zero runs already computed. Slots are nearly always one of a
// few sizes (the repository chunk size, plus one short last slot per disk), so the cache stays
// small; it is capped anyway so that odd callers cannot grow it without bound.
var (
	zeroCache    sync.Map // int → Digest
	zeroCacheLen atomic.Int32
	zeroBuf      [64 << 10]byte
)

const zeroCacheMax = 1024

// ZeroDigest returns the digest of n zero bytes. A slot whose digest equals ZeroDigest of its
// length is a zero slot: it is never stored and never read, readers produce zeros for it. The
// result is cached, so calling it per slot is cheap. n must not be negative.
func ZeroDigest(n int) Digest {
	if n < 0 {
		panic(fmt.Sprintf("chunk.ZeroDigest: negative length %d", n))
	}
	if d, ok := zeroCache.Load(n); ok {
		return d.(Digest)
	}
	h := sha256.New()
	for left := n; left > 0; {
		k := min(left, len(zeroBuf))
		h.Write(zeroBuf[:k])
		left -= k
	}
	var d Digest
	h.Sum(d[:0])
	if zeroCacheLen.Load() < zeroCacheMax {
		if _, loaded := zeroCache.LoadOrStore(n, d); !loaded {
			zeroCacheLen.Add(1)
		}
	}
	return d
}
