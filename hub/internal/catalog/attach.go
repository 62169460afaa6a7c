package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/sendense/sendense/shared/api"
	"github.com/uptrace/bun"
)

// BackupRows are the rows that make one backup restorable: the job and its disk results, and the
// VM, its disks, its source and the agent they belong to. A repository keeps them (as a backup
// record) so that a catalog that lost them can take them back (ImportBackup).
type BackupRows struct {
	Agent   Agent
	Source  Source
	VM      VMContext
	VMDisks []VMDisk // the VM's disks that the backup holds
	Job     BackupJob
	Disks   []BackupDisk
}

// BackupRows returns the rows of one backup: ErrNotFound when there is no such job.
func (c *Catalog) BackupRows(ctx context.Context, id string) (*BackupRows, error) {
	b := new(BackupRows)
	if err := scanOne(ctx, c.db.NewSelect().Model(&b.Job).Where("id = ?", id), "backup "+id); err != nil {
		return nil, err
	}
	if err := scanOne(ctx, c.db.NewSelect().Model(&b.VM).Where("context_id = ?", b.Job.VMContextID), "vm "+b.Job.VMContextID); err != nil {
		return nil, err
	}
	if err := scanOne(ctx, c.db.NewSelect().Model(&b.Source).Where("id = ?", b.VM.SourceID), fmt.Sprintf("source %d", b.VM.SourceID)); err != nil {
		return nil, err
	}
	if err := scanOne(ctx, c.db.NewSelect().Model(&b.Agent).Where("id = ?", b.Job.AgentID), "agent "+b.Job.AgentID); err != nil {
		return nil, err
	}
	if err := c.db.NewSelect().Model(&b.Disks).Where("job_id = ?", id).Order("disk_id ASC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("select disks of backup %s: %w", id, err)
	}
	ids := make([]string, 0, len(b.Disks))
	for _, d := range b.Disks {
		ids = append(ids, d.DiskID)
	}
	if len(ids) > 0 {
		err := c.db.NewSelect().Model(&b.VMDisks).Where("vm_context_id = ?", b.VM.ContextID).Where("disk_id IN (?)", bun.In(ids)).Order("disk_id ASC").Scan(ctx)
		if err != nil {
			return nil, fmt.Errorf("select vm disks of backup %s: %w", id, err)
		}
	}
	return b, nil
}

// ImportBackup records a backup rebuilt from its repository under its own id, with the agent,
// source, VM and disks it belongs to where the catalog lacks them, in one transaction. Rows the
// catalog has are left as they are: a known agent, source (by agent and name, or by vCenter
// instance UUID) or VM (by context id, or by source and instance UUID, whose context id the
// backup then takes) is used as it is, and a backup whose id is known is not touched, so importing
// twice changes nothing. What it creates is marked as no longer reporting: the agent revoked
// (its certificate died with the old catalog), the VM and its disks gone, until an agent reports
// them again. It reports whether the backup was new.
func (c *Catalog) ImportBackup(ctx context.Context, b *BackupRows) (imported bool, err error) {
	err = c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		now := c.now()
		n, err := tx.NewSelect().Model((*BackupJob)(nil)).Where("id = ?", b.Job.ID).Count(ctx)
		if err != nil {
			return fmt.Errorf("look up backup %s: %w", b.Job.ID, err)
		}
		if n > 0 {
			return nil
		}

		agent := new(Agent)
		switch err := tx.NewSelect().Model(agent).Where("id = ?", b.Agent.ID).Scan(ctx); {
		case errors.Is(err, sql.ErrNoRows):
			agent = &Agent{ID: b.Agent.ID, Name: b.Agent.Name, Hostname: b.Agent.Hostname, Status: api.AgentRevoked,
				CertNotAfter: now, RevokedAt: now, CreatedAt: now, UpdatedAt: now}
			if _, err := tx.NewInsert().Model(agent).Exec(ctx); err != nil {
				return fmt.Errorf("insert agent %s: %w", agent.ID, err)
			}
		case err != nil:
			return fmt.Errorf("look up agent %s: %w", b.Agent.ID, err)
		}

		src := new(Source)
		err = tx.NewSelect().Model(src).Where("agent_id = ?", b.Agent.ID).Where("name = ?", b.Source.Name).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) && b.Source.InstanceUUID != "" {
			err = tx.NewSelect().Model(src).Where("instance_uuid = ?", b.Source.InstanceUUID).Scan(ctx)
		}
		switch {
		case errors.Is(err, sql.ErrNoRows):
			src = &Source{AgentID: b.Agent.ID, Name: b.Source.Name, InstanceUUID: b.Source.InstanceUUID, URL: b.Source.URL,
				Status: "ok", CreatedAt: now, UpdatedAt: now}
			if _, err := tx.NewInsert().Model(src).Exec(ctx); err != nil {
				return fmt.Errorf("insert source %s: %w", src.Name, err)
			}
		case err != nil:
			return fmt.Errorf("look up source %s: %w", b.Source.Name, err)
		}

		vm := new(VMContext)
		err = tx.NewSelect().Model(vm).Where("context_id = ?", b.VM.ContextID).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			err = tx.NewSelect().Model(vm).Where("source_id = ?", src.ID).Where("instance_uuid = ?", b.VM.InstanceUUID).Scan(ctx)
		}
		switch {
		case errors.Is(err, sql.ErrNoRows):
			*vm = b.VM
			vm.SourceID, vm.AgentID = src.ID, agent.ID
			vm.CurrentStatus, vm.GoneAt, vm.CreatedAt, vm.UpdatedAt = api.VMGone, now, now, now
			if _, err := tx.NewInsert().Model(vm).Exec(ctx); err != nil {
				return fmt.Errorf("insert vm %s: %w", vm.ContextID, err)
			}
		case err != nil:
			return fmt.Errorf("look up vm %s: %w", b.VM.ContextID, err)
		}

		for _, d := range b.VMDisks {
			n, err := tx.NewSelect().Model((*VMDisk)(nil)).Where("vm_context_id = ?", vm.ContextID).Where("disk_id = ?", d.DiskID).Count(ctx)
			if err != nil {
				return fmt.Errorf("look up disk %s of vm %s: %w", d.DiskID, vm.ContextID, err)
			}
			if n > 0 {
				continue
			}
			// The disk's change id is the inventory's to report. The next backup's parent, and
			// the change id it reads changes from, come from the disk's latest backup
			// (backup_disks), which the record brought back: a chain continues across an attach.
			d.ID, d.VMContextID, d.JobID, d.ChangeID = 0, vm.ContextID, "", ""
			d.Status, d.GoneAt, d.CreatedAt, d.UpdatedAt = api.DiskGone, now, now, now
			if _, err := tx.NewInsert().Model(&d).Exec(ctx); err != nil {
				return fmt.Errorf("insert disk %s of vm %s: %w", d.DiskID, vm.ContextID, err)
			}
		}

		j := b.Job
		j.VMContextID, j.AgentID, j.Status, j.PolicyID, j.CancelRequested = vm.ContextID, agent.ID, api.JobSucceeded, "", false
		j.UpdatedAt = now
		if _, err := tx.NewInsert().Model(&j).Exec(ctx); err != nil {
			return fmt.Errorf("insert backup %s: %w", j.ID, err)
		}
		for _, d := range b.Disks {
			d.ID, d.JobID, d.VMContextID, d.Status, d.CreatedAt, d.UpdatedAt = 0, j.ID, vm.ContextID, api.JobSucceeded, now, now
			if _, err := tx.NewInsert().Model(&d).Exec(ctx); err != nil {
				return fmt.Errorf("insert disk %s of backup %s: %w", d.DiskID, j.ID, err)
			}
		}
		imported = true
		return nil
	})
	return imported, err
}

// AttachedCopyRefusal says why the backup b describes, found in repository repositoryID by an
// attach, cannot be recorded as a copy there ("" when it can, as far as the catalog tells):
// the catalog's backup must have succeeded, live in another repository, have no copy recorded
// there yet, and b must name the same disks with the same index digests and the same VM
// configuration, the very restore point (a copy writes its record last, after every index and
// chunk). An attach asks this before it reads the copy's files.
func (c *Catalog) AttachedCopyRefusal(ctx context.Context, b *BackupRows, repositoryID string) (why string, err error) {
	return c.attachedCopy(ctx, c.db, b, repositoryID)
}

// RecordAttachedCopy records the copy AttachedCopyRefusal admits, checked again in the same
// transaction, as pending (api.VerifyPending): it does not stand in for its backup until a
// verification finds it sound. It reports whether it recorded one, and why not otherwise.
func (c *Catalog) RecordAttachedCopy(ctx context.Context, b *BackupRows, repositoryID string) (recorded bool, why string, err error) {
	err = c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if why, err = c.attachedCopy(ctx, tx, b, repositoryID); err != nil || why != "" {
			return err
		}
		cp := &BackupCopy{BackupID: b.Job.ID, RepositoryID: repositoryID, CopiedAt: c.now(), VerifyStatus: api.VerifyPending}
		if _, err := tx.NewInsert().Model(cp).Exec(ctx); err != nil {
			return fmt.Errorf("record copy of backup %s in repository %s: %w", cp.BackupID, repositoryID, err)
		}
		recorded = true
		return nil
	})
	return recorded, why, err
}

func (c *Catalog) attachedCopy(ctx context.Context, db bun.IDB, b *BackupRows, repositoryID string) (string, error) {
	id := b.Job.ID
	var j BackupJob
	switch err := db.NewSelect().Model(&j).Where("id = ?", id).Scan(ctx); {
	case errors.Is(err, sql.ErrNoRows):
		return "the catalog has no such backup", nil
	case err != nil:
		return "", fmt.Errorf("look up backup %s: %w", id, err)
	}
	var disks []BackupDisk
	if err := db.NewSelect().Model(&disks).Where("job_id = ?", id).Scan(ctx); err != nil {
		return "", fmt.Errorf("select disks of backup %s: %w", id, err)
	}
	n, err := db.NewSelect().Model((*BackupCopy)(nil)).Where("backup_id = ?", id).Where("repository_id = ?", repositoryID).Count(ctx)
	if err != nil {
		return "", fmt.Errorf("look up copies of backup %s: %w", id, err)
	}
	switch {
	case j.RepositoryID == repositoryID:
		return "its home is this repository", nil
	case j.Status != api.JobSucceeded:
		return "the catalog's backup is " + j.Status, nil
	case n > 0:
		return "its copy here is recorded already", nil
	case j.VMConfigDigest != b.Job.VMConfigDigest:
		return "its vm configuration differs from the catalog's", nil
	}
	return sameIndexes(disks, b.Disks), nil
}

// sameIndexes says how the disks of a backup the catalog holds differ from those of its
// description in a repository ("" when they name the same disks with the same index digests).
func sameIndexes(have, found []BackupDisk) string {
	if len(have) != len(found) {
		return fmt.Sprintf("it holds %d disks, the catalog's backup %d", len(found), len(have))
	}
	digests := make(map[string]string, len(have))
	for _, d := range have {
		digests[d.DiskID] = d.IndexDigest
	}
	for _, d := range found {
		if want, ok := digests[d.DiskID]; !ok || want == "" || want != d.IndexDigest {
			return "the index of disk " + d.DiskID + " differs from the catalog's"
		}
	}
	return ""
}
