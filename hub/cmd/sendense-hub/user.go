package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/accounts"
)

// accountsCmd adapts a command body that needs the console's accounts over the configured catalog.
func accountsCmd(e *env, fn func(cmd *cobra.Command, args []string, acc *accounts.Service) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cfg, err := loadConfig(cmd, e)
		if err != nil {
			return err
		}
		cat, err := openMigratedCatalog(cmd.Context(), cfg)
		if err != nil {
			return err
		}
		defer cat.Close()
		return fn(cmd, args, accounts.New(cat, cfg.NewLogger(e.stderr), accounts.Options{}))
	}
}

// readPasswordFile reads a password from a file (one line; a trailing newline is dropped), so
// that it never appears in a process list or a shell history.
func readPasswordFile(path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("--password-file is required")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read password file: %w", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if strings.ContainsAny(pw, "\r\n") {
		return "", fmt.Errorf("password file %s holds more than one line", path)
	}
	return pw, nil
}

func newUserCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Manage the web console's local users"}
	var role, pwFile string
	add := &cobra.Command{
		Use:   "add NAME --role admin|operator|viewer --password-file F",
		Short: "Create a console user (roles as for API tokens)",
		Args:  cobra.ExactArgs(1),
		RunE: accountsCmd(e, func(cmd *cobra.Command, args []string, acc *accounts.Service) error {
			pw, err := readPasswordFile(pwFile)
			if err != nil {
				return err
			}
			u, err := acc.Add(cmd.Context(), args[0], role, pw)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "created user %s (%s)\n", u.Name, u.Role)
			return err
		}),
	}
	add.Flags().StringVar(&role, "role", "", "admin, operator or viewer (required)")
	add.Flags().StringVar(&pwFile, "password-file", "", "file holding the password (required)")
	_ = add.MarkFlagRequired("role")
	_ = add.MarkFlagRequired("password-file")
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List console users (never their passwords)",
		Args:  cobra.NoArgs,
		RunE: accountsCmd(e, func(cmd *cobra.Command, _ []string, acc *accounts.Service) error {
			us, err := acc.List(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				type user struct {
					Name      string `json:"name"`
					Role      string `json:"role"`
					CreatedAt string `json:"created_at"`
				}
				out := make([]user, 0, len(us))
				for _, u := range us {
					out = append(out, user{u.Name, u.Role, fmtTime(u.CreatedAt)})
				}
				return printJSON(e.stdout, out)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tCREATED")
			for _, u := range us {
				row(tw, u.Name, u.Role, fmtTime(u.CreatedAt))
			}
			return tw.Flush()
		}),
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var passwdFile string
	passwd := &cobra.Command{
		Use:   "passwd NAME --password-file F",
		Short: "Set a console user's password (signs the user out everywhere)",
		Args:  cobra.ExactArgs(1),
		RunE: accountsCmd(e, func(cmd *cobra.Command, args []string, acc *accounts.Service) error {
			pw, err := readPasswordFile(passwdFile)
			if err != nil {
				return err
			}
			if err := acc.SetPassword(cmd.Context(), args[0], pw); err != nil {
				return err
			}
			_, err = fmt.Fprintln(e.stdout, "password changed for", args[0])
			return err
		}),
	}
	passwd.Flags().StringVar(&passwdFile, "password-file", "", "file holding the new password (required)")
	_ = passwd.MarkFlagRequired("password-file")
	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a console user and end its sessions",
		Args:  cobra.ExactArgs(1),
		RunE: accountsCmd(e, func(cmd *cobra.Command, args []string, acc *accounts.Service) error {
			if err := acc.Remove(cmd.Context(), args[0]); err != nil {
				return err
			}
			_, err := fmt.Fprintln(e.stdout, "removed user", args[0])
			return err
		}),
	}
	cmd.AddCommand(add, list, passwd, rm)
	return cmd
}
