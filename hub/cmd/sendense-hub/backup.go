package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/shared/api"
)

// backupOps starts, reads and changes backups (limit 0: all).
type backupOps interface {
	StartBackup(ctx context.Context, req api.StartBackupRequest) (api.Backup, error)
	Backups(ctx context.Context, vm, status string, limit int) (api.BackupList, error)
	Backup(ctx context.Context, id string) (api.Backup, error)
	DeleteBackup(ctx context.Context, id string) error
	CancelBackup(ctx context.Context, id string) (api.Backup, error)
	SetProtected(ctx context.Context, id string, on bool) (api.Backup, error)
}

// backupGetter reads one backup.
type backupGetter interface {
	Backup(ctx context.Context, id string) (api.Backup, error)
}

func newBackupCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "backup", Short: "Start, list, show, cancel, protect and delete backups"}
	var vm, repo string
	var full, incremental, wait bool
	var cbtSample float64
	start := &cobra.Command{
		Use:   "start --vm NAME [--full] [--wait]",
		Short: "Queue a backup of a VM (the VM's agent picks it up)",
		Args:  cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, b backupOps) error {
			typ := api.BackupAuto
			switch {
			case full && incremental:
				return errors.New("--full and --incremental exclude each other")
			case full:
				typ = api.BackupFull
			case incremental:
				typ = api.BackupIncremental
			}
			req := api.StartBackupRequest{VM: vm, Type: typ, Repository: repo}
			if cmd.Flags().Changed("cbt-sample") {
				req.CBTSample = &cbtSample
			}
			bk, err := b.StartBackup(cmd.Context(), req)
			if err != nil {
				return err
			}
			if !wait {
				_, err = fmt.Fprintln(e.stdout, bk.ID)
				return err
			}
			fmt.Fprintf(e.stderr, "backup %s of %s queued\n", bk.ID, printable(bk.VMName))
			return waitBackup(cmd.Context(), e, b, bk.ID)
		}),
	}
	start.Flags().StringVar(&vm, "vm", "", "VM name or context id (required)")
	start.Flags().StringVar(&repo, "repository", "", "repository name (default: default)")
	start.Flags().BoolVar(&full, "full", false, "force a full backup")
	start.Flags().BoolVar(&incremental, "incremental", false, "ask for an incremental (falls back to full with a reason)")
	start.Flags().Float64Var(&cbtSample, "cbt-sample", api.DefaultCBTSample,
		"fraction (0-1) of the slots CBT calls unchanged that an incremental re-reads to catch CBT drift")
	start.Flags().BoolVar(&wait, "wait", false, "wait for the backup to finish, showing progress")
	_ = start.MarkFlagRequired("vm")

	var lf jobs.ListFilter
	var asJSON bool
	list := &cobra.Command{
		Use:   "list [--vm NAME] [--status S]",
		Short: "List backups, newest first",
		Args:  cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, b backupOps) error {
			l, err := b.Backups(cmd.Context(), lf.VM, lf.Status, lf.Limit)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, l)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tVM\tTYPE\tSTATUS\tCREATED\tREAD\tSENT\tPROTECTED")
			for _, bk := range l.Backups {
				row(tw, bk.ID, bk.VMName, orDash(bk.Type), bk.Status, fmtTime(bk.CreatedAt), humanBytes(bk.BytesRead), humanBytes(bk.BytesSent), bk.Protected)
			}
			return tw.Flush()
		}),
	}
	list.Flags().StringVar(&lf.VM, "vm", "", "VM name or context id")
	list.Flags().StringVar(&lf.Status, "status", "", "queued, running, succeeded, failed or cancelled")
	list.Flags().IntVar(&lf.Limit, "limit", 0, "at most this many (0 = all)")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a backup with its disks",
		Args:  cobra.ExactArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, b backupOps) error {
			bk, err := b.Backup(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(e.stdout, bk)
		}),
	}
	rm := &cobra.Command{
		Use:   "rm ID",
		Short: "Delete a finished, unprotected backup (its space is reclaimed by repo gc)",
		Args:  cobra.ExactArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, b backupOps) error {
			if err := b.DeleteBackup(cmd.Context(), args[0]); err != nil {
				return err
			}
			_, err := fmt.Fprintln(e.stdout, "deleted", args[0])
			return err
		}),
	}
	cancel := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a queued or running backup",
		Args:  cobra.ExactArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, b backupOps) error {
			bk, err := b.CancelBackup(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "%s: %s (cancel requested)\n", bk.ID, bk.Status)
			return err
		}),
	}
	protect := func(on bool) *cobra.Command {
		use, short := "protect ID", "Protect a backup from pruning and deletion"
		if !on {
			use, short = "unprotect ID", "Lift the protection of a backup"
		}
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: opsCmd(e, func(cmd *cobra.Command, args []string, b backupOps) error {
				bk, err := b.SetProtected(cmd.Context(), args[0], on)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(e.stdout, "%s protected=%v\n", bk.ID, bk.Protected)
				return err
			}),
		}
	}
	waitCmd := &cobra.Command{
		Use:   "wait ID",
		Short: "Wait for a backup to finish, showing progress; exit 1 unless it succeeded",
		Args:  cobra.ExactArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, b backupOps) error {
			return waitBackup(cmd.Context(), e, b, args[0])
		}),
	}
	cmd.AddCommand(start, waitCmd, list, show, rm, cancel, protect(true), protect(false))
	return cmd
}

// summary is a one-line account of a finished backup.
func summary(b api.Backup) string {
	line := fmt.Sprintf("backup %s of %s %s: %s, read %s, sent %s, deduplicated %s, zero %s, %.1fs, %.0f MB/s read",
		b.ID, printable(b.VMName), b.Status, orDash(b.Type), humanBytes(b.BytesRead), humanBytes(b.BytesSent),
		humanBytes(b.BytesDeduplicated), humanBytes(b.BytesZero), b.DurationSeconds, b.ThroughputBPS/1e6)
	if b.Notes != "" {
		line += " (" + printable(b.Notes) + ")"
	}
	if b.Error != "" {
		line += ": " + printable(b.Error)
	}
	return line
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// waitPoll is how long waitBackup waits between two looks at a backup it has followed for
// elapsed: 20 ms for the first 5 s, so that an incremental of a second is not reported up to
// 100 ms late (a look is one catalog row, or one API request with --hub), then 100 ms.
func waitPoll(elapsed time.Duration) time.Duration {
	if elapsed < 5*time.Second {
		return 20 * time.Millisecond
	}
	return 100 * time.Millisecond
}

// waitBackup polls a backup until it ends, with a progress line; a backup that does not succeed
// is an error.
func waitBackup(ctx context.Context, e *env, b backupGetter, id string) error {
	bar := newWatch(e.stderr, "backup "+id)
	start := time.Now()
	t := time.NewTimer(waitPoll(0))
	defer t.Stop()
	for {
		bk, err := b.Backup(ctx, id)
		if err != nil {
			return err
		}
		extra := fmt.Sprintf("(%s; sent %s)", bk.Status, humanBytes(bk.BytesSent))
		switch bk.Status {
		case api.JobSucceeded, api.JobFailed, api.JobCancelled:
			bar.Done(bk.BytesRead, extra)
			fmt.Fprintln(e.stdout, summary(bk))
			if bk.Status != api.JobSucceeded {
				return fmt.Errorf("backup %s %s: %s", id, bk.Status, printable(bk.Error))
			}
			return nil
		}
		bar.Update(bk.BytesRead, extra)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		t.Reset(waitPoll(time.Since(start)))
	}
}
