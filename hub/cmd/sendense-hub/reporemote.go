package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/shared/api"
)

// repoCreator creates a repository through the API (admin).
type repoCreator interface {
	CreateRepository(ctx context.Context, req api.CreateRepositoryRequest) (api.Repository, error)
}

// remoteRepoCreate is "repo create" with --hub: the paths name the hub's directories and
// files. Encrypted repositories are created on the hub host: the API takes no password file.
func remoteRepoCreate(e *env, local func(*cobra.Command, []string) error, path, chunkSize *string, enc *encryptFlags, s3set *api.S3Settings) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cl, err := remoteClient(cmd, e)
		if err != nil {
			return err
		}
		if cl == nil {
			return local(cmd, args)
		}
		return createRepository(cmd.Context(), e, cl, args[0], *path, *chunkSize, enc, *s3set)
	}
}

func createRepository(ctx context.Context, e *env, o repoCreator, name, path, chunkSize string, enc *encryptFlags, s3set api.S3Settings) error {
	if enc.encrypt || enc.passwordFile != "" {
		return errors.New("repo create --encrypt is hub-local only (the API takes no password file): run it on the hub host")
	}
	cs, err := parseSize(chunkSize)
	if err != nil {
		return err
	}
	if path != "" && !filepath.IsAbs(path) {
		return fmt.Errorf("--path %q: with --hub, give an absolute directory on the hub", path)
	}
	r, err := o.CreateRepository(ctx, api.CreateRepositoryRequest{Name: name, Path: path, ChunkSize: cs, S3Settings: s3set})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "created repository %s (%s, %s) at %s, chunk size %s\n", r.Name, r.ID, r.Kind, r.Path, humanBytes(r.ChunkSize))
	return err
}
