// Package hubkey owns the key each hub is given (a file or SENDENSE_HUB_KEY) to seal, with
// AES-256-GCM, the secrets that hubs sharing a catalog keep in it: the CA's private key.
package hubkey

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
)

// Len is the length of a hub key: 32 bytes, written as 64 hex digits (`openssl rand -hex 32`).
const Len = 32

const version = 1

// ErrWrongKey means a sealed secret does not open under this key: another key sealed it, or it
// was altered.
var ErrWrongKey = errors.New("sealed secret does not open under this hub key (every hub sharing the catalog needs the same hub key)")

// Key seals and opens secrets. It is safe for concurrent use.
type Key struct{ aead cipher.AEAD }

// Parse reads a key written as 64 hex digits; surrounding white space is ignored.
func Parse(text []byte) (*Key, error) {
	raw, err := hex.DecodeString(string(bytes.TrimSpace(text)))
	if err != nil || len(raw) != Len {
		return nil, fmt.Errorf("hub key: want %d hex digits (openssl rand -hex %d)", 2*Len, Len)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("hub key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("hub key: %w", err)
	}
	return &Key{aead: aead}, nil
}

// Seal encrypts plain under the key, bound to name (a secret sealed as "ca" does not open as
// anything else): a version byte, a random 12-byte nonce, then the ciphertext and its tag.
func (k *Key) Seal(name string, plain []byte) []byte {
	out := make([]byte, 1+k.aead.NonceSize(), 1+k.aead.NonceSize()+len(plain)+k.aead.Overhead())
	out[0] = version
	_, _ = rand.Read(out[1:])
	return k.aead.Seal(out, out[1:], plain, []byte(name))
}

// Open decrypts what Seal sealed under the same name; ErrWrongKey when it does not open.
func (k *Key) Open(name string, sealed []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(sealed) < 1+n+k.aead.Overhead() || sealed[0] != version {
		return nil, fmt.Errorf("sealed secret %s: unknown format", name)
	}
	plain, err := k.aead.Open(nil, sealed[1:1+n], sealed[1+n:], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("open secret %s: %w", name, ErrWrongKey)
	}
	return plain, nil
}
