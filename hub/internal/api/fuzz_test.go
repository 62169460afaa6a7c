package api

// Fuzz targets for the parsers that see request bytes before any handler logic. They are
// internal tests because the parsers are unexported; everything else in this package is tested
// from api_test.

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/shared/api"
)

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
