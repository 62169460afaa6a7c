package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/hub/internal/storage"
	"github.com/sendense/sendense/hub/internal/verify"
)

// parseSize parses "4MiB", "64KiB", "1GiB" or a byte count.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("size %q: %w", s, err)
			}
			return v * u.mult, nil
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

func newRepoCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "repo", Short: "Create, list and verify backup repositories"}
	var path, chunkSize string
	create := &cobra.Command{
		Use:   "create NAME --path DIR [--chunk-size 4MiB]",
		Short: "Create a repository (or adopt an existing one at DIR)",
		Args:  cobra.ExactArgs(1),
		RunE: catalogCmd(e, func(cmd *cobra.Command, _ *config.Config, cat *catalog.Catalog) error {
			cs, err := parseSize(chunkSize)
			if err != nil {
				return err
			}
			rec, _, err := storage.NewManager(cat).Create(cmd.Context(), cmd.Flags().Arg(0), path, cs)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "created repository %s (%s) at %s, chunk size %s\n", rec.Name, rec.ID, rec.Path, humanBytes(rec.ChunkSize))
			return err
		}),
	}
	create.Flags().StringVar(&path, "path", "", "directory of the repository (required)")
	create.Flags().StringVar(&chunkSize, "chunk-size", "4MiB", "slot size, a power of two from 64KiB to 64MiB")
	_ = create.MarkFlagRequired("path")
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List repositories",
		Args:  cobra.NoArgs,
		RunE: catalogCmd(e, func(cmd *cobra.Command, _ *config.Config, cat *catalog.Catalog) error {
			rs, err := storage.NewManager(cat).List(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, rs)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tID\tKIND\tCHUNK SIZE\tPATH")
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.ID, r.Kind, humanBytes(r.ChunkSize), r.Path)
			}
			return tw.Flush()
		}),
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var backupID string
	var parallel int
	verifyCmd := &cobra.Command{
		Use:   "verify [--backup ID]",
		Short: "Re-read and re-hash every chunk of every successful backup (or of one); exit 1 on damage",
		Args:  cobra.NoArgs,
		RunE: catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
			v := verify.New(cat, storage.NewManager(cat), cfg.NewLogger(e.stderr), nil, parallel)
			rep, err := v.Run(cmd.Context(), backupID)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "verified %d backups, %d chunks in %s\n", rep.Backups, rep.Chunks, rep.Duration.Round(1e6))
			if rep.OK() {
				fmt.Fprintln(e.stdout, "no damage found")
				return nil
			}
			for id, problems := range rep.DamagedBackups {
				fmt.Fprintf(e.stdout, "DAMAGED backup %s:\n", id)
				for _, p := range problems {
					fmt.Fprintf(e.stdout, "  %s\n", p)
				}
			}
			return errors.New("verification found damaged backups")
		}),
	}
	verifyCmd.Flags().StringVar(&backupID, "backup", "", "only this backup")
	verifyCmd.Flags().IntVar(&parallel, "parallel", 4, "chunks verified at once")
	cmd.AddCommand(create, list, verifyCmd)
	return cmd
}
