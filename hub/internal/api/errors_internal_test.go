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
