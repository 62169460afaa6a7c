// Package enroll turns a join token into an agent identity: it makes the key locally, pins the
// hub by the CA fingerprint in the token, sends a certificate request and stores the result.
package enroll

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/identity"
	"github.com/sendense/sendense/shared/api"
)

// Options describe one enrollment.
type Options struct {
	Token    string // the string printed by `sendense-hub token create`
	HubURL   string // overrides the URL in the token (e.g. behind NAT)
	StateDir string
	Force    bool // replace an existing identity
	Name     string
	Hostname string
	Version  string
}

// Enroll enrolls the agent and writes its identity to opts.StateDir. An existing identity is
// refused before the hub is contacted (so no token is spent) unless Force is set. When the hub
// does not present the pinned CA, nothing is sent and nothing is written.
func Enroll(ctx context.Context, opts Options, log *slog.Logger) (*identity.Identity, error) {
	tok, err := api.ParseJoinToken(opts.Token)
	if err != nil {
		return nil, err
	}
	if identity.Exists(opts.StateDir) && !opts.Force {
		return nil, fmt.Errorf("%s already holds an enrolled identity; use --force to replace it", opts.StateDir)
	}
	hubURL := tok.HubURL
	if opts.HubURL != "" {
		hubURL = opts.HubURL
	}
	if hubURL == "" {
		return nil, fmt.Errorf("the join token names no hub URL; pass --hub https://host:8082")
	}
	key, csr, err := identity.NewKey(opts.Name)
	if err != nil {
		return nil, err
	}
	log.InfoContext(ctx, "enrolling", "hub", hubURL, "token_id", tok.ID, "ca_sha256", tok.CAFingerprint)
	resp, err := hubclient.Enroll(ctx, hubURL, tok.CAFingerprint, api.EnrollRequest{
		TokenID: tok.ID, TokenSecret: tok.Secret, CSR: string(csr),
		Name: opts.Name, Hostname: opts.Hostname, Version: opts.Version,
	})
	if err != nil {
		return nil, err
	}
	id, err := identity.Save(opts.StateDir, identity.Metadata{
		AgentID: resp.AgentID, HubURL: hubURL, CAFingerprint: tok.CAFingerprint, EnrolledAt: timeNow(),
	}, key, []byte(resp.Certificate), []byte(resp.CA), opts.Force)
	if err != nil {
		return nil, fmt.Errorf("store identity: %w", err)
	}
	if cn := id.Certificate().Leaf.Subject.CommonName; cn != resp.AgentID {
		return nil, fmt.Errorf("hub issued a certificate for %q but named the agent %q", cn, resp.AgentID)
	}
	log.InfoContext(ctx, "enrolled", "agent_id", resp.AgentID, "hub", hubURL, "cert_not_after", id.NotAfter())
	return id, nil
}
