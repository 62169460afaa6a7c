package pki

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sendense/sendense/shared/atomicfile"
)

// SecretName is the name the CA is sealed under in the catalog.
const SecretName = "ca"

// secretStore keeps sealed secrets shared by the hubs of one catalog (the catalog).
type secretStore interface {
	// HubSecret returns the sealed secret name and whether there is one.
	HubSecret(ctx context.Context, name string) ([]byte, bool, error)
	// CreateHubSecret stores it unless one exists (of concurrent callers, one wins) and reports
	// whether this call stored it.
	CreateHubSecret(ctx context.Context, name string, sealed []byte) (bool, error)
}

// sealer seals and opens secrets under the hub key, bound to their name.
type sealer interface {
	Seal(name string, plain []byte) []byte
	Open(name string, sealed []byte) ([]byte, error)
}

type sealedCA struct {
	CertPEM string `json:"cert_pem"`
	KeyPEM  string `json:"key_pem"`
}

// LoadOrCreateShared loads the CA that the hubs sharing a catalog share, sealed in it under the
// hub key. When the catalog holds none, it stores the CA found in dir (a single hub's, from
// before it was given a key), or a new one; of several hubs starting at once, one CA wins and
// every hub uses it. The CA's certificate is written to dir/ca.crt for operators and clients;
// its key stays only in the catalog, sealed (a key file left in dir by an earlier single hub is
// left alone, and must match). It reports whether the CA in dir was moved into the catalog.
func LoadOrCreateShared(ctx context.Context, st secretStore, key sealer, dir string, now func() time.Time) (*CA, bool, error) {
	if now == nil {
		now = time.Now
	}
	var local *CA
	if _, err := os.Stat(filepath.Join(dir, caKeyFile)); err == nil {
		var err error
		if local, err = LoadOrCreate(dir, now); err != nil {
			return nil, false, err
		}
	}
	ca, err := openShared(ctx, st, key, dir, now)
	if err != nil {
		return nil, false, err
	}
	moved := false
	if ca == nil {
		var certPEM, keyPEM []byte
		if local != nil {
			certPEM = local.CertPEM
			if keyPEM, err = encodeKey(local.key); err != nil {
				return nil, false, err
			}
		} else if certPEM, keyPEM, err = generate(now); err != nil {
			return nil, false, err
		}
		plain, err := json.Marshal(sealedCA{CertPEM: string(certPEM), KeyPEM: string(keyPEM)})
		if err != nil {
			return nil, false, err
		}
		created, err := st.CreateHubSecret(ctx, SecretName, key.Seal(SecretName, plain))
		if err != nil {
			return nil, false, err
		}
		moved = created && local != nil
		// Whoever won, the catalog's CA is the one.
		if ca, err = openShared(ctx, st, key, dir, now); err != nil {
			return nil, false, err
		}
		if ca == nil {
			return nil, false, errors.New("CA vanished from the catalog after it was stored")
		}
	}
	if local != nil && !local.key.PublicKey.Equal(ca.key.Public()) {
		return nil, false, fmt.Errorf("the CA in %s differs from the one the catalog holds (fingerprint %s): agents enrolled with this hub's own CA would not be trusted; remove %s and %s to use the shared CA (and enroll those agents again)",
			dir, ca.Fingerprint(), caCertFile, caKeyFile)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create pki directory: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, caCertFile), ca.CertPEM, 0o644); err != nil {
		return nil, false, err
	}
	return ca, moved, nil
}

// LocalKeyFile is the file in dir where a hub keeps its own CA's key in plain; once the CA is
// shared in the catalog it is needed no more.
func LocalKeyFile(dir string) string { return filepath.Join(dir, caKeyFile) }

// openShared returns the catalog's CA, or nil when it holds none.
func openShared(ctx context.Context, st secretStore, key sealer, dir string, now func() time.Time) (*CA, error) {
	sealed, ok, err := st.HubSecret(ctx, SecretName)
	if err != nil || !ok {
		return nil, err
	}
	plain, err := key.Open(SecretName, sealed)
	if err != nil {
		return nil, err
	}
	var s sealedCA
	if err := json.Unmarshal(plain, &s); err != nil {
		return nil, fmt.Errorf("sealed CA: %w", err)
	}
	return fromPEM([]byte(s.CertPEM), []byte(s.KeyPEM), dir, now)
}
