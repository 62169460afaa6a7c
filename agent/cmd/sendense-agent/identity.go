package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/agent/internal/config"
	"github.com/sendense/sendense/agent/internal/daemon"
	"github.com/sendense/sendense/agent/internal/enroll"
	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/identity"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/version"
)

func newEnrollCmd(e *env) *cobra.Command {
	var token, tokenFile, hub, name string
	var force bool
	cmd := &cobra.Command{
		Use:   "enroll (--token-file FILE | --token TOKEN) [--hub URL] [--state-dir DIR]",
		Short: "Enroll this agent with a hub using a join token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, e)
			if err != nil {
				return err
			}
			if tokenFile != "" {
				if token != "" {
					return errors.New("give the join token once: --token or --token-file")
				}
				if token, err = readToken(cmd.InOrStdin(), tokenFile); err != nil {
					return err
				}
			}
			if token == "" {
				token = e.getenv(config.EnvPrefix + "TOKEN")
			}
			if token == "" {
				return errors.New("a join token is required (the string printed by `sendense-hub token create`): --token-file FILE, --token-file - to read it from standard input, or SENDENSE_AGENT_TOKEN")
			}
			host, _ := os.Hostname()
			if name == "" {
				name = host
			}
			id, err := enroll.Enroll(cmd.Context(), enroll.Options{
				Token: token, HubURL: hub, StateDir: cfg.StateDir, Force: force,
				Name: name, Hostname: host, Version: version.Get().Version,
			}, cfg.NewLogger(e.stderr))
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "enrolled as %s with %s (certificate valid until %s); identity in %s\n",
				id.AgentID(), id.HubURL(), id.NotAfter().UTC().Format(time.RFC3339), cfg.StateDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file holding the join token (- reads standard input): it stays out of ps and shell history")
	cmd.Flags().StringVar(&token, "token", "", "join token (env SENDENSE_AGENT_TOKEN); --token-file keeps it out of ps")
	cmd.Flags().StringVar(&hub, "hub", "", "hub URL, overriding the one in the token")
	cmd.Flags().StringVar(&name, "name", "", "agent name (default: host name)")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing identity")
	return cmd
}

// connect loads the identity and builds the mTLS hub client.
func connect(cfg *config.Config, log *slog.Logger, opts hubclient.Options) (*identity.Identity, *hubclient.Client, error) {
	id, err := identity.Load(cfg.StateDir)
	if errors.Is(err, identity.ErrNotEnrolled) {
		return nil, nil, fmt.Errorf("not enrolled (no identity in %s): run `sendense-agent enroll --token-file FILE` first", cfg.StateDir)
	}
	if err != nil {
		return nil, nil, err
	}
	url := id.HubURL()
	if cfg.HubURL != "" {
		url = cfg.HubURL
	}
	if len(cfg.HubURLs) > 0 {
		url, opts.Fallbacks = cfg.HubURLs[0], cfg.HubURLs[1:]
	}
	hc, err := hubclient.New(url, id.TLSConfig(), log, opts)
	if err != nil {
		return nil, nil, err
	}
	return id, hc, nil
}

func newStatusCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the agent identity and whether the hub answers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, e)
			if err != nil {
				return err
			}
			log := cfg.NewLogger(e.stderr)
			id, hc, err := connect(cfg, log, hubclient.Options{NoRetry: true})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "agent id:     %s\n", id.AgentID())
			fmt.Fprintf(e.stdout, "hub:          %s\n", id.HubURL())
			fmt.Fprintf(e.stdout, "certificate:  valid until %s (%s left)\n", id.NotAfter().UTC().Format(time.RFC3339), time.Until(id.NotAfter()).Round(time.Minute))
			if b, err := os.ReadFile(daemon.StatusFile(cfg.StateDir)); err == nil {
				var st []daemon.SourceStatus
				if json.Unmarshal(b, &st) == nil {
					for _, s := range st {
						state := "reachable"
						if !s.Reachable {
							state = "UNREACHABLE: " + s.Error
						}
						fmt.Fprintf(e.stdout, "source %-6s %s; %d VMs; last inventory %s; pushed %s\n", s.Name+":", state, s.VMs,
							fmtAgo(s.LastSuccess), fmtAgo(s.LastPushed))
						if s.PushPending {
							fmt.Fprintf(e.stdout, "              inventory not yet taken by the hub: %s\n", s.HubLastError)
						}
					}
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			host, _ := os.Hostname()
			_, err = hc.Heartbeat(ctx, api.HeartbeatRequest{Hostname: host, Version: version.Get().Version})
			if err != nil {
				fmt.Fprintf(e.stdout, "hub answers:  no (%v)\n", err)
				return errors.New("the hub does not accept this agent")
			}
			fmt.Fprintln(e.stdout, "hub answers:  yes (mutual TLS accepted)")
			return nil
		},
	}
}

func fmtAgo(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%s ago", time.Since(t).Round(time.Second))
}

// readToken reads a join token from the file path, or from in when path is "-": its first line,
// without surrounding space.
func readToken(in io.Reader, path string) (string, error) {
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return "", fmt.Errorf("join token: %w", err)
		}
		defer f.Close()
		in = f
	}
	line, err := bufio.NewReader(io.LimitReader(in, 64<<10)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("join token: %w", err)
	}
	if t := strings.TrimSpace(line); t != "" {
		return t, nil
	}
	if path == "-" {
		path = "standard input"
	}
	return "", fmt.Errorf("join token: nothing in %s", path)
}
