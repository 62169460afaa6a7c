package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/restore"
)

func newRestoreCmd(e *env) *cobra.Command {
	var backupID, diskID, repo, output, format string
	var parallel int
	cmd := &cobra.Command{
		Use:   "restore --backup ID [--disk disk-2000] [--repository NAME] --output PATH [--format raw|qcow2]",
		Short: "Restore disks of a backup to sparse raw images (or qcow2), verifying every chunk",
		Long: "Writes one disk to PATH, or, without --disk, every disk of the backup into the directory PATH as <disk>.raw.\n" +
			"(restore vm restores a backup as a new VM in vSphere; restore list/show/cancel manage those restores.)\n" +
			"Zero slots become holes. Every chunk is verified against its digest; any damage fails the restore (exit 1)\n" +
			"and the partial image is removed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
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
			cl, err := remoteClient(cmd, e)
			if err != nil {
				return err
			}
			if cl != nil {
				return restoreRemote(cmd.Context(), e, cl, backupID, repo, diskID, output, qemuImg)
			}
			// One processor above the CPUs: ToFile keeps one free for its writer, and the
			// rest verify chunks on every CPU.
			runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
			return catalogCmd(e, func(cmd *cobra.Command, _ *config.Config, cat *catalog.Catalog) error {
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
				// Held in the catalog while it is read: a prune or deletion meanwhile is refused.
				release, err := svc.Hold(cmd.Context(), backupID)
				if err != nil {
					return err
				}
				defer release()
				for _, d := range targets {
					out, err := restoreOutput(output, diskID, d.DiskID, qemuImg)
					if err != nil {
						return err
					}
					if err := restoreDisk(cmd.Context(), e, svc, d, repo, out, parallel, qemuImg); err != nil {
						return err
					}
				}
				return nil
			})(cmd, args)
		},
	}
	cmd.Flags().StringVar(&backupID, "backup", "", "backup id (required)")
	cmd.Flags().StringVar(&diskID, "disk", "", "only this disk, e.g. disk-2000 (default: all disks)")
	cmd.Flags().StringVar(&repo, "repository", "", "read the backup from its copy in this repository (backup show lists the copies; default: its own repository)")
	cmd.Flags().StringVar(&output, "output", "", "output file (with --disk) or directory (required)")
	cmd.Flags().StringVar(&format, "format", "raw", "raw or qcow2 (qcow2 needs qemu-img)")
	cmd.Flags().IntVar(&parallel, "parallel", 4, "chunks read and verified at once (at most one per CPU)")
	_ = cmd.MarkFlagRequired("backup")
	_ = cmd.MarkFlagRequired("output")
	cmd.AddCommand(restoreVMCmds(e)...)
	return cmd
}

func restoreDisk(ctx context.Context, e *env, svc *restore.Service, d restore.Disk, repo, out string, parallel int, qemuImg string) error {
	img, _, err := svc.OpenIn(ctx, d.BackupID, d.DiskID, repo)
	if err != nil {
		return err
	}
	raw := rawPath(out, qemuImg)
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
	return finishRestore(ctx, e, d.DiskID, raw, out, img.Size(), qemuImg)
}

// restoreOutput is the file a disk is restored to: output itself when one disk was asked for,
// else <disk>.raw (or .qcow2) in the directory output, which is created.
func restoreOutput(output, only, diskID, qemuImg string) (string, error) {
	if only != "" {
		return output, nil
	}
	if err := os.MkdirAll(output, 0o750); err != nil {
		return "", fmt.Errorf("create output directory: %w", err)
	}
	ext := ".raw"
	if qemuImg != "" {
		ext = ".qcow2"
	}
	return filepath.Join(output, diskID+ext), nil
}

// rawPath is where a disk's raw image is written: out, or a temporary file beside it when it
// is converted to qcow2 afterwards.
func rawPath(out, qemuImg string) string {
	if qemuImg != "" {
		return out + ".raw-tmp"
	}
	return out
}

// finishRestore converts a restored raw image to qcow2 when asked and prints the disk's line.
func finishRestore(ctx context.Context, e *env, diskID, raw, out string, size int64, qemuImg string) error {
	if qemuImg != "" {
		conv := exec.CommandContext(ctx, qemuImg, "convert", "-f", "raw", "-O", "qcow2", raw, out)
		conv.Stderr = e.stderr
		err := conv.Run()
		_ = os.Remove(raw)
		if err != nil {
			return fmt.Errorf("convert %s to qcow2: %w", diskID, err)
		}
	}
	_, err := fmt.Fprintf(e.stdout, "%s\t%s\t%d bytes\n", diskID, out, size)
	return err
}
