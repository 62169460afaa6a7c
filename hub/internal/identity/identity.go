// Package identity decides who is calling the hub: it issues and redeems agent join tokens,
// signs and renews agent certificates, authenticates agents by certificate and operators by API
// token, and manages both.
package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/pki"
	"github.com/sendense/sendense/shared/api"
)

// Sentinel errors; the API maps them to HTTP status codes.
var (
	ErrTokenInvalid = errors.New("join token is invalid")
	ErrTokenUsed    = errors.New("join token has already been used")
	ErrTokenExpired = errors.New("join token has expired")
	ErrTokenRevoked = errors.New("join token has been revoked")

	ErrNoCertificate  = errors.New("no client certificate")
	ErrAgentUnknown   = errors.New("certificate does not belong to an enrolled agent")
	ErrAgentRevoked   = errors.New("agent has been revoked")
	ErrCertSuperseded = errors.New("certificate has been replaced by a renewal")

	ErrAPITokenInvalid = errors.New("api token is invalid")
	ErrAPITokenRevoked = errors.New("api token has been revoked")
	ErrForbiddenRole   = errors.New("api token role does not allow this")

	ErrInvalidInput = errors.New("invalid input")
)

// identityCatalog is what this package needs from the catalog.
type identityCatalog interface {
	CreateJoinToken(ctx context.Context, t *catalog.JoinToken) error
	JoinTokenByID(ctx context.Context, id string) (*catalog.JoinToken, error)
	JoinTokens(ctx context.Context) ([]catalog.JoinToken, error)
	RevokeJoinToken(ctx context.Context, id string) error
	RedeemJoinToken(ctx context.Context, tokenID, secretHash string, a *catalog.Agent) error
	AgentByID(ctx context.Context, id string) (*catalog.Agent, error)
	Agents(ctx context.Context) ([]catalog.Agent, error)
	RevokeAgent(ctx context.Context, id string) error
	RenewAgentCert(ctx context.Context, id, serial, fingerprint string, notAfter time.Time) error
	TouchAgent(ctx context.Context, id, hostname, version string) error
	CreateAPIToken(ctx context.Context, t *catalog.APIToken) error
	APITokenByID(ctx context.Context, id string) (*catalog.APIToken, error)
	APITokens(ctx context.Context) ([]catalog.APIToken, error)
	RevokeAPIToken(ctx context.Context, id string) error
	TouchAPIToken(ctx context.Context, id string) error
	CountAgentsByStatus(ctx context.Context) (map[string]int, error)
}

// Service implements identity for the API and the CLI.
type Service struct {
	cat          identityCatalog
	ca           *pki.CA
	log          *slog.Logger
	hubURL       string
	certLifetime time.Duration
	now          func() time.Time
}

// Options configure a Service.
type Options struct {
	// HubURL is written into join tokens: where agents reach this hub.
	HubURL string
	// CertLifetime is the lifetime of agent certificates (default 30 days).
	CertLifetime time.Duration
	// Now is the clock (tests inject one).
	Now func() time.Time
}

// New returns the identity service, registering its collector (agents by status, last seen,
// certificate expiry) on reg unless reg is nil.
func New(cat identityCatalog, ca *pki.CA, log *slog.Logger, reg prometheus.Registerer, opts Options) *Service {
	if opts.CertLifetime <= 0 {
		opts.CertLifetime = 30 * 24 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if reg != nil {
		reg.MustRegister(newAgentCollector(cat, log))
	}
	return &Service{cat: cat, ca: ca, log: log, hubURL: opts.HubURL, certLifetime: opts.CertLifetime, now: opts.Now}
}

// MaxNameLen bounds agent and token names.
const MaxNameLen = 128

func randomID(prefix string, n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random id: %w", err)
	}
	return prefix + hex.EncodeToString(b), nil
}

func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// hashSecret is SHA-256: the secrets are 256-bit random values, so a slow password hash would
// add nothing but latency.
func hashSecret(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func validName(field, s string) error {
	if len(s) > MaxNameLen {
		return fmt.Errorf("%w: %s longer than %d characters", ErrInvalidInput, field, MaxNameLen)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s contains control characters", ErrInvalidInput, field)
		}
	}
	return nil
}

// CreateJoinToken makes a single-use join token valid for ttl and returns the copy-paste string
// (the only time the secret exists outside the agent) and its record.
func (s *Service) CreateJoinToken(ctx context.Context, name string, ttl time.Duration) (string, api.JoinTokenInfo, error) {
	if ttl <= 0 || ttl > 30*24*time.Hour {
		return "", api.JoinTokenInfo{}, fmt.Errorf("%w: ttl must be between 1s and 720h", ErrInvalidInput)
	}
	if err := validName("name", name); err != nil {
		return "", api.JoinTokenInfo{}, err
	}
	id, err := randomID("jt-", 8)
	if err != nil {
		return "", api.JoinTokenInfo{}, err
	}
	secret, err := newSecret()
	if err != nil {
		return "", api.JoinTokenInfo{}, err
	}
	rec := &catalog.JoinToken{ID: id, Name: name, SecretHash: hashSecret(secret), ExpiresAt: s.now().UTC().Add(ttl).Truncate(time.Microsecond)}
	if err := s.cat.CreateJoinToken(ctx, rec); err != nil {
		return "", api.JoinTokenInfo{}, err
	}
	s.log.InfoContext(ctx, "join token created", "token_id", id, "name", name, "expires_at", rec.ExpiresAt)
	tok := api.JoinToken{HubURL: s.hubURL, ID: id, Secret: secret, CAFingerprint: s.ca.Fingerprint()}
	return tok.String(), s.joinTokenInfo(rec), nil
}

func (s *Service) joinTokenInfo(t *catalog.JoinToken) api.JoinTokenInfo {
	status := "active"
	switch {
	case !t.RedeemedAt.IsZero():
		status = "redeemed"
	case !t.RevokedAt.IsZero():
		status = "revoked"
	case !s.now().Before(t.ExpiresAt):
		status = "expired"
	}
	return api.JoinTokenInfo{ID: t.ID, Name: t.Name, ExpiresAt: t.ExpiresAt, Status: status, AgentID: t.AgentID, RedeemedAt: t.RedeemedAt, CreatedAt: t.CreatedAt}
}

// JoinTokens lists join tokens without secrets.
func (s *Service) JoinTokens(ctx context.Context) ([]api.JoinTokenInfo, error) {
	ts, err := s.cat.JoinTokens(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.JoinTokenInfo, 0, len(ts))
	for i := range ts {
		out = append(out, s.joinTokenInfo(&ts[i]))
	}
	return out, nil
}

// RevokeJoinToken revokes an unused join token.
func (s *Service) RevokeJoinToken(ctx context.Context, id string) error {
	if err := s.cat.RevokeJoinToken(ctx, id); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "join token revoked", "token_id", id)
	return nil
}

// Enroll redeems a join token for a CSR: it checks the CSR, consumes the token atomically,
// records the agent and returns its signed certificate. Nothing is recorded when any step fails.
func (s *Service) Enroll(ctx context.Context, req api.EnrollRequest) (api.EnrollResponse, error) {
	if req.TokenID == "" || req.TokenSecret == "" {
		return api.EnrollResponse{}, ErrTokenInvalid
	}
	for field, v := range map[string]string{"name": req.Name, "hostname": req.Hostname, "version": req.Version} {
		if err := validName(field, v); err != nil {
			return api.EnrollResponse{}, err
		}
	}
	agentID, err := randomID("agent-", 8)
	if err != nil {
		return api.EnrollResponse{}, err
	}
	cert, certPEM, err := s.ca.SignAgentCSR([]byte(req.CSR), agentID, s.certLifetime)
	if err != nil {
		return api.EnrollResponse{}, fmt.Errorf("%w: %v", ErrInvalidInput, err)
	}
	name := req.Name
	if name == "" {
		name = req.Hostname
	}
	if name == "" {
		name = agentID
	}
	a := &catalog.Agent{
		ID: agentID, Name: name, Hostname: req.Hostname, Version: req.Version, Status: api.AgentActive,
		CertSerial: pki.SerialHex(cert), CertFingerprint: pki.Fingerprint(cert), CertNotAfter: cert.NotAfter.UTC(),
	}
	if err := s.cat.RedeemJoinToken(ctx, req.TokenID, hashSecret(req.TokenSecret), a); err != nil {
		if errors.Is(err, catalog.ErrTokenNotRedeemable) {
			return api.EnrollResponse{}, s.whyNotRedeemable(ctx, req)
		}
		return api.EnrollResponse{}, err
	}
	s.log.InfoContext(ctx, "agent enrolled", "agent_id", agentID, "name", name, "hostname", req.Hostname, "token_id", req.TokenID, "cert_serial", a.CertSerial, "cert_not_after", a.CertNotAfter)
	return api.EnrollResponse{AgentID: agentID, Certificate: string(certPEM), CA: string(s.ca.CertPEM)}, nil
}

// whyNotRedeemable explains a failed redemption. Details are given only to a caller who knows the
// secret; anyone else learns only that the token is invalid.
func (s *Service) whyNotRedeemable(ctx context.Context, req api.EnrollRequest) error {
	t, err := s.cat.JoinTokenByID(ctx, req.TokenID)
	if err != nil || subtle.ConstantTimeCompare([]byte(t.SecretHash), []byte(hashSecret(req.TokenSecret))) != 1 {
		return ErrTokenInvalid
	}
	switch {
	case !t.RedeemedAt.IsZero():
		return ErrTokenUsed
	case !t.RevokedAt.IsZero():
		return ErrTokenRevoked
	case !s.now().Before(t.ExpiresAt):
		return ErrTokenExpired
	}
	return ErrTokenUsed // lost a race with a concurrent redemption
}

// AuthenticateAgent maps a verified client certificate (it already chains to the hub CA: the TLS
// handshake checked that) to an active agent. The catalog is asked on every request so that a
// revocation takes effect at once on every hub instance.
func (s *Service) AuthenticateAgent(ctx context.Context, cert *x509.Certificate) (api.Agent, error) {
	if cert == nil {
		return api.Agent{}, ErrNoCertificate
	}
	a, err := s.cat.AgentByID(ctx, cert.Subject.CommonName)
	if errors.Is(err, catalog.ErrNotFound) {
		return api.Agent{}, ErrAgentUnknown
	}
	if err != nil {
		return api.Agent{}, err
	}
	if a.Status != api.AgentActive {
		return api.Agent{}, ErrAgentRevoked
	}
	// The previous certificate stays valid until the next renewal: connections opened before a
	// renewal keep presenting it, and an agent whose renewal answer was lost must not be locked
	// out. Anything older is refused.
	if serial := pki.SerialHex(cert); serial != a.CertSerial && serial != a.PrevCertSerial {
		return api.Agent{}, ErrCertSuperseded
	}
	return AgentInfo(a), nil
}

// Renew signs a new certificate for an authenticated agent and records it.
func (s *Service) Renew(ctx context.Context, agentID, csrPEM string) (api.RenewResponse, error) {
	cert, certPEM, err := s.ca.SignAgentCSR([]byte(csrPEM), agentID, s.certLifetime)
	if err != nil {
		return api.RenewResponse{}, fmt.Errorf("%w: %v", ErrInvalidInput, err)
	}
	if err := s.cat.RenewAgentCert(ctx, agentID, pki.SerialHex(cert), pki.Fingerprint(cert), cert.NotAfter); err != nil {
		return api.RenewResponse{}, err
	}
	s.log.InfoContext(ctx, "agent certificate renewed", "agent_id", agentID, "cert_serial", pki.SerialHex(cert), "cert_not_after", cert.NotAfter.UTC())
	return api.RenewResponse{Certificate: string(certPEM), CA: string(s.ca.CertPEM)}, nil
}

// Heartbeat records that an agent is alive.
func (s *Service) Heartbeat(ctx context.Context, agentID string, req api.HeartbeatRequest) (api.HeartbeatResponse, error) {
	if err := validName("hostname", req.Hostname); err != nil {
		return api.HeartbeatResponse{}, err
	}
	if err := validName("version", req.Version); err != nil {
		return api.HeartbeatResponse{}, err
	}
	if err := s.cat.TouchAgent(ctx, agentID, req.Hostname, req.Version); err != nil {
		return api.HeartbeatResponse{}, err
	}
	return api.HeartbeatResponse{AgentID: agentID, Status: api.AgentActive, ServerTime: s.now().UTC()}, nil
}

// AgentInfo converts a catalog agent to its API form.
func AgentInfo(a *catalog.Agent) api.Agent {
	return api.Agent{
		ID: a.ID, Name: a.Name, Hostname: a.Hostname, Version: a.Version, Status: a.Status,
		CertSerial: a.CertSerial, CertFingerprint: a.CertFingerprint, CertNotAfter: a.CertNotAfter,
		LastSeenAt: a.LastSeenAt, CreatedAt: a.CreatedAt,
	}
}

// Agents lists enrolled agents.
func (s *Service) Agents(ctx context.Context) ([]api.Agent, error) {
	as, err := s.cat.Agents(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Agent, 0, len(as))
	for i := range as {
		out = append(out, AgentInfo(&as[i]))
	}
	return out, nil
}

// Agent returns one agent.
func (s *Service) Agent(ctx context.Context, id string) (api.Agent, error) {
	a, err := s.cat.AgentByID(ctx, id)
	if err != nil {
		return api.Agent{}, err
	}
	return AgentInfo(a), nil
}

// RevokeAgent revokes an agent: its next request is refused with 403.
func (s *Service) RevokeAgent(ctx context.Context, id string) error {
	if err := s.cat.RevokeAgent(ctx, id); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "agent revoked", "agent_id", id)
	return nil
}

// APITokenPrefix starts every operator API token: "sdt_<id>.<secret>".
const APITokenPrefix = "sdt_"

// ValidRole reports whether r is an operator role.
func ValidRole(r string) bool {
	return r == api.RoleViewer || r == api.RoleOperator || r == api.RoleAdmin
}

func roleRank(r string) int {
	switch r {
	case api.RoleViewer:
		return 1
	case api.RoleOperator:
		return 2
	case api.RoleAdmin:
		return 3
	}
	return 0
}

// Allows reports whether a token role includes the rights of role need.
func Allows(have, need string) bool { return roleRank(have) >= roleRank(need) && roleRank(need) > 0 }

// CreateAPIToken makes an operator token and returns it (shown once) with its record.
func (s *Service) CreateAPIToken(ctx context.Context, name, role string) (string, api.APITokenInfo, error) {
	if name == "" {
		return "", api.APITokenInfo{}, fmt.Errorf("%w: name is required", ErrInvalidInput)
	}
	if err := validName("name", name); err != nil {
		return "", api.APITokenInfo{}, err
	}
	if !ValidRole(role) {
		return "", api.APITokenInfo{}, fmt.Errorf("%w: role %q is not admin, operator or viewer", ErrInvalidInput, role)
	}
	id, err := randomID("", 6)
	if err != nil {
		return "", api.APITokenInfo{}, err
	}
	secret, err := newSecret()
	if err != nil {
		return "", api.APITokenInfo{}, err
	}
	rec := &catalog.APIToken{ID: "at-" + id, Name: name, Role: role, SecretHash: hashSecret(secret)}
	if err := s.cat.CreateAPIToken(ctx, rec); err != nil {
		return "", api.APITokenInfo{}, err
	}
	s.log.InfoContext(ctx, "api token created", "api_token_id", rec.ID, "name", name, "role", role)
	return APITokenPrefix + rec.ID + "." + secret, APITokenInfo(rec), nil
}

// APITokenInfo converts a catalog token to its API form.
func APITokenInfo(t *catalog.APIToken) api.APITokenInfo {
	status := "active"
	if !t.RevokedAt.IsZero() {
		status = "revoked"
	}
	return api.APITokenInfo{ID: t.ID, Name: t.Name, Role: t.Role, Status: status, LastUsedAt: t.LastUsedAt, CreatedAt: t.CreatedAt}
}

// APITokens lists operator tokens without secrets.
func (s *Service) APITokens(ctx context.Context) ([]api.APITokenInfo, error) {
	ts, err := s.cat.APITokens(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.APITokenInfo, 0, len(ts))
	for i := range ts {
		out = append(out, APITokenInfo(&ts[i]))
	}
	return out, nil
}

// RevokeAPIToken revokes an operator token.
func (s *Service) RevokeAPIToken(ctx context.Context, id string) error {
	if err := s.cat.RevokeAPIToken(ctx, id); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "api token revoked", "api_token_id", id)
	return nil
}

// AuthenticateToken checks a bearer token and returns what it is (never its secret).
func (s *Service) AuthenticateToken(ctx context.Context, bearer string) (api.APITokenInfo, error) {
	rest, ok := strings.CutPrefix(bearer, APITokenPrefix)
	if !ok {
		return api.APITokenInfo{}, ErrAPITokenInvalid
	}
	id, secret, ok := strings.Cut(rest, ".")
	if !ok || id == "" || secret == "" || len(id) > 64 {
		return api.APITokenInfo{}, ErrAPITokenInvalid
	}
	t, err := s.cat.APITokenByID(ctx, id)
	if errors.Is(err, catalog.ErrNotFound) {
		return api.APITokenInfo{}, ErrAPITokenInvalid
	}
	if err != nil {
		return api.APITokenInfo{}, err
	}
	if subtle.ConstantTimeCompare([]byte(t.SecretHash), []byte(hashSecret(secret))) != 1 {
		return api.APITokenInfo{}, ErrAPITokenInvalid
	}
	if !t.RevokedAt.IsZero() {
		return api.APITokenInfo{}, ErrAPITokenRevoked
	}
	if err := s.cat.TouchAPIToken(ctx, t.ID); err != nil {
		s.log.WarnContext(ctx, "record api token use", "api_token_id", t.ID, "err", err)
	}
	return APITokenInfo(t), nil
}
