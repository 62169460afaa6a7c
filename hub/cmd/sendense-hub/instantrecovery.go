package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/client"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/hub/internal/instantrecovery"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/nfsexport"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/shared/api"
)

// irOps is what the instant-recovery commands need: the hub's instant-recovery service on
// the local catalog (localIR) or the API (*client.Client). Both answer with the API's wire
// types, so the commands print the same either way.
type irOps interface {
	StartInstantRecovery(ctx context.Context, req api.InstantRecoveryRequest) (api.InstantRecovery, error)
	InstantRecoveries(ctx context.Context, status string, limit int) (api.InstantRecoveryList, error)
	InstantRecovery(ctx context.Context, id string) (api.InstantRecovery, error)
	StopInstantRecovery(ctx context.Context, id string) (api.InstantRecovery, error)
	MigrateInstantRecovery(ctx context.Context, id string, req api.InstantRecoveryMigrateRequest) (api.InstantRecovery, error)
}

var (
	_ irOps = localIR{}
	_ irOps = (*client.Client)(nil)
)

// localIR runs the instant-recovery commands through this hub's service, as the API does.
type localIR struct{ s *instantrecovery.Service }

func (l localIR) StartInstantRecovery(ctx context.Context, req api.InstantRecoveryRequest) (api.InstantRecovery, error) {
	return l.s.Start(ctx, req)
}

func (l localIR) InstantRecoveries(ctx context.Context, status string, limit int) (api.InstantRecoveryList, error) {
	return l.s.List(ctx, instantrecovery.ListFilter{Status: status, Limit: limit})
}

func (l localIR) InstantRecovery(ctx context.Context, id string) (api.InstantRecovery, error) {
	return l.s.Get(ctx, id)
}

func (l localIR) StopInstantRecovery(ctx context.Context, id string) (api.InstantRecovery, error) {
	return l.s.Stop(ctx, id)
}

func (l localIR) MigrateInstantRecovery(ctx context.Context, id string, req api.InstantRecoveryMigrateRequest) (api.InstantRecovery, error) {
	return l.s.Migrate(ctx, id, req)
}

// irCmd runs fn against the hub named by --hub (its API) or, without one, with the
// instant-recovery service of this hub's configuration. A session started locally is written
// to the hub's folders and catalog; the running hub serves it within one scheduler interval
// (and before its agent is told).
func irCmd(e *env, fn func(cmd *cobra.Command, args []string, o irOps) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cl, err := remoteClient(cmd, e)
		if err != nil {
			return err
		}
		if cl != nil {
			return fn(cmd, args, cl)
		}
		return catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
			if cfg.NFSListen == "" {
				return errors.New("instant recovery is off in this configuration: set nfs_listen and nfs_address")
			}
			log := cfg.NewLogger(e.stderr)
			repos := repository.NewRegistry(cat, log, nil)
			defer repos.Close()
			svc, closeIR, err := localIRService(cfg, cat, repos, log)
			if err != nil {
				return err
			}
			defer closeIR()
			return fn(cmd, args, localIR{svc})
		})(cmd, args)
	}
}

// localIRService is the instant-recovery service of this hub's configuration in a command: a
// session it starts is written to the hub's folders and catalog, and the running hub serves
// it. close closes what the command opened (the hub keeps serving it).
func localIRService(cfg *config.Config, cat *catalog.Catalog, repos *repository.Registry, log *slog.Logger) (*instantrecovery.Service, func(), error) {
	backups := jobs.New(cat, repos, log, nil, jobs.Options{})
	exp, err := nfsexport.New(filepath.Join(cfg.DataDir, "instant-recovery"), log)
	if err != nil {
		return nil, nil, err
	}
	closeAll := func() {
		for id := range exp.Overlays() { // close what Start opened; the hub serves it
			_ = exp.Remove(id, false)
		}
	}
	svc := instantrecovery.New(cat, restore.New(cat, restoreRepos(repos), nil), backups, exp, backups, log, nil,
		instantrecovery.Options{NFSAddress: cfg.NFSAddress, OverlayLimit: cfg.OverlayLimitGiB << 30})
	return svc, closeAll, nil
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
		RunE: irCmd(e, func(cmd *cobra.Command, _ []string, o irOps) error {
			var err error
			if req.NetworkMap, err = pairs("--network-map", netMap); err != nil {
				return err
			}
			r, err := o.StartInstantRecovery(cmd.Context(), req)
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

	var status string
	var limit int
	var asJSON bool
	list := &cobra.Command{
		Use:   "list [--status S]",
		Short: "List instant-recovery sessions, newest first",
		Args:  cobra.NoArgs,
		RunE: irCmd(e, func(cmd *cobra.Command, _ []string, o irOps) error {
			l, err := o.InstantRecoveries(cmd.Context(), status, limit)
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
	list.Flags().StringVar(&status, "status", "", "starting, running, stopping, stopped, failed, migrating or migrated")
	list.Flags().IntVar(&limit, "limit", 100, "at most this many")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a session as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: irCmd(e, func(cmd *cobra.Command, args []string, o irOps) error {
			r, err := o.InstantRecovery(cmd.Context(), args[0])
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
		RunE: irCmd(e, func(cmd *cobra.Command, args []string, o irOps) error {
			r, err := o.StopInstantRecovery(cmd.Context(), args[0])
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
		RunE: irCmd(e, func(cmd *cobra.Command, args []string, o irOps) error {
			r, err := o.MigrateInstantRecovery(cmd.Context(), args[0], api.InstantRecoveryMigrateRequest{Datastore: ds})
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
