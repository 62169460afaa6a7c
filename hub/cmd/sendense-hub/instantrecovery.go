package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/hub/internal/instantrecovery"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/nfsexport"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/shared/api"
)

// irCmd runs fn with the instant-recovery service of this hub's configuration. A session it
// starts is written to the hub's folders and catalog; the running hub serves it within one
// scheduler interval (and before its agent is told).
func irCmd(e *env, fn func(cmd *cobra.Command, args []string, s *instantrecovery.Service) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		return catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
			if cfg.NFSListen == "" {
				return errors.New("instant recovery is off in this configuration: set nfs_listen and nfs_address")
			}
			log := cfg.NewLogger(e.stderr)
			repos := repository.NewRegistry(cat, log, nil)
			defer repos.Close()
			backups := jobs.New(cat, repos, log, nil, jobs.Options{})
			exp, err := nfsexport.New(filepath.Join(cfg.DataDir, "instant-recovery"), log)
			if err != nil {
				return err
			}
			defer func() {
				for id := range exp.Overlays() { // close what Start opened; the hub serves it
					_ = exp.Remove(id, false)
				}
			}()
			svc := instantrecovery.New(cat, restore.New(cat, restoreRepos(repos), nil), backups, exp, backups, log, nil,
				instantrecovery.Options{NFSAddress: cfg.NFSAddress, OverlayLimit: cfg.OverlayLimitGiB << 30})
			return fn(cmd, args, svc)
		})(cmd, args)
	}
}

func newInstantRecoveryCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "instant-recovery", Short: "Boot VMs straight from backups over NFS: start, list, show, migrate and stop sessions"}
	var req api.InstantRecoveryRequest
	var netMap []string
	start := &cobra.Command{
		Use:   "start --backup ID --host ESXI --name N [--network-map old=new]... [--power-on] [--source S]",
		Short: "Serve a backup over NFS to an ESXi host and have the agent register (and boot) it there",
		Long: "Serves the backup's disks over NFS (only to the host's addresses), with the VM's writes kept in a bounded\n" +
			"copy-on-write overlay on the hub, then the agent of the VM's source mounts the export on the host as a\n" +
			"datastore, registers the VM and powers it on if asked. Prints the session id and the export.",
		Args: cobra.NoArgs,
		RunE: irCmd(e, func(cmd *cobra.Command, _ []string, s *instantrecovery.Service) error {
			var err error
			if req.NetworkMap, err = pairs("--network-map", netMap); err != nil {
				return err
			}
			r, err := s.Start(cmd.Context(), req)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "%s\t%s\t%s\n", r.ID, r.Status, r.NFSExport)
			return err
		}),
	}
	f := start.Flags()
	f.StringVar(&req.BackupID, "backup", "", "backup id (required)")
	f.StringVar(&req.Host, "host", "", "ESXi host, by its inventory name (required; only its addresses may mount)")
	f.StringVar(&req.Name, "name", "", "name of the VM to register (required)")
	f.StringArrayVar(&netMap, "network-map", nil, "old=new: connect NICs of network old to network new (repeatable)")
	f.BoolVar(&req.PowerOn, "power-on", false, "power the VM on once registered")
	f.StringVar(&req.Source, "source", "", "the vCenter whose agent does the work (default: the backed-up VM's)")
	for _, n := range []string{"backup", "host", "name"} {
		_ = start.MarkFlagRequired(n)
	}

	var lf instantrecovery.ListFilter
	var asJSON bool
	list := &cobra.Command{
		Use:   "list [--status S]",
		Short: "List instant-recovery sessions, newest first",
		Args:  cobra.NoArgs,
		RunE: irCmd(e, func(cmd *cobra.Command, _ []string, s *instantrecovery.Service) error {
			l, err := s.List(cmd.Context(), lf)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(e.stdout).Encode(l)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tBACKUP\tHOST\tNAME\tSTATUS\tVM\tEXPORT\tERROR")
			for _, r := range l.InstantRecoveries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.BackupID, printable(r.Host), printable(r.Name),
					r.Status, r.VMRef, r.NFSExport, printable(r.Error))
			}
			return tw.Flush()
		}),
	}
	list.Flags().StringVar(&lf.Status, "status", "", "starting, running, stopping, stopped, failed, migrating or migrated")
	list.Flags().IntVar(&lf.Limit, "limit", 100, "at most this many")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a session as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: irCmd(e, func(cmd *cobra.Command, args []string, s *instantrecovery.Service) error {
			r, err := s.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(r)
		}),
	}
	stop := &cobra.Command{
		Use:   "stop ID",
		Short: "Stop a session: the agent powers the VM off, unregisters it and unmounts the export; the overlay is dropped",
		Args:  cobra.ExactArgs(1),
		RunE: irCmd(e, func(cmd *cobra.Command, args []string, s *instantrecovery.Service) error {
			r, err := s.Stop(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "%s\t%s\n", r.ID, r.Status)
			return err
		}),
	}
	var ds string
	migrate := &cobra.Command{
		Use:   "migrate ID --datastore DS",
		Short: "Move a running session's VM to a production datastore (Storage vMotion), then unmount the export",
		Args:  cobra.ExactArgs(1),
		RunE: irCmd(e, func(cmd *cobra.Command, args []string, s *instantrecovery.Service) error {
			r, err := s.Migrate(cmd.Context(), args[0], api.InstantRecoveryMigrateRequest{Datastore: ds})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "%s\t%s\t%s\n", r.ID, r.Status, r.TargetDatastore)
			return err
		}),
	}
	migrate.Flags().StringVar(&ds, "datastore", "", "the datastore to move the VM to (required)")
	_ = migrate.MarkFlagRequired("datastore")
	cmd.AddCommand(start, list, show, stop, migrate)
	return cmd
}
