package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/shared/api"
)

// sourceOps lists sources and moves one to another agent.
type sourceOps interface {
	Sources(ctx context.Context) ([]api.SourceInfo, error)
	MoveSource(ctx context.Context, source, agentID string) (api.SourceInfo, error)
}

func newSourcesCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "sources", Short: "List the vCenters and ESXi hosts agents report on, and move one to another agent"}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List sources with their owning agent",
		Args:  cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, inv sourceOps) error {
			srcs, err := inv.Sources(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, api.SourceList{Sources: srcs})
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tAGENT\tINSTANCE UUID\tVMS\tLAST INVENTORY\tURL")
			for _, s := range srcs {
				row(tw, s.ID, s.Name, s.AgentID, orDash(s.InstanceUUID), s.VMs, fmtTime(s.LastInventoryAt), orDash(s.URL))
			}
			return tw.Flush()
		}),
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var agent string
	move := &cobra.Command{
		Use:   "move SOURCE --agent ID",
		Short: "Give a source (id, instance uuid, or name) and its VMs to another agent",
		Long: "Give a source and its VMs to another agent, e.g. after an appliance was replaced. From then on the\n" +
			"new agent's inventory pushes for it are accepted and the old agent's are refused (409).",
		Args: cobra.ExactArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, inv sourceOps) error {
			if agent == "" {
				return fmt.Errorf("--agent is required")
			}
			s, err := inv.MoveSource(cmd.Context(), args[0], agent)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "source %s (%d) now belongs to agent %s\n", printable(s.Name), s.ID, printable(s.AgentID))
			return err
		}),
	}
	move.Flags().StringVar(&agent, "agent", "", "id of the agent that reports on the source from now on")
	cmd.AddCommand(list, move)
	return cmd
}
