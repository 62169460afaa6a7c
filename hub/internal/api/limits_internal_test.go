package api

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

// Once a body is read to its end its deadline no longer applies: a handler working longer than
// the deadline afterwards keeps its request context (a background read of the connection that
// hit the deadline would cancel it) and answers normally.
func TestBodyDeadlineLiftedAtEndOfBody(t *testing.T) {
	s := New(Deps{Log: slog.New(slog.DiscardHandler), Limits: Limits{BodyTimeout: 200 * time.Millisecond}})
	s.engine.POST("/slow-after-body", func(c *gin.Context) {
		if _, err := io.ReadAll(c.Request.Body); err != nil {
			c.String(http.StatusBadRequest, "read: %v", err)
			return
		}
		select {
		case <-time.After(time.Second):
			c.String(http.StatusOK, "done")
		case <-c.Request.Context().Done():
			c.String(http.StatusServiceUnavailable, "cancelled: %v", c.Request.Context().Err())
		}
	})
	ts := httptest.NewTLSServer(s.Handler())
	defer ts.Close()
	resp, err := ts.Client().Post(ts.URL+"/slow-after-body", "application/json", strings.NewReader(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}
