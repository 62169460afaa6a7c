package jobs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
)

// Start queues a backup of a VM. A VM with a queued or running job → catalog.ErrConflict.
func (s *Service) Start(ctx context.Context, req api.StartBackupRequest) (api.Backup, error) {
	if req.VM == "" {
		return api.Backup{}, &api.FieldError{Field: "vm", Msg: "is required (a VM name or context id)"}
	}
	typ := req.Type
	if typ == "" {
		typ = api.BackupAuto
	}
	if typ != api.BackupAuto && typ != api.BackupFull && typ != api.BackupIncremental {
		return api.Backup{}, &api.FieldError{Field: "type", Msg: "must be auto, full or incremental"}
	}
	sample := api.DefaultCBTSample
	if req.CBTSample != nil {
		sample = *req.CBTSample
	}
	if !(sample >= 0 && sample <= 1) {
		return api.Backup{}, &api.FieldError{Field: "cbt_sample", Msg: "must be a fraction between 0 and 1"}
	}
	repoName := req.Repository
	if repoName == "" {
		repoName = repository.DefaultName
	}
	vm, err := s.cat.ResolveVM(ctx, req.VM)
	if err != nil {
		return api.Backup{}, err
	}
	if vm.CurrentStatus == api.VMGone {
		return api.Backup{}, fmt.Errorf("%s: %w: %w", vm.VMName, ErrVMGone, catalog.ErrConflict)
	}
	disks, err := s.cat.VMDisks(ctx, vm.ContextID)
	if err != nil {
		return api.Backup{}, err
	}
	n := 0
	for _, d := range disks {
		if d.Status == api.DiskPresent && d.Backupable {
			n++
		}
	}
	if n == 0 {
		return api.Backup{}, fmt.Errorf("%s: %w: %w", vm.VMName, ErrNoDisks, catalog.ErrConflict)
	}
	repo, err := s.cat.RepositoryByName(ctx, repoName)
	if errors.Is(err, catalog.ErrNotFound) {
		return api.Backup{}, &api.FieldError{Field: "repository", Msg: fmt.Sprintf("no repository named %q", repoName)}
	}
	if err != nil {
		return api.Backup{}, err
	}
	id, err := s.Queue(ctx, vm, repo.ID, "", typ, sample)
	if err != nil {
		return api.Backup{}, err
	}
	return s.Get(ctx, id)
}

// Queue creates a queued job for a VM (policyID empty for an operator's request) and wakes the
// VM's agent. A VM with a queued or running job → catalog.ErrJobActive (and ErrConflict).
// Its incrementals re-read cbtSample of the slots CBT calls unchanged to check CBT.
func (s *Service) Queue(ctx context.Context, vm *catalog.VMWithSource, repositoryID, policyID, typ string, cbtSample float64) (string, error) {
	id := catalog.NewID("bk-", s.opts.Now())
	j := &catalog.BackupJob{
		ID: id, VMContextID: vm.ContextID, AgentID: vm.AgentID, RepositoryID: repositoryID,
		RequestedType: typ, SnapshotName: api.SnapshotPrefix + id, PolicyID: policyID, CBTSample: cbtSample,
	}
	if err := s.cat.CreateJob(ctx, j); err != nil {
		return "", err
	}
	s.log.InfoContext(ctx, "backup queued", "job_id", id, "vm_context_id", vm.ContextID, "vm_name", vm.VMName, "agent_id", vm.AgentID,
		"repository_id", repositoryID, "requested_type", typ, "policy_id", policyID, "cbt_sample", cbtSample)
	s.wake(vm.AgentID)
	return id, nil
}

// Get returns one backup with its disks.
func (s *Service) Get(ctx context.Context, id string) (api.Backup, error) {
	row, err := s.cat.BackupByID(ctx, id)
	if err != nil {
		return api.Backup{}, err
	}
	disks, err := s.cat.BackupDisks(ctx, id)
	if err != nil {
		return api.Backup{}, err
	}
	b := backupInfo(row, disks)
	b.VMConfig = s.vmConfigSummary(ctx, row)
	cps, err := s.cat.BackupCopies(ctx, id)
	if err != nil {
		return api.Backup{}, err
	}
	for _, cp := range cps {
		b.Copies = append(b.Copies, api.BackupCopy{Repository: cp.RepositoryName, CopiedAt: cp.CopiedAt, VerifiedAt: cp.VerifiedAt, VerifyStatus: cp.VerifyStatus})
	}
	return b, nil
}

func backupInfo(r *catalog.BackupRow, disks []catalog.BackupDisk) api.Backup {
	b := api.Backup{
		ID: r.ID, VMContextID: r.VMContextID, VMName: r.VMName, AgentID: r.AgentID, Repository: r.RepositoryName,
		RequestedType: r.RequestedType, Type: r.Type, Status: r.Status, CancelRequested: r.CancelRequested, Protected: r.Protected,
		SnapshotName: r.SnapshotName, CreatedAt: r.CreatedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
		BytesRead: r.BytesRead, BytesSent: r.BytesSent, BytesDeduplicated: r.BytesDeduplicated, BytesZero: r.BytesZero, BytesTotal: r.BytesTotal, Phase: r.Phase, SkippedDisks: r.SkippedDisks,
		Error: r.Error, Notes: r.Notes, VerifiedAt: r.VerifiedAt, VerifyStatus: r.VerifyStatus, CBTDrift: r.CBTDrift,
	}
	if !r.StartedAt.IsZero() && !r.FinishedAt.IsZero() {
		b.DurationSeconds = r.FinishedAt.Sub(r.StartedAt).Seconds()
		if b.DurationSeconds > 0 {
			b.ThroughputBPS = float64(r.BytesRead) / b.DurationSeconds
		}
	}
	for i := range disks {
		b.Disks = append(b.Disks, disks[i].Wire())
	}
	return b
}

// ListFilter selects backups; VM is a name or context id.
type ListFilter struct {
	VM     string
	Status string
	Since  time.Time
	Limit  int
	Offset int
}

// List returns backups, newest first.
func (s *Service) List(ctx context.Context, f ListFilter) (api.BackupList, error) {
	cf := catalog.BackupFilter{Status: f.Status, Since: f.Since, Limit: f.Limit, Offset: f.Offset}
	if f.VM != "" {
		vm, err := s.cat.ResolveVM(ctx, f.VM)
		if errors.Is(err, catalog.ErrNotFound) {
			return api.BackupList{Backups: []api.Backup{}, Page: api.Page{Limit: f.Limit, Offset: f.Offset}}, nil
		}
		if err != nil {
			return api.BackupList{}, err
		}
		cf.VMContextID = vm.ContextID
	}
	rows, total, err := s.cat.Backups(ctx, cf)
	if err != nil {
		return api.BackupList{}, err
	}
	out := api.BackupList{Backups: make([]api.Backup, 0, len(rows)), Page: api.Page{Limit: f.Limit, Offset: f.Offset, Total: total}}
	for i := range rows {
		out.Backups = append(out.Backups, backupInfo(&rows[i], nil))
	}
	return out, nil
}

// Cancel cancels a queued job at once or asks the agent to stop a running one.
func (s *Service) Cancel(ctx context.Context, id string) (api.Backup, error) {
	j, err := s.cat.RequestCancel(ctx, id)
	if err != nil {
		return api.Backup{}, err
	}
	s.log.InfoContext(ctx, "backup cancel requested", "job_id", id, "status", j.Status)
	if j.Status == api.JobCancelled {
		s.metrics.jobsFinished.WithLabelValues(api.JobCancelled).Inc()
	}
	return s.Get(ctx, id)
}

// Delete removes a finished, unprotected backup, its indexes and its VM configuration; the chunks are reclaimed by
// garbage collection.
func (s *Service) Delete(ctx context.Context, id string) error {
	row, err := s.cat.BackupByID(ctx, id)
	if err != nil {
		return err
	}
	cps, err := s.cat.BackupCopies(ctx, id)
	if err != nil {
		return err
	}
	if !row.Protected { // the catalog refuses a protected one, and says so first
		// Its copies go with it: a copy under retention holds it as its own objects would.
		for _, repoID := range append([]string{row.RepositoryID}, copyRepos(cps)...) {
			held := *row
			held.RepositoryID = repoID
			if err := s.checkNotRetained(ctx, &held); err != nil {
				return err
			}
		}
	}
	j, disks, err := s.cat.DeleteBackup(ctx, id)
	if err != nil {
		return err
	}
	// The backup's copies go with it: left behind, they would be indexes no backup names.
	for _, cp := range cps {
		s.undescribe(ctx, cp.RepositoryID, row.InstanceUUID, id)
		s.removeIndexes(ctx, cp.RepositoryID, row.InstanceUUID, disks)
		if row.VMConfigDigest != "" {
			s.removeVMConfig(ctx, cp.RepositoryID, row.InstanceUUID, id)
		}
	}
	// The record goes first: one left behind without its indexes would bring back, at an
	// attach, a backup that cannot be restored.
	s.undescribe(ctx, j.RepositoryID, row.InstanceUUID, id)
	s.removeIndexes(ctx, j.RepositoryID, row.InstanceUUID, disks)
	if row.VMConfigDigest != "" {
		s.removeVMConfig(ctx, j.RepositoryID, row.InstanceUUID, id)
	}
	s.log.InfoContext(ctx, "backup deleted", "job_id", id, "vm_context_id", j.VMContextID, "disks", len(disks))
	return nil
}

// DeleteFrom removes a backup from the repository repositoryID only. Held there as a copy, the
// copy goes (DeleteCopy). Held there as its home without a copy elsewhere, the backup goes
// (Delete). Held there as its home with copies, it moves to its oldest copy, which becomes its
// home under the same id (restores, files and restore tests follow), and only this
// repository's record, indexes and VM configuration go: a copy kept off site for longer than
// the backups at home outlives them. The same refusals as Delete apply (protected, queued or
// running, retained by an object lock or a hardened repository → catalog.ErrConflict); a
// backup not in that repository → catalog.ErrNotFound.
func (s *Service) DeleteFrom(ctx context.Context, id, repositoryID string) error {
	row, err := s.cat.BackupByID(ctx, id)
	if err != nil {
		return err
	}
	if row.RepositoryID != repositoryID {
		return s.DeleteCopy(ctx, id, repositoryID)
	}
	cps, err := s.cat.BackupCopies(ctx, id)
	if err != nil {
		return err
	}
	if len(cps) == 0 {
		return s.Delete(ctx, id)
	}
	if !row.Protected { // the catalog refuses a protected one, and says so first
		if err := s.checkNotRetained(ctx, row); err != nil {
			return err
		}
	}
	// A copy that verification found damaged lacks what the copy policy's next run repairs:
	// moving there would throw away the sound backup it is repaired from. One that an attach
	// recorded has not been read whole yet: it stands in for the backup once verified.
	cps = slices.DeleteFunc(cps, func(c catalog.BackupCopy) bool {
		return c.VerifyStatus == api.VerifyDamaged || c.VerifyStatus == api.VerifyPending
	})
	if len(cps) == 0 {
		return fmt.Errorf("backup %s: every copy of it is damaged, and it is their source until the copy policy repairs them, or attached and not yet verified (run repo verify): %w", id, catalog.ErrConflict)
	}
	// The oldest copy: the one made under the longest-standing policy, most likely the one
	// meant to keep it longest.
	to := slices.MinFunc(cps, func(a, b catalog.BackupCopy) int {
		return cmp.Or(a.CopiedAt.Compare(b.CopiedAt), cmp.Compare(a.RepositoryID, b.RepositoryID))
	})
	j, disks, err := s.cat.RehomeBackup(ctx, id, to.RepositoryID)
	if err != nil {
		return err
	}
	// j is the backup as it was: its RepositoryID is the repository it left, whose files go
	// as Delete removes them, the record first.
	s.undescribe(ctx, j.RepositoryID, row.InstanceUUID, id)
	s.removeIndexes(ctx, j.RepositoryID, row.InstanceUUID, disks)
	if row.VMConfigDigest != "" {
		s.removeVMConfig(ctx, j.RepositoryID, row.InstanceUUID, id)
	}
	s.log.InfoContext(ctx, "backup moved to its copy", "job_id", id, "vm_context_id", j.VMContextID,
		"from_repository_id", j.RepositoryID, "to_repository_id", to.RepositoryID, "disks", len(disks))
	return nil
}

// removeIndexes deletes the index files of discarded disk results; a failure is logged, and the
// consistency check finds what is left.
func (s *Service) removeIndexes(ctx context.Context, repositoryID, instanceUUID string, disks []catalog.BackupDisk) {
	if len(disks) == 0 {
		return
	}
	repo, err := s.open(ctx, repositoryID)
	if err != nil {
		s.log.WarnContext(ctx, "open repository to remove indexes", "repository_id", repositoryID, "err", err)
		return
	}
	for _, d := range disks {
		if err := repo.RemoveIndex(ctx, repository.IndexRef{VMUUID: instanceUUID, DiskID: d.DiskID, BackupID: d.JobID}); err != nil {
			s.log.WarnContext(ctx, "remove index", "job_id", d.JobID, "disk_id", d.DiskID, "err", err)
		}
	}
}

// Chain returns, per disk, the successful backups of a VM, oldest first.
func (s *Service) Chain(ctx context.Context, vmNameOrID string) (api.Chain, error) {
	vm, err := s.cat.ResolveVM(ctx, vmNameOrID)
	if err != nil {
		return api.Chain{}, err
	}
	entries, err := s.cat.Chain(ctx, vm.ContextID)
	if err != nil {
		return api.Chain{}, err
	}
	out := api.Chain{VMContextID: vm.ContextID, VMName: vm.VMName, Disks: map[string][]api.ChainEntry{}}
	for _, e := range entries {
		out.Disks[e.DiskID] = append(out.Disks[e.DiskID], api.ChainEntry{
			BackupID: e.JobID, Type: e.Type, Reason: e.Reason, BaseChangeID: e.BaseChangeID, ChangeID: e.ChangeID,
			CreatedAt: e.JobCreated, Protected: e.Protected,
		})
	}
	return out, nil
}

// SetProtected protects a backup from pruning and deletion, or lifts that protection, and
// returns the backup. Setting what is already set is not an error.
func (s *Service) SetProtected(ctx context.Context, id string, protected bool) (api.Backup, error) {
	if err := s.cat.SetProtected(ctx, id, protected); err != nil {
		return api.Backup{}, err
	}
	if protected {
		if err := s.Retain(ctx, id); err != nil {
			s.log.ErrorContext(ctx, "protected backup not retained: its objects can be deleted from the bucket", "job_id", id, "err", err)
		}
	}
	if j, err := s.cat.JobByID(ctx, id); err == nil && j.Status == api.JobSucceeded {
		if err := s.describe(ctx, id); err != nil {
			return api.Backup{}, err
		}
	}
	s.log.InfoContext(ctx, "backup protection set", "job_id", id, "protected", protected)
	return s.Get(ctx, id)
}

func copyRepos(cps []catalog.BackupCopy) []string {
	ids := make([]string, 0, len(cps))
	for _, cp := range cps {
		ids = append(ids, cp.RepositoryID)
	}
	return ids
}

// DeleteCopy removes the copy of a backup held by the repository repositoryID (never the backup
// itself): the catalog's record of the copy first, so that no restore picks it any more, then
// the repository's record of the backup, its indexes and its VM configuration there. The copy
// of a protected backup, or one under retention in that repository, is refused (ErrConflict);
// no such copy → ErrNotFound. The chunks stay for the garbage collection of that repository.
func (s *Service) DeleteCopy(ctx context.Context, backupID, repositoryID string) error {
	row, err := s.cat.BackupByID(ctx, backupID)
	if err != nil {
		return err
	}
	if row.RepositoryID == repositoryID {
		return fmt.Errorf("backup %s is held by that repository, not copied there: %w", backupID, catalog.ErrConflict)
	}
	if row.Protected {
		return fmt.Errorf("copy of backup %s: %w; unprotect it first: %w", backupID, catalog.ErrProtected, catalog.ErrConflict)
	}
	held := *row
	held.RepositoryID = repositoryID
	if err := s.checkNotRetained(ctx, &held); err != nil {
		return err
	}
	disks, err := s.cat.BackupDisks(ctx, backupID)
	if err != nil {
		return err
	}
	if err := s.cat.DeleteCopy(ctx, backupID, repositoryID); err != nil {
		return err
	}
	s.undescribe(ctx, repositoryID, row.InstanceUUID, backupID)
	s.removeIndexes(ctx, repositoryID, row.InstanceUUID, disks)
	if row.VMConfigDigest != "" {
		s.removeVMConfig(ctx, repositoryID, row.InstanceUUID, backupID)
	}
	s.log.InfoContext(ctx, "copy deleted", "job_id", backupID, "repository_id", repositoryID, "disks", len(disks))
	return nil
}
