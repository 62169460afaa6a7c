package main

import (
	"context"

	"github.com/sendense/sendense/hub/internal/check"
	"github.com/sendense/sendense/hub/internal/gc"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/hub/internal/verify"
)

// Each consumer of repositories declares the methods it uses as its own Repository interface;
// these adapt the registry to them, and the compiler checks that *repository.Repository
// implements each.

func gcRepos(g *repository.Registry) gc.OpenFunc {
	return func(ctx context.Context, id string) (gc.Repository, error) { return open(ctx, g, id) }
}

func verifyRepos(g *repository.Registry) verify.OpenFunc {
	return func(ctx context.Context, id string) (verify.Repository, error) { return open(ctx, g, id) }
}

func checkRepos(g *repository.Registry) check.OpenFunc {
	return func(ctx context.Context, id string) (check.Repository, error) { return open(ctx, g, id) }
}

func restoreRepos(g *repository.Registry) restore.OpenFunc {
	return func(ctx context.Context, id string) (restore.Repository, error) { return open(ctx, g, id) }
}

// repo is every consumer's interface at once, so that open returns a nil interface (not a nil
// pointer in one) with an error.
type repo interface {
	gc.Repository
	verify.Repository
	check.Repository
	restore.Repository
}

func open(ctx context.Context, g *repository.Registry, id string) (repo, error) {
	r, err := g.Open(ctx, id)
	if err != nil {
		return nil, err
	}
	return r, nil
}
