package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
)

// decodeStrict decodes one JSON object the way the hub decodes request bodies: unknown fields
// refused.
func decodeStrict(b []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(dst)
}

// FuzzInventoryValidate decodes arbitrary JSON into an Inventory, as PUT /api/v1/agent/inventory
// does, and validates it. Validation must not panic, must refuse with a *FieldError naming a
// field, and an inventory it accepts must still be accepted, unchanged, after a JSON round trip
// (what the hub stores and serves is what it checked).
func FuzzInventoryValidate(f *testing.F) {
	good, err := json.Marshal(goodInventory())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"source":{"name":"vc1","url":"https://vc/sdk"},"collected_at":"2025-03-01T12:00:00+01:00","vms":[]}`))
	f.Add([]byte(`{"source":{"name":"vc1"},"vms":[{"instance_uuid":"u","name":"n","disks":[{"key":-1,"disk_id":"disk--1"}]}]}`))
	f.Add([]byte(`{"source":{"name":"vc 1"}}`))
	f.Add([]byte(`{"source":{"name":"vc1"},"vms":[{"instance_uuid":"\u0000","name":"x"}]}`))
	f.Add([]byte(`{"source":{"name":"vc1"},"vms":[{"instance_uuid":"u","name":"x","num_cpu":-1}]}`))
	f.Add([]byte(`{"source":{"name":"\xff"}}`))
	f.Add([]byte(`{"unknown":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var inv Inventory
		if err := decodeStrict(body, &inv); err != nil {
			return
		}
		if err := inv.Validate(); err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("Validate error %v is not a FieldError naming a field", err)
			}
			return
		}
		first, err := json.Marshal(&inv)
		if err != nil {
			t.Fatalf("accepted inventory does not encode: %v", err)
		}
		var again Inventory
		if err := decodeStrict(first, &again); err != nil {
			t.Fatalf("accepted inventory does not decode after encoding: %v\n%s", err, first)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("accepted inventory refused after a JSON round trip: %v\n%s", err, first)
		}
		second, err := json.Marshal(&again)
		if err != nil || !bytes.Equal(first, second) {
			t.Fatalf("JSON round trip changed the inventory (err %v):\n%s\n%s", err, first, second)
		}
	})
}

// FuzzParseJoinToken parses arbitrary strings as join tokens, as `sendense-agent enroll --token`
// does with what an operator pasted. Parsing must not panic; a token it accepts has an id, a
// secret, a normalised 64-hex-digit CA fingerprint and an empty or https hub URL, and its
// String parses back to the same token.
func FuzzParseJoinToken(f *testing.F) {
	fp := strings.Repeat("ab", 32)
	for _, s := range []string{
		JoinToken{HubURL: "https://hub.example.com:8082", ID: "jt-1", Secret: "s3cr3t", CAFingerprint: fp}.String(),
		JoinToken{ID: "i", Secret: "s", CAFingerprint: strings.ToUpper(fp)}.String(),
		JoinToken{HubURL: "https://[::1]:8082/", ID: "i", Secret: "s", CAFingerprint: fp}.String(),
		JoinToken{HubURL: "http://h:1", ID: "i", Secret: "s", CAFingerprint: fp}.String(),
		JoinTokenPrefix + "eyJpZCI6ImkiLCJzZWNyZXQiOiJzIiwiY2Ffc2hhMjU2IjoiQUI6Q0QifQ",
		JoinTokenPrefix + "***",
		JoinTokenPrefix,
		"  " + JoinTokenPrefix + "e30\n",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseJoinToken(s)
		if err != nil {
			return
		}
		if tok.ID == "" || tok.Secret == "" {
			t.Fatalf("accepted %q without id or secret: %+v", s, tok)
		}
		if !hex64.MatchString(tok.CAFingerprint) {
			t.Fatalf("accepted %q with CA fingerprint %q", s, tok.CAFingerprint)
		}
		if tok.HubURL != "" {
			if u, err := url.Parse(tok.HubURL); err != nil || u.Scheme != "https" || u.Host == "" {
				t.Fatalf("accepted %q with hub URL %q", s, tok.HubURL)
			}
		}
		again, err := ParseJoinToken(tok.String())
		if err != nil {
			t.Fatalf("token %+v parsed from %q does not parse back: %v", tok, s, err)
		}
		if again != tok {
			t.Fatalf("token %q parses to %+v, its String to %+v", s, tok, again)
		}
	})
}
