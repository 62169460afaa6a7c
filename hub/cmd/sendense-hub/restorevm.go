package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/shared/api"
)

// restoreOps starts, reads and cancels restores as VMs (limit 0: all).
type restoreOps interface {
	StartRestore(ctx context.Context, req api.RestoreRequest) (api.Restore, error)
	Restores(ctx context.Context, status, backupID string, limit int) (api.RestoreList, error)
	Restore(ctx context.Context, id string) (api.Restore, error)
	CancelRestore(ctx context.Context, id string) (api.Restore, error)
}

// restoreVMCmds are the subcommands of "restore" that manage restores as new VMs.
func restoreVMCmds(e *env) []*cobra.Command {
	var req api.RestoreRequest
	var netMap, diskDS []string
	var thick, keepMACs, wait bool
	vm := &cobra.Command{
		Use:   "vm --backup ID [--repository NAME] --source S --datacenter DC --datastore DS --name N [--network-map old=new]... [--power-on] [--wait]",
		Short: "Restore a backup as a new VM (the agent of the target source creates it and writes its disks)",
		Long: "Queues a restore for the agent that reports the target source. The agent checks that every named object exists,\n" +
			"that the name is free, the datastores have room and the host is not in maintenance, before it creates anything;\n" +
			"a failed or cancelled restore removes the VM it made. Prints the restore id (with --wait: the outcome).",
		Args: cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, b restoreOps) error {
			var err error
			if req.NetworkMap, err = pairs("--network-map", netMap); err != nil {
				return err
			}
			if req.Target.DiskDatastores, err = pairs("--disk-datastore", diskDS); err != nil {
				return err
			}
			req.DiskProvisioning = api.ProvisionThin
			if thick {
				req.DiskProvisioning = api.ProvisionThick
			}
			req.MACAddresses = api.MACNew
			if keepMACs {
				req.MACAddresses = api.MACKeep
			}
			return startRestore(cmd.Context(), e, b, req, wait, "restore %s of %s as %s queued\n")
		}),
	}
	f := vm.Flags()
	f.StringVar(&req.BackupID, "backup", "", "backup id (required)")
	f.StringVar(&req.Repository, "repository", "", "read the backup from its copy in this repository (default: its own repository)")
	f.StringVar(&req.Target.Source, "source", "", "target vCenter, as in sources list (required)")
	f.StringVar(&req.Target.Datacenter, "datacenter", "", "target datacenter (required)")
	f.StringVar(&req.Target.Datastore, "datastore", "", "datastore for the VM and its disks (required)")
	f.StringVar(&req.Target.Name, "name", "", "name of the new VM (required; must not exist)")
	f.StringVar(&req.Target.Folder, "folder", "", "VM folder (default: the datacenter's VM folder)")
	f.StringVar(&req.Target.Cluster, "cluster", "", "cluster (default: the datacenter's first compute resource)")
	f.StringVar(&req.Target.Host, "host", "", "host (instead of a cluster)")
	f.StringVar(&req.Target.ResourcePool, "resource-pool", "", "resource pool (default: the compute resource's root pool)")
	f.StringArrayVar(&diskDS, "disk-datastore", nil, "disk=datastore: put one disk elsewhere (repeatable)")
	f.StringArrayVar(&netMap, "network-map", nil, "old=new: connect NICs of network old to network new (repeatable)")
	f.BoolVar(&thick, "thick", false, "thick-provision the disks (default thin)")
	f.BoolVar(&keepMACs, "keep-macs", false, "keep the backed-up MAC addresses (default: new ones)")
	f.BoolVar(&req.PowerOn, "power-on", false, "power the VM on once restored")
	f.BoolVar(&wait, "wait", false, "wait for the restore to finish, showing progress")
	for _, n := range []string{"backup", "source", "datacenter", "datastore", "name"} {
		_ = vm.MarkFlagRequired(n)
	}

	var lf jobs.RestoreListFilter
	var asJSON bool
	list := &cobra.Command{
		Use:   "list [--status S] [--backup ID]",
		Short: "List restores as new VMs, newest first",
		Args:  cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, b restoreOps) error {
			l, err := b.Restores(cmd.Context(), lf.Status, lf.BackupID, lf.Limit)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(e.stdout).Encode(l)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tBACKUP\tTARGET\tSTATUS\tWRITTEN\tVM\tERROR")
			for _, r := range l.Restores {
				fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\t%s\t%s\n", r.ID, r.BackupID, printable(r.Target.Source), printable(r.Target.Name),
					r.Status, humanBytes(r.BytesWritten), r.VMRef, printable(r.Error))
			}
			return tw.Flush()
		}),
	}
	list.Flags().StringVar(&lf.Status, "status", "", "queued, running, succeeded, failed or cancelled")
	list.Flags().StringVar(&lf.BackupID, "backup", "", "only restores of this backup")
	list.Flags().IntVar(&lf.Limit, "limit", 100, "at most this many")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a restore as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, b restoreOps) error {
			r, err := b.Restore(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(r)
		}),
	}
	cancel := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a queued or running restore (the agent removes the half-made VM)",
		Args:  cobra.ExactArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, b restoreOps) error {
			r, err := b.CancelRestore(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "%s\t%s\n", r.ID, r.Status)
			return err
		}),
	}
	return []*cobra.Command{vm, inPlaceCmd(e), list, show, cancel}
}

// pairs parses repeated key=value flags.
func pairs(flag string, vs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range vs {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" || val == "" {
			return nil, fmt.Errorf("%s %q: want key=value", flag, v)
		}
		out[k] = val
	}
	return out, nil
}

func waitRestore(ctx context.Context, e *env, b restoreOps, id string) error {
	bar := newWatch(e.stderr, "restore "+id)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		r, err := b.Restore(ctx, id)
		if err != nil {
			return err
		}
		extra := fmt.Sprintf("(%s %s)", r.Status, r.Phase)
		switch r.Status {
		case api.JobSucceeded, api.JobFailed, api.JobCancelled:
			bar.Done(r.BytesWritten, extra)
			if r.Status != api.JobSucceeded {
				return fmt.Errorf("restore %s %s: %s", id, r.Status, printable(r.Error))
			}
			_, err := fmt.Fprintf(e.stdout, "%s\t%s\t%s\t%d bytes\n", r.ID, printable(r.Target.Name), r.VMRef, r.BytesWritten)
			return err
		}
		bar.Update(r.BytesWritten, extra)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// inPlaceCmd is "restore in-place": a backup written back over the VM it was taken of.
func inPlaceCmd(e *env) *cobra.Command {
	req := api.RestoreRequest{InPlace: true}
	var wait bool
	cmd := &cobra.Command{
		Use:   "in-place --backup ID --confirm VM-NAME [--power-on] [--wait]",
		Short: "Restore a backup over the VM it was taken of (its disks are overwritten)",
		Long: "Queues an in-place restore for the agent that backs the VM up. The agent finds the VM by instance UUID, checks\n" +
			"that its name is the confirmed one and that it has no snapshots, powers it off, overwrites its disks with the\n" +
			"backup's, resets changed block tracking (the next backup is a full one) and powers it on again if it was on.\n" +
			"Refused while a backup of the VM is queued or running.",
		Args: cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, b restoreOps) error {
			return startRestore(cmd.Context(), e, b, req, wait, "in-place restore %s of %s over %s queued\n")
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.BackupID, "backup", "", "backup id (required)")
	f.StringVar(&req.Repository, "repository", "", "read the backup from its copy in this repository (default: its own repository)")
	f.StringVar(&req.Confirm, "confirm", "", "the name of the VM whose disks are overwritten (required)")
	f.BoolVar(&req.PowerOn, "power-on", false, "power the VM on afterwards even if it was off")
	f.BoolVar(&wait, "wait", false, "wait for the restore to finish, showing progress")
	for _, n := range []string{"backup", "confirm"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

// startRestore queues a restore and prints its id, or with wait follows it to its end; queued is
// the line told on stderr (restore id, backup id, target name).
func startRestore(ctx context.Context, e *env, b restoreOps, req api.RestoreRequest, wait bool, queued string) error {
	r, err := b.StartRestore(ctx, req)
	if err != nil {
		return err
	}
	if !wait {
		_, err = fmt.Fprintln(e.stdout, r.ID)
		return err
	}
	fmt.Fprintf(e.stderr, queued, r.ID, r.BackupID, printable(r.Target.Name))
	return waitRestore(ctx, e, b, r.ID)
}
