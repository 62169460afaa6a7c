package jobs

import (
	"log/slog"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/repository"
)

// An agent that polls for hours without ever getting a job leaves no registered wake-ups behind:
// each poll unregisters what it registered, whatever ended it.
func TestIdlePollsLeaveNoWaiters(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		s := New(c, repository.NewRegistry(c, nil, nil), slog.New(slog.DiscardHandler), nil, Options{PollInterval: time.Millisecond})
		for range 3 {
			j, err := s.NextJob(t.Context(), "agent-1", nil, 50*time.Millisecond)
			if err != nil || j != nil {
				t.Fatalf("NextJob = %v, %v; want no job", j, err)
			}
		}
		if n := s.waiting("agent-1"); n != 0 {
			t.Fatalf("%d waiters left registered after the polls ended", n)
		}
	})
}
