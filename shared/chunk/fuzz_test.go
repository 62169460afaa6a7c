package chunk

import (
	"bytes"
	"errors"
	"testing"
)

// sentinels are the errors that every refusal of ParseHeader, Header.Check and OpenBlob wraps,
// exactly one at a time.
var sentinels = []error{ErrBadMagic, ErrUnsupportedVersion, ErrUnknownCodec, ErrUnsupportedFlags, ErrCorrupt}

func checkSentinel(t *testing.T, what string, err error) {
	t.Helper()
	n := 0
	for _, s := range sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%s: error %q wraps %d of the chunk sentinels, want exactly 1", what, err, n)
	}
}

// FuzzOpenBlob feeds arbitrary bytes, as an upload or a damaged file would, to OpenBlob. It must
// not panic, must refuse with one of the documented sentinels, and a blob it accepts must be
// exactly the canonical framing of its payload: the length the header declares, the plaintext
// itself for raw blobs, a payload within MaxPayloadLen for zstd ones.
func FuzzOpenBlob(f *testing.F) {
	for _, seed := range blobSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, blob []byte) {
		h, payload, err := OpenBlob(blob)
		ph, perr := ParseHeader(blob)
		if err != nil {
			checkSentinel(t, "OpenBlob", err)
			if perr != nil {
				checkSentinel(t, "ParseHeader", perr)
			} else {
				checkSentinel(t, "Header.Check", ph.Check(blob[HeaderSize:]))
			}
			return
		}
		if perr != nil || ph != h {
			t.Fatalf("OpenBlob accepted header %+v, ParseHeader gives %+v, %v", h, ph, perr)
		}
		if h.PlaintextLen > MaxPlaintextLen {
			t.Fatalf("accepted plaintext length %d over %d", h.PlaintextLen, MaxPlaintextLen)
		}
		if uint64(len(payload)) != uint64(h.PayloadLen) || len(blob) != HeaderSize+len(payload) {
			t.Fatalf("payload of %d bytes in a blob of %d, header declares %d", len(payload), len(blob), h.PayloadLen)
		}
		if h.Flags&^FlagSealed != 0 {
			t.Fatalf("accepted unknown flags %#x", h.Flags)
		}
		over := 0
		if h.Sealed() {
			over = SealOverhead
			if len(payload) < SealOverhead {
				t.Fatalf("sealed payload of %d bytes has no room for nonce and tag", len(payload))
			}
		}
		switch h.Codec {
		case CodecRaw:
			if len(payload) != int(h.PlaintextLen)+over {
				t.Fatalf("raw payload of %d bytes declares %d plaintext bytes", len(payload), h.PlaintextLen)
			}
		case CodecZstd:
			if len(payload) > MaxPayloadLen(int(h.PlaintextLen))+over {
				t.Fatalf("zstd payload of %d bytes over the bound %d", len(payload), MaxPayloadLen(int(h.PlaintextLen))+over)
			}
		default:
			t.Fatalf("accepted unknown codec %d", h.Codec)
		}
		if len(blob) > MaxSealedBlobLen(int(h.PlaintextLen)) || (!h.Sealed() && len(blob) > MaxBlobLen(int(h.PlaintextLen))) {
			t.Fatalf("accepted blob of %d bytes over the bound for %d plaintext bytes", len(blob), h.PlaintextLen)
		}
		frame := NewHeader
		if h.Sealed() {
			frame = NewSealedHeader
		}
		nh, err := frame(h.Codec, int(h.PlaintextLen), payload)
		if err != nil {
			t.Fatalf("accepted blob does not re-frame: %v", err)
		}
		again := append(EncodeHeader(nh), payload...)
		if !bytes.Equal(again, blob) {
			t.Fatalf("accepted blob is not canonical:\n got % x\nwant % x", blob[:HeaderSize], again[:HeaderSize])
		}
	})
}

// FuzzBlobRoundTrip frames arbitrary payloads with AppendBlob and SealBlob and opens them again:
// whatever the framing accepts must open to the same header and payload, and a raw blob to the
// plaintext itself.
func FuzzBlobRoundTrip(f *testing.F) {
	f.Add(uint8(CodecRaw), uint32(0), []byte{})
	f.Add(uint8(CodecRaw), uint32(8), []byte("sendense"))
	f.Add(uint8(CodecZstd), uint32(5), []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00})
	f.Add(uint8(CodecZstd), uint32(0), bytes.Repeat([]byte{0xff}, 1025))
	f.Add(uint8(7), uint32(3), []byte("abc"))
	f.Fuzz(func(t *testing.T, codec uint8, plaintextLen uint32, payload []byte) {
		c := Codec(codec)
		n := int(plaintextLen)
		if c == CodecRaw {
			// Raw blobs round trip any plaintext: the payload is the plaintext.
			n = len(payload)
		}
		blob, err := AppendBlob([]byte("prefix"), c, n, payload)
		if err != nil {
			if c == CodecRaw {
				t.Fatalf("raw plaintext of %d bytes refused: %v", len(payload), err)
			}
			return
		}
		blob = blob[len("prefix"):]
		h, got, err := OpenBlob(blob)
		if err != nil {
			t.Fatalf("AppendBlob's blob does not open: %v", err)
		}
		if h.Codec != c || int(h.PlaintextLen) != n || !bytes.Equal(got, payload) {
			t.Fatalf("opened %v, %d bytes of plaintext, payload %d bytes; framed %v, %d, %d", h.Codec, h.PlaintextLen, len(got), c, n, len(payload))
		}

		sealed := append(make([]byte, HeaderSize), payload...)
		if err := SealBlob(sealed, c, n); err != nil {
			t.Fatalf("SealBlob refuses what AppendBlob accepted: %v", err)
		}
		if !bytes.Equal(sealed, blob) {
			t.Fatalf("SealBlob and AppendBlob differ:\n% x\n% x", sealed[:HeaderSize], blob[:HeaderSize])
		}
	})
}

// FuzzParseDigest checks that a digest has exactly one spelling: whatever ParseDigest accepts
// prints back as the same string, and UnmarshalText agrees with it.
func FuzzParseDigest(f *testing.F) {
	d := Sum([]byte("sendense"))
	f.Add(d.String())
	f.Add(ZeroDigest(4 << 20).String())
	f.Add("")
	f.Add(d.String()[:63] + "G")
	f.Add(string(bytes.ToUpper([]byte(d.String()))))
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		var u Digest
		uerr := u.UnmarshalText([]byte(s))
		if err != nil {
			if !errors.Is(err, ErrInvalidDigest) {
				t.Fatalf("ParseDigest(%q) error %v does not wrap ErrInvalidDigest", s, err)
			}
			if uerr == nil {
				t.Fatalf("UnmarshalText accepts %q, ParseDigest refuses it", s)
			}
			return
		}
		if d.String() != s {
			t.Fatalf("ParseDigest(%q) prints back as %q", s, d)
		}
		if uerr != nil || u != d {
			t.Fatalf("UnmarshalText(%q) = %s, %v; ParseDigest gives %s", s, u, uerr, d)
		}
	})
}

// blobSeeds returns valid blobs of both codecs and a few damaged ones.
func blobSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	raw, err := AppendBlob(nil, CodecRaw, 8, []byte("sendense"))
	if err != nil {
		tb.Fatal(err)
	}
	empty, err := AppendBlob(nil, CodecRaw, 0, nil)
	if err != nil {
		tb.Fatal(err)
	}
	// A zstd frame of "sendense" (single segment, raw block); its content is not checked here.
	zst, err := AppendBlob(nil, CodecZstd, 8, []byte("\x28\xb5\x2f\xfd\x20\x08\x41\x00\x00sendense"))
	if err != nil {
		tb.Fatal(err)
	}
	flipped := bytes.Clone(raw)
	flipped[len(flipped)-1] ^= 1
	// Sealed blobs: nonce, ciphertext and tag are opaque to the framing.
	sealedPayload := bytes.Repeat([]byte{0x3c}, 8+SealOverhead)
	sh, err := NewSealedHeader(CodecRaw, 8, sealedPayload)
	if err != nil {
		tb.Fatal(err)
	}
	sealed := append(EncodeHeader(sh), sealedPayload...)
	zh, err := NewSealedHeader(CodecZstd, 4096, sealedPayload[:SealOverhead+3])
	if err != nil {
		tb.Fatal(err)
	}
	sealedZst := append(EncodeHeader(zh), sealedPayload[:SealOverhead+3]...)
	return [][]byte{raw, empty, zst, flipped, sealed, sealedZst, sealed[:len(sealed)-1], raw[:HeaderSize-1], raw[:len(raw)-1], append(bytes.Clone(raw), 0), []byte("SDCK"), nil}
}
