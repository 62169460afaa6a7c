package s3

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// A server-side copy can be answered 200 with an error in its body (S3 documents this for
// CopyObject), which the client library takes for success: Rename then must not remove the
// source, or the object would be under neither key.
func TestRenameKeepsTheSourceWhenTheCopyFailedIn200(t *testing.T) {
	var mu sync.Mutex
	held := map[string]bool{"/bkt/chunks/aa/bb/src": true}
	modified := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodHead && held[r.URL.Path]:
			w.Header().Set("Content-Length", "5")
			w.Header().Set("Last-Modified", modified)
			w.Header().Set("ETag", `"00112233445566778899aabbccddeeff"`)
		case r.Method == http.MethodHead:
			w.WriteHeader(http.StatusNotFound)
		case r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") != "":
			_, _ = io.WriteString(w, `<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>`)
		case r.Method == http.MethodPut:
			held[r.URL.Path] = true
			w.Header().Set("ETag", `"00112233445566778899aabbccddeeff"`)
		case r.Method == http.MethodDelete:
			delete(held, r.URL.Path)
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusNotImplemented)
		}
	}))
	defer srv.Close()
	s, err := connect(Config{Endpoint: srv.URL, Bucket: "bkt", Region: "us-east-1", AccessKey: "a", SecretKey: "b"})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Rename(t.Context(), "chunks/aa/bb/src", "quarantine/dst")
	mu.Lock()
	defer mu.Unlock()
	if err == nil || !held["/bkt/chunks/aa/bb/src"] {
		t.Fatalf("rename after a copy failed in a 200: %v, source kept %v; want an error and the source kept", err, held["/bkt/chunks/aa/bb/src"])
	}
}
