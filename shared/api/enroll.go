package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// JoinTokenPrefix starts every join token string; the digit is the format version.
const JoinTokenPrefix = "SDJ1."

// JoinToken is what an operator copies from `sendense-hub token create` to
// `sendense-agent enroll --token`: where the hub is, which token, its secret, and the SHA-256 of
// the hub CA certificate so that the agent can pin the hub before it sends anything.
type JoinToken struct {
	HubURL        string `json:"url"`
	ID            string `json:"id"`
	Secret        string `json:"secret"`
	CAFingerprint string `json:"ca_sha256"`
}

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// String encodes the token as one copy-paste string.
func (t JoinToken) String() string {
	b, _ := json.Marshal(t)
	return JoinTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// ParseJoinToken decodes and checks a join token string.
func ParseJoinToken(s string) (JoinToken, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, JoinTokenPrefix) {
		return JoinToken{}, fmt.Errorf("join token: does not start with %q (copy the whole string printed by `sendense-hub token create`)", JoinTokenPrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, JoinTokenPrefix))
	if err != nil {
		return JoinToken{}, errors.New("join token: damaged (not base64url); copy it again")
	}
	var t JoinToken
	if err := json.Unmarshal(b, &t); err != nil {
		return JoinToken{}, errors.New("join token: damaged (not JSON); copy it again")
	}
	if t.ID == "" || t.Secret == "" {
		return JoinToken{}, errors.New("join token: missing id or secret")
	}
	t.CAFingerprint = NormalizeFingerprint(t.CAFingerprint)
	if !hex64.MatchString(t.CAFingerprint) {
		return JoinToken{}, errors.New("join token: missing or malformed CA fingerprint")
	}
	if t.HubURL != "" {
		if u, err := url.Parse(t.HubURL); err != nil || u.Scheme != "https" || u.Host == "" {
			return JoinToken{}, fmt.Errorf("join token: hub URL %q is not https://host:port", t.HubURL)
		}
	}
	return t, nil
}

// NormalizeFingerprint lowercases a hex fingerprint and drops ':' separators and spaces.
func NormalizeFingerprint(s string) string {
	return strings.ToLower(strings.NewReplacer(":", "", " ", "").Replace(strings.TrimSpace(s)))
}

// EnrollRequest is the body of POST /api/v1/enroll.
type EnrollRequest struct {
	TokenID     string `json:"token_id"`
	TokenSecret string `json:"token_secret"`
	// CSR is a PEM "CERTIFICATE REQUEST" for an ECDSA P-256 key the agent made itself.
	CSR      string `json:"csr"`
	Name     string `json:"name"`
	Hostname string `json:"hostname"`
	Version  string `json:"version"`
}

// EnrollResponse carries the agent's identity.
type EnrollResponse struct {
	AgentID     string `json:"agent_id"`
	Certificate string `json:"certificate"` // PEM, CN = agent id
	CA          string `json:"ca"`          // PEM of the hub CA
}

// RenewRequest is the body of POST /api/v1/agent/renew.
type RenewRequest struct {
	CSR string `json:"csr"`
}

// RenewResponse carries the renewed certificate.
type RenewResponse struct {
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// HeartbeatRequest is the body of POST /api/v1/agent/heartbeat.
type HeartbeatRequest struct {
	Hostname string `json:"hostname"`
	Version  string `json:"version"`
}

// HeartbeatResponse tells the agent the hub's view of it.
type HeartbeatResponse struct {
	AgentID    string    `json:"agent_id"`
	Status     string    `json:"status"`
	ServerTime time.Time `json:"server_time"`
}

// Agent is an enrolled agent as operators see it.
type Agent struct {
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	Hostname        string    `json:"hostname"`
	Version         string    `json:"version"`
	Status          string    `json:"status"`
	CertSerial      string    `json:"cert_serial"`
	CertFingerprint string    `json:"cert_fingerprint"`
	CertNotAfter    time.Time `json:"cert_not_after"`
	LastSeenAt      time.Time `json:"last_seen_at,omitzero"`
	CreatedAt       time.Time `json:"created_at"`
}

// Agent statuses (Agent.Status).
const (
	AgentActive  = "active"
	AgentRevoked = "revoked"
)

// JoinTokenInfo describes a join token without its secret.
type JoinTokenInfo struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	ExpiresAt  time.Time `json:"expires_at"`
	Status     string    `json:"status"` // active, redeemed, expired, revoked
	AgentID    string    `json:"agent_id,omitempty"`
	RedeemedAt time.Time `json:"redeemed_at,omitzero"`
	CreatedAt  time.Time `json:"created_at"`
}

// CreateJoinTokenRequest is the body of POST /api/v1/tokens.
type CreateJoinTokenRequest struct {
	Name string `json:"name"`
	TTL  string `json:"ttl"` // Go duration, default 1h
}

// CreateJoinTokenResponse returns the token string once.
type CreateJoinTokenResponse struct {
	Token string        `json:"token"`
	Info  JoinTokenInfo `json:"info"`
}

// APITokenInfo describes an operator API token without its secret.
type APITokenInfo struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Role       string    `json:"role"`
	Status     string    `json:"status"` // active, revoked
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	CreatedAt  time.Time `json:"created_at"`
}

// CreateAPITokenRequest is the body of POST /api/v1/apitokens.
type CreateAPITokenRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// CreateAPITokenResponse returns the bearer token once.
type CreateAPITokenResponse struct {
	Token string       `json:"token"`
	Info  APITokenInfo `json:"info"`
}

// Operator roles, each including the rights of the ones before it.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
)

// AgentList is the body of GET /api/v1/agents.
type AgentList struct {
	Agents []Agent `json:"agents"`
}

// JoinTokenList is the body of GET /api/v1/tokens.
type JoinTokenList struct {
	Tokens []JoinTokenInfo `json:"tokens"`
}

// APITokenList is the body of GET /api/v1/apitokens.
type APITokenList struct {
	APITokens []APITokenInfo `json:"api_tokens"`
}
