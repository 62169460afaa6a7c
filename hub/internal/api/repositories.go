package api

import (
	"context"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
)

// repositoryService lists and creates repositories.
type repositoryService interface {
	List(ctx context.Context) ([]catalog.Repository, error)
	Create(ctx context.Context, name, dir string, chunkSize int64) (*catalog.Repository, *repository.Repository, error)
}

func (s *Server) registerRepositories(v1 *gin.RouterGroup) {
	v1.GET("/repositories", s.requireRole(api.RoleAdmin), s.listRepositories)
	v1.POST("/repositories", s.requireRole(api.RoleAdmin), s.createRepository)
}

func repositoryInfo(r *catalog.Repository) api.Repository {
	return api.Repository{ID: r.ID, Name: r.Name, Kind: r.Kind, Path: r.Path, ChunkSize: r.ChunkSize, CreatedAt: r.CreatedAt}
}

func (s *Server) listRepositories(c *gin.Context) {
	rs, err := s.deps.Repositories.List(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	out := make([]api.Repository, 0, len(rs))
	for i := range rs {
		out = append(out, repositoryInfo(&rs[i]))
	}
	c.JSON(http.StatusOK, gin.H{"repositories": out})
}

func (s *Server) createRepository(c *gin.Context) {
	var req api.CreateRepositoryRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	switch {
	case req.Name == "" || len(req.Name) > 128 || strings.ContainsAny(req.Name, " /\\\x00"):
		s.fail(c, &api.FieldError{Field: "name", Msg: "must be a non-empty name without spaces or slashes, at most 128 characters"})
		return
	case !strings.HasPrefix(req.Path, "/"):
		s.fail(c, &api.FieldError{Field: "path", Msg: "must be an absolute directory path on the hub"})
		return
	case req.ChunkSize != 0 && (req.ChunkSize < repository.MinChunkSize || req.ChunkSize > repository.MaxChunkSize || req.ChunkSize&(req.ChunkSize-1) != 0):
		s.fail(c, &api.FieldError{Field: "chunk_size", Msg: "must be a power of two between 64 KiB and 64 MiB"})
		return
	}
	r, _, err := s.deps.Repositories.Create(c.Request.Context(), req.Name, req.Path, req.ChunkSize)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, repositoryInfo(r))
}
