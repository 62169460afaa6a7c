package disk

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rangeServer serves content over TLS on loopback with correct Range support (http.ServeContent)
// after checking the session cookie.
func rangeServer(t testing.TB, content []byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie("vmware_soap_session"); err != nil || c.Value != "s3cr3t" {
			http.Error(w, "<fault>not authenticated</fault>", http.StatusUnauthorized)
			return
		}
		http.ServeContent(w, r, "disk-flat.vmdk", time.Time{}, bytes.NewReader(content))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func sessionHeader() http.Header {
	return http.Header{"Cookie": {"vmware_soap_session=s3cr3t"}}
}

func diskURL(srv *httptest.Server) string {
	return srv.URL + "/folder/vm1/disk-flat.vmdk?dcPath=DC0&dsName=LocalDS_0"
}

func TestHTTPReader(t *testing.T) {
	_, content := makeImage(t, 12<<20+3333)
	srv := rangeServer(t, content)
	for _, size := range []int64{0, int64(len(content))} {
		t.Run(fmt.Sprintf("size %d", size), func(t *testing.T) {
			r, err := OpenHTTP(t.Context(), srv.Client(), diskURL(srv), size, sessionHeader())
			if err != nil {
				t.Fatalf("OpenHTTP: %v", err)
			}
			defer r.Close()
			if size == 0 {
				checkReader(t, r, content)
				return
			}
			if err := compareRead(r, content, int64(len(content))-100, 4096); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// badRange is a handler that answers Range requests wrongly in one way.
type badRange func(w http.ResponseWriter, first, last int64, content []byte)

// misbehavingServer parses the Range header and lets bad answer it; the probe of byte 0 is
// answered correctly unless probeToo is set, so the failure shows in ReadAt.
func misbehavingServer(t *testing.T, content []byte, probeToo bool, bad badRange) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		spec := strings.TrimPrefix(r.Header.Get("Range"), "bytes=")
		a, b, _ := strings.Cut(spec, "-")
		first, err1 := strconv.ParseInt(a, 10, 64)
		last, err2 := strconv.ParseInt(b, 10, 64)
		if err1 != nil || err2 != nil {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		if first == 0 && last == 0 && !probeToo {
			http.ServeContent(w, r, "disk", time.Time{}, bytes.NewReader(content))
			return
		}
		bad(w, first, last, content)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func partial(w http.ResponseWriter, first, last, total int64, body []byte) {
	w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, total))
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusPartialContent)
	_, _ = w.Write(body)
}

func TestHTTPReaderRejectsWrongAnswers(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef"), 1<<12) // 64 KiB
	size := int64(len(content))
	tests := []struct {
		name     string
		probeToo bool
		bad      badRange
		want     error
	}{
		{"200 with the whole file", false, func(w http.ResponseWriter, _, _ int64, c []byte) {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(c)
		}, ErrRangeNotSupported},
		{"200 to the probe", true, func(w http.ResponseWriter, _, _ int64, c []byte) {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(c)
		}, ErrRangeNotSupported},
		{"shifted Content-Range", false, func(w http.ResponseWriter, first, last int64, c []byte) {
			partial(w, first+1, last+1, int64(len(c)), c[first+1:last+2])
		}, ErrBadContentRange},
		{"right range, wrong bytes length", false, func(w http.ResponseWriter, first, last int64, c []byte) {
			partial(w, first, last, int64(len(c)), c[first:last])
		}, ErrBadContentRange},
		{"wrong total", false, func(w http.ResponseWriter, first, last int64, c []byte) {
			partial(w, first, last, int64(len(c))*2, c[first:last+1])
		}, ErrBadContentRange},
		{"missing Content-Range", false, func(w http.ResponseWriter, first, last int64, c []byte) {
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write(c[first : last+1])
		}, ErrBadContentRange},
		{"body shorter than announced", false, func(w http.ResponseWriter, first, last int64, c []byte) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, len(c)))
			w.Header().Set("Content-Length", strconv.FormatInt(last-first+1, 10))
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write(c[first : first+(last-first)/2])
			// The server closes the connection: fewer bytes than Content-Length.
		}, ErrBadContentRange},
		{"gzip-encoded body", false, func(w http.ResponseWriter, first, last int64, c []byte) {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			_, _ = zw.Write(c[first : last+1])
			_ = zw.Close()
			w.Header().Set("Content-Encoding", "gzip")
			partial(w, first, last, int64(len(c)), buf.Bytes())
		}, ErrBadContentRange},
		{"404", true, func(w http.ResponseWriter, _, _ int64, _ []byte) {
			http.Error(w, "no such file", http.StatusNotFound)
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := misbehavingServer(t, content, tc.probeToo, tc.bad)
			r, err := OpenHTTP(t.Context(), srv.Client(), srv.URL+"/disk", size, nil)
			if err == nil {
				defer r.Close()
				buf := make([]byte, 4096)
				var n int
				n, err = r.ReadAt(buf, 1000)
				if err == nil {
					t.Fatalf("ReadAt accepted a wrong answer (%d bytes)", n)
				}
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.name == "404" {
				var se *HTTPStatusError
				if !errors.As(err, &se) || se.StatusCode != 404 || !strings.Contains(err.Error(), "no such file") {
					t.Fatalf("err = %v, want an HTTPStatusError 404 quoting the body", err)
				}
			}
		})
	}
}

func TestOpenHTTPChecksSizeAndSession(t *testing.T) {
	_, content := makeImage(t, 1<<20)
	srv := rangeServer(t, content)

	t.Run("expected size differs", func(t *testing.T) {
		_, err := OpenHTTP(t.Context(), srv.Client(), diskURL(srv), 10<<30, sessionHeader())
		if !errors.Is(err, ErrSizeMismatch) {
			t.Fatalf("err = %v, want ErrSizeMismatch", err)
		}
	})
	t.Run("no session", func(t *testing.T) {
		_, err := OpenHTTP(t.Context(), srv.Client(), diskURL(srv), 0, nil)
		var se *HTTPStatusError
		if !errors.As(err, &se) || se.StatusCode != http.StatusUnauthorized {
			t.Fatalf("err = %v, want HTTPStatusError 401", err)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Fatalf("error leaks the session: %v", err)
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		_, err := OpenHTTP(t.Context(), &http.Client{}, diskURL(srv), 0, sessionHeader())
		if err == nil {
			t.Fatal("OpenHTTP trusted a self-signed certificate")
		}
	})
	t.Run("bad arguments", func(t *testing.T) {
		for _, u := range []string{"ftp://host/disk", "://nope"} {
			if _, err := OpenHTTP(t.Context(), srv.Client(), u, 0, nil); err == nil {
				t.Errorf("OpenHTTP(%q) succeeded", u)
			}
		}
		if _, err := OpenHTTP(t.Context(), nil, diskURL(srv), 0, nil); err == nil {
			t.Error("OpenHTTP with a nil client succeeded")
		}
	})
}

func TestHTTPEmptyFile(t *testing.T) {
	srv := rangeServer(t, nil)
	r, err := OpenHTTP(t.Context(), srv.Client(), diskURL(srv), 0, sessionHeader())
	if err != nil {
		t.Fatalf("OpenHTTP of an empty file: %v", err)
	}
	defer r.Close()
	if r.Size() != 0 {
		t.Fatalf("Size() = %d, want 0", r.Size())
	}
	// vcsim's flat files are empty although the disk has a capacity: a caller that passes the
	// capacity must get a clear error, not zeros.
	if _, err := OpenHTTP(t.Context(), srv.Client(), diskURL(srv), 10<<30, sessionHeader()); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("err = %v, want ErrSizeMismatch", err)
	}
}

func TestHTTPCloseAbortsReads(t *testing.T) {
	content := make([]byte, 1<<20)
	entered := make(chan struct{}, 1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") == "bytes=0-0" {
			http.ServeContent(w, r, "disk", time.Time{}, bytes.NewReader(content))
			return
		}
		entered <- struct{}{}
		<-r.Context().Done() // a server that never answers
	}))
	t.Cleanup(srv.Close)
	r, err := OpenHTTP(t.Context(), srv.Client(), srv.URL, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.ReadAt(make([]byte, 4096), 4096)
		done <- err
	}()
	<-entered
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadAt still blocked after Close")
	}
	if _, err := r.ReadAt(make([]byte, 10), 0); err == nil {
		t.Fatal("ReadAt after Close succeeded")
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in                 string
		first, last, total int64
		ok                 bool
	}{
		{"bytes 0-0/10", 0, 0, 10, true},
		{"bytes 5-9/10", 5, 9, 10, true},
		{"bytes 5-9/*", 5, 9, -1, true},
		{"bytes 5-9/9", 0, 0, 0, false},
		{"bytes 9-5/10", 0, 0, 0, false},
		{"bytes -1-5/10", 0, 0, 0, false},
		{"items 0-1/2", 0, 0, 0, false},
		{"bytes 0-1", 0, 0, 0, false},
		{"bytes */10", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	}
	for _, tc := range tests {
		first, last, total, err := parseContentRange(tc.in)
		if (err == nil) != tc.ok || (tc.ok && (first != tc.first || last != tc.last || total != tc.total)) {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v", tc.in, first, last, total, err)
		}
	}
}
