package httpin_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sendense/sendense/hub/internal/httpin"
	"github.com/sendense/sendense/shared/api"
)

// A body of the wrong JSON kind is named in JSON's terms, never in Go's: the operator sent JSON.
func TestDecodeJSONNamesJSONKinds(t *testing.T) {
	for _, tc := range []struct{ body, field, msg string }{
		{`[]`, "body", "must be a JSON object, not array"},
		{`"x"`, "body", "must be a JSON object, not string"},
		{`{"vm":1}`, "vm", "must be a string, not number"},
		{`{"vm":"a","cbt_sample":"all"}`, "cbt_sample", "must be a number, not string"},
		{`{"vm":"a","colour":"red"}`, "colour", "unknown field"},
		{`{"vm":"a"} {}`, "body", "trailing data after the JSON object"},
		{``, "body", "empty; a JSON object is required"},
	} {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/backups", strings.NewReader(tc.body))
		var got api.StartBackupRequest
		err := httpin.DecodeJSON(httptest.NewRecorder(), r, 1<<10, &got)
		var fe *api.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || fe.Msg != tc.msg {
			t.Errorf("DecodeJSON(%s) = %v, want field %q: %q", tc.body, err, tc.field, tc.msg)
		}
	}
}

// countingBody counts the bytes read from it.
type countingBody struct {
	r io.Reader
	n int
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += n
	return n, err
}

func (b *countingBody) Close() error { return nil }

// A body over the limit is refused with ErrTooLarge: at once, reading nothing, when its length
// is declared; once the limit is passed when it is not (chunked). One at the limit is decoded.
func TestDecodeJSONLimit(t *testing.T) {
	const limit = 64
	over := `{"vm":"` + strings.Repeat("v", limit) + `"}`
	for _, declared := range []bool{true, false} {
		body := &countingBody{r: strings.NewReader(over)}
		r := httptest.NewRequest(http.MethodPost, "/api/v1/backups", nil)
		r.Body, r.ContentLength = body, int64(len(over))
		if !declared {
			r.ContentLength = -1
		}
		var got api.StartBackupRequest
		err := httpin.DecodeJSON(httptest.NewRecorder(), r, limit, &got)
		if !errors.Is(err, httpin.ErrTooLarge) {
			t.Fatalf("declared %v: %d bytes with a limit of %d: %v, want ErrTooLarge", declared, len(over), limit, err)
		}
		if declared && body.n != 0 {
			t.Fatalf("a body declared over the limit was read (%d bytes)", body.n)
		}
		if !declared && body.n > limit+1 {
			t.Fatalf("an undeclared body was read past the limit: %d bytes", body.n)
		}
	}
	at := `{"vm":"` + strings.Repeat("v", limit-len(`{"vm":""}`)) + `"}`
	r := httptest.NewRequest(http.MethodPost, "/api/v1/backups", strings.NewReader(at))
	r.ContentLength = -1
	var got api.StartBackupRequest
	if err := httpin.DecodeJSON(httptest.NewRecorder(), r, limit, &got); err != nil || len(got.VM) != limit-len(`{"vm":""}`) {
		t.Fatalf("a body of exactly the limit: %v, %q", err, got.VM)
	}
}

// A slow body's error passes through as it is, so that the API answers 408 and not 400.
func TestDecodeJSONPassesSlowBodyThrough(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/api/v1/backups", nil)
	r.Body, r.ContentLength = io.NopCloser(io.MultiReader(strings.NewReader(`{"vm":`), errReader{httpin.ErrSlowBody})), -1
	var got api.StartBackupRequest
	if err := httpin.DecodeJSON(httptest.NewRecorder(), r, 1<<10, &got); !errors.Is(err, httpin.ErrSlowBody) {
		t.Fatalf("DecodeJSON of a slow body: %v, want ErrSlowBody", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// ParseRange's answers for the forms a client sends.
func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		h        string
		size     int64
		off, n   int64
		ok, fail bool
	}{
		{h: "bytes=0-99", size: 1000, off: 0, n: 100, ok: true},
		{h: "bytes=900-", size: 1000, off: 900, n: 100, ok: true},
		{h: "bytes=-10", size: 1000, off: 990, n: 10, ok: true},
		{h: "bytes=-4096", size: 1000, off: 0, n: 1000, ok: true},
		{h: "bytes=990-5000", size: 1000, off: 990, n: 10, ok: true},
		{h: "bytes=0-1,5-9", size: 1000},
		{h: "items=0-1", size: 1000},
		{h: "bytes=1000-", size: 1000, fail: true},
		{h: "bytes=-5", size: 0, fail: true},
		{h: "bytes=9-5", size: 1000, fail: true},
		{h: "bytes=x", size: 1000, fail: true},
	} {
		off, n, ok, err := httpin.ParseRange(tc.h, tc.size)
		if (err != nil) != tc.fail || (err != nil && !errors.Is(err, httpin.ErrBadRange)) || ok != tc.ok || off != tc.off || n != tc.n {
			t.Errorf("ParseRange(%q, %d) = %d+%d ok %v, %v", tc.h, tc.size, off, n, ok, err)
		}
	}
}
