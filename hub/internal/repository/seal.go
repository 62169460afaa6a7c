package repository

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/sendense/sendense/shared/chunk"
)

// Encryption at rest. An encrypted repository has a random 32-byte master key, kept only wrapped
// in its key slots (keys.go). From it HKDF-SHA256 (salt: the repository id) derives three
// independent keys, one per purpose, so that no key serves two:
//
//	"sendense seal v1"   AES-256-GCM key that seals every chunk, index and VM configuration
//	"sendense name v1"   HMAC-SHA256 key that names chunks
//	"sendense check v1"  HMAC-SHA256 key whose tag of the repository id is repo.json's key_check
//
// Chunk names. A chunk is stored under HMAC-SHA256(name key, SHA-256 of its plaintext) instead of
// the SHA-256 itself. HMAC is a pseudo-random function: without the name key its outputs cannot
// be told from random strings, so a name reveals nothing of the content, and in particular no one
// can test whether a known block (a file of a known OS image) is in the repository by hashing it,
// which plain SHA-256 names allow. Keying the digest rather than the plaintext is what lets the
// hub map the agent's digests to names for the chunks it only asks about (MissingChunks,
// TouchChunk, an index's references) without their bytes; as SHA-256 is collision-resistant the
// name is as unique as the digest. Equal plaintexts still get equal names, so chunks still
// deduplicate; what a reader of the store learns is only that (which chunks are shared) and the
// sizes, which deduplication inherently shows.
//
// Sealing. A chunk is stored as a sealed blob (shared/chunk, FlagSealed): the payload the agent
// sent (raw or zstd) is encrypted whole with a fresh random 96-bit nonce; the additional data is
// the header fields followed by the chunk's key, chunks/ab/cd/<name>, so a blob copied over
// another chunk's key, or a header changed, fails authentication. Random nonces under one key are
// safe for 2^32 objects (NIST SP 800-38D), 16 PiB of 4 MiB chunks. Indexes and VM configurations
// are sealed in an object envelope (below), with their key as additional data likewise.
//
// Reading an encrypted chunk verifies the framing and CRC, authenticates and decrypts, decodes,
// and re-hashes the plaintext against the digest asked for, as for a plain repository.

// Key derivation labels; changing one makes every encrypted repository unreadable.
const (
	labelSeal  = "sendense seal v1"
	labelName  = "sendense name v1"
	labelCheck = "sendense check v1"
)

// masterKeyLen is the length of a repository master key: AES-256 and HMAC-SHA256 strength.
const masterKeyLen = 32

// sealer holds the keys derived from a repository's master key.
type sealer struct {
	aead    cipher.AEAD
	nameKey []byte
}

// deriveKey returns the 32-byte key of one purpose (label) of master for repository repoID.
func deriveKey(master []byte, repoID, label string) ([]byte, error) {
	k, err := hkdf.Key(sha256.New, master, []byte(repoID), label, 32)
	if err != nil {
		return nil, fmt.Errorf("derive %s key: %w", label, err)
	}
	return k, nil
}

func newSealer(master []byte, repoID string) (*sealer, error) {
	sk, err := deriveKey(master, repoID, labelSeal)
	if err != nil {
		return nil, err
	}
	nk, err := deriveKey(master, repoID, labelName)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(sk)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead, nameKey: nk}, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return aead, nil
}

// keyCheck returns the hex tag repo.json records to recognise the master key before anything
// else is read.
func keyCheck(master []byte, repoID string) (string, error) {
	ck, err := deriveKey(master, repoID, labelCheck)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, ck)
	m.Write([]byte(repoID))
	return fmt.Sprintf("%x", m.Sum(nil)), nil
}

// name returns the stored name of the chunk with digest d.
func (s *sealer) name(d chunk.Digest) chunk.Digest {
	m := hmac.New(sha256.New, s.nameKey)
	m.Write(d[:])
	var n chunk.Digest
	m.Sum(n[:0])
	return n
}

// sealChunk returns the sealed blob of a chunk stored under key whose (unsealed, checked) blob
// has header h and payload, written over dst's storage when its capacity suffices.
func (s *sealer) sealChunk(dst []byte, key string, h chunk.Header, payload []byte) ([]byte, error) {
	sh := chunk.Header{Version: chunk.Version, Codec: h.Codec, Flags: chunk.FlagSealed, PlaintextLen: h.PlaintextLen, PayloadLen: uint32(len(payload) + chunk.SealOverhead)}
	aad := append(sh.Fields(), key...)
	n := chunk.HeaderSize + chunk.SealOverhead + len(payload)
	out := dst[:0]
	if cap(out) < n {
		out = make([]byte, 0, n)
	}
	out = out[:n]
	nonce := out[chunk.HeaderSize : chunk.HeaderSize+s.aead.NonceSize()]
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	s.aead.Seal(out[:chunk.HeaderSize+len(nonce)], nonce, payload, aad)
	fh, err := chunk.NewSealedHeader(h.Codec, int(h.PlaintextLen), out[chunk.HeaderSize:])
	if err != nil {
		return nil, err
	}
	copy(out, chunk.EncodeHeader(fh))
	return out, nil
}

// errUnsealed: a stored chunk of an encrypted repository that is not sealed. An encrypted
// repository only ever stores sealed blobs, so this is damage (or tampering), never accepted.
var errUnsealed = errors.New("blob is not sealed, but the repository is encrypted")

// openChunk authenticates and decrypts, in place, the payload of a sealed blob (header h,
// checked) stored under key; the result, a sub-slice of payload, is the codec payload.
func (s *sealer) openChunk(key string, h chunk.Header, payload []byte) ([]byte, error) {
	if !h.Sealed() {
		return nil, errUnsealed
	}
	ns := s.aead.NonceSize()
	aad := append(h.Fields(), key...)
	ct := payload[ns:]
	out, err := s.aead.Open(ct[:0], payload[:ns], ct, aad)
	if err != nil {
		return nil, fmt.Errorf("authenticated decryption: %w", err)
	}
	return out, nil
}

// Sealed object envelope of indexes and VM configurations, which can be larger than a chunk blob
// allows (an index of a 62 TB disk is 500 MiB). All integers little-endian:
//
//	offset  size  field
//	     0     4  magic "SDSO"
//	     4     1  envelope version, 1
//	     5     1  algorithm, 1: AES-256-GCM
//	     6     2  reserved, 0
//	     8     4  plaintext length
//	    12    12  nonce
//	    24     …  ciphertext, then the 16-byte GCM tag
//
// The additional data is bytes 0–23 followed by the object's key, so an index cannot be moved
// under another backup's reference.
const (
	objectMagic      = "SDSO"
	objectHeaderSize = 24
	objectOverhead   = objectHeaderSize + 16
)

// errBadEnvelope: a stored object of an encrypted repository that fails its envelope checks.
var errBadEnvelope = errors.New("sealed object envelope damaged")

func (s *sealer) sealObject(key string, plain []byte) ([]byte, error) {
	out := make([]byte, objectHeaderSize, objectOverhead+len(plain))
	copy(out, objectMagic)
	out[4], out[5] = 1, 1
	binary.LittleEndian.PutUint32(out[8:12], uint32(len(plain)))
	if _, err := rand.Read(out[12:24]); err != nil {
		return nil, err
	}
	aad := append(out[:objectHeaderSize:objectHeaderSize], key...)
	return s.aead.Seal(out, out[12:24], plain, aad), nil
}

func (s *sealer) openObject(key string, b []byte) ([]byte, error) {
	if len(b) < objectOverhead || string(b[:4]) != objectMagic || b[4] != 1 || b[5] != 1 || b[6] != 0 || b[7] != 0 {
		return nil, fmt.Errorf("%w: bad header or %d bytes", errBadEnvelope, len(b))
	}
	if n := binary.LittleEndian.Uint32(b[8:12]); int64(n) != int64(len(b)-objectOverhead) {
		return nil, fmt.Errorf("%w: %d bytes of ciphertext, header says %d", errBadEnvelope, len(b)-objectOverhead, n)
	}
	aad := append(b[:objectHeaderSize:objectHeaderSize], key...)
	plain, err := s.aead.Open(nil, b[12:24], b[objectHeaderSize:], aad)
	if err != nil {
		return nil, fmt.Errorf("%w: authenticated decryption: %w", errBadEnvelope, err)
	}
	return plain, nil
}
