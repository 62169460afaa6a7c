package api

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/hub/internal/identity"
	"github.com/sendense/sendense/shared/api"
)

// identityService is what the API needs to authenticate callers and manage identities.
type identityService interface {
	Enroll(ctx context.Context, req api.EnrollRequest) (api.EnrollResponse, error)
	AuthenticateAgent(ctx context.Context, cert *x509.Certificate) (api.Agent, error)
	Renew(ctx context.Context, agentID, csrPEM string) (api.RenewResponse, error)
	Heartbeat(ctx context.Context, agentID string, req api.HeartbeatRequest) (api.HeartbeatResponse, error)
	AuthenticateToken(ctx context.Context, bearer string) (api.APITokenInfo, error)
	Agents(ctx context.Context) ([]api.Agent, error)
	Agent(ctx context.Context, id string) (api.Agent, error)
	RevokeAgent(ctx context.Context, id string) error
	CreateJoinToken(ctx context.Context, name string, ttl time.Duration) (string, api.JoinTokenInfo, error)
	JoinTokens(ctx context.Context) ([]api.JoinTokenInfo, error)
	RevokeJoinToken(ctx context.Context, id string) error
	CreateAPIToken(ctx context.Context, name, role string) (string, api.APITokenInfo, error)
	APITokens(ctx context.Context) ([]api.APITokenInfo, error)
	RevokeAPIToken(ctx context.Context, id string) error
}

var errNoBearer = errors.New("an operator API token is required: Authorization: Bearer sdt_...")

type authMetrics struct {
	failures    *prometheus.CounterVec
	enrollments *prometheus.CounterVec
}

func newAuthMetrics(reg prometheus.Registerer) *authMetrics {
	m := &authMetrics{
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sendense_hub_auth_failures_total",
			Help: "Refused authentications, by reason.",
		}, []string{"reason"}),
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sendense_hub_enrollments_total",
			Help: "Agent enrollment attempts, by result.",
		}, []string{"result"}),
	}
	for _, r := range []string{"no_certificate", "unknown_agent", "revoked_agent", "superseded_certificate", "no_token", "invalid_token", "revoked_token", "forbidden_role", "error"} {
		m.failures.WithLabelValues(r)
	}
	for _, r := range []string{"success", "invalid_token", "used_token", "expired_token", "revoked_token", "bad_request", "error"} {
		m.enrollments.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.failures, m.enrollments)
	}
	return m
}

func failureReason(err error) string {
	switch {
	case errors.Is(err, identity.ErrNoCertificate):
		return "no_certificate"
	case errors.Is(err, identity.ErrAgentUnknown):
		return "unknown_agent"
	case errors.Is(err, identity.ErrAgentRevoked):
		return "revoked_agent"
	case errors.Is(err, identity.ErrCertSuperseded):
		return "superseded_certificate"
	case errors.Is(err, errNoBearer):
		return "no_token"
	case errors.Is(err, identity.ErrAPITokenInvalid):
		return "invalid_token"
	case errors.Is(err, identity.ErrAPITokenRevoked):
		return "revoked_token"
	case errors.Is(err, identity.ErrForbiddenRole):
		return "forbidden_role"
	default:
		return "error"
	}
}

func enrollResult(err error) string {
	switch {
	case err == nil:
		return "success"
	case errors.Is(err, identity.ErrTokenInvalid):
		return "invalid_token"
	case errors.Is(err, identity.ErrTokenUsed):
		return "used_token"
	case errors.Is(err, identity.ErrTokenExpired):
		return "expired_token"
	case errors.Is(err, identity.ErrTokenRevoked):
		return "revoked_token"
	default:
		if code, _ := statusOf(err); code == http.StatusBadRequest || code == http.StatusRequestEntityTooLarge {
			return "bad_request"
		}
		return "error"
	}
}

// requireAgent admits only requests with a client certificate of an active agent. The handshake
// already verified that a presented certificate chains to the hub CA and is within its validity.
func (s *Server) requireAgent() gin.HandlerFunc {
	return func(c *gin.Context) {
		var cert *x509.Certificate
		if tls := c.Request.TLS; tls != nil && len(tls.VerifiedChains) > 0 && len(tls.PeerCertificates) > 0 {
			cert = tls.PeerCertificates[0]
		}
		a, err := s.deps.Identity.AuthenticateAgent(c.Request.Context(), cert)
		if err != nil {
			s.auth.failures.WithLabelValues(failureReason(err)).Inc()
			s.fail(c, err)
			return
		}
		c.Set(ctxAgentID, a.ID)
		c.Next()
	}
}

// requireRole admits only requests with a valid operator API token whose role includes need.
func (s *Server) requireRole(need string) gin.HandlerFunc {
	return func(c *gin.Context) {
		bearer, ok := bearerToken(c.GetHeader("Authorization"))
		if !ok || bearer == "" {
			s.auth.failures.WithLabelValues("no_token").Inc()
			s.fail(c, errNoBearer)
			return
		}
		t, err := s.deps.Identity.AuthenticateToken(c.Request.Context(), strings.TrimSpace(bearer))
		if err == nil && !identity.Allows(t.Role, need) {
			c.Set(ctxTokenID, t.ID)
			c.Set(ctxTokenName, t.Name)
			err = fmt.Errorf("%w: %s role is needed, token %s has %s", identity.ErrForbiddenRole, need, t.ID, t.Role)
		}
		if err != nil {
			s.auth.failures.WithLabelValues(failureReason(err)).Inc()
			s.fail(c, err)
			return
		}
		c.Set(ctxTokenID, t.ID)
		c.Set(ctxTokenName, t.Name)
		c.Set(ctxRole, t.Role)
		c.Next()
	}
}

// agentID returns the authenticated agent of the request.
func agentID(c *gin.Context) string { return c.GetString(ctxAgentID) }

// bearerToken returns the token of an Authorization header of the Bearer scheme, whose name is
// case-insensitive (RFC 9110).
func bearerToken(h string) (string, bool) {
	const scheme = "bearer "
	if len(h) < len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	return h[len(scheme):], true
}
