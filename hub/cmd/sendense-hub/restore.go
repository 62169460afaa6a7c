package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/restore"
)

func newRestoreCmd(e *env) *cobra.Command {
	var backupID, diskID, output, format string
	var parallel int
	cmd := &cobra.Command{
		Use:   "restore --backup ID [--disk disk-2000] --output PATH [--format raw|qcow2]",
		Short: "Restore disks of a backup to sparse raw images (or qcow2), verifying every chunk",
		Long: "Writes one disk to PATH, or, without --disk, every disk of the backup into the directory PATH as <disk>.raw.\n" +
			"(restore vm restores a backup as a new VM in vSphere; restore list/show/cancel manage those restores.)\n" +
			"Zero slots become holes. Every chunk is verified against its digest; any damage fails the restore (exit 1)\n" +
			"and the partial image is removed.",
		Args: cobra.NoArgs,
		RunE: catalogCmd(e, func(cmd *cobra.Command, _ *config.Config, cat *catalog.Catalog) error {
			if format != "raw" && format != "qcow2" {
				return fmt.Errorf("--format must be raw or qcow2, not %q", format)
			}
			var qemuImg string
			if format == "qcow2" {
				p, err := exec.LookPath("qemu-img")
				if err != nil {
					return errors.New("--format qcow2 needs qemu-img (Debian: apt install qemu-utils)")
				}
				qemuImg = p
			}
			repos := repository.NewRegistry(cat, nil, nil)
			defer repos.Close()
			svc := restore.New(cat, restoreRepos(repos), nil)
			disks, err := svc.Disks(cmd.Context(), backupID)
			if err != nil {
				return err
			}
			var targets []restore.Disk
			for _, d := range disks {
				if diskID == "" || d.DiskID == diskID {
					targets = append(targets, d)
				}
			}
			if len(targets) == 0 {
				return fmt.Errorf("backup %s has no disk %q", backupID, diskID)
			}
			ext := ".raw"
			if format == "qcow2" {
				ext = ".qcow2"
			}
			for _, d := range targets {
				out := output
				if diskID == "" {
					if err := os.MkdirAll(output, 0o750); err != nil {
						return fmt.Errorf("create output directory: %w", err)
					}
					out = filepath.Join(output, d.DiskID+ext)
				}
				if err := restoreDisk(cmd.Context(), e, svc, d, out, parallel, qemuImg); err != nil {
					return err
				}
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&backupID, "backup", "", "backup id (required)")
	cmd.Flags().StringVar(&diskID, "disk", "", "only this disk, e.g. disk-2000 (default: all disks)")
	cmd.Flags().StringVar(&output, "output", "", "output file (with --disk) or directory (required)")
	cmd.Flags().StringVar(&format, "format", "raw", "raw or qcow2 (qcow2 needs qemu-img)")
	cmd.Flags().IntVar(&parallel, "parallel", 4, "chunks read at once")
	_ = cmd.MarkFlagRequired("backup")
	_ = cmd.MarkFlagRequired("output")
	cmd.AddCommand(restoreVMCmds(e)...)
	return cmd
}

func restoreDisk(ctx context.Context, e *env, svc *restore.Service, d restore.Disk, out string, parallel int, qemuImg string) error {
	img, _, err := svc.Open(ctx, d.BackupID, d.DiskID)
	if err != nil {
		return err
	}
	raw := out
	if qemuImg != "" {
		raw = out + ".raw-tmp"
	}
	f, err := os.OpenFile(raw, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("create %s: %w", raw, err)
	}
	bar := newProgress(e.stderr, "restore "+d.DiskID, img.Size())
	err = img.ToFile(ctx, f, parallel, func(done int64) { bar.Update(done, "") })
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(raw)
		return fmt.Errorf("restore %s of %s: %w (the partial image was removed)", d.DiskID, d.BackupID, err)
	}
	bar.Done(img.Size(), "verified")
	if qemuImg != "" {
		conv := exec.CommandContext(ctx, qemuImg, "convert", "-f", "raw", "-O", "qcow2", raw, out)
		conv.Stderr = e.stderr
		err := conv.Run()
		_ = os.Remove(raw)
		if err != nil {
			return fmt.Errorf("convert %s to qcow2: %w", d.DiskID, err)
		}
	}
	_, err = fmt.Fprintf(e.stdout, "%s\t%s\t%d bytes\n", d.DiskID, out, img.Size())
	return err
}
