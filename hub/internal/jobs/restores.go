package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/shared/api"
)

// restoreCatalog is what restores need from the catalog.
type restoreCatalog interface {
	SourceByName(ctx context.Context, name string) (*catalog.Source, error)
	CreateRestoreJob(ctx context.Context, j *catalog.RestoreJob) error
	RestoreJobByID(ctx context.Context, id string) (*catalog.RestoreJob, error)
	AgentRestoreJob(ctx context.Context, id, agentID string) (*catalog.RestoreJob, error)
	RestoreJobs(ctx context.Context, f catalog.RestoreFilter) ([]catalog.RestoreJob, int, error)
	ClaimRestoreJob(ctx context.Context, agentID string, busy []string) (*catalog.RestoreJob, bool, error)
	RestoreProgress(ctx context.Context, id, agentID, phase, vmRef string, written, total int64) (*catalog.RestoreJob, error)
	RecordVMWasOn(ctx context.Context, id, agentID string, on bool) error
	CancelRestore(ctx context.Context, id string) (*catalog.RestoreJob, error)
	FinishRestore(ctx context.Context, id, agentID, status, errMsg, vmRef string) (*catalog.RestoreJob, error)
	FailStaleRestores(ctx context.Context, cutoff time.Time) ([]catalog.RestoreJob, error)
	CountRestoresByStatus(ctx context.Context) (map[string]int, error)
}

// ErrNotRestorePoint: the backup has not succeeded. It wraps catalog.ErrConflict.
var ErrNotRestorePoint = fmt.Errorf("%w: only a succeeded backup is a restore point", catalog.ErrConflict)

// StartRestore queues the restore of a backup as a new VM for the agent that reports the
// target source. The backup must be a succeeded restore point with a VM configuration; the
// request is checked (a *api.FieldError names the bad field), the target objects are checked
// by the agent, which alone can see the vCenter.
func (s *Service) StartRestore(ctx context.Context, req api.RestoreRequest) (api.Restore, error) {
	if err := req.Normalize(); err != nil {
		return api.Restore{}, err
	}
	row, err := s.cat.BackupByID(ctx, req.BackupID)
	if errors.Is(err, catalog.ErrNotFound) {
		return api.Restore{}, &api.FieldError{Field: "backup_id", Msg: fmt.Sprintf("no backup %q", req.BackupID)}
	}
	if err != nil {
		return api.Restore{}, err
	}
	if row.Status != api.JobSucceeded {
		return api.Restore{}, fmt.Errorf("backup %s is %s: %w", row.ID, row.Status, ErrNotRestorePoint)
	}
	repoID, repoName, err := restore.Holder(ctx, s.cat, row, req.Repository)
	if err != nil {
		return api.Restore{}, err
	}
	if repoID == row.RepositoryID {
		req.Repository = "" // the backup's own: nothing to remember
	} else {
		req.Repository = repoName
	}
	cfg, err := s.readVMConfigIn(ctx, row, repoID)
	if err != nil {
		return api.Restore{}, err
	}
	if req.InPlace {
		return s.startInPlace(ctx, req, row)
	}
	disks, err := s.cat.BackupDisks(ctx, row.ID)
	if err != nil {
		return api.Restore{}, err
	}
	have := map[string]bool{}
	for _, d := range disks {
		have[d.DiskID] = true
	}
	for disk := range req.Target.DiskDatastores {
		if !have[disk] {
			return api.Restore{}, &api.FieldError{Field: "target.disk_datastores", Msg: fmt.Sprintf("backup %s has no disk %q", row.ID, disk)}
		}
	}
	nets := map[string]bool{}
	for _, n := range cfg.NICs {
		nets[n.Network] = true
	}
	for from := range req.NetworkMap {
		if !nets[from] {
			return api.Restore{}, &api.FieldError{Field: "network_map", Msg: fmt.Sprintf("no NIC of the backed-up VM is on network %q", from)}
		}
	}
	src, err := s.cat.SourceByName(ctx, req.Target.Source)
	if errors.Is(err, catalog.ErrNotFound) {
		return api.Restore{}, &api.FieldError{Field: "target.source", Msg: fmt.Sprintf("no source named %q (see sendense-hub sources list)", req.Target.Source)}
	}
	if err != nil {
		return api.Restore{}, err
	}
	spec, err := json.Marshal(req)
	if err != nil {
		return api.Restore{}, fmt.Errorf("encode restore request: %w", err)
	}
	j := &catalog.RestoreJob{
		ID: catalog.NewID(api.RestoreIDPrefix, s.opts.Now()), BackupID: row.ID, AgentID: src.AgentID,
		SourceName: src.Name, TargetName: req.Target.Name, Spec: string(spec),
	}
	if err := s.cat.CreateRestoreJob(ctx, j); err != nil {
		return api.Restore{}, err
	}
	s.log.InfoContext(ctx, "restore queued", "restore_id", j.ID, "backup_id", row.ID, "agent_id", src.AgentID,
		"source", src.Name, "target_name", req.Target.Name, "datastore", req.Target.Datastore)
	s.wake(src.AgentID)
	return s.GetRestore(ctx, j.ID)
}

// startInPlace queues the restore of a backup over the VM it was taken of, on the agent that
// backs the VM up. The confirmation must be the VM's name as last discovered; a queued or
// running backup of the VM refuses it (catalog.ErrJobActive), and while it is queued or
// running no backup of the VM is queued.
func (s *Service) startInPlace(ctx context.Context, req api.RestoreRequest, row *catalog.BackupRow) (api.Restore, error) {
	vm, err := s.cat.VMByContextID(ctx, row.VMContextID)
	if err != nil {
		return api.Restore{}, err
	}
	if req.Confirm != vm.VMName {
		return api.Restore{}, &api.FieldError{Field: "confirm", Msg: fmt.Sprintf("must be the name of the VM restored in place, %q", vm.VMName)}
	}
	if vm.CurrentStatus == api.VMGone {
		return api.Restore{}, fmt.Errorf("vm %s is gone from its source; restore it as a new VM: %w", vm.VMName, catalog.ErrConflict)
	}
	req.Target = api.RestoreTarget{Source: vm.SourceName, Name: vm.VMName}
	spec, err := json.Marshal(req)
	if err != nil {
		return api.Restore{}, fmt.Errorf("encode restore request: %w", err)
	}
	j := &catalog.RestoreJob{
		ID: catalog.NewID(api.RestoreIDPrefix, s.opts.Now()), BackupID: row.ID, AgentID: vm.AgentID,
		SourceName: vm.SourceName, TargetName: vm.VMName, VMContextID: vm.ContextID, Spec: string(spec),
	}
	if err := s.cat.CreateRestoreJob(ctx, j); err != nil {
		return api.Restore{}, err
	}
	s.log.InfoContext(ctx, "in-place restore queued", "restore_id", j.ID, "backup_id", row.ID, "agent_id", vm.AgentID,
		"source", vm.SourceName, "vm_name", vm.VMName, "vm_context_id", vm.ContextID)
	s.wake(vm.AgentID)
	return s.GetRestore(ctx, j.ID)
}

// GetRestore returns one restore.
func (s *Service) GetRestore(ctx context.Context, id string) (api.Restore, error) {
	j, err := s.cat.RestoreJobByID(ctx, id)
	if err != nil {
		return api.Restore{}, err
	}
	r := restoreInfo(j)
	if row, err := s.cat.BackupByID(ctx, j.BackupID); err == nil {
		r.VMName = row.VMName
	}
	return r, nil
}

// RestoreListFilter selects restores.
type RestoreListFilter struct {
	Status, BackupID string
	Limit, Offset    int
}

// ListRestores returns restores, newest first.
func (s *Service) ListRestores(ctx context.Context, f RestoreListFilter) (api.RestoreList, error) {
	rows, total, err := s.cat.RestoreJobs(ctx, catalog.RestoreFilter{Status: f.Status, BackupID: f.BackupID, Limit: f.Limit, Offset: f.Offset})
	if err != nil {
		return api.RestoreList{}, err
	}
	out := api.RestoreList{Restores: make([]api.Restore, 0, len(rows)), Page: api.Page{Limit: f.Limit, Offset: f.Offset, Total: total}}
	for i := range rows {
		out.Restores = append(out.Restores, restoreInfo(&rows[i]))
	}
	return out, nil
}

// CancelRestore cancels a queued restore at once or asks the agent to stop a running one (it
// then removes the half-made VM).
func (s *Service) CancelRestore(ctx context.Context, id string) (api.Restore, error) {
	j, err := s.cat.CancelRestore(ctx, id)
	if err != nil {
		return api.Restore{}, err
	}
	s.log.InfoContext(ctx, "restore cancel requested", "restore_id", id, "status", j.Status)
	if j.Status == api.JobCancelled {
		s.metrics.restoresFinished.WithLabelValues(api.JobCancelled).Inc()
	}
	return s.GetRestore(ctx, id)
}

func restoreInfo(j *catalog.RestoreJob) api.Restore {
	var req api.RestoreRequest
	_ = json.Unmarshal([]byte(j.Spec), &req) // written by StartRestore; a damaged row shows its columns only
	r := api.Restore{
		ID: j.ID, BackupID: j.BackupID, Repository: req.Repository, AgentID: j.AgentID, Target: req.Target, NetworkMap: req.NetworkMap,
		DiskProvisioning: req.DiskProvisioning, MACAddresses: req.MACAddresses, PowerOn: req.PowerOn, InPlace: req.InPlace,
		Status: j.Status, CancelRequested: j.CancelRequested, Phase: j.Phase, VMRef: j.VMRef,
		BytesWritten: j.BytesWritten, BytesTotal: j.BytesTotal, Error: j.Error,
		CreatedAt: j.CreatedAt, StartedAt: j.ClaimedAt, FinishedAt: j.FinishedAt,
	}
	r.Target.Name, r.Target.Source = j.TargetName, j.SourceName
	if !j.ClaimedAt.IsZero() && !j.FinishedAt.IsZero() {
		r.DurationSeconds = j.FinishedAt.Sub(j.ClaimedAt).Seconds()
		if r.DurationSeconds > 0 {
			r.ThroughputBPS = float64(j.BytesWritten) / r.DurationSeconds
		}
	}
	return r
}

// NextRestore waits up to wait for a restore for the agent, like NextJob: one of its running
// restores it is not busy with (it restarted; the spec names the VM it had created), else a
// queued one, claimed exactly once.
func (s *Service) NextRestore(ctx context.Context, agentID string, busy []string, wait time.Duration) (*api.RestoreJob, error) {
	var out *api.RestoreJob
	err := s.poll(ctx, agentID, wait, func() (bool, error) {
		j, resumed, err := s.cat.ClaimRestoreJob(ctx, agentID, busy)
		if err != nil || j == nil {
			return false, err
		}
		if out, err = s.restoreSpec(ctx, j, resumed); err != nil {
			// A restore point that cannot be read now will not be readable on the next poll
			// either: fail the restore rather than hand it out for ever.
			if _, ferr := s.cat.FinishRestore(context.WithoutCancel(ctx), j.ID, agentID, api.JobFailed, err.Error(), j.VMRef); ferr == nil {
				s.metrics.restoresFinished.WithLabelValues(api.JobFailed).Inc()
			}
			return false, err
		}
		s.log.InfoContext(ctx, "restore claimed", "restore_id", j.ID, "agent_id", agentID, "backup_id", j.BackupID, "resumed", resumed)
		return true, nil
	})
	return out, err
}

func (s *Service) restoreSpec(ctx context.Context, j *catalog.RestoreJob, resumed bool) (*api.RestoreJob, error) {
	var req api.RestoreRequest
	if err := json.Unmarshal([]byte(j.Spec), &req); err != nil {
		return nil, fmt.Errorf("restore %s: decode request: %w", j.ID, err)
	}
	row, err := s.cat.BackupByID(ctx, j.BackupID)
	if err != nil {
		return nil, err
	}
	repoID, _, err := restore.Holder(ctx, s.cat, row, req.Repository)
	if err != nil {
		return nil, err
	}
	cfg, err := s.readVMConfigIn(ctx, row, repoID)
	if err != nil {
		return nil, err
	}
	disks, err := s.cat.BackupDisks(ctx, j.BackupID)
	if err != nil {
		return nil, err
	}
	spec := &api.RestoreJob{
		ID: j.ID, Status: j.Status, BackupID: j.BackupID, Source: j.SourceName, Target: req.Target, NetworkMap: req.NetworkMap,
		DiskProvisioning: req.DiskProvisioning, MACAddresses: req.MACAddresses, PowerOn: req.PowerOn,
		VM: cfg, VMRef: j.VMRef, Resumed: resumed, InPlace: req.InPlace, Confirm: req.Confirm,
	}
	if req.InPlace {
		spec.VMRef = "" // the restored VM is the original: never removed
		spec.VMWasOn = j.VMWasOn
	}
	for _, d := range disks {
		ds := req.Target.Datastore
		if v := req.Target.DiskDatastores[d.DiskID]; v != "" {
			ds = v
		}
		spec.Disks = append(spec.Disks, api.RestoreDiskSpec{DiskID: d.DiskID, CapacityBytes: d.CapacityBytes, Datastore: ds})
	}
	return spec, nil
}

// RestoreState tells an agent the state of one of its restores.
func (s *Service) RestoreState(ctx context.Context, agentID, id string) (api.JobState, error) {
	j, err := s.cat.AgentRestoreJob(ctx, id, agentID)
	if err != nil {
		return api.JobState{}, err
	}
	return api.JobState{ID: j.ID, Status: j.Status, CancelRequested: j.CancelRequested}, nil
}

// RestoreBackup returns the backup a running restore of the agent reads, and the repository it
// reads it from (empty: the backup's own): the agent may read that backup's images and no
// other.
func (s *Service) RestoreBackup(ctx context.Context, agentID, id string) (backupID, repo string, err error) {
	j, err := s.cat.AgentRestoreJob(ctx, id, agentID)
	if err != nil {
		return "", "", err
	}
	if j.Status != api.JobRunning {
		return "", "", fmt.Errorf("restore %s is %s: %w", id, j.Status, catalog.ErrConflict)
	}
	var req api.RestoreRequest
	if err := json.Unmarshal([]byte(j.Spec), &req); err != nil {
		return "", "", fmt.Errorf("restore %s: decode request: %w", j.ID, err)
	}
	return j.BackupID, req.Repository, nil
}

// RestoreProgress records a running restore's heartbeat and progress and answers whether to
// cancel. Bytes may not be negative nor exceed twice the backup's disks.
func (s *Service) RestoreProgress(ctx context.Context, agentID, id string, p api.RestoreProgress) (api.JobState, error) {
	j, err := s.cat.AgentRestoreJob(ctx, id, agentID)
	if err != nil {
		return api.JobState{}, err
	}
	disks, err := s.cat.BackupDisks(ctx, j.BackupID)
	if err != nil {
		return api.JobState{}, err
	}
	limit := int64(0)
	for _, d := range disks {
		limit += 2 * d.CapacityBytes
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"bytes_written", p.BytesWritten}, {"bytes_total", p.BytesTotal}} {
		if f.v < 0 || f.v > limit {
			return api.JobState{}, &api.FieldError{Field: f.name, Msg: fmt.Sprintf("must be between 0 and %d for this backup's disks", limit)}
		}
	}
	switch p.Phase {
	case "", api.PhaseChecking, api.PhaseCreating, api.PhaseWriting, api.PhaseCleanup, api.PhaseFinished:
	default:
		return api.JobState{}, &api.FieldError{Field: "phase", Msg: "must be checking, creating, writing, cleanup or finished"}
	}
	if err := checkRef("vm_ref", p.VMRef); err != nil {
		return api.JobState{}, err
	}
	if p.VMWasOn != nil {
		if err := s.cat.RecordVMWasOn(ctx, id, agentID, *p.VMWasOn); err != nil {
			return api.JobState{}, err
		}
	}
	j, err = s.cat.RestoreProgress(ctx, id, agentID, p.Phase, p.VMRef, p.BytesWritten, p.BytesTotal)
	if err != nil {
		return api.JobState{}, err
	}
	return api.JobState{ID: j.ID, Status: j.Status, CancelRequested: j.CancelRequested}, nil
}

func checkRef(field, v string) error {
	if len(v) > 255 || strings.IndexFunc(v, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
		return &api.FieldError{Field: field, Msg: "must be a managed object reference: at most 255 printable ASCII characters"}
	}
	return nil
}

// CompleteRestore ends a restore of the agent.
func (s *Service) CompleteRestore(ctx context.Context, agentID, id string, c api.RestoreCompletion) (api.JobState, error) {
	switch c.Status {
	case api.JobSucceeded, api.JobFailed, api.JobCancelled:
	default:
		return api.JobState{}, &api.FieldError{Field: "status", Msg: "must be succeeded, failed or cancelled"}
	}
	if err := checkRef("vm_ref", c.VMRef); err != nil {
		return api.JobState{}, err
	}
	if c.Status == api.JobSucceeded && c.VMRef == "" {
		return api.JobState{}, &api.FieldError{Field: "vm_ref", Msg: "is required for a succeeded restore"}
	}
	before, err := s.cat.AgentRestoreJob(ctx, id, agentID)
	if err != nil {
		return api.JobState{}, err
	}
	if c.Status == api.JobSucceeded && before.Status == api.JobRunning {
		// A restore that did not write every byte of the backup's disks did not succeed, whatever
		// the agent believes. It is recorded failed, not refused: a refused completion would leave
		// the restore running, to be handed back to the agent as resumed, which starts by
		// removing the VM it made.
		disks, err := s.cat.BackupDisks(ctx, before.BackupID)
		if err != nil {
			return api.JobState{}, err
		}
		var total int64
		for _, d := range disks {
			total += d.CapacityBytes
		}
		if c.BytesWritten != total {
			c.Status = api.JobFailed
			c.Error = fmt.Sprintf("the agent reported success having written %d of the %d bytes of the backup's disks; check the restored VM %s", c.BytesWritten, total, c.VMRef)
		}
	}
	j, err := s.cat.FinishRestore(ctx, id, agentID, c.Status, c.Error, c.VMRef)
	if err != nil {
		return api.JobState{}, err
	}
	if before.Status == api.JobRunning { // not a retried completion
		s.metrics.restoresFinished.WithLabelValues(j.Status).Inc()
		if !j.ClaimedAt.IsZero() && !j.FinishedAt.IsZero() {
			s.metrics.restoreDuration.Observe(j.FinishedAt.Sub(j.ClaimedAt).Seconds())
		}
		if j.Status == api.JobSucceeded {
			addBytes(s.metrics.restoreBytes, j.BytesWritten)
		}
	}
	level := s.log.InfoContext
	if j.Status != api.JobSucceeded {
		level = s.log.WarnContext
	}
	level(ctx, "restore finished", "restore_id", id, "agent_id", agentID, "backup_id", j.BackupID, "status", j.Status,
		"vm_ref", j.VMRef, "bytes_written", j.BytesWritten, "err", c.Error)
	return api.JobState{ID: j.ID, Status: j.Status, CancelRequested: j.CancelRequested}, nil
}

// reapStaleRestores fails restores whose agent went silent or will not claim them.
func (s *Service) reapStaleRestores(ctx context.Context, cutoff time.Time) {
	failed, err := s.cat.FailStaleRestores(ctx, cutoff)
	if err != nil && ctx.Err() == nil {
		s.log.WarnContext(ctx, "fail stale restores", "err", err)
	}
	for _, j := range failed {
		s.metrics.restoresFinished.WithLabelValues(api.JobFailed).Inc()
		s.log.WarnContext(ctx, "restore failed", "restore_id", j.ID, "agent_id", j.AgentID, "reason", j.Error, "vm_ref", j.VMRef)
	}
}
