package api

import (
	"strings"
	"testing"
)

func TestJoinTokenRoundTrip(t *testing.T) {
	in := JoinToken{HubURL: "https://hub.example.com:8082", ID: "jt-1", Secret: "s3cr3t", CAFingerprint: strings.Repeat("ab", 32)}
	out, err := ParseJoinToken("  " + in.String() + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("got %+v, want %+v", out, in)
	}
}

func TestParseJoinTokenRejects(t *testing.T) {
	good := JoinToken{HubURL: "https://h:1", ID: "i", Secret: "s", CAFingerprint: strings.Repeat("0", 64)}
	for name, s := range map[string]string{
		"empty":          "",
		"no prefix":      "abc",
		"not base64":     JoinTokenPrefix + "***",
		"not json":       JoinTokenPrefix + "aGVsbG8",
		"no secret":      JoinToken{ID: "i", CAFingerprint: good.CAFingerprint}.String(),
		"bad fp":         JoinToken{ID: "i", Secret: "s", CAFingerprint: "abc"}.String(),
		"plain http hub": JoinToken{HubURL: "http://h:1", ID: "i", Secret: "s", CAFingerprint: good.CAFingerprint}.String(),
		"truncated":      good.String()[:len(good.String())-5],
	} {
		if _, err := ParseJoinToken(s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
