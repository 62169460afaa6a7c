package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/shared/api"
)

// repositoryService lists and creates repositories.
type repositoryService interface {
	Describe(ctx context.Context) ([]api.Repository, error)
	// Add validates the name, the chunk size and the S3 settings (*api.FieldError), creates or
	// adopts the repository in the directory or the bucket's prefix, and records it.
	Add(ctx context.Context, req api.CreateRepositoryRequest) (api.Repository, error)
}

// verifyService re-reads and re-hashes backups' chunks, quarantining damaged ones. It runs in
// the caller's request (minutes on a large repository); a missing backup is a *api.FieldError,
// one that is not a restore point catalog.ErrConflict.
type verifyService interface {
	Verify(ctx context.Context, backupID string) (api.VerifyReport, error)
}

func (s *Server) registerRepositories(v1 *gin.RouterGroup) {
	v1.GET(rel(v1, api.PathRepositories), s.requireRole(api.RoleAdmin), s.listRepositories)
	v1.POST(rel(v1, api.PathRepositories), s.requireRole(api.RoleAdmin), s.createRepository)
	v1.POST(rel(v1, api.PathRepositoryVerify), s.requireRole(api.RoleAdmin), s.verifyRepositories)
}

// verifyRepositories runs a verification in the request and answers its report, damaged or
// not (damage is a finding, not a failure of the request).
func (s *Server) verifyRepositories(c *gin.Context) {
	if s.deps.Verify == nil {
		s.fail(c, errors.New("verification is not configured on this hub"))
		return
	}
	var req api.VerifyRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	rep, err := s.deps.Verify.Verify(c.Request.Context(), req.BackupID)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, rep)
}

func (s *Server) listRepositories(c *gin.Context) {
	rs, err := s.deps.Repositories.Describe(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, api.RepositoryList{Repositories: rs})
}

func (s *Server) createRepository(c *gin.Context) {
	var req api.CreateRepositoryRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	// The name, the chunk size and the S3 settings are checked where every repository is
	// created, also by the command line; a relative path means nothing to a remote caller.
	switch {
	case req.S3Endpoint != "" || req.S3Bucket != "" || req.S3CredentialsFile != "":
		if req.S3CredentialsFile != "" && !strings.HasPrefix(req.S3CredentialsFile, "/") {
			s.fail(c, &api.FieldError{Field: "s3_credentials_file", Msg: "must be an absolute file path on the hub"})
			return
		}
		if req.S3CAFile != "" && !strings.HasPrefix(req.S3CAFile, "/") {
			s.fail(c, &api.FieldError{Field: "s3_ca_file", Msg: "must be an absolute file path on the hub"})
			return
		}
		if req.S3Endpoint == "" {
			s.fail(c, &api.FieldError{Field: "s3_endpoint", Msg: "required for an S3 repository"})
			return
		}
	case !strings.HasPrefix(req.Path, "/"):
		s.fail(c, &api.FieldError{Field: "path", Msg: "must be an absolute directory path on the hub"})
		return
	}
	r, err := s.deps.Repositories.Add(c.Request.Context(), req)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, r)
}
