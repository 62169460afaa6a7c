package repository

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/sendense/sendense/hub/internal/repository/store"
)

// Key slots. The master key of an encrypted repository is stored only wrapped, once per key slot,
// in the repository itself (keys/<slot id>.json), so that the repository alone and one password
// or key file read it back. A slot wraps the master key with AES-256-GCM under a key-encryption
// key derived from its secret; the additional data binds the wrap to the repository id and the
// slot id and kind. Losing every slot's secret loses the data: nobody can decrypt it, not even
// with the code.
//
// A secret is the content of the file an operator names (--password-file), with one trailing
// newline removed:
//
//	sendense-key-file-v1:<base64url of 32 random bytes>  a key file (GenerateKeyFile); its
//	    slot derives the key-encryption key with HKDF-SHA256 (no stretching: 256 random bits)
//	sendense-master-key-v1:<repository id>:<base64url>   the master key itself (ExportKey), for
//	    escrow: it opens the repository without any slot, and AddKeySlot takes it back
//	anything else                                         a password; its slot derives the key
//	    with argon2id, parameters stored in the slot (default: RFC 9106's second recommended
//	    option, 3 passes over 64 MiB with 4 lanes)

// Errors of encryption. Callers branch on them with errors.Is.
var (
	// ErrWrongKey: no key slot of the repository opens with the secret given (nor is it the
	// repository's exported master key). Nothing but repo.json and the slots was read.
	ErrWrongKey = errors.New("wrong password or key: no key slot of the repository opens with it")
	// ErrKeyRequired: the repository is encrypted and no password file was given.
	ErrKeyRequired = errors.New("the repository is encrypted: a password file is needed to open it")
	// ErrLastKeySlot: removing the slot would leave the master key in no slot, losing the data.
	ErrLastKeySlot = errors.New("refusing to remove the last key slot: every backup would be lost")
	// ErrKeySlotNotFound: no slot with that id.
	ErrKeySlotNotFound = errors.New("key slot not found")
	// ErrNotEncrypted: a key operation on a repository that is not encrypted.
	ErrNotEncrypted = errors.New("the repository is not encrypted")
)

const (
	keyPrefix       = "keys/"
	keySlotLimit    = 16 << 10
	keyFilePrefix   = "sendense-key-file-v1:"
	masterKeyPrefix = "sendense-master-key-v1:"
	encryptionAlg   = "aes-256-gcm"
	// Slot kinds.
	SlotPassword = "password"
	SlotKeyFile  = "key-file"
	SlotDamaged  = "damaged" // a slot file that does not parse (KeySlots)
)

// KDF names the key derivation of a slot and its parameters.
type KDF struct {
	Name      string `json:"name"` // "argon2id" (password) or "hkdf-sha256" (key file)
	Salt      []byte `json:"salt"`
	Time      uint32 `json:"time,omitempty"`       // argon2id passes
	MemoryKiB uint32 `json:"memory_kib,omitempty"` // argon2id memory
	Threads   uint8  `json:"threads,omitempty"`    // argon2id lanes
}

// Bounds on a stored slot's argon2id parameters, so that a tampered slot cannot make the hub
// allocate without limit or spin for hours before the wrap fails to open.
const (
	maxKDFMemoryKiB = 4 << 20 // 4 GiB
	maxKDFTime      = 64
)

// KeySlot is one wrapping of the master key, as stored in keys/<id>.json.
type KeySlot struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"` // SlotPassword or SlotKeyFile
	KDF       KDF       `json:"kdf"`
	Wrapped   []byte    `json:"wrapped_key"` // nonce ‖ AES-256-GCM(master key) ‖ tag
	CreatedAt time.Time `json:"created_at"`
}

// DefaultKDFCost is the argon2id cost of new password slots.
var DefaultKDFCost = KDF{Name: "argon2id", Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// secret is a parsed password file.
type secret struct {
	kind   string // SlotPassword, SlotKeyFile, or "master"
	key    []byte // the password, the key file's 32 bytes, or the master key
	repoID string // of an exported master key
}

// EnvPrefix names, in place of a password file's path, an environment variable of the hub that
// holds the secret instead: "env:SENDENSE_REPO_PASSWORD".
const EnvPrefix = "env:"

// ReadSecretFile reads a password file: a password, a key file or an exported master key. A
// path "env:NAME" reads the environment variable NAME instead, which must be set and not empty.
func ReadSecretFile(path string) ([]byte, error) {
	if name, ok := strings.CutPrefix(path, EnvPrefix); ok {
		v := os.Getenv(name)
		if v == "" {
			return nil, fmt.Errorf("read password: environment variable %s is not set", name)
		}
		return []byte(v), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read password file: %w", err)
	}
	return b, nil
}

func parseSecret(b []byte) (secret, error) {
	b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	s := string(b)
	switch {
	case strings.HasPrefix(s, keyFilePrefix):
		k, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, keyFilePrefix))
		if err != nil || len(k) != masterKeyLen {
			return secret{}, errors.New("key file: want " + keyFilePrefix + " and 32 bytes in base64url")
		}
		return secret{kind: SlotKeyFile, key: k}, nil
	case strings.HasPrefix(s, masterKeyPrefix):
		id, enc, ok := strings.Cut(strings.TrimPrefix(s, masterKeyPrefix), ":")
		k, err := base64.RawURLEncoding.DecodeString(enc)
		if !ok || err != nil || len(k) != masterKeyLen {
			return secret{}, errors.New("exported key: want " + masterKeyPrefix + "<repository id>:<32 bytes in base64url>")
		}
		return secret{kind: "master", key: k, repoID: id}, nil
	case len(b) == 0:
		return secret{}, errors.New("the password file is empty")
	default:
		return secret{kind: SlotPassword, key: b}, nil
	}
}

// GenerateKeyFile returns the content of a new random key file (with a trailing newline).
func GenerateKeyFile() ([]byte, error) {
	k := make([]byte, masterKeyLen)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return []byte(keyFilePrefix + base64.RawURLEncoding.EncodeToString(k) + "\n"), nil
}

func slotKey(id string) string { return keyPrefix + id + ".json" }

// kek derives the key-encryption key of a slot from a secret of its kind.
func (sl *KeySlot) kek(sec secret) ([]byte, error) {
	switch {
	case sl.Kind == SlotPassword && sec.kind == SlotPassword && sl.KDF.Name == "argon2id":
		k := sl.KDF
		if k.Time == 0 || k.Time > maxKDFTime || k.MemoryKiB < 8 || k.MemoryKiB > maxKDFMemoryKiB || k.Threads == 0 || len(k.Salt) < 16 {
			return nil, fmt.Errorf("key slot %s: argon2id parameters out of bounds (time %d, memory %d KiB, threads %d)", sl.ID, k.Time, k.MemoryKiB, k.Threads)
		}
		return argon2.IDKey(sec.key, k.Salt, k.Time, k.MemoryKiB, k.Threads, 32), nil
	case sl.Kind == SlotKeyFile && sec.kind == SlotKeyFile && sl.KDF.Name == "hkdf-sha256":
		return deriveKey(sec.key, string(sl.KDF.Salt), "sendense key file slot v1")
	default:
		return nil, nil // this secret cannot open this slot
	}
}

func (sl *KeySlot) aad(repoID string) []byte {
	return []byte("sendense key slot v1\x00" + repoID + "\x00" + sl.ID + "\x00" + sl.Kind)
}

// newSlot wraps master for repository repoID under sec (a password or a key file).
func newSlot(repoID string, master []byte, sec secret, cost KDF) (*KeySlot, error) {
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	sl := &KeySlot{ID: "slot-" + hex.EncodeToString(id[:]), CreatedAt: time.Now().UTC()}
	switch sec.kind {
	case SlotPassword:
		sl.Kind, sl.KDF = SlotPassword, KDF{Name: "argon2id", Salt: salt, Time: cost.Time, MemoryKiB: cost.MemoryKiB, Threads: cost.Threads}
	case SlotKeyFile:
		sl.Kind, sl.KDF = SlotKeyFile, KDF{Name: "hkdf-sha256", Salt: salt}
	default:
		return nil, errors.New("an exported master key is not a slot secret: give a password or a key file")
	}
	kek, err := sl.kek(sec)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	sl.Wrapped = aead.Seal(nonce, nonce, master, sl.aad(repoID))
	return sl, nil
}

// unwrap returns the master key sl holds when sec opens it, nil when it does not.
func (sl *KeySlot) unwrap(repoID string, sec secret) ([]byte, error) {
	kek, err := sl.kek(sec)
	if err != nil || kek == nil {
		return nil, err
	}
	aead, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	ns := aead.NonceSize()
	if len(sl.Wrapped) < ns {
		return nil, nil
	}
	master, err := aead.Open(nil, sl.Wrapped[:ns], sl.Wrapped[ns:], sl.aad(repoID))
	if err != nil || len(master) != masterKeyLen {
		return nil, nil
	}
	return master, nil
}

func putSlot(ctx context.Context, s store.Store, sl *KeySlot) error {
	b, err := json.MarshalIndent(sl, "", "  ")
	if err != nil {
		return err
	}
	if err := s.Put(ctx, slotKey(sl.ID), append(b, '\n')); err != nil {
		return fmt.Errorf("write key slot %s: %w", sl.ID, err)
	}
	return nil
}

// listSlots returns the repository's key slots in id order, and the ids of slot files that do
// not parse (damaged: they open nothing, but must be seen and can be removed).
func listSlots(ctx context.Context, s store.Store) (slots []*KeySlot, damaged []string, err error) {
	var keys []string
	if err := s.List(ctx, keyPrefix, func(info store.Info) error {
		if strings.HasSuffix(info.Key, ".json") {
			keys = append(keys, info.Key)
		}
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("list key slots: %w", err)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b, err := s.Get(ctx, k, nil, keySlotLimit)
		if err != nil && !errors.Is(err, store.ErrTooLarge) {
			return nil, nil, fmt.Errorf("read key slot %s: %w", k, err)
		}
		var sl KeySlot
		if err != nil || json.Unmarshal(b, &sl) != nil || slotKey(sl.ID) != k {
			damaged = append(damaged, strings.TrimSuffix(strings.TrimPrefix(k, keyPrefix), ".json"))
			continue
		}
		slots = append(slots, &sl)
	}
	return slots, damaged, nil
}

// unlock finds the master key of the repository desc describes with the secret b: from an
// exported master key directly, or from the first slot b opens. It reads only the key slots, and
// checks the key against repo.json's key_check before returning it. It returns the id of the
// slot that opened (empty for an exported key).
func unlock(ctx context.Context, s store.Store, desc Descriptor, b []byte) (master []byte, slotID string, err error) {
	sec, err := parseSecret(b)
	if err != nil {
		return nil, "", err
	}
	check := func(m []byte) bool {
		c, err := keyCheck(m, desc.ID)
		return err == nil && hmac.Equal([]byte(c), []byte(desc.KeyCheck))
	}
	if sec.kind == "master" {
		if sec.repoID != desc.ID || !check(sec.key) {
			return nil, "", fmt.Errorf("%w (the exported key is of repository %s)", ErrWrongKey, sec.repoID)
		}
		return sec.key, "", nil
	}
	slots, damaged, err := listSlots(ctx, s)
	if err != nil {
		return nil, "", err
	}
	// A damaged or tampered slot must not keep the others from opening: its problem is told
	// only when no slot opens.
	var problems []error
	for _, id := range damaged {
		problems = append(problems, fmt.Errorf("key slot %s is damaged", id))
	}
	for _, sl := range slots {
		m, err := sl.unwrap(desc.ID, sec)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		if m == nil {
			continue
		}
		if !check(m) {
			problems = append(problems, fmt.Errorf("key slot %s opens a key that is not this repository's: the slot was tampered with", sl.ID))
			continue
		}
		return m, sl.ID, nil
	}
	if len(problems) > 0 {
		return nil, "", fmt.Errorf("%w (%w)", ErrWrongKey, errors.Join(problems...))
	}
	return nil, "", ErrWrongKey
}

// Encrypted reports whether the repository seals what it stores.
func (r *Repository) Encrypted() bool { return r.seal != nil }

// UnlockedBy is the id of the key slot that opened the repository; empty for a plain repository
// or one opened with its exported master key.
func (r *Repository) UnlockedBy() string { return r.slotID }

// KeySlots lists the key slots of an encrypted repository; a slot file that does not parse is
// listed with kind SlotDamaged.
func (r *Repository) KeySlots(ctx context.Context) ([]KeySlot, error) {
	if !r.Encrypted() {
		return nil, ErrNotEncrypted
	}
	slots, damaged, err := listSlots(ctx, r.store)
	if err != nil {
		return nil, err
	}
	out := make([]KeySlot, 0, len(slots)+len(damaged))
	for _, sl := range slots {
		out = append(out, *sl)
	}
	for _, id := range damaged {
		out = append(out, KeySlot{ID: id, Kind: SlotDamaged})
	}
	return out, nil
}

// AddKeySlot wraps the master key under a new secret (a password, a key file, or the content of
// another password file) and returns the new slot, durable when it returns.
func (r *Repository) AddKeySlot(ctx context.Context, newSecret []byte) (KeySlot, error) {
	if !r.Encrypted() {
		return KeySlot{}, ErrNotEncrypted
	}
	sec, err := parseSecret(newSecret)
	if err != nil {
		return KeySlot{}, fmt.Errorf("add key slot: %w", err)
	}
	sl, err := newSlot(r.desc.ID, r.master, sec, r.kdfCost)
	if err != nil {
		return KeySlot{}, fmt.Errorf("add key slot: %w", err)
	}
	if err := putSlot(ctx, r.store, sl); err != nil {
		return KeySlot{}, fmt.Errorf("add key slot: %w", err)
	}
	return *sl, nil
}

// RemoveKeySlot removes the slot with that id: ErrKeySlotNotFound when there is none,
// ErrLastKeySlot when it is the only one (checked within this process: two removals at once
// from two processes could still leave none, so do not script them in parallel).
func (r *Repository) RemoveKeySlot(ctx context.Context, id string) error {
	if !r.Encrypted() {
		return ErrNotEncrypted
	}
	r.indexMu.Lock()
	defer r.indexMu.Unlock()
	slots, damaged, err := listSlots(ctx, r.store)
	if err != nil {
		return err
	}
	isDamaged := slices.Contains(damaged, id)
	if !isDamaged && !slices.ContainsFunc(slots, func(sl *KeySlot) bool { return sl.ID == id }) {
		return fmt.Errorf("remove key slot %s: %w", id, ErrKeySlotNotFound)
	}
	if !isDamaged && len(slots) == 1 {
		return fmt.Errorf("remove key slot %s: %w", id, ErrLastKeySlot)
	}
	if err := r.store.Remove(ctx, slotKey(id)); err != nil {
		return fmt.Errorf("remove key slot %s: %w", id, err)
	}
	return nil
}

// ChangeKey replaces the slot with id old by a new slot wrapping the master key under
// newSecret: the new slot is durable before the old one is removed, so a crash between leaves
// both. The data is not re-encrypted; every backup stays readable with the new secret.
func (r *Repository) ChangeKey(ctx context.Context, old string, newSecret []byte) (KeySlot, error) {
	sl, err := r.AddKeySlot(ctx, newSecret)
	if err != nil {
		return KeySlot{}, err
	}
	if err := r.RemoveKeySlot(ctx, old); err != nil {
		return sl, fmt.Errorf("change key: the new slot %s is stored, the old one stays: %w", sl.ID, err)
	}
	return sl, nil
}

// ExportKey returns the repository's master key in the form a password file can hold (and
// AddKeySlot and opening take back). Whoever has it reads every backup: keep it offline.
func (r *Repository) ExportKey() (string, error) {
	if !r.Encrypted() {
		return "", ErrNotEncrypted
	}
	return masterKeyPrefix + r.desc.ID + ":" + base64.RawURLEncoding.EncodeToString(r.master), nil
}

// secretRef is how a password file is recorded: its absolute path, or an "env:NAME" reference
// as it is.
func secretRef(p string) (string, error) {
	if strings.HasPrefix(p, EnvPrefix) {
		if len(p) == len(EnvPrefix) {
			return "", errors.New("password file: env: needs a variable name")
		}
		return p, nil
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	return abs, nil
}
