// Package sources holds the agent's connections to its configured vCenter/ESXi endpoints:
// connected lazily, reused, and reconnected after a failure. Each source also opens snapshot
// disks through its configured transport.
package sources

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
	"sync"

	"github.com/sendense/sendense/agent/internal/backup"
	"github.com/sendense/sendense/agent/internal/config"
	"github.com/sendense/sendense/agent/internal/disk"
	"github.com/sendense/sendense/agent/internal/vsphere"
	"github.com/sendense/sendense/shared/api"
)

// ErrUnknownSource is returned for a source name the agent is not configured with.
var ErrUnknownSource = errors.New("source not configured on this agent")

// Set is the agent's sources by name.
type Set struct {
	byName map[string]*Conn
	names  []string
}

// New prepares the configured sources; nothing connects until first use.
func New(cfgs []config.Source, workDir string, log *slog.Logger) *Set {
	s := &Set{byName: map[string]*Conn{}}
	for _, c := range cfgs {
		s.byName[c.Name] = &Conn{cfg: c, workDir: workDir, log: log.With("source", c.Name)}
		s.names = append(s.names, c.Name)
	}
	return s
}

// All returns every source in configuration order.
func (s *Set) All() []*Conn {
	out := make([]*Conn, 0, len(s.names))
	for _, n := range s.names {
		out = append(out, s.byName[n])
	}
	return out
}

// Get returns the source with that name.
func (s *Set) Get(name string) (*Conn, error) {
	c, ok := s.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownSource, name)
	}
	return c, nil
}

// Lookup resolves a job's source for the backup runner.
func (s *Set) Lookup(name string) (backup.Source, backup.Transport, error) {
	c, err := s.Get(name)
	if err != nil {
		return nil, nil, err
	}
	return c, c, nil
}

// Close logs out of every connected source.
func (s *Set) Close(ctx context.Context) {
	for _, c := range s.byName {
		c.Close(ctx)
	}
}

// Conn is one source. It is safe for concurrent use.
type Conn struct {
	cfg     config.Source
	workDir string
	log     *slog.Logger

	mu     sync.Mutex
	client *vsphere.Client
}

// Name is the source's configured name.
func (c *Conn) Name() string { return c.cfg.Name }

// Client returns the connected vSphere client, connecting on first use or after Close.
func (c *Conn) Client(ctx context.Context) (*vsphere.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client != nil {
		return c.client, nil
	}
	pw, err := c.cfg.Password()
	if err != nil {
		return nil, err
	}
	if c.cfg.Insecure {
		c.log.Warn("TLS verification of this vCenter/ESXi is OFF (insecure: true); use a thumbprint or ca_file outside labs")
	}
	cl, err := vsphere.Connect(ctx, vsphere.Config{
		Name: c.cfg.Name, URL: c.cfg.URL, Username: c.cfg.Username, Password: pw,
		Thumbprint: c.cfg.Thumbprint, CAFile: c.cfg.CAFile, Insecure: c.cfg.Insecure, Datacenters: c.cfg.Datacenters,
	}, c.log)
	if err != nil {
		return nil, err
	}
	c.client = cl
	return cl, nil
}

// Close logs out; the next use connects again.
func (c *Conn) Close(ctx context.Context) {
	c.mu.Lock()
	cl := c.client
	c.client = nil
	c.mu.Unlock()
	if cl != nil {
		_ = cl.Close(ctx)
	}
}

// Inventory reads the source's complete inventory. A failure drops the connection so that the
// next attempt connects afresh (the endpoint may have restarted).
func (c *Conn) Inventory(ctx context.Context) (api.Inventory, error) {
	cl, err := c.Client(ctx)
	if err != nil {
		return api.Inventory{}, err
	}
	inv, err := cl.Inventory(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.Close(context.WithoutCancel(ctx))
		}
		return api.Inventory{}, err
	}
	inv.Source.Name = c.cfg.Name
	if inv.Source.URL == "" {
		inv.Source.URL = c.cfg.URL
	}
	return inv, nil
}

// FindVM implements backup.Source.
func (c *Conn) FindVM(ctx context.Context, instanceUUID string) (*vsphere.VM, error) {
	cl, err := c.Client(ctx)
	if err != nil {
		return nil, err
	}
	return cl.FindVM(ctx, instanceUUID)
}

// DatastoreHTTP implements backup.Source.
func (c *Conn) DatastoreHTTP(ctx context.Context, dcPath, datastore, path string) (string, *http.Client, error) {
	cl, err := c.Client(ctx)
	if err != nil {
		return "", nil, err
	}
	return cl.DatastoreHTTP(ctx, dcPath, datastore, path)
}

// Snapshots lists snapshots whose names start with prefix (for the reaper).
func (c *Conn) Snapshots(ctx context.Context, prefix string) ([]vsphere.SnapshotInfo, error) {
	cl, err := c.Client(ctx)
	if err != nil {
		return nil, err
	}
	return cl.Snapshots(ctx, prefix)
}

// RemoveSnapshotByRef removes one snapshot (for the reaper).
func (c *Conn) RemoveSnapshotByRef(ctx context.Context, vmUUID, ref string) error {
	cl, err := c.Client(ctx)
	if err != nil {
		return err
	}
	return cl.RemoveSnapshotByRef(ctx, vmUUID, ref)
}

// Open implements backup.Transport: it opens a snapshot disk with the source's transport.
func (c *Conn) Open(ctx context.Context, snap *vsphere.Snapshot, d vsphere.SnapshotDisk) (disk.Reader, error) {
	switch c.cfg.Transport {
	case "", "https":
		u, hc, err := c.dataFileURL(ctx, d)
		if err != nil {
			return nil, err
		}
		return disk.OpenHTTP(ctx, hc, u, d.CapacityBytes, nil)
	case "file":
		dir, ok := c.cfg.DatastorePaths[d.Datastore]
		if !ok {
			return nil, fmt.Errorf("the file transport has no local path for datastore %q (datastore_paths)", d.Datastore)
		}
		if d.DataFile == "" {
			return nil, fmt.Errorf("disk %s is not one plain file (%s); use the nbd transport with VDDK", d.DiskID, d.BackingType)
		}
		return disk.OpenFile(filepath.Join(dir, filepath.FromSlash(d.DataFile)))
	case "nbd":
		return c.openNBD(ctx, snap, d)
	default:
		return nil, fmt.Errorf("unknown transport %q", c.cfg.Transport)
	}
}

func (c *Conn) dataFileURL(ctx context.Context, d vsphere.SnapshotDisk) (string, *http.Client, error) {
	if d.DataFile == "" {
		return "", nil, fmt.Errorf("disk %s is not one plain file (%s); use the nbd transport with VDDK", d.DiskID, d.BackingType)
	}
	return c.DatastoreHTTP(ctx, d.DatacenterPath, d.Datastore, d.DataFile)
}

// openNBD starts nbdkit for one disk and returns a reader that stops it on Close.
func (c *Conn) openNBD(ctx context.Context, snap *vsphere.Snapshot, d vsphere.SnapshotDisk) (disk.Reader, error) {
	opts := disk.NBDKitOptions{Dir: c.workDir, Log: c.log}
	switch c.cfg.NBD.Plugin {
	case "curl":
		u, hc, err := c.dataFileURL(ctx, d)
		if err != nil {
			return nil, err
		}
		opts.Plugin = "curl"
		opts.Args = []string{"url=" + u}
		switch {
		case c.cfg.Insecure:
			opts.Args = append(opts.Args, "sslverify=false")
		case c.cfg.CAFile != "":
			opts.Args = append(opts.Args, "cainfo="+c.cfg.CAFile)
		default:
			return nil, errors.New("the nbd curl plugin needs ca_file (or insecure) to verify the source")
		}
		if pu, err := url.Parse(u); err == nil && hc.Jar != nil {
			var parts []string
			for _, ck := range hc.Jar.Cookies(pu) {
				parts = append(parts, ck.Name+"="+ck.Value)
			}
			if len(parts) > 0 {
				opts.Args = append(opts.Args, "cookie="+strings.Join(parts, "; "))
			}
		}
	case "vddk":
		u, err := url.Parse(c.cfg.URL)
		if err != nil {
			return nil, err
		}
		opts.Plugin = "vddk"
		opts.Args = []string{
			"libdir=" + c.cfg.NBD.LibDir, "server=" + u.Hostname(), "user=" + c.cfg.Username,
			"password=+" + c.cfg.PasswordFile, "vm=moref=" + snap.VM().MoRef(), "snapshot=" + snap.MoRef(),
			"file=" + d.FileName,
		}
		if tp := vddkThumbprint(c.cfg.Thumbprint); tp != "" {
			opts.Args = append(opts.Args, "thumbprint="+tp)
		}
		if c.cfg.NBD.Transports != "" {
			opts.Args = append(opts.Args, "transports="+c.cfg.NBD.Transports)
		}
	default:
		return nil, fmt.Errorf("unknown nbd plugin %q", c.cfg.NBD.Plugin)
	}
	kit, err := disk.StartNBDKit(ctx, opts)
	if err != nil {
		return nil, err
	}
	r, err := kit.Open(ctx)
	if err != nil {
		_ = kit.Close()
		return nil, err
	}
	return &kitReader{Reader: r, kit: kit}, nil
}

// vddkThumbprint gives VDDK the SHA-1 colon form it expects; a SHA-256 pin cannot be converted
// and is left to vSphere's own verification.
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

type kitReader struct {
	disk.Reader
	kit *disk.NBDKit
}

func (k *kitReader) Close() error {
	err := k.Reader.Close()
	if kerr := k.kit.Close(); err == nil {
		err = kerr
	}
	return err
}
