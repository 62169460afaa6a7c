package api

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/httpin"
	"github.com/sendense/sendense/shared/api"
)

// A full repository file system (ENOSPC while a chunk is stored) is answered 507 with a message
// that says so, not as an internal error, and without the hub's file paths.
func TestOutOfSpaceIsInsufficientStorage(t *testing.T) {
	s := New(Deps{Log: slog.New(slog.DiscardHandler)})
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT} {
		err := fmt.Errorf("store chunk: %w", &fs.PathError{Op: "write", Path: "/srv/repo/tmp/1234/put-5678", Err: errno})
		if code, ecode := statusOf(err); code != http.StatusInsufficientStorage || ecode != api.CodeStorageFull {
			t.Fatalf("%v: status %d %q, want 507 %q", errno, code, ecode, api.CodeStorageFull)
		}
		w := httptest.NewRecorder()
		c, _ := gin.CreateTestContext(w)
		c.Request = httptest.NewRequest(http.MethodPut, "/chunk", nil)
		s.fail(c, err)
		var body api.Error
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != http.StatusInsufficientStorage {
			t.Fatalf("%v: %d %s", errno, w.Code, w.Body)
		}
		if !strings.Contains(body.Error, "out of storage space") || strings.Contains(body.Error, "/srv/repo") {
			t.Fatalf("%v: error body %q", errno, body.Error)
		}
	}
}

// The errors of the request parsers get their statuses: 413 for a body over its cap, 408 for
// one too slow, 400 naming the field for a bad one.
func TestRequestParserErrorsStatuses(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("%w: over 8 bytes", httpin.ErrTooLarge), http.StatusRequestEntityTooLarge},
		{fmt.Errorf("%w: below 1 bytes/s", httpin.ErrSlowBody), http.StatusRequestTimeout},
		{&api.FieldError{Field: "body", Msg: "empty"}, http.StatusBadRequest},
	} {
		if code, _ := statusOf(tc.err); code != tc.code {
			t.Errorf("statusOf(%v) = %d, want %d", tc.err, code, tc.code)
		}
	}
}

// The Bearer scheme's name is case-insensitive (RFC 9110); other schemes carry no token.
func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		h, token string
		ok       bool
	}{
		{"Bearer sdt_a.b", "sdt_a.b", true},
		{"bearer sdt_a.b", "sdt_a.b", true},
		{"BEARER sdt_a.b", "sdt_a.b", true},
		{"Basic dXNlcjpwYXNz", "", false},
		{"Bearer", "", false},
		{"", "", false},
	} {
		if got, ok := bearerToken(tc.h); got != tc.token || ok != tc.ok {
			t.Errorf("bearerToken(%q) = %q, %v; want %q, %v", tc.h, got, ok, tc.token, tc.ok)
		}
	}
}
