// Package chunk owns the identity and the on-disk framing of a chunk: its digest (SHA-256 of the
// plaintext) and the blob format, a fixed header followed by the payload.
//
// A blob is laid out as follows; all integers are little-endian:
//
//	offset  size  field
//	     0     4  magic "SDCK"
//	     4     1  format version, 1
//	     5     1  codec: 0 raw, 1 zstd
//	     6     1  flags: bit 0 FlagSealed (AES-256-GCM); a reader refuses any other set bit
//	     7     1  reserved, 0
//	     8     4  plaintext length in bytes, at most MaxPlaintextLen (64 MiB)
//	    12     4  payload length in bytes; the blob is exactly HeaderSize + payload length long
//	    16     4  CRC-32C (Castagnoli) over bytes 0–15 and then the payload
//	    20     …  payload: the plaintext itself (raw) or one or more zstd frames
//
// A sealed blob (FlagSealed) is what an encrypted repository stores. Its payload is
//
//	nonce (12 random bytes) ‖ AES-256-GCM ciphertext of the codec payload ‖ GCM tag (16 bytes)
//
// so it is SealOverhead bytes longer than the unsealed payload (raw: exactly plaintext length +
// SealOverhead). The codec byte names the codec of the payload inside the seal. The additional
// authenticated data is Header.Fields (bytes 0–15: magic, version, codec, flags, both lengths)
// followed by the key the blob is stored under (chunks/ab/cd/<keyed name> in the hub), so neither
// a header field nor the blob's place can be changed without the tag failing: a blob moved under
// another chunk's name does not open.
// The CRC covers the sealed payload, so damage is still told apart before any decryption. This
// package only frames and validates; the keys and the sealing live in the hub's repository.
//
// The CRC tells damage (a flipped bit, a truncated file, a garbled length) apart from a digest
// mismatch without decompressing or hashing. It covers the header fields too, so a damaged
// length or codec byte is reported as damage rather than as a confusing decode error. It is no
// substitute for the digest: only re-hashing the plaintext proves a chunk is the one named.
//
// This package only frames. Compression lives with the producers and consumers (the agent
// encodes, the hub decodes), so this package stays free of dependencies.
package chunk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Magic opens every chunk blob.
const Magic = "SDCK"

// Version is the blob format version this package reads and writes.
const Version = 1

// HeaderSize is the length of the fixed blob header.
const HeaderSize = 20

// FlagSealed marks a blob whose payload is sealed with AES-256-GCM (see the package comment).
const FlagSealed uint8 = 1 << 0

// SealOverhead is what sealing adds to a payload: a 12-byte nonce and a 16-byte tag.
const SealOverhead = 12 + 16

// MaxPlaintextLen bounds the plaintext of one chunk: slots are at most 64 MiB.
const MaxPlaintextLen = 64 << 20

// Codec says how the payload encodes the plaintext.
type Codec uint8

// The codecs of format version 1.
const (
	CodecRaw  Codec = 0 // payload is the plaintext
	CodecZstd Codec = 1 // payload is zstd frames that decode to the plaintext
)

// String returns the codec's name.
func (c Codec) String() string {
	switch c {
	case CodecRaw:
		return "raw"
	case CodecZstd:
		return "zstd"
	default:
		return fmt.Sprintf("codec(%d)", uint8(c))
	}
}

// Errors returned when a blob cannot be accepted. Every error from ParseHeader, Header.Check and
// OpenBlob wraps exactly one of them.
var (
	// ErrBadMagic: the bytes are not a chunk blob at all.
	ErrBadMagic = errors.New("not a chunk blob (bad magic)")
	// ErrUnsupportedVersion: a blob of a format version this code does not read.
	ErrUnsupportedVersion = errors.New("unsupported chunk blob version")
	// ErrUnknownCodec: a codec byte this code does not know.
	ErrUnknownCodec = errors.New("unknown chunk codec")
	// ErrUnsupportedFlags: flag bits set (for example encryption) that this code cannot handle.
	ErrUnsupportedFlags = errors.New("unsupported chunk flags")
	// ErrCorrupt: the blob is damaged: truncated, inconsistent lengths, or a CRC mismatch.
	ErrCorrupt = errors.New("corrupt chunk blob")
)

// Header is the decoded fixed header of a blob.
type Header struct {
	Version      uint8
	Codec        Codec
	Flags        uint8
	PlaintextLen uint32
	PayloadLen   uint32
	CRC          uint32
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MaxPayloadLen is the largest payload accepted for a plaintext of n bytes. A raw payload is
// exactly n bytes. A zstd payload may exceed n for incompressible data (zstd's own bound is
// n + n/256 + a few bytes of frame overhead); this allows n + n/128 + 1 KiB. Producers should
// store such chunks raw instead.
func MaxPayloadLen(n int) int {
	return n + n/128 + 1024
}

// MaxBlobLen is the largest blob accepted for a plaintext of n bytes; a server can bound an
// upload's body with MaxBlobLen(chunk size).
func MaxBlobLen(n int) int {
	return HeaderSize + MaxPayloadLen(n)
}

// MaxSealedBlobLen is the largest sealed blob of a plaintext of n bytes: what a reader of an
// encrypted repository must allow.
func MaxSealedBlobLen(n int) int {
	return MaxBlobLen(n) + SealOverhead
}

// Sealed reports whether the blob's payload is sealed (FlagSealed).
func (h Header) Sealed() bool { return h.Flags&FlagSealed != 0 }

// Fields returns header bytes 0–15, every field but the CRC: the part of the header a seal
// authenticates. They depend on the payload only through its length, so a producer can compute
// them before sealing.
func (h Header) Fields() []byte {
	b := EncodeHeader(h)
	return b[:16]
}

// NewHeader returns the header for payload, which encodes plaintextLen bytes with codec.
func NewHeader(codec Codec, plaintextLen int, payload []byte) (Header, error) {
	return newHeader(codec, 0, plaintextLen, payload)
}

// NewSealedHeader returns the header (FlagSealed set) for a sealed payload, which is nonce ‖
// ciphertext ‖ tag of a payload that encodes plaintextLen bytes with codec.
func NewSealedHeader(codec Codec, plaintextLen int, payload []byte) (Header, error) {
	return newHeader(codec, FlagSealed, plaintextLen, payload)
}

func newHeader(codec Codec, flags uint8, plaintextLen int, payload []byte) (Header, error) {
	if plaintextLen < 0 || plaintextLen > MaxPlaintextLen {
		return Header{}, fmt.Errorf("new chunk header: plaintext length %d outside 0..%d", plaintextLen, MaxPlaintextLen)
	}
	h := Header{Version: Version, Codec: codec, Flags: flags, PlaintextLen: uint32(plaintextLen), PayloadLen: uint32(len(payload))}
	if bound := MaxPayloadLen(plaintextLen) + h.overhead(); len(payload) > bound {
		return Header{}, fmt.Errorf("new chunk header: payload of %d bytes exceeds the bound %d for %d plaintext bytes", len(payload), bound, plaintextLen)
	}
	if err := h.validate(); err != nil {
		return Header{}, fmt.Errorf("new chunk header: %w", err)
	}
	h.CRC = h.checksum(payload)
	return h, nil
}

// EncodeHeader returns the HeaderSize bytes of h. It writes the fields as they are; use
// NewHeader to get a valid header with its CRC.
func EncodeHeader(h Header) []byte {
	b := make([]byte, HeaderSize)
	putHeader(b, h)
	return b
}

func putHeader(b []byte, h Header) {
	copy(b[0:4], Magic)
	b[4] = h.Version
	b[5] = byte(h.Codec)
	b[6] = h.Flags
	b[7] = 0
	binary.LittleEndian.PutUint32(b[8:12], h.PlaintextLen)
	binary.LittleEndian.PutUint32(b[12:16], h.PayloadLen)
	binary.LittleEndian.PutUint32(b[16:20], h.CRC)
}

// ParseHeader decodes and validates the fixed header at the start of b (b may be the whole
// blob). It checks every field it can check alone; Header.Check then verifies the payload.
func ParseHeader(b []byte) (Header, error) {
	if len(b) >= len(Magic) && string(b[:len(Magic)]) != Magic {
		return Header{}, fmt.Errorf("%w: % x", ErrBadMagic, b[:len(Magic)])
	}
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: truncated header: %d bytes, want %d", ErrCorrupt, len(b), HeaderSize)
	}
	h := Header{
		Version:      b[4],
		Codec:        Codec(b[5]),
		Flags:        b[6],
		PlaintextLen: binary.LittleEndian.Uint32(b[8:12]),
		PayloadLen:   binary.LittleEndian.Uint32(b[12:16]),
		CRC:          binary.LittleEndian.Uint32(b[16:20]),
	}
	if b[7] != 0 {
		return Header{}, fmt.Errorf("%w: reserved header byte is %#x", ErrCorrupt, b[7])
	}
	if err := h.validate(); err != nil {
		return Header{}, err
	}
	return h, nil
}

// validate checks the fields of h against each other, in the order that gives the most useful
// error: a newer version first, then what this version defines.
func (h Header) validate() error {
	if h.Version != Version {
		return fmt.Errorf("%w: %d, this code reads %d", ErrUnsupportedVersion, h.Version, Version)
	}
	if h.Flags&^FlagSealed != 0 {
		return fmt.Errorf("%w: %#02x", ErrUnsupportedFlags, h.Flags)
	}
	if h.PlaintextLen > MaxPlaintextLen {
		return fmt.Errorf("%w: plaintext length %d exceeds %d", ErrCorrupt, h.PlaintextLen, MaxPlaintextLen)
	}
	over := int64(h.overhead())
	switch h.Codec {
	case CodecRaw:
		if int64(h.PayloadLen) != int64(h.PlaintextLen)+over {
			return fmt.Errorf("%w: raw payload length %d differs from plaintext length %d (+%d sealing)", ErrCorrupt, h.PayloadLen, h.PlaintextLen, over)
		}
	case CodecZstd:
		if bound := int64(MaxPayloadLen(int(h.PlaintextLen))) + over; int64(h.PayloadLen) > bound {
			return fmt.Errorf("%w: zstd payload length %d exceeds the bound %d for %d plaintext bytes", ErrCorrupt, h.PayloadLen, bound, h.PlaintextLen)
		}
		if int64(h.PayloadLen) < over {
			return fmt.Errorf("%w: sealed payload of %d bytes is shorter than nonce and tag", ErrCorrupt, h.PayloadLen)
		}
	default:
		return fmt.Errorf("%w: %d", ErrUnknownCodec, uint8(h.Codec))
	}
	return nil
}

// overhead is what sealing adds to the payload of h.
func (h Header) overhead() int {
	if h.Sealed() {
		return SealOverhead
	}
	return 0
}

func (h Header) checksum(payload []byte) uint32 {
	var b [HeaderSize]byte
	putHeader(b[:], h)
	crc := crc32.Update(0, castagnoli, b[:16])
	return crc32.Update(crc, castagnoli, payload)
}

// Check verifies that payload is the one h describes: its length and the CRC.
func (h Header) Check(payload []byte) error {
	if uint64(len(payload)) != uint64(h.PayloadLen) {
		what := "truncated"
		if uint64(len(payload)) > uint64(h.PayloadLen) {
			what = "trailing bytes"
		}
		return fmt.Errorf("%w: %s: payload is %d bytes, header says %d", ErrCorrupt, what, len(payload), h.PayloadLen)
	}
	if got := h.checksum(payload); got != h.CRC {
		return fmt.Errorf("%w: CRC-32C %08x, header says %08x", ErrCorrupt, got, h.CRC)
	}
	return nil
}

// SealBlob writes the header into blob[:HeaderSize] for the payload already in
// blob[HeaderSize:], which encodes plaintextLen bytes with codec. A producer can reserve the
// header room, compress straight after it (zstd's EncodeAll(src, make([]byte, HeaderSize, n)))
// and seal, without copying the payload. "Seal" here means closing the frame: SealBlob does not
// encrypt, and the blob it frames is unsealed in the FlagSealed sense.
func SealBlob(blob []byte, codec Codec, plaintextLen int) error {
	if len(blob) < HeaderSize {
		return fmt.Errorf("seal chunk blob: %d bytes leave no room for the %d-byte header", len(blob), HeaderSize)
	}
	h, err := NewHeader(codec, plaintextLen, blob[HeaderSize:])
	if err != nil {
		return err
	}
	putHeader(blob, h)
	return nil
}

// OpenBlob parses and verifies a whole blob and returns its header and its payload (a sub-slice
// of blob). It does not decode the payload nor check the digest.
func OpenBlob(blob []byte) (Header, []byte, error) {
	h, err := ParseHeader(blob)
	if err != nil {
		return Header{}, nil, err
	}
	payload := blob[HeaderSize:]
	if err := h.Check(payload); err != nil {
		return Header{}, nil, err
	}
	return h, payload, nil
}

// AppendBlob appends the blob framing payload (plaintextLen bytes encoded with codec) to dst.
func AppendBlob(dst []byte, codec Codec, plaintextLen int, payload []byte) ([]byte, error) {
	h, err := NewHeader(codec, plaintextLen, payload)
	if err != nil {
		return dst, err
	}
	var b [HeaderSize]byte
	putHeader(b[:], h)
	dst = append(dst, b[:]...)
	return append(dst, payload...), nil
}
