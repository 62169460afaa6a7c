package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/sendense/sendense/hub/internal/client"
	"github.com/sendense/sendense/hub/internal/config"
)

// The remote CLI: with a hub URL (--hub, SENDENSE_HUB or the client config file) the operator
// commands speak to that hub's API with an operator API token instead of opening the catalog.
const (
	envHub          = "SENDENSE_HUB"
	envTokenFile    = "SENDENSE_TOKEN_FILE"
	envCAFile       = "SENDENSE_CA_FILE"
	envClientConfig = "SENDENSE_CLIENT_CONFIG"
)

// remoteCommands are the commands that work over the API. Every other command is hub-local
// (it needs the catalog or the repositories' files) and refuses --hub with a message saying so.
var remoteCommands = map[string]bool{
	"version": true, "config example": true,
	"vms list": true, "vms show": true, "sources list": true, "sources move": true,
	"backup start": true, "backup wait": true, "backup list": true, "backup show": true,
	"backup rm": true, "backup cancel": true, "backup protect": true, "backup unprotect": true,
	"restore": true, "restore vm": true, "restore in-place": true,
	"restore list": true, "restore show": true, "restore cancel": true,
	"events list": true,
	"agents list": true, "agents show": true, "agents revoke": true,
	"token create": true, "token list": true, "token revoke": true,
	"apitoken create": true, "apitoken list": true, "apitoken revoke": true,
	"restore-test run": true, "restore-test list": true, "restore-test show": true, "report restore-tests": true,
	"repo create": true, "repo list": true, "repo verify": true, "files ls": true, "files get": true,
	"prune":         true,
	"policy create": true, "policy list": true, "policy show": true, "policy rm": true,
	"instant-recovery start": true, "instant-recovery list": true, "instant-recovery show": true,
	"instant-recovery stop": true, "instant-recovery migrate": true,
}

// clientConfig is the client config file: where the hub is and the files holding the token
// and the CA. Relative paths are relative to the file's directory.
type clientConfig struct {
	Hub       string `yaml:"hub"`
	TokenFile string `yaml:"token_file"`
	CAFile    string `yaml:"ca_file"`
}

func bindRemoteFlags(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.String("hub", "", "operate the hub at this URL over its API, e.g. https://hub:8082 (env "+envHub+")")
	pf.String("token-file", "", "file holding an operator API token, for --hub (env "+envTokenFile+")")
	pf.String("ca-file", "", "PEM file of the hub's CA (its pki/ca.crt), for --hub (env "+envCAFile+")")
	pf.String("client-config", "", "client config file with hub, token_file, ca_file (env "+envClientConfig+"; default ~/.config/sendense/cli.yaml when it exists)")
}

// remoteOptions resolves the client options: flags, then environment, then the client config
// file. ok is false when no hub URL is named anywhere: the command runs hub-local.
func remoteOptions(cmd *cobra.Command, e *env) (client.Options, bool, error) {
	flag := func(name string) string { v, _ := cmd.Flags().GetString(name); return v }
	o := client.Options{URL: flag("hub"), TokenFile: flag("token-file"), CAFile: flag("ca-file")}
	if o.URL == "" {
		o.URL = e.getenv(envHub)
	}
	if o.TokenFile == "" {
		o.TokenFile = e.getenv(envTokenFile)
	}
	if o.CAFile == "" {
		o.CAFile = e.getenv(envCAFile)
	}
	path, explicit := flag("client-config"), true
	if path == "" {
		path = e.getenv(envClientConfig)
	}
	if path == "" {
		path, explicit = defaultClientConfig(e), false
	}
	if path != "" {
		cc, err := readClientConfig(path)
		switch {
		case errors.Is(err, os.ErrNotExist) && !explicit:
		case err != nil:
			return o, false, err
		default:
			if o.URL == "" {
				o.URL = cc.Hub
			}
			if o.TokenFile == "" {
				o.TokenFile = cc.TokenFile
			}
			if o.CAFile == "" {
				o.CAFile = cc.CAFile
			}
		}
	}
	return o, o.URL != "", nil
}

// defaultClientConfig is $XDG_CONFIG_HOME/sendense/cli.yaml, else ~/.config/sendense/cli.yaml.
func defaultClientConfig(e *env) string {
	if d := e.getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "sendense", "cli.yaml")
	}
	if h := e.getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "sendense", "cli.yaml")
	}
	return ""
}

func readClientConfig(path string) (clientConfig, error) {
	var cc clientConfig
	b, err := os.ReadFile(path)
	if err != nil {
		return cc, fmt.Errorf("client config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cc); err != nil && !errors.Is(err, io.EOF) {
		return cc, fmt.Errorf("client config %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&cc.TokenFile, &cc.CAFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return cc, nil
}

// commandPath is a command's path below the root: "vms list".
func commandPath(cmd *cobra.Command) string {
	p := cmd.CommandPath()
	_, rest, _ := strings.Cut(p, " ")
	return rest
}

// checkRemote refuses, before anything runs, a hub-local command given a hub URL, and any
// command given a hub-local flag together with a hub URL.
func checkRemote(cmd *cobra.Command, e *env) error {
	_, remote, err := remoteOptions(cmd, e)
	if err != nil || !remote {
		return err
	}
	p := commandPath(cmd)
	if p == "help" || strings.HasPrefix(p, "help ") || strings.HasPrefix(p, "completion") {
		return nil
	}
	if !remoteCommands[p] {
		return fmt.Errorf("%q is hub-local only: it works on the hub's own catalog and files, not over the API; run it on the hub host without --hub (nor %s or a client config naming a hub)", p, envHub)
	}
	hubFlags := pflag.NewFlagSet("hub", pflag.ContinueOnError)
	scratch := config.Default()
	config.BindFlags(hubFlags, &scratch)
	var local []string
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if f.Name == "config" || hubFlags.Lookup(f.Name) != nil {
			local = append(local, "--"+f.Name)
		}
	})
	if len(local) > 0 {
		return fmt.Errorf("%s name the hub-local catalog and files and mean nothing with --hub", strings.Join(local, ", "))
	}
	return nil
}

// remoteClient returns the API client when the command is to run remotely, else nil.
func remoteClient(cmd *cobra.Command, e *env) (*client.Client, error) {
	o, remote, err := remoteOptions(cmd, e)
	if err != nil || !remote {
		return nil, err
	}
	return client.New(o)
}
