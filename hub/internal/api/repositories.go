package api

import (
	"context"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/api"
)

// repositoryService lists and creates repositories.
type repositoryService interface {
	List(ctx context.Context) ([]catalog.Repository, error)
	// Create validates the name and chunk size (*api.FieldError), creates or adopts the
	// repository in dir and records it.
	Create(ctx context.Context, name, dir string, chunkSize int64) (*catalog.Repository, error)
}

func (s *Server) registerRepositories(v1 *gin.RouterGroup) {
	v1.GET(rel(v1, api.PathRepositories), s.requireRole(api.RoleAdmin), s.listRepositories)
	v1.POST(rel(v1, api.PathRepositories), s.requireRole(api.RoleAdmin), s.createRepository)
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
	c.JSON(http.StatusOK, api.RepositoryList{Repositories: out})
}

func (s *Server) createRepository(c *gin.Context) {
	var req api.CreateRepositoryRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	// The name and the chunk size are checked where every repository is created, also by the
	// command line; a relative path means nothing to a remote caller.
	if !strings.HasPrefix(req.Path, "/") {
		s.fail(c, &api.FieldError{Field: "path", Msg: "must be an absolute directory path on the hub"})
		return
	}
	r, err := s.deps.Repositories.Create(c.Request.Context(), req.Name, req.Path, req.ChunkSize)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, repositoryInfo(r))
}
