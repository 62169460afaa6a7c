package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/hub/internal/harden"
	"github.com/sendense/sendense/hub/internal/immutable"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
)

// newRepoHardenCmd is `repo harden`, the root helper of hardened local repositories.
func newRepoHardenCmd(e *env) *cobra.Command {
	var lockDays int
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "harden NAME [--lock-days 30] [--dry-run]",
		Short: "Make recent and protected backups of a local repository immutable (run as root)",
		Long: "Run as root (it needs CAP_LINUX_IMMUTABLE), from a systemd timer or after each backup. Indexes written in the\n" +
			"last --lock-days days or of protected backups, and every chunk they name, get the immutable attribute\n" +
			"(chattr +i): nobody — the hub's user, the API, root without clearing the attribute — can remove or overwrite\n" +
			"them. Indexes older than that and not protected, and chunks no immutable index names, are released, so that\n" +
			"prune, delete and repo gc (run as the hub's user) can remove them. Needs a file system with the attribute\n" +
			"(ext4, XFS, btrfs; not tmpfs or NFS).",
		Args: cobra.ExactArgs(1),
		RunE: catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
			if lockDays < 0 {
				return errors.New("--lock-days must not be negative")
			}
			rec, err := cat.RepositoryByName(cmd.Context(), cmd.Flags().Arg(0))
			if err != nil {
				return err
			}
			if rec.Kind != api.RepositoryLocal {
				return fmt.Errorf("repository %s is %s: hardened mode is for local repositories (S3 ones use --s3-object-lock)", rec.Name, rec.Kind)
			}
			repos := repository.NewRegistry(cat, cfg.NewLogger(e.stderr), nil)
			defer repos.Close()
			r, err := repos.Open(cmd.Context(), rec.ID)
			if err != nil {
				return err
			}
			rep, err := harden.Run(cmd.Context(), r, cat, harden.Options{
				RepositoryID: rec.ID, LockPeriod: time.Duration(lockDays) * 24 * time.Hour, DryRun: dryRun,
			}, cfg.NewLogger(e.stderr))
			if errors.Is(err, immutable.ErrNotPermitted) {
				return fmt.Errorf("%w; the hub's own user cannot, which is the point", err)
			}
			if err != nil {
				return err
			}
			verb := "hardened"
			if dryRun {
				verb = "would harden"
			}
			fmt.Fprintf(e.stdout, "%s: %d indexes and %d chunks immutable (%s %d indexes, %d chunks; %d indexes kept for protected backups); released %d indexes, %d chunks\n",
				rec.Name, rep.Indexes, rep.Chunks, verb, rep.HardenedIndexes, rep.HardenedChunks, rep.ProtectedIndexes, rep.ReleasedIndexes, rep.ReleasedChunks)
			if rep.UnreadableIndexes > 0 {
				return fmt.Errorf("%d indexes cannot be read: they stay immutable and no chunk was released (repo verify names them)", rep.UnreadableIndexes)
			}
			return nil
		}),
	}
	cmd.Flags().IntVar(&lockDays, "lock-days", 30, "days after a backup during which its index and chunks stay immutable")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "report what would change, change nothing")
	return cmd
}
