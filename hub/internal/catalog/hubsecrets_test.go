package catalog_test

import (
	"bytes"
	"testing"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
)

func TestHubSecretsFirstWins(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		if _, ok, err := c.HubSecret(t.Context(), "ca"); err != nil || ok {
			t.Fatalf("empty catalog: found %v, %v", ok, err)
		}
		first := []byte{1, 0, 0xff, 'x'}
		if ok, err := c.CreateHubSecret(t.Context(), "ca", first); err != nil || !ok {
			t.Fatalf("create = %v, %v", ok, err)
		}
		if ok, err := c.CreateHubSecret(t.Context(), "ca", []byte("second")); err != nil || ok {
			t.Fatalf("second create = %v, %v; want refused", ok, err)
		}
		got, ok, err := c.HubSecret(t.Context(), "ca")
		if err != nil || !ok || !bytes.Equal(got, first) {
			t.Fatalf("read = %x, %v, %v; want %x", got, ok, err, first)
		}
	})
}
