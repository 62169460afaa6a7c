package restore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/testenv"
)

// readsCatalog records reads as the catalog does; its first renewal finds the read expired, as
// after the catalog was out of reach for a read's lifetime.
type readsCatalog struct {
	restoreCatalog
	mu      sync.Mutex
	n       int
	live    map[string]bool
	renewed int
}

func (c *readsCatalog) BeginBackupRead(_ context.Context, backupID string, _ time.Duration) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	id := fmt.Sprintf("br-%d", c.n)
	c.live[id] = true
	return id, nil
}

func (c *readsCatalog) RenewBackupRead(_ context.Context, id string, _ time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.renewed++
	if c.renewed == 1 {
		delete(c.live, id) // expired
		return fmt.Errorf("backup read %s expired: %w", id, catalog.ErrNotFound)
	}
	if !c.live[id] {
		return fmt.Errorf("backup read %s: %w", id, catalog.ErrNotFound)
	}
	return nil
}

func (c *readsCatalog) EndBackupRead(_ context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.live, id)
	return nil
}

// A hold whose read expired (its renewals could not reach the catalog) records a new read and
// keeps renewing that one; its release ends whichever read it holds, and nothing is left.
func TestHoldRecordsItsReadAgainAfterItExpired(t *testing.T) {
	cat := &readsCatalog{live: map[string]bool{}}
	s := &Service{cat: cat, ttl: 40 * time.Millisecond, log: slog.New(slog.DiscardHandler)}
	release, err := s.Hold(t.Context(), "bk-1")
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "renewals of the read recorded again", func() bool {
		cat.mu.Lock()
		defer cat.mu.Unlock()
		return cat.n == 2 && cat.renewed >= 3
	})
	cat.mu.Lock()
	live := len(cat.live) == 1 && cat.live["br-2"]
	cat.mu.Unlock()
	if !live {
		t.Fatalf("reads live while held: %v, want br-2 only", cat.live)
	}
	release()
	release() // once only
	cat.mu.Lock()
	defer cat.mu.Unlock()
	if len(cat.live) != 0 || cat.n != 2 {
		t.Fatalf("after release: live %v, %d begun; want none live, 2 begun", cat.live, cat.n)
	}
}
