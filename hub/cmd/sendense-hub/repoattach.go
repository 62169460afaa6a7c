package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/repository"
)

func newRepoAttachCmd(e *env) *cobra.Command {
	var req repository.AttachRequest
	cmd := &cobra.Command{
		Use:   "attach NAME (--path DIR | --s3-endpoint URL --s3-bucket B --s3-credentials-file F [--s3-prefix P] [--s3-region R] [--s3-ca-file F]) [--password-file F]",
		Short: "Record an existing repository and rebuild the catalog entries of every backup it holds",
		Long: "A repository describes each of its backups next to their indexes. attach records a repository that another (or a\n" +
			"lost) hub wrote and rebuilds, from those descriptions, every backup in the catalog under its own backup id, restorable\n" +
			"at once; the VMs and agents they name are recorded as gone and revoked until an agent reports them again.\n" +
			"Attaching again imports nothing new. Backups the catalog holds in another repository are recorded as copies\n" +
			"here (pending until repo verify reads them) when they are the same restore point. Indexes of backups the\n" +
			"repository does not describe (taken before repositories described their backups) are listed, not imported.\n" +
			"An encrypted repository needs --password-file.",
		Args: cobra.ExactArgs(1),
		RunE: catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
			repos := repository.NewRegistry(cat, cfg.NewLogger(e.stderr), nil)
			defer repos.Close()
			req.Name = cmd.Flags().Arg(0)
			rep, err := repos.Attach(cmd.Context(), req, cat)
			if err != nil {
				return err
			}
			r := rep.Repository
			verb := "attached"
			if !rep.Recorded {
				verb = "already attached:"
			}
			fmt.Fprintf(e.stdout, "%s repository %s (%s, %s) at %s, chunk size %s\n", verb, r.Name, r.ID, r.Kind, r.Path, humanBytes(r.ChunkSize))
			fmt.Fprintf(e.stdout, "imported %d backups, %d already in the catalog\n", len(rep.Imported), len(rep.Known))
			for _, id := range rep.Imported {
				fmt.Fprintf(e.stdout, "imported backup %s\n", id)
			}
			for _, id := range rep.Copies {
				fmt.Fprintf(e.stdout, "recorded copy of backup %s (its home is another repository)\n", id)
			}
			for _, d := range rep.Damaged {
				fmt.Fprintf(e.stdout, "NOT IMPORTED %s\n", d)
			}
			for _, ref := range rep.Unrecorded {
				fmt.Fprintf(e.stdout, "UNDESCRIBED index %s: no backup record (a backup taken before repositories described their backups); not imported\n", ref)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&req.Path, "path", "", "directory of a local repository")
	cmd.Flags().StringVar(&req.PasswordFile, "password-file", "", "file holding a password (or key file) of an encrypted repository; the hub reads it whenever it opens the repository")
	cmd.Flags().StringVar(&req.S3Endpoint, "s3-endpoint", "", "URL of an S3-compatible server: http(s)://host[:port]")
	cmd.Flags().StringVar(&req.S3Bucket, "s3-bucket", "", "bucket of an S3 repository")
	cmd.Flags().StringVar(&req.S3Prefix, "s3-prefix", "", "key prefix of the repository in the bucket")
	cmd.Flags().StringVar(&req.S3Region, "s3-region", "", "region of the bucket (default: asked from the server)")
	cmd.Flags().StringVar(&req.S3CAFile, "s3-ca-file", "", "PEM certificate authorities to trust for an https endpoint, beside the system's")
	cmd.Flags().StringVar(&req.S3CredentialsFile, "s3-credentials-file", "", "file with the access key id on line 1 and the secret on line 2")
	cmd.MarkFlagsOneRequired("path", "s3-endpoint")
	cmd.MarkFlagsMutuallyExclusive("path", "s3-endpoint")
	cmd.MarkFlagsRequiredTogether("s3-endpoint", "s3-bucket", "s3-credentials-file")
	return cmd
}

func newRepoDescribeCmd(e *env) *cobra.Command {
	var repoName string
	cmd := &cobra.Command{
		Use:   "describe [--repository NAME]",
		Short: "Write into each repository the records that describe its successful backups (for backups taken before they were written)",
		Long: "Every backup that succeeds, or whose protection changes, is described in its repository next to its indexes, so that\n" +
			"repo attach can rebuild it on another hub. describe writes those records for every successful backup in the catalog\n" +
			"(of one repository, or of all), which gives backups taken before records existed one. Running it again is harmless.",
		Args: cobra.NoArgs,
		RunE: catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
			log := cfg.NewLogger(e.stderr)
			repos := repository.NewRegistry(cat, log, nil)
			defer repos.Close()
			b := jobs.New(cat, repos, log, nil, jobs.Options{})
			id := ""
			if repoName != "" {
				rec, err := cat.RepositoryByName(cmd.Context(), repoName)
				if err != nil {
					return err
				}
				id = rec.ID
			}
			n, err := b.DescribeBackups(cmd.Context(), id)
			fmt.Fprintf(e.stdout, "described %d backups\n", n)
			return err
		}),
	}
	cmd.Flags().StringVar(&repoName, "repository", "", "only this repository (default: all)")
	return cmd
}
