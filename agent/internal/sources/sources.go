// Package sources holds the agent's connections to its configured vCenter/ESXi endpoints:
// connected lazily, reused, and reconnected after a failure, each with its configuration.
// The consumers (discovery, backup, the snapshot reaper) declare what they need of a source.
package sources

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

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

// FindVM finds a VM by its instance UUID.
func (c *Conn) FindVM(ctx context.Context, instanceUUID string) (*vsphere.VM, error) {
	cl, err := c.Client(ctx)
	if err != nil {
		return nil, err
	}
	return cl.FindVM(ctx, instanceUUID)
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

// OpenDisk opens a snapshot disk with the source's configured transport (package disk owns
// how the bytes are read; this maps the source's configuration onto it).
func (c *Conn) OpenDisk(ctx context.Context, d vsphere.SnapshotDisk) (disk.Reader, error) {
	verified := ""
	c.mu.Lock()
	if c.client != nil {
		verified = c.client.VerifiedThumbprintSHA1()
	}
	c.mu.Unlock()
	t := disk.Transport{
		Name:           c.cfg.Transport,
		DatastoreHTTP:  c.datastoreHTTP,
		DatastorePaths: c.cfg.DatastorePaths,
		ReadHoles:      c.cfg.ReadHoles,
		NBD: disk.NBDTransport{
			Plugin: c.cfg.NBD.Plugin, Dir: c.workDir, Log: c.log,
			Insecure: c.cfg.Insecure, CAFile: c.cfg.CAFile,
			SourceURL: c.cfg.URL, User: c.cfg.Username, PasswordFile: c.cfg.PasswordFile, Thumbprint: c.cfg.Thumbprint,
			VerifiedSHA1: verified,
			LibDir:       c.cfg.NBD.LibDir, Transports: c.cfg.NBD.Transports,
		},
	}
	return disk.Open(ctx, t, disk.Disk{
		ID: d.DiskID, BackingType: d.BackingType, Size: d.CapacityBytes,
		DatacenterPath: d.DatacenterPath, Datastore: d.Datastore, DataFile: d.DataFile,
		FileName: d.FileName, VMMoRef: d.VMMoRef, SnapshotMoRef: d.SnapshotMoRef,
	})
}

// datastoreHTTP is the datastore file access of the connected client.
func (c *Conn) datastoreHTTP(ctx context.Context, dcPath, datastore, path string) (string, *http.Client, error) {
	cl, err := c.Client(ctx)
	if err != nil {
		return "", nil, err
	}
	return cl.DatastoreHTTP(ctx, dcPath, datastore, path)
}
