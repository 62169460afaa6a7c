package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sendense/sendense/shared/api"
	"github.com/uptrace/bun"
)

// slotBatchTimeout bounds one shared transaction of slot records.
const slotBatchTimeout = time.Minute

// slotBatcher gathers the slot records of concurrent RecordSlots calls into shared
// transactions. While one transaction is written, the records that arrive queue, and the next
// transaction takes all of them: uploads that end together cost one transaction and one commit
// (under SQLite one WAL fsync, which synchronous=FULL pays per commit) instead of one each, and
// hold one catalog connection between them instead of one each. With one per chunk upload, those
// transactions took every SQLite connection while they waited for the write lock, so that the
// session lookups every upload makes first queued behind them.
type slotBatcher struct {
	mu      sync.Mutex
	queue   []*slotRecord
	writing bool // a writer goroutine runs and will take the queue
	batches int  // transactions begun, for tests
	records int  // records they took, for tests
}

// slotRecord is one RecordSlots call waiting for its transaction.
type slotRecord struct {
	sessionID string
	slots     []UploadSlot
	done      chan error // buffered: the writer never waits for the caller
}

// RecordSlots stores slot digests of an open session (a slot recorded again takes the new
// digest). A session that is no longer open (committing, committed, aborted) → ErrConflict and
// nothing of this call is recorded. Calls made while another call's transaction is being
// written share the next transaction (slotBatcher); each call returns once its slots are
// committed, with its own session's outcome. The transaction reads each session's status with a
// shared lock on its row, in the order of their IDs: a commit leaves the open state
// (BeginCommit, which takes that row exclusively) before it reads the slots it indexes, so it
// sees every slot recorded before and none is recorded after. A caller whose ctx ends stops
// waiting; its slots may still be recorded.
func (c *Catalog) RecordSlots(ctx context.Context, sessionID string, slots []UploadSlot) error {
	now := c.now()
	for i := range slots {
		slots[i].SessionID, slots[i].CreatedAt, slots[i].UpdatedAt = sessionID, now, now
	}
	r := &slotRecord{sessionID: sessionID, slots: slots, done: make(chan error, 1)}
	b := &c.slots
	b.mu.Lock()
	b.queue = append(b.queue, r)
	start := !b.writing
	b.writing = true
	b.mu.Unlock()
	if start {
		go c.writeSlotBatches(context.WithoutCancel(ctx))
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writeSlotBatches writes the queued records, one transaction for all of those queued when it
// starts, until the queue is empty.
func (c *Catalog) writeSlotBatches(ctx context.Context) {
	b := &c.slots
	for {
		b.mu.Lock()
		batch := b.queue
		b.queue = nil
		if len(batch) == 0 {
			b.writing = false
			b.mu.Unlock()
			return
		}
		b.batches++
		b.records += len(batch)
		b.mu.Unlock()
		errs, err := c.writeSlotBatch(ctx, batch)
		for i, r := range batch {
			if err != nil {
				r.done <- err
			} else {
				r.done <- errs[i]
			}
		}
	}
}

// writeSlotBatch records the slots of every record whose session is open in one transaction,
// and answers each record's outcome; an error of the transaction is everyone's.
func (c *Catalog) writeSlotBatch(ctx context.Context, batch []*slotRecord) ([]error, error) {
	ctx, cancel := context.WithTimeout(ctx, slotBatchTimeout)
	defer cancel()
	ids := make([]string, 0, len(batch))
	for _, r := range batch {
		ids = append(ids, r.sessionID)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	errs := make([]error, len(batch))
	err := c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		refused := map[string]error{}
		for _, id := range ids {
			var status string
			err := tx.QueryRowContext(ctx, "SELECT status FROM upload_sessions WHERE id = ?"+c.rowLock(false), id).Scan(&status)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				refused[id] = fmt.Errorf("upload session %s: %w", id, ErrNotFound)
			case err != nil:
				return fmt.Errorf("record slots of session %s: %w", id, err)
			case status != api.SessionOpen:
				refused[id] = fmt.Errorf("upload session %s is %s: %w", id, status, ErrConflict)
			}
		}
		var rows []UploadSlot
		for i, r := range batch {
			if errs[i] = refused[r.sessionID]; errs[i] == nil {
				rows = append(rows, r.slots...)
			}
		}
		for start := 0; start < len(rows); start += 500 {
			part := rows[start:min(start+500, len(rows))]
			ins := tx.NewInsert().Model(&part)
			if c.driver == DriverMySQL {
				ins = ins.On("DUPLICATE KEY UPDATE").Set("digest = VALUES(digest)").Set("updated_at = VALUES(updated_at)")
			} else {
				ins = ins.On("CONFLICT (session_id, slot) DO UPDATE").Set("digest = EXCLUDED.digest").Set("updated_at = EXCLUDED.updated_at")
			}
			if _, err := ins.Exec(ctx); err != nil {
				return fmt.Errorf("record slots of session %s: %w", strings.Join(ids, ", "), err)
			}
		}
		return nil
	})
	return errs, err
}
