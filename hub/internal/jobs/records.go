package jobs

import (
	"context"
	"fmt"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
)

// describe writes (or rewrites) the backup record of a successful backup into its repository,
// so that the repository alone can give the backup back to a catalog that lost it
// (repository.Registry.Attach). It is called when a backup succeeds and when its protection
// changes.
func (s *Service) describe(ctx context.Context, id string) error {
	rows, err := s.cat.BackupRows(ctx, id)
	if err != nil {
		return fmt.Errorf("describe backup %s: %w", id, err)
	}
	repo, err := s.open(ctx, rows.Job.RepositoryID)
	if err != nil {
		return fmt.Errorf("describe backup %s: %w", id, err)
	}
	if err := repo.WriteBackupRecord(ctx, repository.RecordOf(rows)); err != nil {
		return fmt.Errorf("describe backup %s: %w", id, err)
	}
	return nil
}

// undescribe removes the backup record of a deleted backup; a failure is logged, and a record
// left behind only lets a later attach bring the backup back if its indexes are still there.
func (s *Service) undescribe(ctx context.Context, repositoryID, instanceUUID, id string) {
	repo, err := s.open(ctx, repositoryID)
	if err == nil {
		err = repo.RemoveBackupRecord(ctx, instanceUUID, id)
	}
	if err != nil {
		s.log.WarnContext(ctx, "remove backup record", "job_id", id, "repository_id", repositoryID, "err", err)
	}
}

// DescribeBackups writes the backup record of every successful backup in the repository with
// catalog id repositoryID (every repository when empty) and returns how many it wrote. Records
// are rewritten whole, so running it again is harmless; it gives backups taken before
// repositories described their backups a record, making them attachable.
func (s *Service) DescribeBackups(ctx context.Context, repositoryID string) (int, error) {
	rows, _, err := s.cat.Backups(ctx, catalog.BackupFilter{RepositoryID: repositoryID, Status: api.JobSucceeded})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range rows {
		if err := s.describe(ctx, r.ID); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
