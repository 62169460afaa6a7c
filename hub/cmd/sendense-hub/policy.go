package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/hub/internal/copies"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
)

// policyOps manages policies.
type policyOps interface {
	Policies(ctx context.Context) ([]api.Policy, error)
	Policy(ctx context.Context, name string) (api.Policy, error)
	CreatePolicy(ctx context.Context, p api.Policy) (api.Policy, error)
	DeletePolicy(ctx context.Context, name string) error
}

func newPolicyCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Create, list, show and remove backup, restore-test and copy policies"}
	var in api.Policy
	var disabled bool
	var cbtSample float64
	create := &cobra.Command{
		Use:   "create [NAME | --name N] --schedule '0 3 * * *' [--kind backup|restore-test|copy] [--check read]... [--host ESXI --network PG [--tcp-port N] [--boot-timeout 10m]] [--from R --to R] [--timezone Europe/Berlin] [--vm NAME]... [--vm-glob 'db-*'] [--agent ID] [--keep-daily 7 ...]",
		Short: "Create a policy: which VMs are backed up when, where, and how long backups are kept; or (--kind restore-test) whose latest restore points are tested when; or (--kind copy) whose backups are copied from one repository to another when, and how long the copies are kept",
		Args:  cobra.MaximumNArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, ps policyOps) error {
			if len(args) == 1 {
				if in.Name != "" && in.Name != args[0] {
					return fmt.Errorf("the policy is named twice: %q and --name %q", args[0], in.Name)
				}
				in.Name = args[0]
			}
			if in.Name == "" {
				return fmt.Errorf("name the policy: policy create NAME, or --name NAME")
			}
			in.Enabled = !disabled
			in.Kind = strings.ReplaceAll(in.Kind, "-", "_") // --kind restore-test reads like the command
			if (in.Kind != api.PolicyRestoreTest && in.Kind != api.PolicyCopy) || cmd.Flags().Changed("cbt-sample") {
				in.CBTSample = &cbtSample
			}
			p, err := ps.CreatePolicy(cmd.Context(), in)
			if err != nil {
				return err
			}
			return printJSON(e.stdout, p)
		}),
	}
	f := create.Flags()
	f.StringVar(&in.Name, "name", "", "policy name (required)")
	f.StringVar(&in.Schedule, "schedule", "", `cron "0 3 * * *", "@daily", or "@every 6h" (required)`)
	f.StringVar(&in.Kind, "kind", api.PolicyBackup, "backup; restore-test: test the covered VMs' latest restore points in --repository; copy: copy the covered VMs' backups from --from to --to")
	f.StringSliceVar(&in.Checks, "check", nil, "a restore-test policy's checks (repeatable): read (the default), paths, boot")
	f.StringArrayVar(&in.Paths, "path", nil, "a path a restore-test policy's paths check requires, [disk-2000:]/p1/etc/hosts (repeatable)")
	bootFlags(create, &in.RestoreTestBoot)
	f.StringVar(&in.Timezone, "timezone", "UTC", "IANA time zone of the cron schedule and of retention buckets")
	f.StringSliceVar(&in.VMs, "vm", nil, "VM name or context id (repeatable)")
	f.StringVar(&in.VMGlob, "vm-glob", "", `VM name pattern, e.g. "db-*"`)
	f.StringVar(&in.Agent, "agent", "", "only VMs of this agent")
	f.StringVar(&in.Repository, "repository", "", "repository name (default: default)")
	f.StringVar(&in.From, "from", "", "a copy policy's source repository (default: --repository, then default)")
	f.StringVar(&in.To, "to", "", "a copy policy's target repository: it receives the copies, and the retention flags apply to them there")
	f.IntVar(&in.Retention.KeepLast, "keep-last", 0, "keep the N newest backups")
	f.IntVar(&in.Retention.KeepHourly, "keep-hourly", 0, "keep the newest backup of each of the last N hours with backups")
	f.IntVar(&in.Retention.KeepDaily, "keep-daily", 0, "... days")
	f.IntVar(&in.Retention.KeepWeekly, "keep-weekly", 0, "... ISO weeks")
	f.IntVar(&in.Retention.KeepMonthly, "keep-monthly", 0, "... months")
	f.IntVar(&in.Retention.KeepYearly, "keep-yearly", 0, "... years")
	f.IntVar(&in.FullEveryIncrementals, "full-every-incrementals", 0, "force a full after N incrementals (0: never)")
	f.IntVar(&in.FullEveryDays, "full-every-days", 0, "force a full when the last one is N days old (0: never)")
	f.Float64Var(&cbtSample, "cbt-sample", api.DefaultCBTSample, "fraction (0-1) of the slots CBT calls unchanged that incrementals re-read to check CBT")
	f.BoolVar(&disabled, "disabled", false, "create the policy disabled")
	_ = create.MarkFlagRequired("schedule")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List policies with their last and next runs",
		Args:  cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, ps policyOps) error {
			l, err := ps.Policies(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, l)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tENABLED\tSCHEDULE\tREPOSITORY\tLAST RUN\tLAST STATUS\tNEXT RUN")
			for _, p := range l {
				repo := p.Repository
				if p.Kind == api.PolicyCopy {
					repo = p.From + " -> " + p.To
				}
				fmt.Fprintf(tw, "%s\t%s\t%v\t%s %s\t%s\t%s\t%s\t%s\n", p.Name, p.Kind, p.Enabled, p.Schedule, p.Timezone, repo, fmtTime(p.LastRunAt), orDash(p.LastStatus), fmtTime(p.NextRunAt))
			}
			return tw.Flush()
		}),
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a policy",
		Args:  cobra.ExactArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, ps policyOps) error {
			p, err := ps.Policy(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(e.stdout, p)
		}),
	}
	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a policy (its backups stay)",
		Args:  cobra.ExactArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, ps policyOps) error {
			if err := ps.DeletePolicy(cmd.Context(), args[0]); err != nil {
				return err
			}
			_, err := fmt.Fprintln(e.stdout, "removed", args[0])
			return err
		}),
	}
	var parallel int
	run := &cobra.Command{
		Use:   "run NAME [--parallel 8]",
		Short: "Run a copy policy now: copy the backups it keeps that its target lacks, then prune the copies it no longer keeps",
		Args:  cobra.ExactArgs(1),
		RunE: catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
			log := cfg.NewLogger(e.stderr)
			repos := repository.NewRegistry(cat, log, nil)
			defer repos.Close()
			backups := jobs.New(cat, repos, log, nil, jobs.Options{})
			ps := policy.New(cat, backups, nil, log, nil, nil)
			open := func(ctx context.Context, id string) (copies.Repository, error) { return repos.Open(ctx, id) }
			ps.SetCopies(copies.New(cat, open, log, parallel), backups)
			r, err := ps.RunCopy(cmd.Context(), cmd.Flags().Arg(0))
			if r.ID != "" {
				fmt.Fprintf(e.stdout, "copy run %s %s: %d backups copied, %d there already, %d failed, %d copies pruned: %d chunks, %s, in %s\n",
					r.ID, r.Status, r.BackupsCopied, r.BackupsPresent, r.BackupsFailed, r.CopiesPruned, r.ChunksCopied, humanBytes(r.BytesCopied),
					r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond))
			}
			return err
		}),
	}
	run.Flags().IntVar(&parallel, "parallel", 8, "chunks copied at once")
	cmd.AddCommand(create, list, show, rm, run)
	return cmd
}

// pruner applies retention.
type pruner interface {
	Prune(ctx context.Context, req api.PruneRequest) (api.PruneResult, error)
}

func newPruneCmd(e *env) *cobra.Command {
	var o policy.PruneOptions
	cmd := &cobra.Command{
		Use:   "prune [--policy NAME] [--vm NAME] [--dry-run]",
		Short: "Apply the policies' retention rules: delete the backups no rule keeps (never protected ones)",
		Args:  cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, ps pruner) error {
			rep, err := ps.Prune(cmd.Context(), api.PruneRequest{Policy: o.Policy, VM: o.VM, DryRun: o.DryRun})
			if err != nil {
				return err
			}
			// Each error starts with the id of the backup it is about.
			failed := map[string]bool{}
			for _, msg := range rep.Errors {
				if id, _, ok := strings.Cut(msg, ": "); ok {
					failed[id] = true
				}
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "BACKUP\tVM\tCREATED\tDECISION\tWHY")
			for _, d := range rep.Decisions {
				decision := pruneDecision(d, o.DryRun, failed[d.BackupID])
				row(tw, d.BackupID, d.VMName, d.CreatedAt.UTC().Format(time.RFC3339), decision, strings.Join(d.Reasons, "; "))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if o.DryRun {
				fmt.Fprintln(e.stdout, "dry run: nothing was removed")
			} else {
				fmt.Fprintf(e.stdout, "%d backups removed; run `sendense-hub repo gc` to reclaim their space\n", rep.Removed)
			}
			if len(rep.Errors) > 0 {
				return fmt.Errorf("prune could not remove %d backups: %s", len(rep.Errors), strings.Join(rep.Errors, "; "))
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&o.Policy, "policy", "", "only the VMs of this policy")
	cmd.Flags().StringVar(&o.VM, "vm", "", "only this VM (name or context id)")
	cmd.Flags().BoolVar(&o.DryRun, "dry-run", false, "show what would be kept and removed, and why; remove nothing")
	return cmd
}

// pruneDecision is how prune shows what it did with one backup.
func pruneDecision(d api.PruneDecision, dryRun, failed bool) string {
	switch {
	case d.Keep:
		return "keep"
	case dryRun:
		return "remove"
	case failed:
		return "remove failed"
	}
	return "removed"
}
