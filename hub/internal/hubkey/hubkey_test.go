package hubkey_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/sendense/sendense/hub/internal/hubkey"
)

func TestSealOpen(t *testing.T) {
	k, err := hubkey.Parse([]byte(strings.Repeat("ab", 32) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := hubkey.Parse([]byte(strings.Repeat("cd", 32)))
	plain := []byte("-----BEGIN EC PRIVATE KEY-----")
	s1, s2 := k.Seal("ca", plain), k.Seal("ca", plain)
	if bytes.Equal(s1, s2) || bytes.Contains(s1, plain) {
		t.Fatal("sealing is not randomised or leaks the plaintext")
	}
	got, err := k.Open("ca", s1)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open = %q, %v", got, err)
	}
	if _, err := other.Open("ca", s1); !errors.Is(err, hubkey.ErrWrongKey) {
		t.Fatalf("open under another key: %v", err)
	}
	if _, err := k.Open("server", s1); !errors.Is(err, hubkey.ErrWrongKey) {
		t.Fatalf("open under another name: %v", err)
	}
	s1[len(s1)-1] ^= 1
	if _, err := k.Open("ca", s1); !errors.Is(err, hubkey.ErrWrongKey) {
		t.Fatalf("open altered: %v", err)
	}
	for _, bad := range []string{"", "abcd", strings.Repeat("zz", 32), strings.Repeat("ab", 31)} {
		if _, err := hubkey.Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}
