package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/hub/internal/hubkey"
	"github.com/sendense/sendense/hub/internal/identity"
	"github.com/sendense/sendense/hub/internal/pki"
	"github.com/sendense/sendense/shared/api"
)

// hubURL is where agents reach this hub: public_url, else https://<hostname>:<listen port>.
func hubURL(cfg *config.Config) string {
	if cfg.PublicURL != "" {
		return cfg.PublicURL
	}
	_, port, _ := net.SplitHostPort(cfg.Listen)
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return "https://" + net.JoinHostPort(host, port)
}

func newIdentity(ctx context.Context, cfg *config.Config, cat *catalog.Catalog, log *slog.Logger) (*identity.Service, error) {
	ca, err := loadCA(ctx, cfg, cat, log)
	if err != nil {
		return nil, err
	}
	return identity.New(cat, ca, log, nil, identity.Options{HubURL: hubURL(cfg), CertLifetime: cfg.AgentCertLifetime}), nil
}

// loadCA loads the hub's CA: with a hub key, the one the hubs sharing the catalog share, sealed
// in it (moving this hub's own CA there at the first start with a key); without one, the files in
// the data directory, refused when the catalog already holds a shared CA.
func loadCA(ctx context.Context, cfg *config.Config, cat *catalog.Catalog, log *slog.Logger) (*pki.CA, error) {
	text, err := cfg.HubKey()
	if err != nil {
		return nil, err
	}
	if text == nil {
		if _, shared, err := cat.HubSecret(ctx, pki.SecretName); err != nil {
			return nil, err
		} else if shared {
			return nil, fmt.Errorf("the catalog holds the CA shared by several hubs: give this hub their hub key (hub_key_file or %s)", config.EnvHubKey)
		}
		return pki.LoadOrCreate(cfg.PKIDir(), nil)
	}
	key, err := hubkey.Parse(text)
	if err != nil {
		return nil, err
	}
	ca, moved, err := pki.LoadOrCreateShared(ctx, cat, key, cfg.PKIDir(), nil)
	if err != nil {
		return nil, err
	}
	if moved && log != nil {
		log.InfoContext(ctx, "CA moved into the catalog, sealed under the hub key", "ca_fingerprint", ca.Fingerprint())
	}
	if f := pki.LocalKeyFile(cfg.PKIDir()); log != nil {
		if _, err := os.Stat(f); err == nil {
			log.WarnContext(ctx, "the CA's key is still in a file in plain, though the catalog holds it sealed: delete the file once every hub sharing the catalog has started with the hub key", "file", f)
		}
	}
	return ca, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// joinTokenOps manages agent join tokens.
type joinTokenOps interface {
	CreateJoinToken(ctx context.Context, name string, ttl time.Duration) (string, api.JoinTokenInfo, error)
	JoinTokens(ctx context.Context) ([]api.JoinTokenInfo, error)
	RevokeJoinToken(ctx context.Context, id string) error
}

// agentOps reads and revokes enrolled agents.
type agentOps interface {
	Agents(ctx context.Context) ([]api.Agent, error)
	Agent(ctx context.Context, id string) (api.Agent, error)
	RevokeAgent(ctx context.Context, id string) error
}

// apiTokenOps manages operator API tokens.
type apiTokenOps interface {
	CreateAPIToken(ctx context.Context, name, role string) (string, api.APITokenInfo, error)
	APITokens(ctx context.Context) ([]api.APITokenInfo, error)
	RevokeAPIToken(ctx context.Context, id string) error
}

func newTokenCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage agent join tokens"}
	var ttl time.Duration
	var name string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a single-use join token and print it (only the token goes to stdout)",
		Args:  cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, id joinTokenOps) error {
			tok, _, err := id.CreateJoinToken(cmd.Context(), name, ttl)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(e.stdout, tok)
			return err
		}),
	}
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token can be redeemed")
	create.Flags().StringVar(&name, "name", "", "a label for the token, e.g. site-a")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, id joinTokenOps) error {
			ts, err := id.JoinTokens(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, ts)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tEXPIRES\tAGENT")
			for _, t := range ts {
				row(tw, t.ID, t.Name, t.Status, fmtTime(t.ExpiresAt), t.AgentID)
			}
			return tw.Flush()
		}),
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an unused join token",
		Args:  cobra.ExactArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, id joinTokenOps) error {
			if err := id.RevokeJoinToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			_, err := fmt.Fprintln(e.stdout, "revoked", args[0])
			return err
		}),
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func newAgentsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "agents", Short: "List, show and revoke enrolled agents"}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List enrolled agents",
		Args:  cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, id agentOps) error {
			as, err := id.Agents(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, as)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tHOSTNAME\tSTATUS\tVERSION\tLAST SEEN\tCERT EXPIRES")
			for _, a := range as {
				row(tw, a.ID, a.Name, a.Hostname, a.Status, a.Version, fmtTime(a.LastSeenAt), fmtTime(a.CertNotAfter))
			}
			return tw.Flush()
		}),
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one agent",
		Args:  cobra.ExactArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, id agentOps) error {
			a, err := id.Agent(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(e.stdout, a)
		}),
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an agent: its next request is refused",
		Args:  cobra.ExactArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, id agentOps) error {
			if err := id.RevokeAgent(cmd.Context(), args[0]); err != nil {
				return err
			}
			_, err := fmt.Fprintln(e.stdout, "revoked", args[0])
			return err
		}),
	}
	cmd.AddCommand(list, show, revoke)
	return cmd
}

func newAPITokenCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "apitoken", Short: "Manage operator API tokens"}
	var name, role string
	create := &cobra.Command{
		Use:   "create --name NAME --role admin|operator|viewer",
		Short: "Create an operator API token and print it once (only the token goes to stdout)",
		Args:  cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, id apiTokenOps) error {
			tok, _, err := id.CreateAPIToken(cmd.Context(), name, role)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(e.stdout, tok)
			return err
		}),
	}
	create.Flags().StringVar(&name, "name", "", "token name (required)")
	create.Flags().StringVar(&role, "role", "", "admin, operator or viewer (required)")
	_ = create.MarkFlagRequired("name")
	_ = create.MarkFlagRequired("role")
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List API tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: opsCmd(e, func(cmd *cobra.Command, _ []string, id apiTokenOps) error {
			ts, err := id.APITokens(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, ts)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tROLE\tSTATUS\tLAST USED")
			for _, t := range ts {
				row(tw, t.ID, t.Name, t.Role, t.Status, fmtTime(t.LastUsedAt))
			}
			return tw.Flush()
		}),
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API token",
		Args:  cobra.ExactArgs(1),
		RunE: opsCmd(e, func(cmd *cobra.Command, args []string, id apiTokenOps) error {
			if err := id.RevokeAPIToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			_, err := fmt.Fprintln(e.stdout, "revoked", args[0])
			return err
		}),
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
