// Command sendense-hub is the Sendense backup server: the HTTPS API for agents and operators,
// the catalog, the repositories, and the operator CLI.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // policy time zones work on hosts without zoneinfo

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/shared/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sendense-hub:", err)
		os.Exit(1)
	}
}

// env is the process environment seen by one invocation (tests inject their own).
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	root := newRootCmd(&env{stdout: stdout, stderr: stderr, getenv: getenv})
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

func newRootCmd(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:           "sendense-hub",
		Short:         "Sendense backup server for VMware vSphere",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	scratch := config.Default()
	root.PersistentFlags().String("config", "", "YAML configuration file (env SENDENSE_HUB_CONFIG)")
	config.BindFlags(root.PersistentFlags(), &scratch)
	bindRemoteFlags(root)
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error { return checkRemote(cmd, e) }

	root.AddCommand(
		newServeCmd(e),
		newMigrateCmd(e),
		newTokenCmd(e),
		newAgentsCmd(e),
		newAPITokenCmd(e),
		newVMsCmd(e),
		newSourcesCmd(e),
		newBackupCmd(e),
		newRestoreCmd(e),
		newInstantRecoveryCmd(e),
		newFilesCmd(e),
		newRepoCmd(e),
		newPolicyCmd(e),
		newConfigCmd(e),
		newPruneCmd(e),
		newEventsCmd(e),
		newRestoreTestCmd(e),
		newReportCmd(e),
		newUserCmd(e),
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				_, err := fmt.Fprintln(e.stdout, "sendense-hub", version.Get())
				return err
			},
		},
	)
	return root
}

// loadConfig reads the configuration for a command: defaults, --config file, environment, flags.
func loadConfig(cmd *cobra.Command, e *env) (*config.Config, error) {
	path, _ := cmd.Flags().GetString("config")
	if path == "" {
		path = e.getenv(config.EnvPrefix + "CONFIG")
	}
	cfg, err := config.Load(path, e.getenv, cmd.Flags())
	if err != nil {
		return nil, err
	}
	// The server logs at the configured level; one-shot commands print their results and log
	// only warnings unless --log-level asks for more.
	if cmd.Name() != "serve" && !cmd.Flags().Changed("log-level") {
		cfg.LogLevel = "warn"
	}
	return cfg, nil
}

// catalogCmd adapts a command body that needs the configuration and an open catalog.
func catalogCmd(e *env, fn func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		cfg, err := loadConfig(cmd, e)
		if err != nil {
			return err
		}
		migrating := cmd.Parent() != nil && cmd.Parent().Name() == "migrate"
		var cat *catalog.Catalog
		if migrating {
			cat, err = openCatalog(cmd.Context(), cfg, nil, nil)
		} else {
			cat, err = openMigratedCatalog(cmd.Context(), cfg)
		}
		if err != nil {
			return err
		}
		defer cat.Close()
		return fn(cmd, cfg, cat)
	}
}

// openMigratedCatalog opens the catalog for a command that reads or changes it: a data
// directory without one, or a catalog that lacks migrations, is an error that says what to do,
// not an SQL error about a missing table.
func openMigratedCatalog(ctx context.Context, cfg *config.Config) (*catalog.Catalog, error) {
	where := cfg.SQLitePath()
	if cfg.DB != "" {
		where = "the configured database"
	} else if _, err := os.Stat(where); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no catalog at %s: check --data-dir (or data_dir in the configuration), or create it with `sendense-hub migrate up` or `sendense-hub serve`", where)
	}
	cat, err := openCatalog(ctx, cfg, nil, nil)
	if err != nil {
		return nil, err
	}
	ms, err := cat.MigrationStatus(ctx)
	if err != nil {
		_ = cat.Close()
		return nil, err
	}
	pending := 0
	for _, m := range ms {
		if !m.Applied {
			pending++
		}
	}
	if pending > 0 {
		_ = cat.Close()
		return nil, fmt.Errorf("the catalog at %s lacks %d of %d migrations: run `sendense-hub migrate up` (or `sendense-hub serve`, which migrates when it starts)", where, pending, len(ms))
	}
	return cat, nil
}

func newConfigCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Show the configuration"}
	cmd.AddCommand(&cobra.Command{
		Use:   "example",
		Short: "Print a complete, commented configuration with every key at its default",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprint(e.stdout, config.Example)
			return err
		},
	})
	return cmd
}
