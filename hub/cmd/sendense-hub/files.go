package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/hub/internal/events"
	"github.com/sendense/sendense/hub/internal/files"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/shared/api"
)

func newFilesCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "files",
		Short: "Browse and download files inside a restore point's disks, without restoring the disk",
		Long: "The top level of a disk holds one directory per volume: p1, p2, … for partitions (MBR or GPT\n" +
			"numbering), disk for a filesystem on the whole disk; a file's path is then e.g. /p1/etc/hosts.\n" +
			"ext2/3/4 and XFS filesystems are read. Symlinks are listed with their targets, never followed.",
	}
	var backupID, diskID, p, output string
	var asJSON bool
	// browse opens the disk and runs fn with it.
	browse := func(fn func(cmd *cobra.Command, cat *catalog.Catalog, b *files.Browser) error) func(*cobra.Command, []string) error {
		return catalogCmd(e, func(cmd *cobra.Command, _ *config.Config, cat *catalog.Catalog) error {
			repos := repository.NewRegistry(cat, nil, nil)
			defer repos.Close()
			svc := restore.New(cat, restoreRepos(repos), nil)
			// Held in the catalog while it is read: a prune or deletion meanwhile is refused.
			release, err := svc.Hold(cmd.Context(), backupID)
			if err != nil {
				return err
			}
			defer release()
			b, err := files.NewService(svc, nil).Open(cmd.Context(), backupID, diskID)
			if err != nil {
				return err
			}
			return fn(cmd, cat, b)
		})
	}
	ls := &cobra.Command{
		Use:   "ls --backup ID --disk DISK [--path /p1/etc] [--json]",
		Short: "List a directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := remoteClient(cmd, e)
			if err != nil {
				return err
			}
			if cl != nil {
				l, err := cl.Files(cmd.Context(), backupID, diskID, p)
				if err != nil {
					return err
				}
				return printFiles(e, l, asJSON)
			}
			return browse(func(cmd *cobra.Command, _ *catalog.Catalog, b *files.Browser) error {
				l, err := b.List(p)
				if err != nil {
					return err
				}
				return printFiles(e, l, asJSON)
			})(cmd, args)
		},
	}
	ls.Flags().StringVar(&p, "path", "/", "directory to list")
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON (the body of GET "+api.PathBackupFiles+")")

	get := &cobra.Command{
		Use:   "get --backup ID --disk DISK --path /p1/etc/hosts [--output FILE]",
		Short: "Download one file (to stdout without --output)",
		Long: "Every chunk is verified as it is read: damage under the file fails the command (exit 1) and\n" +
			"removes the partial output. The download is recorded as an audit event.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := remoteClient(cmd, e)
			if err != nil {
				return err
			}
			if cl != nil {
				return getRemoteFile(cmd.Context(), cl, backupID, diskID, p, output, e.stdout)
			}
			return browse(func(cmd *cobra.Command, cat *catalog.Catalog, b *files.Browser) error {
				f, err := b.File(p)
				if err != nil {
					return err
				}
				n, err := getFile(f, output, e.stdout)
				f.Done(n, err)
				auditCLIDownload(cmd.Context(), e.stderr, cat, b, f.Path, n, err)
				return err
			})(cmd, args)
		},
	}
	get.Flags().StringVar(&p, "path", "", "file to download")
	get.Flags().StringVar(&output, "output", "", "write to this file (created 0600; replaced only when the download completes)")
	_ = get.MarkFlagRequired("path")
	for _, c := range []*cobra.Command{ls, get} {
		c.Flags().StringVar(&backupID, "backup", "", "backup id")
		c.Flags().StringVar(&diskID, "disk", "", "disk id (disk-2000)")
		_ = c.MarkFlagRequired("backup")
		_ = c.MarkFlagRequired("disk")
	}
	cmd.AddCommand(ls, get)
	return cmd
}

// printFiles prints a directory listing as a table, or as the API's JSON.
func printFiles(e *env, l api.FileList, asJSON bool) error {
	if asJSON {
		return printJSON(e.stdout, l)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tMODE\tSIZE\tMTIME\tNAME")
	for _, en := range l.Entries {
		name := en.Name
		if en.Type == api.FileTypeSymlink {
			name += " -> " + en.Target
		}
		row(tw, en.Type, fmt.Sprintf("%04o", en.Mode), en.Size, en.Mtime.UTC().Format(time.RFC3339), name)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(e.stdout, "%s: %d entries\n", printable(l.Path), len(l.Entries))
	return err
}

// getFile writes f to output, through a temporary file renamed once complete, or to stdout.
func getFile(f *files.File, output string, stdout io.Writer) (int64, error) {
	if output == "" {
		return f.Copy(stdout, 0, f.Entry.Size)
	}
	tmp, err := os.CreateTemp(filepath.Dir(output), "."+filepath.Base(output)+".part-*")
	if err != nil {
		return 0, err
	}
	n, err := f.Copy(tmp, 0, f.Entry.Size)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		_ = os.Chtimes(tmp.Name(), f.Entry.Mtime, f.Entry.Mtime)
		err = os.Rename(tmp.Name(), output)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return n, fmt.Errorf("download %s: %w", f.Path, err)
	}
	return n, nil
}

// auditCLIDownload records the download as the API records its own: the local user as the actor.
func auditCLIDownload(ctx context.Context, stderr io.Writer, cat *catalog.Catalog, b *files.Browser, p string, n int64, dlErr error) {
	actor := "cli"
	if u, err := user.Current(); err == nil {
		actor = "cli:" + u.Username
	}
	ev := api.Event{Type: api.EventAudit, Actor: actor, Outcome: "complete", Details: map[string]string{
		"command": "files get", "backup_id": b.Disk.BackupID, "disk_id": b.Disk.DiskID, "file": p,
		"bytes": strconv.FormatInt(n, 10), "result": "complete",
	}}
	if dlErr != nil {
		ev.Outcome, ev.Details["result"] = "failed", "failed"
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := events.New(cat, nil).Record(ctx, ev); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "sendense-hub: record audit event: %v\n", err)
	}
}
