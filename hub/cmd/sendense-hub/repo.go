package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/check"
	"github.com/sendense/sendense/hub/internal/client"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/hub/internal/gc"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/verify"
	"github.com/sendense/sendense/shared/api"
)

// parseSize parses "4MiB", "64KiB", "1GiB" or a byte count.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("size %q: %w", s, err)
			}
			return v * u.mult, nil
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// repositoryLister lists repositories as the API describes them.
type repositoryLister interface {
	Repositories(ctx context.Context) ([]api.Repository, error)
}

func newRepoCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "repo", Short: "Create, list and verify backup repositories"}
	var path, chunkSize string
	var enc encryptFlags
	var s3set api.S3Settings
	create := &cobra.Command{
		Use:   "create NAME (--path DIR | --s3-endpoint URL --s3-bucket B --s3-credentials-file F [--s3-prefix P] [--s3-region R] [--s3-ca-file F] [--s3-object-lock compliance|governance --s3-lock-days N]) [--chunk-size 4MiB] [--encrypt --password-file F]",
		Short: "Create a repository in a directory or an S3 bucket (or adopt the one there)",
		Long: "A repository lives in a directory of the hub (--path) or under a prefix of an S3-compatible bucket (--s3-*).\n" +
			"The S3 credentials file holds the access key id on its first line and the secret on its second; the catalog\n" +
			"records its path, never its content, and the hub reads it whenever it opens the repository.\n" +
			"--encrypt seals everything the repository stores under a key the password file unlocks (read likewise).\n" +
			"--s3-object-lock sets S3 Object Lock retention dates on the objects of every backup, N days after the backup and\n" +
			"after every retention run that keeps it: until then nobody can delete them through the hub or with its credentials\n" +
			"(compliance: nobody at all; governance: only users allowed to bypass governance retention). The bucket must have\n" +
			"been created with Object Lock enabled.",
		Args: cobra.ExactArgs(1),
		RunE: catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
			cs, err := parseSize(chunkSize)
			if err != nil {
				return err
			}
			repos := repository.NewRegistry(cat, cfg.NewLogger(e.stderr), nil)
			defer repos.Close()
			if err := enc.check(); err != nil {
				return err
			}
			var rec *catalog.Repository
			if s3set.S3Endpoint != "" {
				rec, err = repos.CreateS3(cmd.Context(), cmd.Flags().Arg(0), s3set, cs, enc.passwordFile)
			} else {
				rec, err = repos.CreateEncrypted(cmd.Context(), cmd.Flags().Arg(0), path, cs, enc.passwordFile)
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "created repository %s (%s, %s) at %s, chunk size %s\n", rec.Name, rec.ID, rec.Kind, rec.Path, humanBytes(rec.ChunkSize))
			if err == nil && rec.S3ObjectLock != "" {
				_, err = fmt.Fprintf(e.stdout, "object lock: %s mode, every backup's objects undeletable for %d days after it and after every retention run that keeps it\n", rec.S3ObjectLock, rec.S3LockDays)
			}
			if err == nil && enc.encrypt {
				err = enc.warn(e, rec)
			}
			return err
		}),
	}
	create.Flags().StringVar(&path, "path", "", "directory of a local repository")
	create.Flags().StringVar(&chunkSize, "chunk-size", "4MiB", "slot size, a power of two from 64KiB to 64MiB")
	enc.register(create)
	create.Flags().StringVar(&s3set.S3Endpoint, "s3-endpoint", "", "URL of an S3-compatible server: http(s)://host[:port]")
	create.Flags().StringVar(&s3set.S3Bucket, "s3-bucket", "", "bucket of an S3 repository (must exist)")
	create.Flags().StringVar(&s3set.S3Prefix, "s3-prefix", "", "key prefix of the repository in the bucket")
	create.Flags().StringVar(&s3set.S3Region, "s3-region", "", "region of the bucket (default: asked from the server)")
	create.Flags().StringVar(&s3set.S3CAFile, "s3-ca-file", "", "PEM certificate authorities to trust for an https endpoint, beside the system's")
	create.Flags().StringVar(&s3set.S3CredentialsFile, "s3-credentials-file", "", "file with the access key id on line 1 and the secret on line 2")
	create.Flags().StringVar(&s3set.S3ObjectLock, "s3-object-lock", "", "compliance or governance: set S3 Object Lock retention dates on every backup's objects")
	create.Flags().IntVar(&s3set.S3LockDays, "s3-lock-days", 0, "days a backup's objects stay locked after the backup and after each retention run that keeps it")
	create.MarkFlagsRequiredTogether("s3-object-lock", "s3-lock-days")
	create.MarkFlagsOneRequired("path", "s3-endpoint")
	create.MarkFlagsMutuallyExclusive("path", "s3-endpoint")
	create.MarkFlagsRequiredTogether("s3-endpoint", "s3-bucket", "s3-credentials-file")
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List repositories",
		Args:  cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, o repositoryLister) error {
			rs, err := o.Repositories(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, rs)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tID\tKIND\tCHUNK SIZE\tPATH")
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.ID, r.Kind, humanBytes(r.ChunkSize), r.Path)
			}
			return tw.Flush()
		}),
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var backupID string
	var parallel int
	verifyCmd := &cobra.Command{
		Use:   "verify [--backup ID]",
		Short: "Re-read and re-hash every chunk of every successful backup (or of one), quarantine damaged chunks; exit 1 on damage",
		Long: "Every chunk a successful backup names is read back and re-hashed. A damaged chunk is moved into the repository's\n" +
			"quarantine (quarantine/<digest>.<time>) and recorded as a chunk_quarantined event: from then on it counts as missing, so\n" +
			"the next backup holding its data uploads it again. Backups found damaged before whose every chunk is present and\n" +
			"intact again are reported healed (and recorded as backup_healed events).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := remoteClient(cmd, e)
			if err != nil {
				return err
			}
			if cl != nil {
				if cmd.Flags().Changed("parallel") {
					return errors.New("--parallel is the hub's own setting and means nothing with --hub")
				}
				return printVerify(cmd, e, cl, backupID)
			}
			return catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
				log := cfg.NewLogger(e.stderr)
				repos := repository.NewRegistry(cat, log, nil)
				defer repos.Close()
				return printVerify(cmd, e, verify.New(cat, verifyRepos(repos), log, nil, parallel), backupID)
			})(cmd, args)
		},
	}
	verifyCmd.Flags().StringVar(&backupID, "backup", "", "only this backup")
	verifyCmd.Flags().IntVar(&parallel, "parallel", 4, "chunks verified at once")
	var repoName string
	var grace time.Duration
	var dryRun bool
	gcCmd := &cobra.Command{
		Use:   "gc [--repository NAME] [--grace 24h] [--dry-run]",
		Short: "Remove chunks no backup and no running upload needs, older than the grace period",
		Args:  cobra.NoArgs,
		RunE: catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
			log := cfg.NewLogger(e.stderr)
			repos := repository.NewRegistry(cat, log, nil)
			defer repos.Close()
			reps, err := gc.New(cat, gcRepos(repos), log, nil).Run(cmd.Context(), repoName, grace, dryRun)
			for _, r := range reps {
				verb := "freed"
				if r.DryRun {
					verb = "would free"
				}
				fmt.Fprintf(e.stdout, "%s: %d indexes, %d chunks (%d referenced, %d too young to collect); %s %d chunks, %s, in %s\n",
					r.Repository, r.Indexes, r.Chunks, r.Referenced, r.YoungSpared, verb, r.FreedChunks, humanBytes(r.FreedBytes), r.Duration.Round(time.Millisecond))
				if r.Retained > 0 {
					fmt.Fprintf(e.stdout, "%s: %d unreferenced chunks kept: under object lock retention until a later date\n", r.Repository, r.Retained)
				}
			}
			return err
		}),
	}
	gcCmd.Flags().StringVar(&repoName, "repository", "", "only this repository (default: all)")
	gcCmd.Flags().DurationVar(&grace, "grace", 24*time.Hour, "keep unreferenced chunks younger than this (0s: an idle repository)")
	gcCmd.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be freed; remove nothing")
	var repair bool
	checkCmd := &cobra.Command{
		Use:   "check [--repair]",
		Short: "Compare the catalog with the repositories; exit 1 on problems; --repair removes only orphaned indexes and stale temporary files",
		Args:  cobra.NoArgs,
		RunE: catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
			log := cfg.NewLogger(e.stderr)
			repos := repository.NewRegistry(cat, log, nil)
			defer repos.Close()
			rep, err := check.New(cat, checkRepos(repos), log).Run(cmd.Context(), repair)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "checked %d indexes and %d chunks\n", rep.Indexes, rep.Chunks)
			for _, q := range rep.Quarantined {
				fmt.Fprintf(e.stdout, "quarantined %s: chunk %s found damaged at %s, %s kept at %s (remove it once inspected)\n",
					q.Repository, q.Digest, q.At.Format(time.RFC3339), humanBytes(q.Size), q.Key)
			}
			for _, p := range rep.Problems {
				state := "PROBLEM"
				if p.Repaired {
					state = "repaired"
				}
				if p.BackupID == "" {
					fmt.Fprintf(e.stdout, "%s %s: %s: %s\n", state, p.Kind, p.Repository, p.Detail)
					continue
				}
				fmt.Fprintf(e.stdout, "%s %s: %s backup %s disk %s: %s\n", state, p.Kind, p.Repository, p.BackupID, p.DiskID, p.Detail)
			}
			if rep.TempsRemoved > 0 {
				fmt.Fprintf(e.stdout, "removed %d stale temporary files\n", rep.TempsRemoved)
			}
			if !rep.OK() {
				return fmt.Errorf("the check found problems%s", map[bool]string{false: " (--repair removes orphaned indexes and stale temporary files; missing data cannot be repaired)", true: " that cannot be repaired"}[repair])
			}
			fmt.Fprintln(e.stdout, "consistent")
			return nil
		}),
	}
	checkCmd.Flags().BoolVar(&repair, "repair", false, "remove orphaned indexes and stale temporary files")
	create.RunE = remoteRepoCreate(e, create.RunE, &path, &chunkSize, &enc, &s3set)
	cmd.AddCommand(create, list, verifyCmd, gcCmd, checkCmd, newRepoKeyCmd(e), newRepoHardenCmd(e), newRepoAttachCmd(e), newRepoDescribeCmd(e), newRepoCopyCmd(e))
	return cmd
}

// verifier runs a verification: the hub's verifier on the local catalog, or the API, which
// runs it in the request.
type verifier interface {
	Verify(ctx context.Context, backupID string) (api.VerifyReport, error)
}

var (
	_ verifier = (*verify.Verifier)(nil)
	_ verifier = (*client.Client)(nil)
)

// printVerify runs a verification and prints its report; damage is an error (exit 1).
func printVerify(cmd *cobra.Command, e *env, v verifier, backupID string) error {
	rep, err := v.Verify(cmd.Context(), backupID)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "verified %d backups, %d copies, %d chunks in %s\n", rep.Backups, rep.Copies, rep.Chunks, time.Duration(rep.DurationNanos).Round(1e6))
	for _, id := range rep.Healed {
		fmt.Fprintf(e.stdout, "HEALED backup %s: damaged at its last verification, every chunk it names is present and intact again\n", id)
	}
	for _, d := range rep.Quarantined {
		fmt.Fprintf(e.stdout, "QUARANTINED chunk %s: damaged; the next backup holding its data uploads it again\n", d)
	}
	for _, repo := range slices.Sorted(maps.Keys(rep.SkippedRepositories)) {
		fmt.Fprintf(e.stdout, "SKIPPED repository %s: cannot be read, its copies were not verified: %s\n", repo, rep.SkippedRepositories[repo])
	}
	if len(rep.DamagedBackups) == 0 && len(rep.DamagedCopies) == 0 {
		if len(rep.SkippedRepositories) > 0 {
			fmt.Fprintln(e.stdout, "no damage found in what could be read")
			return errors.New("verification could not read every repository")
		}
		fmt.Fprintln(e.stdout, "no damage found")
		return nil
	}
	for _, id := range slices.Sorted(maps.Keys(rep.DamagedBackups)) {
		fmt.Fprintf(e.stdout, "DAMAGED backup %s:\n", id)
		for _, p := range rep.DamagedBackups[id] {
			fmt.Fprintf(e.stdout, "  %s\n", p)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(rep.DamagedCopies)) {
		for _, repo := range slices.Sorted(maps.Keys(rep.DamagedCopies[id])) {
			fmt.Fprintf(e.stdout, "DAMAGED copy of backup %s in repository %s (the next run of its copy policy copies it again):\n", id, repo)
			for _, p := range rep.DamagedCopies[id][repo] {
				fmt.Fprintf(e.stdout, "  %s\n", p)
			}
		}
	}
	if len(rep.DamagedBackups) == 0 {
		return errors.New("verification found damaged copies")
	}
	return errors.New("verification found damaged backups")
}
