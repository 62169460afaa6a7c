package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func yamlKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		if tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]; tag != "" && tag != "-" {
			keys = append(keys, tag)
		}
	}
	return keys
}

// The example configuration is complete (every key, with its default), accepted unchanged, and
// every key is documented in the README.
func TestExampleIsCompleteAndDocumented(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(p, []byte(Example), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, func(string) string { return "" }, nil)
	if err != nil {
		t.Fatalf("the example is refused: %v", err)
	}
	want := Default()
	want.DataDir = c.DataDir
	if len(c.TLSNames) == 0 {
		c.TLSNames = nil // "tls_names: []" is the default, nil
	}
	if !reflect.DeepEqual(*c, want) {
		t.Fatalf("the example differs from the defaults (besides data_dir):\n%+v\n%+v", *c, want)
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range yamlKeys(reflect.TypeOf(Config{})) {
		if !regexp.MustCompile(`(?m)^` + k + `:`).MatchString(Example) {
			t.Errorf("the example lacks key %s", k)
		}
		if !strings.Contains(string(readme), "`"+k+"`") {
			t.Errorf("the README does not document key %s", k)
		}
	}
	packaged, err := os.ReadFile(filepath.Join("..", "..", "..", "packaging", "config", "hub.yaml"))
	if err != nil || string(packaged) != Example {
		t.Fatalf("packaging/config/hub.yaml is not the example: %v", err)
	}
}
