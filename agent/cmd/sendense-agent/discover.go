package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/agent/internal/daemon"
	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/sources"
	"github.com/sendense/sendense/shared/api"
)

func newDiscoverCmd(e *env) *cobra.Command {
	var asJSON bool
	var only string
	cmd := &cobra.Command{
		Use:   "discover [--source NAME] [--json]",
		Short: "Read the inventory of the configured sources once, push it to the hub and print it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, e)
			if err != nil {
				return err
			}
			if len(cfg.Sources) == 0 {
				return errors.New("no sources configured (sources: in the configuration file)")
			}
			log := cfg.NewLogger(e.stderr)
			_, hc, err := connect(cfg, log, hubclient.Options{})
			if err != nil {
				return err
			}
			srcs := sources.New(cfg.Sources, cfg.StateDir, log)
			defer srcs.Close(cmd.Context())
			var all []api.Inventory
			var failed []string
			for _, src := range srcs.All() {
				if only != "" && src.Name() != only {
					continue
				}
				inv, res, err := daemon.DiscoverOnce(cmd.Context(), src, hc)
				if err != nil {
					log.ErrorContext(cmd.Context(), "discovery failed", "source", src.Name(), "err", err)
					failed = append(failed, src.Name())
					continue
				}
				log.InfoContext(cmd.Context(), "inventory pushed", "source", src.Name(), "vms", res.VMs, "disks", res.Disks, "changes", len(res.Events))
				all = append(all, inv)
			}
			if asJSON {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(all); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SOURCE\tVM\tPOWER\tCBT\tDISK\tCAPACITY\tBACKUP\tDATASTORE\tFILE")
				for _, inv := range all {
					for _, vm := range inv.VMs {
						if len(vm.Disks) == 0 {
							fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t-\t-\t-\t-\t-\n", inv.Source.Name, vm.Name, vm.PowerState, vm.CBTEnabled)
						}
						for _, d := range vm.Disks {
							backup := "yes"
							if !d.Backupable {
								backup = "no: " + d.NotBackupableReason
							}
							fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%d\t%s\t%s\t%s\n", inv.Source.Name, vm.Name, vm.PowerState, vm.CBTEnabled, d.DiskID, d.CapacityBytes, backup, d.Datastore, d.BackingFile)
						}
					}
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if only != "" && len(all) == 0 && len(failed) == 0 {
				return fmt.Errorf("no source named %q", only)
			}
			if len(failed) > 0 {
				return fmt.Errorf("discovery failed for %v", failed)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the inventory as JSON")
	cmd.Flags().StringVar(&only, "source", "", "only this source")
	return cmd
}
