package pki_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sendense/sendense/hub/internal/hubkey"
	"github.com/sendense/sendense/hub/internal/pki"
)

// memSecrets is the catalog's hub_secrets table in memory.
type memSecrets struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memSecrets) HubSecret(_ context.Context, name string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[name]
	return b, ok, nil
}

func (s *memSecrets) CreateHubSecret(_ context.Context, name string, sealed []byte) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[name]; ok {
		return false, nil
	}
	s.m[name] = sealed
	return true, nil
}

func mustKey(t *testing.T, hexDigit string) *hubkey.Key {
	k, err := hubkey.Parse([]byte(strings.Repeat(hexDigit, 64)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSharedCA(t *testing.T) {
	ctx := t.Context()
	st := &memSecrets{m: map[string][]byte{}}
	key := mustKey(t, "a")

	// A single hub from before keys: its CA moves into the catalog unchanged.
	dirA := t.TempDir()
	old, err := pki.LoadOrCreate(dirA, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, moved, err := pki.LoadOrCreateShared(ctx, st, key, dirA, nil)
	if err != nil || !moved || a.Fingerprint() != old.Fingerprint() {
		t.Fatalf("migrate: moved %v, fingerprint %s want %s, err %v", moved, a.Fingerprint(), old.Fingerprint(), err)
	}
	for _, b := range st.m {
		if strings.Contains(string(b), "PRIVATE KEY") {
			t.Fatal("the catalog holds the CA key in clear")
		}
	}
	// A second hub with an empty data directory uses the same CA, and never writes its key.
	dirB := t.TempDir()
	b, moved, err := pki.LoadOrCreateShared(ctx, st, key, dirB, nil)
	if err != nil || moved || b.Fingerprint() != old.Fingerprint() {
		t.Fatalf("second hub: moved %v, fingerprint %s want %s, err %v", moved, b.Fingerprint(), old.Fingerprint(), err)
	}
	if _, err := os.Stat(filepath.Join(dirB, "ca.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("second hub wrote the CA key to disk: %v", err)
	}
	if crt, err := os.ReadFile(filepath.Join(dirB, "ca.crt")); err != nil || string(crt) != string(old.CertPEM) {
		t.Fatalf("second hub's ca.crt: %v", err)
	}
	// A hub given another key cannot open it.
	if _, _, err := pki.LoadOrCreateShared(ctx, st, mustKey(t, "b"), t.TempDir(), nil); !errors.Is(err, hubkey.ErrWrongKey) {
		t.Fatalf("wrong key: %v", err)
	}
	// A hub with a CA of its own is refused, not silently switched.
	dirC := t.TempDir()
	if _, err := pki.LoadOrCreate(dirC, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pki.LoadOrCreateShared(ctx, st, key, dirC, nil); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Fatalf("own CA: %v", err)
	}
}

func TestSharedCAConcurrentFirstStart(t *testing.T) {
	st := &memSecrets{m: map[string][]byte{}}
	key := mustKey(t, "c")
	fps := make([]string, 6)
	var wg sync.WaitGroup
	for i := range fps {
		wg.Go(func() {
			ca, _, err := pki.LoadOrCreateShared(t.Context(), st, key, t.TempDir(), nil)
			if err != nil {
				t.Error(err)
				return
			}
			fps[i] = ca.Fingerprint()
		})
	}
	wg.Wait()
	for _, fp := range fps {
		if fp != fps[0] {
			t.Fatalf("hubs starting together made different CAs: %v", fps)
		}
	}
}
