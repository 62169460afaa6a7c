package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/api"
)

const testToken = "sdt_tok1.s3cr3t-never-shown-0123456789"

// newTestClient starts a TLS server on loopback with h and returns a client that trusts only
// its certificate.
func newTestClient(t *testing.T, h http.Handler) (*Client, *httptest.Server) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{URL: srv.URL, TokenFile: tok, CAFile: ca, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c, srv
}

type memWriterAt struct {
	mu  sync.Mutex
	buf []byte
}

func (m *memWriterAt) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if need := off + int64(len(p)); need > int64(len(m.buf)) {
		m.buf = append(m.buf, make([]byte, need-int64(len(m.buf)))...)
	}
	copy(m.buf[off:], p)
	return len(p), nil
}

// A download broken part-way is resumed from the byte reached, pinned to the same image.
func TestDownloadImageResumesWithRange(t *testing.T) {
	img := make([]byte, 5<<20+123)
	_, _ = rand.Read(img)
	path := api.Path(api.PathBackupImage, "bk-1", "disk-2000")
	var mu sync.Mutex
	var ranges []string
	breaks := 2
	c, _ := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path || r.Header.Get("Authorization") != "Bearer "+testToken {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range")+"|"+r.Header.Get("If-Range"))
		brk := breaks > 0
		breaks--
		mu.Unlock()
		w.Header().Set("ETag", `"idx-1"`)
		if brk {
			// Announce the rest of the image, send 1.5 MiB of it, and cut the connection.
			start := int64(0)
			if rng := r.Header.Get("Range"); rng != "" {
				start = mustRangeStart(t, rng)
				w.Header().Set("Content-Range", "bytes "+itoa(start)+"-"+itoa(int64(len(img))-1)+"/"+itoa(int64(len(img))))
				w.Header().Set("Content-Length", itoa(int64(len(img))-start))
				w.WriteHeader(http.StatusPartialContent)
			} else {
				w.Header().Set("Content-Length", itoa(int64(len(img))))
				w.WriteHeader(http.StatusOK)
			}
			_, _ = w.Write(img[start : start+3<<19])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(img))
	}))
	var dst memWriterAt
	var last int64
	n, err := c.DownloadImage(t.Context(), "bk-1", "disk-2000", "", &dst, func(done int64) { last = done })
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(img)) || !bytes.Equal(dst.buf, img) || last != n {
		t.Fatalf("downloaded %d bytes (progress %d), equal %v", n, last, bytes.Equal(dst.buf, img))
	}
	want := []string{"|", `bytes=1572864-|"idx-1"`, `bytes=3145728-|"idx-1"`}
	if strings.Join(ranges, " ") != strings.Join(want, " ") {
		t.Fatalf("requests %q, want %q", ranges, want)
	}
}

// An image that changed between the attempts (If-Range no longer matches) is not stitched.
func TestDownloadImageRefusesAChangedImage(t *testing.T) {
	img := make([]byte, 3<<20)
	first := true
	c, _ := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if first {
			first = false
			w.Header().Set("ETag", `"old"`)
			w.Header().Set("Content-Length", itoa(int64(len(img))))
			_, _ = w.Write(img[:1<<20])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		w.Header().Set("ETag", `"new"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(img))
	}))
	_, err := c.DownloadImage(t.Context(), "bk-1", "disk-2000", "", &memWriterAt{}, nil)
	if !errors.Is(err, errChanged) {
		t.Fatalf("changed image: %v", err)
	}
}

// The API's error body comes back as the error, with its status and field; the token never.
func TestErrorsCarryTheAPIMessage(t *testing.T) {
	c, _ := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case api.PathVMs:
			w.WriteHeader(http.StatusForbidden)
			_ = json.NewEncoder(w).Encode(api.Error{Error: "api token role does not allow this: operator role is needed, token tok1 has viewer", Code: api.CodeForbidden})
		case api.PathBackups:
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(api.Error{Error: "must be between 0 and 1", Code: api.CodeInvalidField, Field: "cbt_sample"})
		default:
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("<html>\x1b[2J proxy says no " + testToken + "</html>"))
		}
	}))
	ctx := t.Context()
	_, err := c.VMs(ctx, "", "", "", 0)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 403 || ae.Body.Code != api.CodeForbidden ||
		err.Error() != "hub answered 403: api token role does not allow this: operator role is needed, token tok1 has viewer" {
		t.Fatalf("403: %v", err)
	}
	_, err = c.StartBackup(ctx, api.StartBackupRequest{VM: "x"})
	if err == nil || err.Error() != "hub answered 400: cbt_sample: must be between 0 and 1" {
		t.Fatalf("400 with a field: %v", err)
	}
	_, err = c.Agents(ctx)
	if err == nil || err.Error() != "hub answered 502: Bad Gateway" {
		t.Fatalf("502 without an API body: %v", err)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(tok, []byte(testToken), 0o600)
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{TokenFile: tok}, "hub URL is empty"},
		{Options{URL: "http://hub:8082", TokenFile: tok}, "only https"},
		{Options{URL: "hub:8082", TokenFile: tok}, "want https://host:port"},
		{Options{URL: "https://hub:8082"}, "token file is not set"},
		{Options{URL: "https://hub:8082", TokenFile: empty}, "is empty"},
		{Options{URL: "https://hub:8082", TokenFile: tok, CAFile: tok}, "holds no PEM certificate"},
	} {
		if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want %q", tc.o, err, tc.want)
		}
	}
}

func mustRangeStart(t *testing.T, rng string) int64 {
	n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(rng, "bytes="), "-"), 10, 64)
	if err != nil {
		t.Errorf("range %q", rng)
	}
	return n
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// A verification is answered when done: the per-request answer timeout, which bounds every
// other request, does not cut it short.
func TestVerifyOutlastsTheAnswerTimeout(t *testing.T) {
	c, _ := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"backups":2,"chunks":7,"damaged_chunks":[],"quarantined":[],"damaged_backups":{},"healed":[],"duration_nanoseconds":5}`))
	}))
	c.timeout = 100 * time.Millisecond
	if _, err := c.Backup(t.Context(), "bk-1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("an ordinary request past the timeout: %v", err)
	}
	rep, err := c.Verify(t.Context(), "")
	if err != nil || rep.Backups != 2 || rep.Chunks != 7 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}
