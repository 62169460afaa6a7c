package api

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/shared/api"
)

// policyService manages backup policies.
type policyService interface {
	Create(ctx context.Context, in api.Policy) (api.Policy, error)
	Update(ctx context.Context, nameOrID string, in api.Policy) (api.Policy, error)
	Get(ctx context.Context, nameOrID string) (api.Policy, error)
	List(ctx context.Context) ([]api.Policy, error)
	Delete(ctx context.Context, nameOrID string) error
	Unprotected(ctx context.Context) ([]api.VMContext, error)
	Prune(ctx context.Context, o policy.PruneOptions) (policy.PruneReport, error)
}

func (s *Server) registerPolicies(v1 *gin.RouterGroup) {
	v1.GET(rel(v1, api.PathPolicies), s.requireRole(api.RoleViewer), s.listPolicies)
	v1.GET(rel(v1, api.PathPolicy), s.requireRole(api.RoleViewer), s.getPolicy)
	v1.POST(rel(v1, api.PathPolicies), s.requireRole(api.RoleOperator), s.createPolicy)
	v1.PUT(rel(v1, api.PathPolicy), s.requireRole(api.RoleOperator), s.updatePolicy)
	v1.DELETE(rel(v1, api.PathPolicy), s.requireRole(api.RoleOperator), s.deletePolicy)
	v1.POST(rel(v1, api.PathPrune), s.requireRole(api.RoleOperator), s.prune)
}

func (s *Server) listPolicies(c *gin.Context) {
	ps, err := s.deps.Policies.List(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, api.PolicyList{Policies: nonNil(ps)})
}

func (s *Server) getPolicy(c *gin.Context) {
	p, err := s.deps.Policies.Get(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, p)
}

func (s *Server) createPolicy(c *gin.Context) {
	var in api.Policy
	if err := decodeJSON(c, smallBody*16, &in); err != nil {
		s.fail(c, err)
		return
	}
	p, err := s.deps.Policies.Create(c.Request.Context(), in)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, p)
}

func (s *Server) updatePolicy(c *gin.Context) {
	var in api.Policy
	if err := decodeJSON(c, smallBody*16, &in); err != nil {
		s.fail(c, err)
		return
	}
	p, err := s.deps.Policies.Update(c.Request.Context(), c.Param("name"), in)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, p)
}

func (s *Server) deletePolicy(c *gin.Context) {
	if err := s.deps.Policies.Delete(c.Request.Context(), c.Param("name")); err != nil {
		s.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// prune applies retention now, as `sendense-hub prune` does, and answers every decision.
func (s *Server) prune(c *gin.Context) {
	var req api.PruneRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	rep, err := s.deps.Policies.Prune(c.Request.Context(), policy.PruneOptions{Policy: req.Policy, VM: req.VM, DryRun: req.DryRun})
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, api.PruneResult{Decisions: nonNil(rep.Decisions), Removed: rep.Removed, Errors: rep.Errors})
}
