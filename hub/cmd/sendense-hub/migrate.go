package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/config"
)

func newMigrateCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply, roll back or list catalog schema migrations",
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "up",
			Short: "Apply every pending migration",
			Args:  cobra.NoArgs,
			RunE: catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
				applied, err := cat.MigrateUp(cmd.Context(), cfg.NewLogger(e.stderr))
				for _, name := range applied {
					fmt.Fprintln(e.stdout, "applied", name)
				}
				if err == nil && len(applied) == 0 {
					fmt.Fprintln(e.stdout, "catalog is up to date")
				}
				return err
			}),
		},
		&cobra.Command{
			Use:   "down",
			Short: "Roll back the most recently applied group of migrations",
			Args:  cobra.NoArgs,
			RunE: catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
				rolled, err := cat.MigrateDown(cmd.Context(), cfg.NewLogger(e.stderr))
				for _, name := range rolled {
					fmt.Fprintln(e.stdout, "rolled back", name)
				}
				if err == nil && len(rolled) == 0 {
					fmt.Fprintln(e.stdout, "nothing to roll back")
				}
				return err
			}),
		},
		&cobra.Command{
			Use:   "status",
			Short: "List migrations and whether each is applied",
			Args:  cobra.NoArgs,
			RunE: catalogCmd(e, func(cmd *cobra.Command, _ *config.Config, cat *catalog.Catalog) error {
				st, err := cat.MigrationStatus(cmd.Context())
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "MIGRATION\tNAME\tSTATUS\tAPPLIED AT\n")
				for _, m := range st {
					status, at := "pending", ""
					if m.Applied {
						status, at = "applied", m.AppliedAt.UTC().Format("2006-01-02 15:04:05Z")
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, m.Comment, status, at)
				}
				return tw.Flush()
			}),
		},
		&cobra.Command{
			Use:   "unlock",
			Short: "Clear a migration lock left by a crashed process",
			Args:  cobra.NoArgs,
			RunE: catalogCmd(e, func(cmd *cobra.Command, _ *config.Config, cat *catalog.Catalog) error {
				return cat.UnlockMigrations(cmd.Context())
			}),
		},
	)
	return cmd
}
