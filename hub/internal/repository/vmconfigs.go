package repository

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/shared/api"
)

// Errors of the VM configuration store. Callers branch on them with errors.Is.
var (
	// ErrVMConfigNotFound: no configuration is stored for that backup.
	ErrVMConfigNotFound = errors.New("vm configuration not found")
	// ErrVMConfigExists: a different configuration is stored for that backup already. Like
	// indexes, configurations are immutable; writing identical content again is not an error.
	ErrVMConfigExists = errors.New("a different vm configuration exists for this backup")
	// ErrVMConfigDamaged: the stored configuration does not match the digest the catalog
	// recorded, or is larger than any configuration can be.
	ErrVMConfigDamaged = errors.New("vm configuration damaged")
)

// vmConfigPrefix holds one JSON object (api.VMConfig) per backup:
// vmconfigs/<vm instance uuid>/<backup id>.json. Garbage collection and the consistency check
// walk chunks/ and indexes/ only, so these keys are neither garbage nor problems to them.
const (
	vmConfigPrefix = "vmconfigs/"
	vmConfigExt    = ".json"
)

func vmConfigKey(vmUUID, backupID string) (string, error) {
	for _, c := range []struct{ name, v string }{{"vm uuid", vmUUID}, {"backup id", backupID}} {
		if err := checkComponent(c.v); err != nil {
			return "", fmt.Errorf("%w: %s %q: %s", ErrInvalidRef, c.name, c.v, err)
		}
	}
	return VMConfigKey(vmUUID, backupID), nil
}

// WriteVMConfig stores the VM configuration of a backup (its JSON, at most
// api.MaxVMConfigBytes) and returns its SHA-256 (lowercase hex) for the catalog. It writes
// durably: when it returns nil the configuration survives a crash. Configurations are
// immutable: the same content again returns nil, different content ErrVMConfigExists (checked
// within this process, like WriteIndex). Safe for concurrent use.
func (r *Repository) WriteVMConfig(ctx context.Context, vmUUID, backupID string, data []byte) (digest string, err error) {
	key, err := vmConfigKey(vmUUID, backupID)
	if err != nil {
		return "", fmt.Errorf("write vm config: %w", err)
	}
	if len(data) == 0 || len(data) > api.MaxVMConfigBytes {
		return "", fmt.Errorf("write vm config %s: %d bytes, want 1 to %d", key, len(data), api.MaxVMConfigBytes)
	}
	sum := sha256.Sum256(data)
	digest = hex.EncodeToString(sum[:])

	stored, err := r.sealObject(key, data)
	if err != nil {
		return "", fmt.Errorf("write vm config %s: %w", key, err)
	}

	r.indexMu.Lock()
	defer r.indexMu.Unlock()
	old, err := r.store.Get(ctx, key, nil, int64(len(stored)))
	switch {
	case err == nil && r.sameObject(key, old, data):
		return digest, nil
	case err == nil, errors.Is(err, store.ErrTooLarge):
		return "", fmt.Errorf("write vm config %s: %w", key, ErrVMConfigExists)
	case !errors.Is(err, store.ErrNotFound):
		return "", fmt.Errorf("write vm config %s: %w", key, err)
	}
	if err := r.store.Put(ctx, key, stored); err != nil {
		return "", fmt.Errorf("write vm config %s: %w", key, err)
	}
	return digest, nil
}

// ReadVMConfig reads the VM configuration of a backup and checks it against digest, the
// SHA-256 the catalog recorded: ErrVMConfigNotFound when there is none, ErrVMConfigDamaged when
// it does not match.
func (r *Repository) ReadVMConfig(ctx context.Context, vmUUID, backupID, digest string) ([]byte, error) {
	key, err := vmConfigKey(vmUUID, backupID)
	if err != nil {
		return nil, fmt.Errorf("read vm config: %w", err)
	}
	b, err := r.store.Get(ctx, key, nil, api.MaxVMConfigBytes+r.objectOverhead())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("read vm config %s: %w", key, ErrVMConfigNotFound)
	case errors.Is(err, store.ErrTooLarge):
		return nil, fmt.Errorf("read vm config %s: %w: %w", key, ErrVMConfigDamaged, err)
	case err != nil:
		return nil, fmt.Errorf("read vm config %s: %w", key, err)
	}
	if b, err = r.openObject(key, b); err != nil {
		return nil, fmt.Errorf("read vm config %s: %w: %w", key, ErrVMConfigDamaged, err)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != digest {
		return nil, fmt.Errorf("read vm config %s: %w: sha-256 %s, the catalog recorded %s", key, ErrVMConfigDamaged, got, digest)
	}
	return b, nil
}

// RemoveVMConfig deletes the VM configuration of a backup durably; one that is not there is
// not an error (a backup taken before configurations were captured has none).
func (r *Repository) RemoveVMConfig(ctx context.Context, vmUUID, backupID string) error {
	key, err := vmConfigKey(vmUUID, backupID)
	if err != nil {
		return fmt.Errorf("remove vm config: %w", err)
	}
	r.indexMu.Lock()
	defer r.indexMu.Unlock()
	if err := r.store.Remove(ctx, key); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("remove vm config %s: %w", key, err)
	}
	return nil
}

// RemoveDamagedVMConfig removes the VM configuration of a backup when it is there and does not
// match digest (ErrVMConfigDamaged), so that it can be written again, and leaves a sound or
// absent one as it is; one under a retention date is hidden instead (see RemoveDamagedIndex).
func (r *Repository) RemoveDamagedVMConfig(ctx context.Context, vmUUID, backupID, digest string) error {
	key, err := vmConfigKey(vmUUID, backupID)
	if err != nil {
		return fmt.Errorf("remove vm config: %w", err)
	}
	r.indexMu.Lock() // judged and removed at once: not one written meanwhile
	defer r.indexMu.Unlock()
	if _, err := r.ReadVMConfig(ctx, vmUUID, backupID, digest); !errors.Is(err, ErrVMConfigDamaged) {
		return nil
	}
	if err := r.removeOrHide(ctx, key); err != nil {
		return fmt.Errorf("remove the damaged vm config %s: %w", key, err)
	}
	return nil
}

// VMConfigKey returns the store key of a backup's VM configuration, for tools and tests that
// look at a repository from outside.
func VMConfigKey(vmUUID, backupID string) string {
	return vmConfigPrefix + vmUUID + "/" + backupID + vmConfigExt
}
