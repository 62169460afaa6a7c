package main

import (
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/hub/internal/repository"
)

// encryptFlags are repo create's --encrypt and --password-file.
type encryptFlags struct {
	encrypt      bool
	passwordFile string
}

func (f *encryptFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.encrypt, "encrypt", false, "seal every chunk, index and VM configuration with AES-256-GCM (needs --password-file)")
	cmd.Flags().StringVar(&f.passwordFile, "password-file", "", "file holding the password (or a key file) of the first key slot, or env:NAME for the hub's environment variable NAME; the hub reads it whenever it opens the repository")
}

func (f *encryptFlags) check() error {
	switch {
	case f.encrypt && f.passwordFile == "":
		return errors.New("--encrypt needs --password-file")
	case !f.encrypt && f.passwordFile != "":
		return errors.New("--password-file is for encrypted repositories: add --encrypt")
	}
	return nil
}

// warn tells, loudly, that the key slots are the only way to the data.
func (f *encryptFlags) warn(e *env, rec *catalog.Repository) error {
	_, err := fmt.Fprintf(e.stderr, `
WARNING: repository %s is encrypted. Its master key exists only wrapped in its key slots, opened
by %s. If every password and key file of its slots is lost, every backup in it is lost: nobody
can decrypt it. Keep a copy of the password file elsewhere, add a second slot
(sendense-hub repo key add %s --new-key-file F), or escrow the key (sendense-hub repo key export %s).

`, rec.Name, rec.PasswordFile, rec.Name, rec.Name)
	return err
}

func newRepoKeyCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Manage the key slots of an encrypted repository",
		Long: "The master key of an encrypted repository is wrapped by key slots stored in the repository: passwords (argon2id)\n" +
			"and key files. Each command unlocks the repository with its recorded password file, or with --password-file.",
	}
	var passwordFile string
	keyed := func(fn func(cmd *cobra.Command, repos *repository.Registry, rec *catalog.Repository, r *repository.Repository) error) func(*cobra.Command, []string) error {
		return catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
			repos := repository.NewRegistry(cat, cfg.NewLogger(e.stderr), nil)
			defer repos.Close()
			rec, r, err := repos.OpenKeys(cmd.Context(), cmd.Flags().Arg(0), passwordFile)
			if err != nil {
				return err
			}
			defer r.Close()
			return fn(cmd, repos, rec, r)
		})
	}
	unlockFlag := func(c *cobra.Command) *cobra.Command {
		c.Flags().StringVar(&passwordFile, "password-file", "", "unlock with this password file (or an exported key) instead of the recorded one")
		return c
	}

	var asJSON bool
	list := unlockFlag(&cobra.Command{
		Use:   "list NAME",
		Short: "List the key slots",
		Args:  cobra.ExactArgs(1),
		RunE: keyed(func(cmd *cobra.Command, _ *repository.Registry, _ *catalog.Repository, r *repository.Repository) error {
			slots, err := r.KeySlots(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				// The slots without their salts and wrapped keys, which are of no use to read.
				type row struct {
					ID        string `json:"id"`
					Kind      string `json:"kind"`
					KDF       string `json:"kdf"`
					Time      uint32 `json:"time,omitempty"`
					MemoryKiB uint32 `json:"memory_kib,omitempty"`
					Threads   uint8  `json:"threads,omitempty"`
					CreatedAt string `json:"created_at"`
					Opened    bool   `json:"opened"`
				}
				rows := make([]row, 0, len(slots))
				for _, s := range slots {
					rows = append(rows, row{s.ID, s.Kind, s.KDF.Name, s.KDF.Time, s.KDF.MemoryKiB, s.KDF.Threads, s.CreatedAt.Format(time.RFC3339), s.ID == r.UnlockedBy()})
				}
				return printJSON(e.stdout, rows)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SLOT\tKIND\tKDF\tCREATED\t")
			for _, s := range slots {
				kdf := s.KDF.Name
				if s.KDF.Name == "argon2id" {
					kdf = fmt.Sprintf("argon2id t=%d m=%dMiB p=%d", s.KDF.Time, s.KDF.MemoryKiB>>10, s.KDF.Threads)
				}
				mark := ""
				if s.ID == r.UnlockedBy() {
					mark = "(opened this time)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, s.Kind, kdf, s.CreatedAt.Format("2006-01-02 15:04:05"), mark)
			}
			return tw.Flush()
		}),
	})
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var newPasswordFile, newKeyFile string
	newSecret := func() ([]byte, string, error) {
		switch {
		case (newPasswordFile == "") == (newKeyFile == ""):
			return nil, "", errors.New("give exactly one of --new-password-file and --new-key-file")
		case newKeyFile != "":
			b, err := repository.GenerateKeyFile()
			if err != nil {
				return nil, "", err
			}
			return b, newKeyFile, nil
		default:
			b, err := repository.ReadSecretFile(newPasswordFile)
			return b, newPasswordFile, err
		}
	}
	// writeKeyFile creates a new key file (never over an existing file) before its slot exists,
	// so that no slot is ever without its file.
	writeKeyFile := func(path string, b []byte) error {
		if newKeyFile == "" {
			return nil
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("new key file: %w", err)
		}
		if _, err := f.Write(b); err != nil {
			_ = f.Close()
			return fmt.Errorf("new key file: %w", err)
		}
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return fmt.Errorf("new key file: %w", err)
		}
		return f.Close()
	}
	secretFlags := func(c *cobra.Command) *cobra.Command {
		c.Flags().StringVar(&newPasswordFile, "new-password-file", "", "the new slot opens with the password in this file")
		c.Flags().StringVar(&newKeyFile, "new-key-file", "", "create this file (0600) holding a new random key; the new slot opens with it")
		return unlockFlag(c)
	}

	add := secretFlags(&cobra.Command{
		Use:   "add NAME (--new-password-file F | --new-key-file F) [--password-file F]",
		Short: "Add a key slot",
		Args:  cobra.ExactArgs(1),
		RunE: keyed(func(cmd *cobra.Command, _ *repository.Registry, rec *catalog.Repository, r *repository.Repository) error {
			b, path, err := newSecret()
			if err != nil {
				return err
			}
			if err := writeKeyFile(path, b); err != nil {
				return err
			}
			sl, err := r.AddKeySlot(cmd.Context(), b)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "added %s slot %s to repository %s (opens with %s)\n", sl.Kind, sl.ID, rec.Name, path)
			return err
		}),
	})

	remove := unlockFlag(&cobra.Command{
		Use:   "remove NAME SLOT [--password-file F]",
		Short: "Remove a key slot (never the last one)",
		Args:  cobra.ExactArgs(2),
		RunE: keyed(func(cmd *cobra.Command, _ *repository.Registry, rec *catalog.Repository, r *repository.Repository) error {
			id := cmd.Flags().Arg(1)
			if err := r.RemoveKeySlot(cmd.Context(), id); err != nil {
				return err
			}
			if id == r.UnlockedBy() && passwordFile == "" {
				fmt.Fprintf(e.stderr, "warning: the slot removed was the one the recorded password file %s opens: record another with repo key change\n", rec.PasswordFile)
			}
			_, err := fmt.Fprintf(e.stdout, "removed slot %s from repository %s\n", id, rec.Name)
			return err
		}),
	})

	change := secretFlags(&cobra.Command{
		Use:   "change NAME (--new-password-file F | --new-key-file F) [--password-file F]",
		Short: "Rewrap the master key: replace the slot the current password file opens by one for the new secret",
		Long: "The slot that opens with the current password file (the recorded one, or --password-file) is replaced by a slot\n" +
			"for the new password or key file; the data is not re-encrypted and every backup stays restorable. When the\n" +
			"current password file is the recorded one, the new file is recorded in its place.",
		Args: cobra.ExactArgs(1),
		RunE: keyed(func(cmd *cobra.Command, repos *repository.Registry, rec *catalog.Repository, r *repository.Repository) error {
			old := r.UnlockedBy()
			if old == "" {
				return errors.New("an exported key opens no slot: use repo key add, then repo key remove")
			}
			b, path, err := newSecret()
			if err != nil {
				return err
			}
			if err := writeKeyFile(path, b); err != nil {
				return err
			}
			sl, err := r.ChangeKey(cmd.Context(), old, b)
			if err != nil {
				return err
			}
			if passwordFile == "" {
				if err := repos.SetPasswordFile(cmd.Context(), rec.Name, path); err != nil {
					return fmt.Errorf("slot %s replaced %s, but recording %s failed: %w", sl.ID, old, path, err)
				}
				_, err = fmt.Fprintf(e.stdout, "replaced slot %s by %s slot %s in repository %s; the hub now reads %s\n", old, sl.Kind, sl.ID, rec.Name, path)
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "replaced slot %s by %s slot %s in repository %s\n", old, sl.Kind, sl.ID, rec.Name)
			return err
		}),
	})

	var output string
	export := unlockFlag(&cobra.Command{
		Use:   "export NAME [--output FILE]",
		Short: "Print (or write to a new 0600 file) the master key for escrow; it opens the repository as a password file does",
		Args:  cobra.ExactArgs(1),
		RunE: keyed(func(cmd *cobra.Command, _ *repository.Registry, rec *catalog.Repository, r *repository.Repository) error {
			k, err := r.ExportKey()
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "warning: whoever holds this key reads every backup of repository %s; keep it offline.\n"+
				"To use it, put it in a file and give it as --password-file (repo key add %s --password-file F --new-password-file G).\n", rec.Name, rec.Name)
			if output == "" {
				_, err = fmt.Fprintln(e.stdout, k)
				return err
			}
			f, err := os.OpenFile(output, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("export key: %w", err)
			}
			if _, err := fmt.Fprintln(f, k); err != nil {
				_ = f.Close()
				return fmt.Errorf("export key: %w", err)
			}
			return f.Close()
		}),
	})
	export.Flags().StringVar(&output, "output", "", "write the key to this new file (0600) instead of standard output")

	cmd.AddCommand(list, add, remove, change, export)
	return cmd
}
