package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/hub/internal/copies"
	"github.com/sendense/sendense/hub/internal/repository"
)

func newRepoCopyCmd(e *env) *cobra.Command {
	var from, to, backupID string
	var parallel int
	cmd := &cobra.Command{
		Use:   "copy --from NAME --to NAME [--backup ID] [--parallel 8]",
		Short: "Copy successful backups into another repository (a copy off site): only the chunks it lacks, verified on arrival",
		Long: "Every successful backup of --from (or only --backup) that --to holds no copy of is copied: the chunks --to lacks,\n" +
			"each read back from --to and re-hashed, then the indexes, the VM configuration and the backup's record, so that --to\n" +
			"alone restores it and can be attached by another hub. backup show lists the copies; deleting a backup deletes them.",
		Args: cobra.NoArgs,
		RunE: catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
			log := cfg.NewLogger(e.stderr)
			repos := repository.NewRegistry(cat, log, nil)
			defer repos.Close()
			src, err := cat.RepositoryByName(cmd.Context(), from)
			if err != nil {
				return err
			}
			dst, err := cat.RepositoryByName(cmd.Context(), to)
			if err != nil {
				return err
			}
			open := func(ctx context.Context, id string) (copies.Repository, error) { return repos.Open(ctx, id) }
			rep, err := copies.New(cat, open, log, parallel).Run(cmd.Context(), src.ID, dst.ID, backupID)
			fmt.Fprintf(e.stdout, "copied %d backups from %s to %s (%d there already): %d chunks, %s, %d chunks the target had, in %s\n",
				rep.Backups, from, to, rep.Present, rep.Chunks, humanBytes(rep.Bytes), rep.ChunksShared, rep.Duration.Round(time.Millisecond))
			return err
		}),
	}
	cmd.Flags().StringVar(&from, "from", "", "repository whose backups are copied")
	cmd.Flags().StringVar(&to, "to", "", "repository that receives the copies")
	cmd.Flags().StringVar(&backupID, "backup", "", "only this backup")
	cmd.Flags().IntVar(&parallel, "parallel", 8, "chunks copied at once")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}
