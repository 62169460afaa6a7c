package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// read_holes is a file transport setting: accepted with it, refused with a clear error naming
// the key with any other transport.
func TestReadHolesIsForTheFileTransport(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(transport string) (*Config, error) {
		p := filepath.Join(t.TempDir(), "agent.yaml")
		y := fmt.Sprintf("state_dir: %s\nsources:\n  - name: vc1\n    url: https://vc.example/sdk\n    username: u\n    password_file: %s\n"+
			"    insecure: true\n    transport: %s\n    datastore_paths: {ds1: %s}\n    read_holes: true\n", dir, pw, transport, dir)
		if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		return Load(p, func(string) string { return "" }, nil)
	}
	c, err := load("file")
	if err != nil {
		t.Fatalf("read_holes with the file transport: %v", err)
	}
	if !c.Sources[0].ReadHoles {
		t.Fatal("read_holes: true was not read")
	}
	_, err = load("https")
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "sources[0].read_holes" {
		t.Fatalf("read_holes with the https transport: %v, want a FieldError naming sources[0].read_holes", err)
	}
}
