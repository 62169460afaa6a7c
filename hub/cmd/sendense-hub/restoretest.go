package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/restoretest"
	"github.com/sendense/sendense/shared/api"
)

// restoreTestOps runs and reads restore tests (limit 0: all).
type restoreTestOps interface {
	RunRestoreTest(ctx context.Context, req api.StartRestoreTestRequest) (api.RestoreTest, error)
	RestoreTests(ctx context.Context, vm, result string, since time.Time, limit int) (api.RestoreTestList, error)
	RestoreTest(ctx context.Context, id string) (api.RestoreTest, error)
	RestoreTestReport(ctx context.Context, from, to time.Time) (api.RestoreTestReport, error)
}

func newRestoreTestCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "restore-test", Short: "Prove restore points restore: run, list and show restore tests"}
	var req api.StartRestoreTestRequest
	var asJSON bool
	run := &cobra.Command{
		Use:   "run --vm V [--backup ID] [--check read|paths|boot]... [--path [disk-2000:]/p1/etc/hosts]... [--host ESXI --network PG [--tcp-port N] [--boot-timeout 10m]] [--json]",
		Short: "Test the VM's latest (or a named) restore point now: read every disk in full, every chunk verified; exit 1 unless it passed",
		Long: "Reads every disk of the restore point through the hub's restore path, as a restore would, verifying every chunk\n" +
			"(a damaged chunk is quarantined), and records the evidence: the checks with their results and reasons, bytes read,\n" +
			"MB/s and seconds. With --check paths, each --path must exist in the restore point's filesystems (ext2/3/4, XFS behind\n" +
			"MBR or GPT, read through file-level restore; a file is read in full): disk-2000:/p1/etc/hosts on that disk,\n" +
			"/p1/etc/hosts on any disk. With --check boot, the restore point is booted with instant recovery on ESXi host --host, every\n" +
			"NIC on the isolated port group --network, until VMware Tools report the guest running (or, with --tcp-port, the guest's\n" +
			"address answers on that port) within --boot-timeout; the time from the request to that signal is the RTO, and the\n" +
			"session is stopped afterwards whatever happened. The test is listed by `restore-test list`, GET /api/v1/restore-tests\n" +
			"and `report restore-tests`.",
		Args: cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, s restoreTestOps) error {
			t, err := s.RunRestoreTest(cmd.Context(), req)
			if err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(e.stdout, t); err != nil {
					return err
				}
			} else {
				printRestoreTest(e, t)
			}
			if !t.Passed {
				return fmt.Errorf("restore test %s of %s failed: %s", t.ID, t.BackupID, printable(t.Error))
			}
			return nil
		}),
	}
	run.Flags().StringVar(&req.VM, "vm", "", "VM name or context id (required)")
	run.Flags().StringVar(&req.BackupID, "backup", "", "the restore point to test (default: the VM's latest successful backup)")
	run.Flags().StringSliceVar(&req.Checks, "check", nil, "checks to run (repeatable): read (the default), paths, boot")
	run.Flags().StringArrayVar(&req.Paths, "path", nil, "a path the paths check requires, [disk-2000:]/p1/etc/hosts (repeatable)")
	bootFlags(run, &req.RestoreTestBoot)
	run.Flags().BoolVar(&asJSON, "json", false, "print the evidence as JSON")
	_ = run.MarkFlagRequired("vm")

	var f restoretest.Filter
	var since string
	var listJSON bool
	list := &cobra.Command{
		Use:   "list [--vm V] [--result passed|failed|queued|running] [--since 30d|RFC3339] [--json]",
		Short: "List restore tests, newest first",
		Args:  cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, s restoreTestOps) error {
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				f.Since = t
			}
			l, err := s.RestoreTests(cmd.Context(), f.VM, f.Result, f.Since, f.Limit)
			if err != nil {
				return err
			}
			if listJSON {
				return printJSON(e.stdout, l)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tVM\tBACKUP\tSTATUS\tCREATED\tREAD\tMB/S\tSECONDS\tRTO\tERROR")
			for _, t := range l.RestoreTests {
				rto := "-" // no boot check passed
				if t.RTOSeconds > 0 {
					rto = fmt.Sprintf("%.1f", t.RTOSeconds)
				}
				row(tw, t.ID, t.VMName, t.BackupID, t.Status, fmtTime(t.CreatedAt), humanBytes(t.BytesRead), fmt.Sprintf("%.1f", t.MBPerS), fmt.Sprintf("%.1f", t.Seconds), rto, orDash(t.Error))
			}
			return tw.Flush()
		}),
	}
	list.Flags().StringVar(&f.VM, "vm", "", "VM name or context id")
	list.Flags().StringVar(&f.Result, "result", "", "passed, failed, queued or running")
	list.Flags().StringVar(&since, "since", "", "tests at or after this RFC 3339 time, or within this duration (24h, 30d)")
	list.Flags().IntVar(&f.Limit, "limit", 0, "at most this many (0 = all)")
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a restore test with its checks and evidence (JSON)",
		Args:  cobra.ExactArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, s restoreTestOps) error {
			t, err := s.RestoreTest(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(e.stdout, t)
		}),
	}
	cmd.AddCommand(run, list, show)
	return cmd
}

// bootFlags adds the boot check's settings to a command.
func bootFlags(cmd *cobra.Command, b *api.RestoreTestBoot) {
	cmd.Flags().StringVar(&b.Host, "host", "", "the boot check's ESXi host (required with --check boot)")
	cmd.Flags().StringVar(&b.Network, "network", "", "the isolated port group every NIC of the booted VM is put on (required with --check boot)")
	cmd.Flags().IntVar(&b.TCPPort, "tcp-port", 0, "the boot check's signal: the guest answers on this TCP port (default: VMware Tools report running)")
	cmd.Flags().StringVar(&b.BootTimeout, "boot-timeout", "", "how long the guest has to give its boot signal, at most 1h (default 10m)")
}

func printRestoreTest(e *env, t api.RestoreTest) {
	fmt.Fprintf(e.stdout, "restore test %s of %s, restore point %s (%s): %s\n", t.ID, printable(t.VMName), t.BackupID, fmtTime(t.BackupCreatedAt), t.Status)
	for _, c := range t.Checks {
		res := "passed"
		if !c.Passed {
			res = "FAILED: " + printable(c.Error)
		}
		what := c.DiskID
		if c.Path != "" {
			what = printable(c.Path) + " (" + orDash(c.DiskID) + ")"
		}
		if c.Name == api.CheckBoot {
			what = "on " + printable(c.Host) + " (" + orDash(c.SessionID) + ", " + orDash(c.SessionStatus) + ")"
			if c.Passed {
				what += fmt.Sprintf(" %s %s, RTO %.1fs", c.Signal, printable(c.Address), c.RTOSeconds)
			}
		}
		fmt.Fprintf(e.stdout, "  %s %s\t%s in %.1fs\t%s\n", c.Name, what, humanBytes(c.BytesRead), c.Seconds, res)
	}
	fmt.Fprintf(e.stdout, "read %s in %.1fs (%.1f MB/s)\n", humanBytes(t.BytesRead), t.Seconds, t.MBPerS)
	if t.RTOSeconds > 0 {
		fmt.Fprintf(e.stdout, "booted on %s: RTO %.1fs\n", printable(t.Host), t.RTOSeconds)
	}
}

func newReportCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "report", Short: "Reports an auditor can keep"}
	var since string
	var asJSON bool
	tests := &cobra.Command{
		Use:   "restore-tests [--since 30d|RFC3339] [--json]",
		Short: "Restore tests of the period by VM (Markdown, or JSON): results, restore points, checks, bytes, MB/s, seconds, failures, and the VMs without a test",
		Args:  cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, s restoreTestOps) error {
			now := time.Now()
			from, err := parseSince(since, now)
			if err != nil {
				return err
			}
			rep, err := s.RestoreTestReport(cmd.Context(), from, now)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, rep)
			}
			return restoretest.WriteMarkdown(e.stdout, rep)
		}),
	}
	tests.Flags().StringVar(&since, "since", "30d", "the period's start: an RFC 3339 time, or a duration back from now (24h, 30d)")
	tests.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of Markdown")
	cmd.AddCommand(tests)
	return cmd
}
