package catalog

import (
	"context"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/sendense/sendense/shared/api"
)

// ProbeTable returns an error when the table does not exist.
func ProbeTable(ctx context.Context, c *Catalog, table string) error {
	_, err := c.db.ExecContext(ctx, "SELECT 1 FROM "+table+" LIMIT 1")
	return err
}

// ProbeColumn returns an error when the column does not exist.
func ProbeColumn(ctx context.Context, c *Catalog, table, column string) error {
	_, err := c.db.ExecContext(ctx, "SELECT "+column+" FROM "+table+" LIMIT 1")
	return err
}

// SeedVMForTest inserts an agent, a source and a VM and returns the VM's context id.
func SeedVMForTest(t *testing.T, c *Catalog) string {
	t.Helper()
	ctx := t.Context()
	now := c.now()
	a := &Agent{ID: "agent-seed", Name: "seed", Status: api.AgentActive, CertSerial: "1", CertFingerprint: "00", CertNotAfter: now, CreatedAt: now, UpdatedAt: now}
	if _, err := c.db.NewInsert().Model(a).Exec(ctx); err != nil {
		t.Fatalf("insert agent: %v", err)
	}
	s := &Source{AgentID: a.ID, Name: "vc1", Status: "ok", CreatedAt: now, UpdatedAt: now}
	if _, err := c.db.NewInsert().Model(s).Exec(ctx); err != nil {
		t.Fatalf("insert source: %v", err)
	}
	vm := &VMContext{ContextID: "ctx-pgtest1-20251006-203401", SourceID: s.ID, AgentID: a.ID, InstanceUUID: "uuid-1", VMName: "pgtest1", CurrentStatus: api.VMDiscovered, CreatedAt: now, UpdatedAt: now}
	if _, err := c.db.NewInsert().Model(vm).Exec(ctx); err != nil {
		t.Fatalf("insert vm: %v", err)
	}
	if err := c.CreateRepository(ctx, &Repository{ID: "repo-seed", Name: "seed", Kind: "local", Path: "/nonexistent", ChunkSize: 4 << 20}); err != nil {
		t.Fatalf("insert repository: %v", err)
	}
	return vm.ContextID
}

// SeedJobForTest inserts a queued job for the VM and returns its id.
func SeedJobForTest(t *testing.T, c *Catalog, ctxID string) string {
	t.Helper()
	now := c.now()
	j := &BackupJob{ID: "job-seed", VMContextID: ctxID, AgentID: "agent-seed", RepositoryID: "repo-seed", RequestedType: "auto", Status: api.JobQueued, CreatedAt: now, UpdatedAt: now}
	if _, err := c.db.NewInsert().Model(j).Exec(t.Context()); err != nil {
		t.Fatalf("insert job: %v", err)
	}
	return j.ID
}

// InsertDiskForTest inserts a disk row with the given job id ("" = NULL).
func InsertDiskForTest(ctx context.Context, c *Catalog, ctxID, diskID, jobID string) error {
	now := c.now()
	d := &VMDisk{VMContextID: ctxID, DiskID: diskID, DeviceKey: 2000, CapacityBytes: 102 << 30, Status: api.DiskPresent, Backupable: true, JobID: jobID, CreatedAt: now, UpdatedAt: now}
	_, err := c.db.NewInsert().Model(d).Exec(ctx)
	return err
}

// CleanSeedForTest removes what the seed helpers inserted, children first.
func CleanSeedForTest(t *testing.T, c *Catalog) {
	t.Helper()
	for _, q := range []string{"DELETE FROM vm_disks", "DELETE FROM backup_jobs", "DELETE FROM vm_contexts", "DELETE FROM sources", "DELETE FROM agents", "DELETE FROM repositories"} {
		if _, err := c.db.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// RedeemJoinTokenForTest inserts an agent without a token.
func (c *Catalog) RedeemJoinTokenForTest(ctx context.Context, a *Agent) error {
	now := c.now()
	a.CreatedAt, a.UpdatedAt = now, now
	_, err := c.db.NewInsert().Model(a).Exec(ctx)
	return err
}

// DiskJobIDIsNullForTest reports whether the disk's job_id column is SQL NULL.
func DiskJobIDIsNullForTest(t *testing.T, c *Catalog, ctxID, diskID string) bool {
	t.Helper()
	n, err := c.db.NewSelect().Model((*VMDisk)(nil)).Where("vm_context_id = ?", ctxID).Where("disk_id = ?", diskID).Where("job_id IS NULL").Count(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// SetDiskJobForTest creates a job for the VM and points the disk's job_id at it.
func SetDiskJobForTest(t *testing.T, c *Catalog, ctxID, diskID string) string {
	t.Helper()
	vm, err := c.VMByContextID(t.Context(), ctxID)
	if err != nil {
		t.Fatal(err)
	}
	now := c.now()
	if err := c.CreateRepository(t.Context(), &Repository{ID: "repo-t", Name: "t", Kind: "local", Path: "/x", ChunkSize: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	j := &BackupJob{ID: "job-t", VMContextID: ctxID, AgentID: vm.AgentID, RepositoryID: "repo-t", RequestedType: "auto", Status: api.JobSucceeded, CreatedAt: now, UpdatedAt: now}
	if _, err := c.db.NewInsert().Model(j).Exec(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.db.NewUpdate().Model((*VMDisk)(nil)).Set("job_id = ?", j.ID).Where("vm_context_id = ?", ctxID).Where("disk_id = ?", diskID).Exec(t.Context()); err != nil {
		t.Fatal(err)
	}
	return j.ID
}

// EventColumnIsNullForTest reports whether a column of an event row is SQL NULL.
func EventColumnIsNullForTest(t *testing.T, c *Catalog, id int64, column string) bool {
	t.Helper()
	n, err := c.db.NewSelect().Model((*Event)(nil)).Where("id = ?", id).Where("? IS NULL", bun.Ident(column)).Count(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// PlaintextForTest is plaintext of the MySQL DSN dsn.
func PlaintextForTest(dsn string) (string, error) {
	cfg, err := mysqlConfig(dsn, "", time.Second)
	if err != nil {
		return "", err
	}
	return plaintext(cfg), nil
}

// SlotBatchesForTest reports the transactions RecordSlots has begun, the calls they took and
// the calls queued for the next.
func SlotBatchesForTest(c *Catalog) (batches, records, queued int) {
	c.slots.mu.Lock()
	defer c.slots.mu.Unlock()
	return c.slots.batches, c.slots.records, len(c.slots.queue)
}

// HoldSessionForTest takes a session's row for writing in a transaction of its own (under
// SQLite the database's write lock) until release is called.
func HoldSessionForTest(t *testing.T, c *Catalog, sessionID string) (release func()) {
	t.Helper()
	tx, err := c.db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if _, err := tx.ExecContext(t.Context(), "UPDATE upload_sessions SET updated_at = updated_at WHERE id = ?", sessionID); err != nil {
		_ = tx.Rollback()
		t.Fatalf("hold session %s: %v", sessionID, err)
	}
	return func() { _ = tx.Rollback() }
}
