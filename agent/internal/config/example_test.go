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

// The example configuration is complete, accepted unchanged, and every key (also of sources) is
// documented in the README.
func TestExampleIsCompleteAndDocumented(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(Example), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, func(string) string { return "" }, nil)
	if err != nil {
		t.Fatalf("the example is refused: %v", err)
	}
	want := Default()
	if !reflect.DeepEqual(*c, want) && !(len(c.Sources) == 0 && reflect.DeepEqual(withoutSources(*c), withoutSources(want))) {
		t.Fatalf("the example differs from the defaults:\n%+v\n%+v", *c, want)
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	keys := yamlKeys(reflect.TypeOf(Config{}))
	keys = append(keys, yamlKeys(reflect.TypeOf(Source{}))...)
	keys = append(keys, yamlKeys(reflect.TypeOf(NBDConfig{}))...)
	for _, k := range keys {
		re := regexp.MustCompile(`(?m)^[#\s-]*` + k + `:`)
		if !re.MatchString(Example) {
			t.Errorf("the example lacks key %s", k)
		}
		if !re.MatchString(string(readme)) && !strings.Contains(string(readme), k+":") {
			t.Errorf("the README does not document key %s", k)
		}
	}
	packaged, err := os.ReadFile(filepath.Join("..", "..", "..", "packaging", "config", "agent.yaml"))
	if err != nil || string(packaged) != Example {
		t.Fatalf("packaging/config/agent.yaml is not the example: %v", err)
	}
}

func withoutSources(c Config) Config { c.Sources = nil; return c }
