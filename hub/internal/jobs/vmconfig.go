package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
)

// ErrNoVMConfig: the backup carries no VM configuration (taken before configurations were
// captured). It wraps catalog.ErrNotFound.
var ErrNoVMConfig = fmt.Errorf("%w: the backup has no VM configuration (taken before VM configurations were captured)", catalog.ErrNotFound)

// PutVMConfig stores the VM configuration a running job's snapshot recorded in the job's
// repository and records its digest on the job. The configuration is untrusted input: it is
// validated (api.VMConfig.Validate), must describe the job's VM, and is stored as the hub
// re-encodes it, never as the bytes the agent sent. The same configuration again is not an
// error; a different one → catalog.ErrConflict. If the job does not succeed, the configuration
// is removed with the job's other results.
func (s *Service) PutVMConfig(ctx context.Context, agentID, id string, cfg api.VMConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	j, err := s.cat.AgentJob(ctx, id, agentID)
	if err != nil {
		return err
	}
	if j.Status != api.JobRunning {
		return fmt.Errorf("job %s is %s: %w", id, j.Status, catalog.ErrConflict)
	}
	vm, err := s.cat.VMByContextID(ctx, j.VMContextID)
	if err != nil {
		return err
	}
	if cfg.InstanceUUID != vm.InstanceUUID {
		return &api.FieldError{Field: "instance_uuid", Msg: "must be the instance uuid of the job's VM"}
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode vm config of job %s: %w", id, err)
	}
	repo, err := s.open(ctx, j.RepositoryID)
	if err != nil {
		return err
	}
	digest, err := repo.WriteVMConfig(ctx, vm.InstanceUUID, id, data)
	if errors.Is(err, repository.ErrVMConfigExists) {
		return fmt.Errorf("%w: %w", err, catalog.ErrConflict)
	}
	if err != nil {
		return err
	}
	if err := s.cat.SetJobVMConfig(ctx, id, agentID, digest); err != nil {
		if errors.Is(err, catalog.ErrConflict) {
			// The job ended meanwhile (reaped): its results are discarded, this one too.
			if cur, jerr := s.cat.JobByID(ctx, id); jerr == nil && cur.Status != api.JobSucceeded && cur.Status != api.JobRunning {
				s.removeVMConfig(ctx, j.RepositoryID, vm.InstanceUUID, id)
			}
		}
		return err
	}
	s.log.InfoContext(ctx, "vm configuration stored", "job_id", id, "vm_context_id", j.VMContextID, "digest", digest,
		"bytes", len(data), "disks", len(cfg.Disks), "nics", len(cfg.NICs))
	return nil
}

// VMConfig returns the VM configuration stored with a succeeded backup, checked against the
// digest the catalog recorded: ErrNoVMConfig for a backup without one, catalog.ErrConflict for a
// backup that has not succeeded, repository.ErrVMConfigDamaged when the stored bytes do not
// match.
func (s *Service) VMConfig(ctx context.Context, id string) (api.VMConfig, error) {
	row, err := s.cat.BackupByID(ctx, id)
	if err != nil {
		return api.VMConfig{}, err
	}
	if row.Status != api.JobSucceeded {
		return api.VMConfig{}, fmt.Errorf("backup %s is %s: only a succeeded backup is a restore point: %w", id, row.Status, catalog.ErrConflict)
	}
	return s.readVMConfig(ctx, row)
}

func (s *Service) readVMConfig(ctx context.Context, row *catalog.BackupRow) (api.VMConfig, error) {
	return s.readVMConfigIn(ctx, row, row.RepositoryID)
}

// readVMConfigIn is readVMConfig from the repository repoID: the backup's own or one holding a
// copy of it.
func (s *Service) readVMConfigIn(ctx context.Context, row *catalog.BackupRow, repoID string) (api.VMConfig, error) {
	if row.VMConfigDigest == "" {
		return api.VMConfig{}, fmt.Errorf("backup %s: %w", row.ID, ErrNoVMConfig)
	}
	repo, err := s.open(ctx, repoID)
	if err != nil {
		return api.VMConfig{}, err
	}
	data, err := repo.ReadVMConfig(ctx, row.InstanceUUID, row.ID, row.VMConfigDigest)
	if err != nil {
		return api.VMConfig{}, err
	}
	var cfg api.VMConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return api.VMConfig{}, fmt.Errorf("backup %s: %w: %w", row.ID, repository.ErrVMConfigDamaged, err)
	}
	if cfg.Version != api.VMConfigVersion {
		return api.VMConfig{}, fmt.Errorf("backup %s: vm configuration format version %d, this hub reads %d", row.ID, cfg.Version, api.VMConfigVersion)
	}
	return cfg, nil
}

// vmConfigSummary summarises a succeeded backup's configuration for api.Backup; nil when it
// has none. A configuration that cannot be read is reported in the summary, not as an error:
// the backup's other details are still worth showing.
func (s *Service) vmConfigSummary(ctx context.Context, row *catalog.BackupRow) *api.VMConfigSummary {
	if row.VMConfigDigest == "" || row.Status != api.JobSucceeded {
		return nil
	}
	cfg, err := s.readVMConfig(ctx, row)
	if err != nil {
		s.log.WarnContext(ctx, "read vm configuration", "job_id", row.ID, "err", err)
		return &api.VMConfigSummary{Digest: row.VMConfigDigest, Error: err.Error()}
	}
	sum := cfg.Summary(row.VMConfigDigest)
	return &sum
}

// removeVMConfig deletes a backup's VM configuration from its repository; a failure is logged.
func (s *Service) removeVMConfig(ctx context.Context, repositoryID, instanceUUID, backupID string) {
	repo, err := s.open(ctx, repositoryID)
	if err == nil {
		err = repo.RemoveVMConfig(ctx, instanceUUID, backupID)
	}
	if err != nil {
		s.log.WarnContext(ctx, "remove vm configuration", "job_id", backupID, "repository_id", repositoryID, "err", err)
	}
}
