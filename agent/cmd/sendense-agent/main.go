// Command sendense-agent runs next to vCenter/ESXi: it discovers VMs and disks, takes snapshots,
// reads changed blocks and pushes inventory and data to the hub over mutual TLS.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/agent/internal/config"
	"github.com/sendense/sendense/shared/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sendense-agent:", err)
		os.Exit(1)
	}
}

// env is the process environment seen by one invocation (tests inject their own).
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	e := &env{stdout: stdout, stderr: stderr, getenv: getenv}
	root := &cobra.Command{
		Use:           "sendense-agent",
		Short:         "Sendense agent: discovers and backs up vSphere VMs, sending data to the hub",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	scratch := config.Default()
	root.PersistentFlags().String("config", "", "YAML configuration file (env SENDENSE_AGENT_CONFIG)")
	config.BindFlags(root.PersistentFlags(), &scratch)
	root.AddCommand(
		newEnrollCmd(e),
		newRunCmd(e),
		newDiscoverCmd(e),
		newConfigCmd(e),
		newStatusCmd(e),
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				_, err := fmt.Fprintln(stdout, "sendense-agent", version.Get())
				return err
			},
		},
	)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

func loadConfig(cmd *cobra.Command, e *env) (*config.Config, error) {
	path, _ := cmd.Flags().GetString("config")
	if path == "" {
		path = e.getenv(config.EnvPrefix + "CONFIG")
	}
	return config.Load(path, e.getenv, cmd.Flags())
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
