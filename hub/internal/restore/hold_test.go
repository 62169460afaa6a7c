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

func (c *readsCatalog) RenewBackupRead(_ context.Context, _, id, _ string, ttl time.Duration) (time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.renewed++
	if c.renewed == 1 {
		delete(c.live, id) // expired
		return time.Time{}, fmt.Errorf("backup read %s expired: %w", id, catalog.ErrNotFound)
	}
	if !c.live[id] {
		return time.Time{}, fmt.Errorf("backup read %s: %w", id, catalog.ErrNotFound)
	}
	return time.Now().Add(ttl), nil
}

func (c *readsCatalog) EndBackupRead(_ context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.live, id)
	return nil
}

// A hold whose read expired (its renewals could not reach the catalog) records a new read and
// keeps renewing that one; its release ends whichever read it holds (after the linger of shared
// holds), and nothing is left.
func TestHoldRecordsItsReadAgainAfterItExpired(t *testing.T) {
	cat := &readsCatalog{live: map[string]bool{}}
	s := &Service{cat: cat, ttl: 40 * time.Millisecond, log: slog.New(slog.DiscardHandler), held: map[string]*heldRead{}, linger: 10 * time.Millisecond}
	release, err := s.holdShared(t.Context(), "bk-1")
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
	testenv.WaitFor(t, 10*time.Second, "the read to end after its linger", func() bool {
		cat.mu.Lock()
		defer cat.mu.Unlock()
		return len(cat.live) == 0
	})
	cat.mu.Lock()
	defer cat.mu.Unlock()
	if cat.n != 2 {
		t.Fatalf("after release: %d reads begun, want 2", cat.n)
	}
}

// The readers of one backup share one record in the catalog: it ends only once the last of them
// released it and no reader came for a while (a client reading an image in many ranged
// requests costs one record, not two writes per request); a reader of another backup gets its
// own.
func TestReadersOfABackupShareOneRecord(t *testing.T) {
	cat := &readsCatalog{live: map[string]bool{}, renewed: 1} // renewals succeed
	s := &Service{cat: cat, ttl: time.Minute, log: slog.New(slog.DiscardHandler), held: map[string]*heldRead{}, linger: 200 * time.Millisecond}
	ctx := t.Context()
	live := func() int { cat.mu.Lock(); defer cat.mu.Unlock(); return len(cat.live) }
	begun := func() int { cat.mu.Lock(); defer cat.mu.Unlock(); return cat.n }
	r1, err := s.holdShared(ctx, "bk-1")
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := s.holdShared(ctx, "bk-1")
	other, _ := s.holdShared(ctx, "bk-2")
	if begun() != 2 || live() != 2 {
		t.Fatalf("%d reads begun, %d live; want one per backup", begun(), live())
	}
	r1()
	other()
	r2()
	r3, _ := s.holdShared(ctx, "bk-1") // within the linger: the same record
	if begun() != 2 {
		t.Fatalf("a reader within the linger began read %d", begun())
	}
	r3()
	testenv.WaitFor(t, 10*time.Second, "both records to end after their linger", func() bool { return live() == 0 })
	r4, _ := s.holdShared(ctx, "bk-1")
	if begun() != 3 || live() != 1 {
		t.Fatalf("after the records ended: %d begun, %d live; want a new record", begun(), live())
	}
	r4()
}
