package api

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/identity"
	"github.com/sendense/sendense/shared/api"
)

// Small bodies: a CSR is under 1 KiB.
const smallBody = 64 << 10

func (s *Server) registerIdentity(agent, v1 *gin.RouterGroup) {
	s.engine.POST(api.PathEnroll, s.enroll)
	agent.POST(rel(agent, api.PathAgentRenew), s.renew)
	agent.POST(rel(agent, api.PathAgentHeartbeat), s.heartbeat)
	v1.GET(rel(v1, api.PathAgents), s.requireRole(api.RoleViewer), s.listAgents)
	v1.GET(rel(v1, api.PathAgent), s.requireRole(api.RoleViewer), s.showAgent)
	v1.POST(rel(v1, api.PathAgentRevoke), s.requireRole(api.RoleAdmin), s.revokeAgent)
	v1.GET(rel(v1, api.PathJoinTokens), s.requireRole(api.RoleAdmin), s.listJoinTokens)
	v1.POST(rel(v1, api.PathJoinTokens), s.requireRole(api.RoleAdmin), s.createJoinToken)
	v1.DELETE(rel(v1, api.PathJoinToken), s.requireRole(api.RoleAdmin), s.revokeJoinToken)
	v1.GET(rel(v1, api.PathAPITokens), s.requireRole(api.RoleAdmin), s.listAPITokens)
	v1.POST(rel(v1, api.PathAPITokens), s.requireRole(api.RoleAdmin), s.createAPIToken)
	v1.DELETE(rel(v1, api.PathAPIToken), s.requireRole(api.RoleAdmin), s.revokeAPIToken)
}

func (s *Server) enroll(c *gin.Context) {
	var req api.EnrollRequest
	err := decodeJSON(c, smallBody, &req)
	var resp api.EnrollResponse
	if err == nil {
		resp, err = s.deps.Identity.Enroll(c.Request.Context(), req)
	}
	s.auth.enrollments.WithLabelValues(enrollResult(err)).Inc()
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Set(ctxAgentID, resp.AgentID)
	c.JSON(http.StatusCreated, resp)
}

func (s *Server) renew(c *gin.Context) {
	var req api.RenewRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	resp, err := s.deps.Identity.Renew(c.Request.Context(), agentID(c), req.CSR)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, resp)
}

func (s *Server) heartbeat(c *gin.Context) {
	var req api.HeartbeatRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	resp, err := s.deps.Identity.Heartbeat(c.Request.Context(), agentID(c), req)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, resp)
}

func (s *Server) listAgents(c *gin.Context) {
	as, err := s.deps.Identity.Agents(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, api.AgentList{Agents: nonNil(as)})
}

func (s *Server) showAgent(c *gin.Context) {
	a, err := s.deps.Identity.Agent(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, a)
}

func (s *Server) revokeAgent(c *gin.Context) {
	if err := s.deps.Identity.RevokeAgent(c.Request.Context(), c.Param("id")); err != nil {
		s.fail(c, err)
		return
	}
	a, err := s.deps.Identity.Agent(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, a)
}

func (s *Server) listJoinTokens(c *gin.Context) {
	ts, err := s.deps.Identity.JoinTokens(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, api.JoinTokenList{Tokens: nonNil(ts)})
}

func (s *Server) createJoinToken(c *gin.Context) {
	var req api.CreateJoinTokenRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	ttl := time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			s.fail(c, &api.FieldError{Field: "ttl", Msg: "not a duration like 1h or 30m"})
			return
		}
		ttl = d
	}
	tok, info, err := s.deps.Identity.CreateJoinToken(c.Request.Context(), req.Name, ttl)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, api.CreateJoinTokenResponse{Token: tok, Info: info})
}

func (s *Server) revokeJoinToken(c *gin.Context) {
	if err := s.deps.Identity.RevokeJoinToken(c.Request.Context(), c.Param("id")); err != nil {
		s.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (s *Server) listAPITokens(c *gin.Context) {
	ts, err := s.deps.Identity.APITokens(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, api.APITokenList{APITokens: nonNil(ts)})
}

func (s *Server) createAPIToken(c *gin.Context) {
	var req api.CreateAPITokenRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	if !identity.ValidRole(req.Role) {
		s.fail(c, &api.FieldError{Field: "role", Msg: "must be admin, operator or viewer"})
		return
	}
	tok, info, err := s.deps.Identity.CreateAPIToken(c.Request.Context(), req.Name, req.Role)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, api.CreateAPITokenResponse{Token: tok, Info: info})
}

func (s *Server) revokeAPIToken(c *gin.Context) {
	if err := s.deps.Identity.RevokeAPIToken(c.Request.Context(), c.Param("id")); err != nil {
		s.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
