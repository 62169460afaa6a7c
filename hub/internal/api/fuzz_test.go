package api

// Fuzz targets for the parsers that see request bytes before any handler logic: the Range
// header of restore downloads and the JSON body decoder. They are internal tests because both
// are unexported; everything else in this package is tested from api_test.

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/shared/api"
)

// FuzzParseRange checks parseRange against any header and image size: it never panics, refuses
// only with errBadRange, and a range it accepts is non-empty and lies inside the image, which
// is what the Content-Range and Content-Length it answers with promise.
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
		off, n, ok, err := parseRange(h, size)
		switch {
		case err != nil:
			if !errors.Is(err, errBadRange) || ok {
				t.Fatalf("parseRange(%q, %d) = ok %v, %v; want errBadRange", h, size, ok, err)
			}
		case !ok:
			if off != 0 || n != 0 {
				t.Fatalf("parseRange(%q, %d) ignored the header but returned %d+%d", h, size, off, n)
			}
		case off < 0 || n <= 0 || off > size-n:
			t.Fatalf("parseRange(%q, %d) = bytes %d+%d, outside the image or empty", h, size, off, n)
		}
	})
}

// FuzzDecodeJSON feeds arbitrary bodies to decodeJSON with small limits. It must not panic; a
// body it refuses must answer 400 or 413 (never 500, which would log a client's mistake as the
// hub's); a body it accepts is within the limit and decodes the same with encoding/json.
func FuzzDecodeJSON(f *testing.F) {
	gin.SetMode(gin.TestMode)
	for _, body := range []string{
		`{"token_id":"jt-1","token_secret":"s","csr":"-----BEGIN CERTIFICATE REQUEST-----","name":"a","hostname":"h","version":"1"}`,
		`{"token_id":1}`, `{"nope":true}`, `{"name":"a"} {}`, `{"name":"a"}   `, `{"name":"\ud800"}`,
		``, ` `, `null`, `[]`, `{`, `{"name":"a"`, `{"name":"a","name":"b"}`, `{"NAME":"a"}`,
	} {
		f.Add([]byte(body), uint16(256))
		f.Add([]byte(body), uint16(8))
	}
	f.Fuzz(func(t *testing.T, body []byte, limit uint16) {
		c, _ := gin.CreateTestContext(httptest.NewRecorder())
		c.Request = httptest.NewRequest(http.MethodPost, "/api/v1/enroll", bytes.NewReader(body))
		var got api.EnrollRequest
		err := decodeJSON(c, int64(limit), &got)
		if err != nil {
			if code, _ := statusOf(err); code != http.StatusBadRequest && code != http.StatusRequestEntityTooLarge {
				t.Fatalf("decodeJSON(%q, limit %d) = %v, answered %d", body, limit, err, code)
			}
			return
		}
		if len(body) > int(limit) {
			t.Fatalf("decodeJSON accepted %d bytes with a limit of %d", len(body), limit)
		}
		var want api.EnrollRequest
		if err := json.Unmarshal(body, &want); err != nil || want != got {
			t.Fatalf("decodeJSON(%q) = %+v, encoding/json gives %+v, %v", body, got, want, err)
		}
	})
}
