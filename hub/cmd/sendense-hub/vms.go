package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/inventory"
	"github.com/sendense/sendense/shared/api"
)

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// vmOps reads the inventory's VMs (limit 0: all).
type vmOps interface {
	VMs(ctx context.Context, name, status, agentID string, limit int) (api.VMList, error)
	VM(ctx context.Context, id string) (api.VMContext, error)
}

func newVMsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "vms", Short: "List and show discovered VMs"}
	var f inventory.Filter
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List VMs (filters: --name, --status, --agent)",
		Args:  cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, o vmOps) error {
			l, err := o.VMs(cmd.Context(), f.Name, f.Status, f.AgentID, f.Limit)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, l)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CONTEXT ID\tNAME\tSTATUS\tPOWER\tCBT\tAGENT\tSOURCE")
			for _, v := range l.VMs {
				row(tw, v.ContextID, v.VMName, v.CurrentStatus, v.PowerState, v.CBTEnabled, v.AgentID, v.Source)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "%d of %d VMs\n", len(l.VMs), l.Page.Total)
			return err
		}),
	}
	list.Flags().StringVar(&f.Name, "name", "", "exact VM name")
	list.Flags().StringVar(&f.Status, "status", "", "discovered, protected or gone")
	list.Flags().StringVar(&f.AgentID, "agent", "", "agent id")
	list.Flags().IntVar(&f.Limit, "limit", 0, "at most this many (0 = all)")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var showJSON bool
	show := &cobra.Command{
		Use:   "show NAME|CONTEXT-ID",
		Short: "Show a VM and its disks",
		Args:  cobra.ExactArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, o vmOps) error {
			vm, err := o.VM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if showJSON {
				return printJSON(e.stdout, vm)
			}
			fmt.Fprintf(e.stdout, "context id:  %s\nname:        %s\nstatus:      %s\npower:       %s\nuuid:        %s\nagent:       %s (source %s)\nplacement:   %s / %s / %s\nCBT:         %v\n\n",
				printable(vm.ContextID), printable(vm.VMName), printable(vm.CurrentStatus), printable(vm.PowerState), printable(vm.InstanceUUID),
				printable(vm.AgentID), printable(vm.Source), printable(vm.Datacenter), printable(vm.Cluster), printable(vm.Host), vm.CBTEnabled)
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DISK\tCAPACITY\tSTATUS\tBACKUP\tDATASTORE\tFILE\tJOB")
			for _, d := range vm.Disks {
				job := "-"
				if d.JobID != nil {
					job = *d.JobID
				}
				row(tw, d.DiskID, humanBytes(d.CapacityBytes), d.Status, d.Backupable, d.Datastore, d.VMDKPath, job)
			}
			return tw.Flush()
		}),
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print JSON")
	cmd.AddCommand(list, show)
	return cmd
}
