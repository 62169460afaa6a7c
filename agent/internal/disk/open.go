package disk

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
)

// Transport is how one source's disks are read: the source's configured transport and what
// that transport needs. It knows nothing of vSphere itself; the datastore HTTP access comes in
// as a function so that this package stays free of govmomi.
type Transport struct {
	// Name is "https" (also ""), "nbd" or "file".
	Name string
	// DatastoreHTTP returns the URL of a datastore file and the HTTP client that carries the
	// source's session and TLS settings (https transport, nbd curl plugin).
	DatastoreHTTP func(ctx context.Context, dcPath, datastore, path string) (string, *http.Client, error)
	// DatastorePaths maps datastore names to local directories (file transport).
	DatastorePaths map[string]string
	// ReadHoles makes the file transport read the holes of sparse disk files instead of
	// skipping what SEEK_DATA calls a hole.
	ReadHoles bool
	// NBD configures the nbd transport.
	NBD NBDTransport
}

// NBDTransport configures the nbd transport: which nbdkit plugin serves the disk, and what
// that plugin needs to reach the source.
type NBDTransport struct {
	// Plugin is "vddk" (production) or "curl" (the datastore file over HTTPS; labs).
	Plugin string
	// Dir holds nbdkit's socket and pidfile (see NBDKitOptions.Dir).
	Dir string
	// Log receives nbdkit's lifecycle and stderr.
	Log *slog.Logger
	// Insecure and CAFile say how the curl plugin verifies the source; one is required.
	Insecure bool
	CAFile   string
	// SourceURL is the source's SDK URL; vddk's server= is its host name.
	SourceURL string
	// User and PasswordFile are the source's credentials; vddk reads the password from the
	// file (password=+FILE), so it is never on a command line.
	User         string
	PasswordFile string
	// Thumbprint is the source's certificate pin as configured; vddk gets it only in SHA-1
	// form. VerifiedSHA1 is the SHA-1 thumbprint of the certificate the agent's own connection
	// verified (against a SHA-256 pin, a CA file or the system roots): vddk gets it when the pin
	// is not SHA-1, so that VDDK checks the server too.
	Thumbprint   string
	VerifiedSHA1 string
	// LibDir is the VDDK directory; Transports the VDDK transport order ("nbdssl:nbd").
	LibDir     string
	Transports string
}

// Disk is one snapshot disk in the terms the transports address it by.
type Disk struct {
	// ID ("disk-2000") and BackingType name the disk in errors.
	ID          string
	BackingType string
	// Size is the disk's capacity in bytes.
	Size int64
	// DatacenterPath and Datastore locate the datastore; DataFile is the datastore-relative
	// path of the file holding the raw bytes, "" when they are not in one plain file (delta,
	// sparse, RDM): then only vddk can read the disk.
	DatacenterPath string
	Datastore      string
	DataFile       string
	// FileName ("[ds] vm/vm.vmdk"), VMMoRef and SnapshotMoRef are what vddk opens: the
	// snapshot's own disk, the frozen point in time.
	FileName      string
	VMMoRef       string
	SnapshotMoRef string
}

// Open opens d with transport t. The Reader's Close releases everything Open started (for nbd,
// the nbdkit process).
func Open(ctx context.Context, t Transport, d Disk) (Reader, error) {
	switch t.Name {
	case "", "https":
		u, hc, err := t.dataFileURL(ctx, d)
		if err != nil {
			return nil, err
		}
		return OpenHTTP(ctx, hc, u, d.Size, nil)
	case "file":
		dir, ok := t.DatastorePaths[d.Datastore]
		if !ok {
			return nil, fmt.Errorf("the file transport has no local path for datastore %q (datastore_paths)", d.Datastore)
		}
		if d.DataFile == "" {
			return nil, notPlainFile(d)
		}
		return openFile(filepath.Join(dir, filepath.FromSlash(d.DataFile)), t.ReadHoles)
	case "nbd":
		opts, err := t.nbdkitOptions(ctx, d)
		if err != nil {
			return nil, err
		}
		return openNBDKit(ctx, opts)
	default:
		return nil, fmt.Errorf("unknown transport %q", t.Name)
	}
}

func notPlainFile(d Disk) error {
	return fmt.Errorf("disk %s is not one plain file (%s); use the nbd transport with VDDK", d.ID, d.BackingType)
}

func (t Transport) dataFileURL(ctx context.Context, d Disk) (string, *http.Client, error) {
	if d.DataFile == "" {
		return "", nil, notPlainFile(d)
	}
	if t.DatastoreHTTP == nil {
		return "", nil, errors.New("the source offers no datastore HTTP access")
	}
	return t.DatastoreHTTP(ctx, d.DatacenterPath, d.Datastore, d.DataFile)
}

// nbdkitOptions builds the nbdkit command for one disk. It resolves the datastore URL for the
// curl plugin, which needs the source's session; vddk logs in itself.
func (t Transport) nbdkitOptions(ctx context.Context, d Disk) (NBDKitOptions, error) {
	n := t.NBD
	opts := NBDKitOptions{Dir: n.Dir, Log: n.Log}
	switch n.Plugin {
	case "curl":
		u, hc, err := t.dataFileURL(ctx, d)
		if err != nil {
			return opts, err
		}
		opts.Plugin = "curl"
		opts.Args = []string{"url=" + u}
		switch {
		case n.Insecure:
			opts.Args = append(opts.Args, "sslverify=false")
		case n.CAFile != "":
			opts.Args = append(opts.Args, "cainfo="+n.CAFile)
		default:
			return opts, errors.New("the nbd curl plugin needs ca_file (or insecure) to verify the source")
		}
		// The session cookie lets nbdkit read as the agent's logged-in session (real ESXi
		// refuses /folder without it); "cookie" is a secret key, never logged.
		if pu, err := url.Parse(u); err == nil && hc != nil && hc.Jar != nil {
			var parts []string
			for _, ck := range hc.Jar.Cookies(pu) {
				parts = append(parts, ck.Name+"="+ck.Value)
			}
			if len(parts) > 0 {
				opts.SecretFiles = map[string]string{"cookie": strings.Join(parts, "; ")}
			}
		}
	case "vddk":
		u, err := url.Parse(n.SourceURL)
		if err != nil {
			return opts, fmt.Errorf("parse source url: %w", err)
		}
		opts.Plugin = "vddk"
		opts.Args = []string{
			"libdir=" + n.LibDir, "server=" + u.Hostname(), "user=" + n.User,
			"password=+" + n.PasswordFile, "vm=moref=" + d.VMMoRef, "snapshot=" + d.SnapshotMoRef,
			"file=" + d.FileName,
		}
		tp := vddkThumbprint(n.Thumbprint)
		if tp == "" {
			tp = n.VerifiedSHA1
		}
		if tp != "" {
			opts.Args = append(opts.Args, "thumbprint="+tp)
		}
		if n.Transports != "" {
			opts.Args = append(opts.Args, "transports="+n.Transports)
		}
	default:
		return opts, fmt.Errorf("unknown nbd plugin %q", n.Plugin)
	}
	return opts, nil
}

// vddkThumbprint gives VDDK the SHA-1 colon form it expects; a SHA-256 pin cannot be converted
// ("": NBDTransport.VerifiedSHA1 serves instead).
func vddkThumbprint(tp string) string {
	clean := strings.ToUpper(strings.NewReplacer(":", "", " ", "").Replace(tp))
	if len(clean) != 2*sha1.Size {
		return ""
	}
	var b strings.Builder
	for i := 0; i < len(clean); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(clean[i : i+2])
	}
	return b.String()
}

// openNBDKit starts nbdkit for one disk and returns a reader that stops it on Close: one
// nbdkit per disk, so a reader owns its process.
func openNBDKit(ctx context.Context, opts NBDKitOptions) (Reader, error) {
	kit, err := StartNBDKit(ctx, opts)
	if err != nil {
		return nil, err
	}
	r, err := kit.Open(ctx)
	if err != nil {
		_ = kit.Close()
		return nil, err
	}
	return &ownedKitReader{Reader: r, kit: kit}, nil
}

// ownedKitReader is a Reader whose Close also stops the nbdkit serving it.
type ownedKitReader struct {
	Reader
	kit *NBDKit
}

var _ Reader = (*ownedKitReader)(nil)

func (k *ownedKitReader) Close() error {
	err := k.Reader.Close()
	if kerr := k.kit.Close(); err == nil {
		err = kerr
	}
	return err
}
