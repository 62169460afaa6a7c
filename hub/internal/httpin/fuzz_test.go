package httpin_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sendense/sendense/hub/internal/httpin"
	"github.com/sendense/sendense/shared/api"
)

// FuzzParseRange checks ParseRange against any header and image size: it never panics, refuses
// only with ErrBadRange, and a range it accepts is non-empty and lies inside the image, which
// is what the Content-Range and Content-Length answered with it promise.
func FuzzParseRange(f *testing.F) {
	for _, h := range []string{
		"bytes=0-99", "bytes=100-", "bytes=-5", "bytes=-0", "bytes=5-4", "bytes=0-0", "bytes=0-0,5-9",
		"items=0-1", "bytes=", "bytes=-", "bytes= 7 - 9", "bytes=+1-2", "bytes=9223372036854775807-",
		"bytes=-9223372036854775808", "bytes=0-9223372036854775807", "bytes=1--1",
	} {
		for _, size := range []int64{0, 1, 100, math.MaxInt64} {
			f.Add(h, size)
		}
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			return // image sizes come from an index and are never negative
		}
		off, n, ok, err := httpin.ParseRange(h, size)
		switch {
		case err != nil:
			if !errors.Is(err, httpin.ErrBadRange) || ok {
				t.Fatalf("ParseRange(%q, %d) = ok %v, %v; want ErrBadRange", h, size, ok, err)
			}
		case !ok:
			if off != 0 || n != 0 {
				t.Fatalf("ParseRange(%q, %d) ignored the header but returned %d+%d", h, size, off, n)
			}
		case off < 0 || n <= 0 || off > size-n:
			t.Fatalf("ParseRange(%q, %d) = bytes %d+%d, outside the image or empty", h, size, off, n)
		}
	})
}

// FuzzDecodeJSON feeds arbitrary bodies to DecodeJSON with small limits, with their length
// declared or not (chunked). It must not panic; a body it refuses gets a field error or
// ErrTooLarge (400 or 413, never 500, which would log a client's mistake as the hub's); a body
// it accepts is within the limit and decodes the same with encoding/json.
func FuzzDecodeJSON(f *testing.F) {
	for _, body := range []string{
		`{"token_id":"jt-1","token_secret":"s","csr":"-----BEGIN CERTIFICATE REQUEST-----","name":"a","hostname":"h","version":"1"}`,
		`{"token_id":1}`, `{"nope":true}`, `{"name":"a"} {}`, `{"name":"a"}   `, `{"name":"\ud800"}`,
		``, ` `, `null`, `[]`, `{`, `{"name":"a"`, `{"name":"a","name":"b"}`, `{"NAME":"a"}`,
	} {
		for _, declared := range []bool{true, false} {
			f.Add([]byte(body), uint16(256), declared)
			f.Add([]byte(body), uint16(8), declared)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, limit uint16, declared bool) {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/enroll", bytes.NewReader(body))
		if !declared {
			r.ContentLength = -1
		}
		var got api.EnrollRequest
		err := httpin.DecodeJSON(httptest.NewRecorder(), r, int64(limit), &got)
		if err != nil {
			var fe *api.FieldError
			if !errors.As(err, &fe) && !errors.Is(err, httpin.ErrTooLarge) {
				t.Fatalf("DecodeJSON(%q, limit %d) = %v, neither a field error nor ErrTooLarge", body, limit, err)
			}
			return
		}
		if len(body) > int(limit) {
			t.Fatalf("DecodeJSON accepted %d bytes with a limit of %d", len(body), limit)
		}
		var want api.EnrollRequest
		if err := json.Unmarshal(body, &want); err != nil || want != got {
			t.Fatalf("DecodeJSON(%q) = %+v, encoding/json gives %+v, %v", body, got, want, err)
		}
	})
}
