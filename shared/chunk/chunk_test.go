package chunk

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestDigestStringParse(t *testing.T) {
	d := Sum([]byte("sendense"))
	s := d.String()
	if len(s) != 64 || strings.ToLower(s) != s {
		t.Fatalf("String() = %q, want 64 lowercase hex characters", s)
	}
	got, err := ParseDigest(s)
	if err != nil {
		t.Fatalf("ParseDigest(%q): %v", s, err)
	}
	if got != d {
		t.Fatalf("ParseDigest(String()) = %s, want %s", got, d)
	}

	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"short", s[:63]},
		{"long", s + "0"},
		{"uppercase", strings.ToUpper(s)},
		{"non-hex", "g" + s[1:]},
		{"path", "../" + s[3:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseDigest(tc.in); !errors.Is(err, ErrInvalidDigest) {
				t.Fatalf("ParseDigest(%q) error = %v, want ErrInvalidDigest", tc.in, err)
			}
		})
	}
}

func TestDigestJSON(t *testing.T) {
	in := []Digest{Sum([]byte("a")), Sum([]byte("b"))}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `["` + in[0].String() + `","` + in[1].String() + `"]`
	if string(b) != want {
		t.Fatalf("json = %s, want %s", b, want)
	}
	var out []Digest
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0] != in[0] || out[1] != in[1] {
		t.Fatalf("round trip = %v, want %v", out, in)
	}
	if err := json.Unmarshal([]byte(`["XYZ"]`), &out); !errors.Is(err, ErrInvalidDigest) {
		t.Fatalf("unmarshal of a bad digest: %v, want ErrInvalidDigest", err)
	}
}

func TestZeroDigest(t *testing.T) {
	for _, n := range []int{0, 1, 4095, 64 << 10, 64<<10 + 1, 1<<20 + 17, 4 << 20} {
		want := sha256.Sum256(make([]byte, n))
		// Twice: the first computes, the second comes from the cache.
		for i := range 2 {
			if got := ZeroDigest(n); got != Digest(want) {
				t.Fatalf("ZeroDigest(%d) call %d = %s, want %x", n, i, got, want)
			}
		}
	}
	if ZeroDigest(4<<20) == ZeroDigest(4<<20-1) {
		t.Fatal("zero digests of different lengths are equal")
	}
}

// errOverBound marks a case that must fail without a particular sentinel.
var errOverBound = errors.New("any error")

func TestBlobRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name      string
		codec     Codec
		plainLen  int
		payload   int
		wantError error // nil: must succeed
	}{
		{"raw", CodecRaw, 4096, 4096, nil},
		{"raw empty", CodecRaw, 0, 0, nil},
		{"zstd smaller", CodecZstd, 1 << 20, 1000, nil},
		{"zstd at bound", CodecZstd, 1 << 20, MaxPayloadLen(1 << 20), nil},
		{"zstd over bound", CodecZstd, 1 << 20, MaxPayloadLen(1<<20) + 1, errOverBound},
		{"raw length mismatch", CodecRaw, 4096, 4095, ErrCorrupt},
		{"unknown codec", Codec(9), 10, 10, ErrUnknownCodec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := make([]byte, tc.payload)
			for i := range payload {
				payload[i] = byte(rng.Uint32())
			}
			blob, err := AppendBlob([]byte("prefix"), tc.codec, tc.plainLen, payload)
			if tc.wantError != nil {
				if err == nil || (tc.wantError != errOverBound && !errors.Is(err, tc.wantError)) {
					t.Fatalf("AppendBlob error = %v, want %v", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatalf("AppendBlob: %v", err)
			}
			if !bytes.HasPrefix(blob, []byte("prefix")) {
				t.Fatal("AppendBlob dropped dst")
			}
			blob = blob[len("prefix"):]
			if len(blob) != HeaderSize+len(payload) {
				t.Fatalf("blob is %d bytes, want %d", len(blob), HeaderSize+len(payload))
			}
			h, got, err := OpenBlob(blob)
			if err != nil {
				t.Fatalf("OpenBlob: %v", err)
			}
			if h.Codec != tc.codec || int(h.PlaintextLen) != tc.plainLen || int(h.PayloadLen) != len(payload) || h.Version != Version {
				t.Fatalf("header = %+v", h)
			}
			if !bytes.Equal(got, payload) {
				t.Fatal("payload differs")
			}
			if !bytes.Equal(EncodeHeader(h), blob[:HeaderSize]) {
				t.Fatal("EncodeHeader(ParseHeader(b)) != b")
			}
		})
	}
}

func TestSealBlob(t *testing.T) {
	payload := []byte("compressed bytes")
	blob := append(make([]byte, HeaderSize), payload...)
	if err := SealBlob(blob, CodecZstd, 1000); err != nil {
		t.Fatal(err)
	}
	want, err := AppendBlob(nil, CodecZstd, 1000, payload)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(blob, want) {
		t.Fatalf("SealBlob = % x, want % x", blob, want)
	}
	if err := SealBlob(make([]byte, HeaderSize-1), CodecRaw, 0); err == nil {
		t.Fatal("SealBlob accepted a blob shorter than the header")
	}
	if err := SealBlob(append(make([]byte, HeaderSize), 1, 2), CodecRaw, 3); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("SealBlob of a raw payload of the wrong length: %v, want ErrCorrupt", err)
	}
}

func TestHeaderLayout(t *testing.T) {
	// The layout documented in the package comment, byte by byte.
	payload := []byte("hello")
	blob, err := AppendBlob(nil, CodecRaw, len(payload), payload)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{'S', 'D', 'C', 'K', 1, 0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0}
	if !bytes.Equal(blob[:16], want) {
		t.Fatalf("header bytes 0-15 = % x, want % x", blob[:16], want)
	}
	if string(blob[HeaderSize:]) != "hello" {
		t.Fatalf("payload = %q", blob[HeaderSize:])
	}
}

func TestBlobDamage(t *testing.T) {
	payload := bytes.Repeat([]byte("sendense "), 100)
	good, err := AppendBlob(nil, CodecZstd, 4096, payload)
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(b []byte) []byte) []byte {
		return f(bytes.Clone(good))
	}
	for _, tc := range []struct {
		name string
		blob []byte
		want error
	}{
		{"empty", nil, ErrCorrupt},
		{"three bytes", good[:3], ErrCorrupt},
		{"short header", good[:HeaderSize-1], ErrCorrupt},
		{"header only", good[:HeaderSize], ErrCorrupt},
		{"truncated payload", good[:len(good)-1], ErrCorrupt},
		{"trailing byte", append(bytes.Clone(good), 0), ErrCorrupt},
		{"bad magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b }), ErrBadMagic},
		{"not a blob", []byte("PK\x03\x04 a zip file, not a chunk"), ErrBadMagic},
		{"version 2", mutate(func(b []byte) []byte { b[4] = 2; return b }), ErrUnsupportedVersion},
		{"unknown codec", mutate(func(b []byte) []byte { b[5] = 7; return b }), ErrUnknownCodec},
		{"unknown flag", mutate(func(b []byte) []byte { b[6] = 2; return b }), ErrUnsupportedFlags},
		{"sealed flag set on a plain blob", mutate(func(b []byte) []byte { b[6] = FlagSealed; return b }), ErrCorrupt},
		{"sealed flag cleared on a sealed blob", sealedBlob(t, func(b []byte) []byte { b[6] = 0; return b }), ErrCorrupt},
		{"reserved byte", mutate(func(b []byte) []byte { b[7] = 1; return b }), ErrCorrupt},
		{"plaintext length flipped", mutate(func(b []byte) []byte { b[9] ^= 0x01; return b }), ErrCorrupt},
		{"plaintext too large", mutate(func(b []byte) []byte { b[11] = 0x10; return b }), ErrCorrupt},
		{"codec flipped to raw", mutate(func(b []byte) []byte { b[5] = 0; return b }), ErrCorrupt},
		{"payload bit flipped", mutate(func(b []byte) []byte { b[HeaderSize+10] ^= 0x80; return b }), ErrCorrupt},
		{"crc flipped", mutate(func(b []byte) []byte { b[17] ^= 0x01; return b }), ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := OpenBlob(tc.blob)
			if !errors.Is(err, tc.want) {
				t.Fatalf("OpenBlob error = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNewHeaderRefusesBadLength(t *testing.T) {
	for _, n := range []int{-1, MaxPlaintextLen + 1} {
		if _, err := NewHeader(CodecRaw, n, nil); err == nil {
			t.Errorf("NewHeader(plaintext %d) accepted", n)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	good, _ := AppendBlob(nil, CodecZstd, 4<<20, []byte("zstd payload"))
	raw, _ := AppendBlob(nil, CodecRaw, 3, []byte("abc"))
	f.Add(good)
	f.Add(raw)
	f.Add(good[:HeaderSize])
	f.Add([]byte("SDCK"))
	f.Add([]byte{})
	f.Add(append([]byte("SDCK\x02\x01\x00\x00"), make([]byte, 12)...))
	f.Add(sealedBlob(f, func(b []byte) []byte { return b }))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			for _, sentinel := range []error{ErrBadMagic, ErrUnsupportedVersion, ErrUnknownCodec, ErrUnsupportedFlags, ErrCorrupt} {
				if errors.Is(err, sentinel) {
					return
				}
			}
			t.Fatalf("ParseHeader error %v wraps no sentinel", err)
		}
		if !bytes.Equal(EncodeHeader(h), b[:HeaderSize]) {
			t.Fatalf("EncodeHeader(ParseHeader(b)) = % x, want % x", EncodeHeader(h), b[:HeaderSize])
		}
		if h.PlaintextLen > MaxPlaintextLen {
			t.Fatalf("accepted plaintext length %d", h.PlaintextLen)
		}
		over := uint32(0)
		if h.Sealed() {
			over = SealOverhead
		}
		if h.Codec == CodecRaw && h.PayloadLen != h.PlaintextLen+over {
			t.Fatalf("accepted raw header with payload %d != plaintext %d + %d", h.PayloadLen, h.PlaintextLen, over)
		}
		if _, payload, err := OpenBlob(b); err == nil {
			frame := NewHeader
			if h.Sealed() {
				frame = NewSealedHeader
			}
			nh, aerr := frame(h.Codec, int(h.PlaintextLen), payload)
			if again := append(EncodeHeader(nh), payload...); aerr != nil || !bytes.Equal(again, b) {
				t.Fatalf("a blob OpenBlob accepts does not re-encode to itself: %v", aerr)
			}
		}
	})
}

// sealedBlob returns a well-framed sealed raw blob of 8 plaintext bytes, changed by mutate.
func sealedBlob(t testing.TB, mutate func([]byte) []byte) []byte {
	t.Helper()
	payload := bytes.Repeat([]byte{0xa5}, 8+SealOverhead)
	h, err := NewSealedHeader(CodecRaw, 8, payload)
	if err != nil {
		t.Fatal(err)
	}
	return mutate(append(EncodeHeader(h), payload...))
}

func TestSealedFraming(t *testing.T) {
	payload := bytes.Repeat([]byte{0x5a}, 100+SealOverhead)
	for _, tc := range []struct {
		name    string
		codec   Codec
		plain   int
		payload []byte
		ok      bool
	}{
		{"raw", CodecRaw, 100, payload, true},
		{"raw without room for nonce and tag", CodecRaw, 100, payload[:100], false},
		{"zstd", CodecZstd, 4096, payload, true},
		{"zstd shorter than nonce and tag", CodecZstd, 4096, payload[:SealOverhead-1], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := NewSealedHeader(tc.codec, tc.plain, tc.payload)
			if !tc.ok {
				if err == nil {
					t.Fatalf("NewSealedHeader accepted a payload of %d bytes", len(tc.payload))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			blob := append(EncodeHeader(h), tc.payload...)
			got, p, err := OpenBlob(blob)
			if err != nil || !got.Sealed() || !bytes.Equal(p, tc.payload) {
				t.Fatalf("OpenBlob = %+v, %d bytes, %v", got, len(p), err)
			}
			if !bytes.Equal(got.Fields(), blob[:16]) {
				t.Fatalf("Fields = % x, want header bytes 0-15 % x", got.Fields(), blob[:16])
			}
			if len(blob) > MaxSealedBlobLen(tc.plain) {
				t.Fatalf("sealed blob of %d bytes exceeds MaxSealedBlobLen %d", len(blob), MaxSealedBlobLen(tc.plain))
			}
		})
	}
}
