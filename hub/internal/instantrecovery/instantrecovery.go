// Package instantrecovery runs instant-recovery sessions: a restore point served over NFS as
// a datastore (through nfsexport) to one ESXi host, where the agent of the VM's source mounts
// it, registers the VM and boots it, and later undoes all of it. The session's state is in the
// catalog, so a hub restart serves the active sessions again.
package instantrecovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/nfsexport"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/shared/api"
)

// ErrUnsupported: the restore point's configuration has a device the generated .vmx cannot
// describe.
var ErrUnsupported = errors.New("unsupported device for instant recovery")

// irCatalog is what sessions need from the catalog.
type irCatalog interface {
	BackupByID(ctx context.Context, id string) (*catalog.BackupRow, error)
	BackupDisks(ctx context.Context, backupID string) ([]catalog.BackupDisk, error)
	VMByContextID(ctx context.Context, contextID string) (*catalog.VMWithSource, error)
	SourceByName(ctx context.Context, name string) (*catalog.Source, error)
	CreateInstantRecovery(ctx context.Context, r *catalog.InstantRecovery) error
	InstantRecoveryByID(ctx context.Context, id string) (*catalog.InstantRecovery, error)
	InstantRecoveries(ctx context.Context, f catalog.InstantRecoveryFilter) ([]catalog.InstantRecovery, int, error)
	ActiveInstantRecoveries(ctx context.Context) ([]catalog.InstantRecovery, error)
	ClaimInstantRecovery(ctx context.Context, agentID string, staleBefore time.Time, busy []string) (*catalog.InstantRecovery, error)
	FinishInstantRecoveryAction(ctx context.Context, id, agentID, action string, u catalog.InstantRecoveryUpdate) (*catalog.InstantRecovery, error)
	StopInstantRecovery(ctx context.Context, id string) (*catalog.InstantRecovery, error)
	MigrateInstantRecovery(ctx context.Context, id, datastore string) (*catalog.InstantRecovery, error)
	FailInstantRecovery(ctx context.Context, id, reason string) error
	CountInstantRecoveriesByStatus(ctx context.Context) (map[string]int, error)
}

// images opens the disks of restore points (restore.Service).
type images interface {
	Open(ctx context.Context, backupID, diskID string) (*restore.Image, restore.Disk, error)
}

// vmConfigs reads a restore point's VM configuration (jobs.Service).
type vmConfigs interface {
	VMConfig(ctx context.Context, backupID string) (api.VMConfig, error)
}

// exporter serves sessions over NFS (nfsexport.Server). Add and Remove are idempotent in
// effect: Remove with drop deletes the folder and overlay whether or not it is served.
type exporter interface {
	Add(e nfsexport.Export) error
	Remove(id string, drop bool) error
	Overlays() map[string]int64
	DropExcept(keep map[string]bool) ([]string, error)
}

// poller long-polls for an agent with the jobs' wake-ups (jobs.Service).
type poller interface {
	Poll(ctx context.Context, agentID string, wait time.Duration, claim func() (bool, error)) error
	Wake(agentID string)
}

// Options configure the service; zero fields select the defaults.
type Options struct {
	// NFSAddress is the hub's address as the ESXi hosts reach its NFS server (no port: ESXi
	// mounts NFSv3 on 2049). Required.
	NFSAddress string
	// OverlayLimit bounds each session's overlay; default 64 GiB.
	OverlayLimit int64
	// ClaimTimeout is how long an agent has to report an action it claimed before it is handed
	// out again; default 10 minutes (a registration or power-on takes seconds).
	ClaimTimeout time.Duration
	// Resolve finds an ESXi host's addresses; default the system resolver.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	Now     func() time.Time
}

// Service starts, lists and stops sessions, and hands their actions to agents.
type Service struct {
	cat     irCatalog
	img     images
	cfgs    vmConfigs
	exp     exporter
	poll    poller
	log     *slog.Logger
	opts    Options
	metrics *metrics
}

// New returns the service; its metrics are registered on reg unless reg is nil.
func New(cat irCatalog, img images, cfgs vmConfigs, exp exporter, poll poller, log *slog.Logger, reg prometheus.Registerer, opts Options) *Service {
	if opts.OverlayLimit <= 0 {
		opts.OverlayLimit = 64 << 30
	}
	if opts.ClaimTimeout <= 0 {
		opts.ClaimTimeout = 10 * time.Minute
	}
	if opts.Resolve == nil {
		opts.Resolve = resolve
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Service{cat: cat, img: img, cfgs: cfgs, exp: exp, poll: poll, log: log, opts: opts}
	s.metrics = newMetrics(s, reg)
	return s
}

func resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.Unmap())
	}
	return out, nil
}

// spec is what the catalog keeps of a request, beyond its columns.
type spec struct {
	NetworkMap map[string]string `json:"network_map,omitempty"`
	PowerOn    bool              `json:"power_on"`
	Folder     string            `json:"folder"`
	// Allowed are the host's addresses when the session started: a restart serves the same
	// clients even if the name resolves differently by then.
	Allowed []string `json:"allowed"`
	// Boot asks the agent to wait for the guest's boot after the start (a restore test's boot
	// check).
	Boot *api.InstantRecoveryBootWait `json:"boot,omitempty"`
}

// Start validates a request, records the session, starts serving its export and queues the
// start for the agent. The export is served before the agent hears of the session.
func (s *Service) Start(ctx context.Context, req api.InstantRecoveryRequest) (api.InstantRecovery, error) {
	return s.start(ctx, req, nil)
}

// StartBoot starts a session like Start whose agent, once the VM runs, waits for its guest to
// boot as w asks and reports what it saw (api.InstantRecovery.Boot).
func (s *Service) StartBoot(ctx context.Context, req api.InstantRecoveryRequest, w api.InstantRecoveryBootWait) (api.InstantRecovery, error) {
	if err := w.Validate(); err != nil {
		return api.InstantRecovery{}, err
	}
	return s.start(ctx, req, &w)
}

func (s *Service) start(ctx context.Context, req api.InstantRecoveryRequest, boot *api.InstantRecoveryBootWait) (api.InstantRecovery, error) {
	if err := req.Normalize(); err != nil {
		return api.InstantRecovery{}, err
	}
	row, err := s.cat.BackupByID(ctx, req.BackupID)
	if errors.Is(err, catalog.ErrNotFound) {
		return api.InstantRecovery{}, &api.FieldError{Field: "backup_id", Msg: fmt.Sprintf("no backup %q", req.BackupID)}
	}
	if err != nil {
		return api.InstantRecovery{}, err
	}
	if row.Status != api.JobSucceeded {
		return api.InstantRecovery{}, fmt.Errorf("backup %s is %s: %w: only a succeeded backup is a restore point", row.ID, row.Status, catalog.ErrConflict)
	}
	cfg, err := s.cfgs.VMConfig(ctx, row.ID)
	if err != nil {
		return api.InstantRecovery{}, err
	}
	nets := map[string]bool{}
	for _, n := range cfg.NICs {
		nets[n.Network] = true
	}
	for from := range req.NetworkMap {
		if !nets[from] {
			return api.InstantRecovery{}, &api.FieldError{Field: "network_map", Msg: fmt.Sprintf("no NIC of the backed-up VM is on network %q", from)}
		}
	}
	agentID, source, err := s.agentFor(ctx, row, req.Source)
	if err != nil {
		return api.InstantRecovery{}, err
	}
	addrs, err := s.hostAddrs(ctx, req.Host)
	if err != nil {
		return api.InstantRecovery{}, err
	}
	sp := spec{NetworkMap: req.NetworkMap, PowerOn: req.PowerOn, Folder: folderName(req.Name), Boot: boot}
	for _, a := range addrs {
		sp.Allowed = append(sp.Allowed, a.String())
	}
	b, err := json.Marshal(sp)
	if err != nil {
		return api.InstantRecovery{}, fmt.Errorf("encode instant recovery: %w", err)
	}
	r := &catalog.InstantRecovery{
		ID: catalog.NewID(api.InstantRecoveryIDPrefix, s.opts.Now()), BackupID: row.ID, AgentID: agentID,
		SourceName: source, Host: req.Host, Name: req.Name, Spec: string(b),
	}
	// The export is made before the row names it, so no agent mounts a folder not yet there;
	// a failure between the two drops the folder again.
	if err := s.export(ctx, r, cfg, sp); err != nil {
		_ = s.exp.Remove(r.ID, true)
		return api.InstantRecovery{}, err
	}
	if err := s.cat.CreateInstantRecovery(ctx, r); err != nil {
		_ = s.exp.Remove(r.ID, true)
		return api.InstantRecovery{}, err
	}
	s.log.InfoContext(ctx, "instant recovery started", "session_id", r.ID, "backup_id", row.ID, "agent_id", agentID,
		"host", req.Host, "vm_name", req.Name, "allowed", sp.Allowed)
	s.poll.Wake(agentID)
	return s.Get(ctx, r.ID)
}

// CheckHost reports whether the hub finds the addresses of an ESXi host, which a session on it
// needs (only they may mount its export): nil, or an *api.FieldError naming host. It looks the
// name up now; a later start looks it up again.
func (s *Service) CheckHost(ctx context.Context, host string) error {
	_, err := s.hostAddrs(ctx, host)
	return err
}

func (s *Service) hostAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	addrs, err := s.opts.Resolve(ctx, host)
	if err == nil && len(addrs) == 0 {
		err = errors.New("no address")
	}
	if err != nil {
		return nil, &api.FieldError{Field: "host", Msg: fmt.Sprintf("cannot find the address of ESXi host %q (only its addresses may mount the export): %v", host, err)}
	}
	return addrs, nil
}

// agentFor names the agent and source that carry out a session: the named source's, else the
// backed-up VM's.
func (s *Service) agentFor(ctx context.Context, row *catalog.BackupRow, source string) (string, string, error) {
	if source != "" {
		src, err := s.cat.SourceByName(ctx, source)
		if errors.Is(err, catalog.ErrNotFound) {
			return "", "", &api.FieldError{Field: "source", Msg: fmt.Sprintf("no source named %q (see sendense-hub sources list)", source)}
		}
		if err != nil {
			return "", "", err
		}
		return src.AgentID, src.Name, nil
	}
	vm, err := s.cat.VMByContextID(ctx, row.VMContextID)
	if err != nil {
		return "", "", err
	}
	return vm.AgentID, vm.SourceName, nil
}

// folderName makes a VM name a folder name the export accepts.
func folderName(name string) string {
	b := []byte(name)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok || (i == 0 && (c == '.' || c == '_' || c == '-')) {
			b[i] = 'x'
		}
	}
	if len(b) > 80 {
		b = b[:80]
	}
	return string(b)
}

// export serves session r: the .vmx and one descriptor and flat file per disk of the backup.
func (s *Service) export(ctx context.Context, r *catalog.InstantRecovery, cfg api.VMConfig, sp spec) error {
	bds, err := s.cat.BackupDisks(ctx, r.BackupID)
	if err != nil {
		return err
	}
	byID := map[string]api.VMConfigDisk{}
	for _, d := range cfg.Disks {
		byID[d.DiskID] = d
	}
	e := nfsexport.Export{ID: r.ID, Folder: sp.Folder, OverlayLimit: s.opts.OverlayLimit, Files: map[string][]byte{}}
	for _, a := range sp.Allowed {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("instant recovery %s: allowed address %q: %w", r.ID, a, err)
		}
		e.Allowed = append(e.Allowed, addr)
	}
	var disks []vmxDisk
	for i, bd := range bds {
		d, ok := byID[bd.DiskID]
		if !ok {
			return fmt.Errorf("disk %s of backup %s is not in its vm configuration: %w", bd.DiskID, r.BackupID, ErrUnsupported)
		}
		// NFS reads come through billy's context-free File API: each chunk read ends on its own.
		img, info, err := s.img.Open(context.WithoutCancel(ctx), r.BackupID, bd.DiskID)
		if err != nil {
			return err
		}
		base := sp.Folder
		if i > 0 {
			base = fmt.Sprintf("%s_%d", sp.Folder, i)
		}
		size := info.Size
		if size%512 != 0 {
			return fmt.Errorf("disk %s of backup %s: %d bytes is not a whole number of sectors: %w", bd.DiskID, r.BackupID, size, ErrUnsupported)
		}
		e.Disks = append(e.Disks, nfsexport.Disk{Name: base, Image: img.Reader(context.Background()), Size: size,
			AdapterType: descriptorAdapter(d.Controller.Type), SlotSize: img.Index().ChunkSize})
		disks = append(disks, vmxDisk{DiskID: bd.DiskID, File: base + ".vmdk", Controller: d.Controller, Unit: d.UnitNumber})
	}
	vmx, err := VMX(cfg, r.Name, "sendense instant recovery "+r.ID+" of "+r.BackupID, disks, sp.NetworkMap)
	if err != nil {
		return err
	}
	e.Files[sp.Folder+".vmx"] = vmx
	return s.exp.Add(e)
}

// Get returns one session.
func (s *Service) Get(ctx context.Context, id string) (api.InstantRecovery, error) {
	r, err := s.cat.InstantRecoveryByID(ctx, id)
	if err != nil {
		return api.InstantRecovery{}, err
	}
	return s.info(r, s.exp.Overlays()), nil
}

// ListFilter selects sessions.
type ListFilter struct {
	Status        string
	Limit, Offset int
}

// List returns sessions, newest first.
func (s *Service) List(ctx context.Context, f ListFilter) (api.InstantRecoveryList, error) {
	rows, total, err := s.cat.InstantRecoveries(ctx, catalog.InstantRecoveryFilter{Status: f.Status, Limit: f.Limit, Offset: f.Offset})
	if err != nil {
		return api.InstantRecoveryList{}, err
	}
	ov := s.exp.Overlays()
	out := api.InstantRecoveryList{InstantRecoveries: make([]api.InstantRecovery, 0, len(rows)), Page: api.Page{Limit: f.Limit, Offset: f.Offset, Total: total}}
	for i := range rows {
		out.InstantRecoveries = append(out.InstantRecoveries, s.info(&rows[i], ov))
	}
	return out, nil
}

func (s *Service) info(r *catalog.InstantRecovery, overlays map[string]int64) api.InstantRecovery {
	var sp spec
	_ = json.Unmarshal([]byte(r.Spec), &sp) // written by Start; a damaged row shows its columns only
	return api.InstantRecovery{
		ID: r.ID, Status: r.Status, NFSExport: s.opts.NFSAddress + ":" + nfsexport.Path(r.ID),
		BackupID: r.BackupID, AgentID: r.AgentID, Source: r.SourceName, Host: r.Host, Name: r.Name,
		NetworkMap: sp.NetworkMap, PowerOn: sp.PowerOn, Pending: r.Pending, TargetDatastore: r.TargetDatastore, VMRef: r.VMRef, DatastoreRef: r.DatastoreRef,
		OverlayBytes: overlays[r.ID], OverlayLimitBytes: s.opts.OverlayLimit, Error: r.Error,
		CreatedAt: r.CreatedAt, FinishedAt: r.FinishedAt, Boot: bootOf(r),
	}
}

// bootJSON checks a report's boot observation and encodes it for the catalog ("" for none).
// Only a start reports one.
func bootJSON(rep api.InstantRecoveryReport) (string, error) {
	b := rep.Boot
	if b == nil {
		return "", nil
	}
	switch {
	case rep.Action != api.IRActionStart:
		return "", &api.FieldError{Field: "boot", Msg: "only a start reports a boot"}
	case b.Signal != "" && b.Signal != api.BootSignalTools && b.Signal != api.BootSignalTCP:
		return "", &api.FieldError{Field: "boot.signal", Msg: fmt.Sprintf("must be %s, %s or empty", api.BootSignalTools, api.BootSignalTCP)}
	case b.Signal == "" && b.Reason == "":
		return "", &api.FieldError{Field: "boot.reason", Msg: "a boot without a signal needs the reason"}
	case b.Seconds < 0 || b.Seconds > 7*24*3600:
		return "", &api.FieldError{Field: "boot.seconds", Msg: "must be between 0 and a week"}
	case len(b.IP) > 64:
		return "", &api.FieldError{Field: "boot.ip", Msg: "longer than 64 characters"}
	}
	c := *b
	if len(c.Reason) > 4096 {
		c.Reason = c.Reason[:4096]
	}
	out, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("encode boot of instant recovery: %w", err)
	}
	return string(out), nil
}

func bootOf(r *catalog.InstantRecovery) *api.InstantRecoveryBoot {
	if r.Boot == "" {
		return nil
	}
	var b api.InstantRecoveryBoot
	if json.Unmarshal([]byte(r.Boot), &b) != nil {
		return nil
	}
	return &b
}

// Stop asks the agent to power the VM off, unregister it and unmount the export; the overlay
// is dropped when the agent reports the stop done. Stopping a session that is stopping or over
// changes nothing.
func (s *Service) Stop(ctx context.Context, id string) (api.InstantRecovery, error) {
	r, err := s.cat.StopInstantRecovery(ctx, id)
	if err != nil {
		return api.InstantRecovery{}, err
	}
	s.log.InfoContext(ctx, "instant recovery stop requested", "session_id", id, "status", r.Status)
	s.poll.Wake(r.AgentID)
	return s.info(r, s.exp.Overlays()), nil
}

// Migrate asks the agent to move a running session's VM to a production datastore with
// Storage vMotion and then unmount the export; the overlay is dropped when the agent reports
// the move done. Only a running session with nothing pending migrates (else catalog.ErrConflict).
func (s *Service) Migrate(ctx context.Context, id string, req api.InstantRecoveryMigrateRequest) (api.InstantRecovery, error) {
	if strings.TrimSpace(req.Datastore) == "" || len(req.Datastore) > 255 || strings.ContainsAny(req.Datastore, "[]\x00\n") {
		return api.InstantRecovery{}, &api.FieldError{Field: "datastore", Msg: "must name a datastore (at most 255 characters, no brackets)"}
	}
	r, err := s.cat.MigrateInstantRecovery(ctx, id, req.Datastore)
	if err != nil {
		return api.InstantRecovery{}, err
	}
	s.log.InfoContext(ctx, "instant recovery migration requested", "session_id", id, "datastore", req.Datastore)
	s.poll.Wake(r.AgentID)
	return s.info(r, s.exp.Overlays()), nil
}

// Next waits up to wait for an action of the agent's sessions and claims it. An action claimed
// longer than the claim timeout ago is handed out again, unless busy (the sessions the agent
// is carrying an action of out) names its session.
func (s *Service) Next(ctx context.Context, agentID string, busy []string, wait time.Duration) (*api.InstantRecoveryJob, error) {
	var out *api.InstantRecoveryJob
	err := s.poll.Poll(ctx, agentID, wait, func() (bool, error) {
		// A session started with the command line is served before its start is handed out.
		if _, err := s.Sync(ctx); err != nil {
			return false, err
		}
		r, err := s.cat.ClaimInstantRecovery(ctx, agentID, s.opts.Now().Add(-s.opts.ClaimTimeout), busy)
		if err != nil || r == nil {
			return false, err
		}
		var sp spec
		if err := json.Unmarshal([]byte(r.Spec), &sp); err != nil {
			return false, fmt.Errorf("instant recovery %s: decode spec: %w", r.ID, err)
		}
		out = &api.InstantRecoveryJob{
			ID: r.ID, Action: r.Pending, Source: r.SourceName, Host: r.Host, NFSServer: s.opts.NFSAddress, NFSPath: nfsexport.Path(r.ID),
			VMX: sp.Folder + "/" + sp.Folder + ".vmx", Name: r.Name, NetworkMap: sp.NetworkMap, PowerOn: sp.PowerOn,
			Datastore: r.TargetDatastore,
		}
		if r.Pending == api.IRActionStart {
			out.Boot = sp.Boot
		}
		s.log.InfoContext(ctx, "instant recovery action claimed", "session_id", r.ID, "agent_id", agentID, "action", r.Pending)
		return true, nil
	})
	return out, err
}

// State tells the agent whether a stop of its session is pending (JobState.CancelRequested), so
// that a start still waiting for its guest ends the wait and the stop is handed out. Only the
// session's agent may ask (else catalog.ErrNotYours); the answer changes nothing.
func (s *Service) State(ctx context.Context, agentID, id string) (api.JobState, error) {
	r, err := s.cat.InstantRecoveryByID(ctx, id)
	if err != nil {
		return api.JobState{}, err
	}
	if r.AgentID != agentID {
		return api.JobState{}, fmt.Errorf("instant recovery %s: %w", id, catalog.ErrNotYours)
	}
	return api.JobState{ID: r.ID, Status: r.Status, CancelRequested: r.Pending == api.IRActionStop}, nil
}

// Complete records the outcome of an action of the agent. A start that failed is followed by
// a stop, so that whatever it made on the host is undone before the session counts as failed;
// a stop that failed is handed out again after the claim timeout; a stop or a migration done
// drops the session's folder and overlay; a migration that failed leaves the session running.
func (s *Service) Complete(ctx context.Context, agentID, id string, rep api.InstantRecoveryReport) (api.InstantRecovery, error) {
	switch rep.Status {
	case api.JobSucceeded, api.JobFailed:
	default:
		return api.InstantRecovery{}, &api.FieldError{Field: "status", Msg: "must be succeeded or failed"}
	}
	for _, f := range []struct{ name, v string }{{"vm_ref", rep.VMRef}, {"datastore_ref", rep.DatastoreRef}} {
		if len(f.v) > 255 || strings.IndexFunc(f.v, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
			return api.InstantRecovery{}, &api.FieldError{Field: f.name, Msg: "must be a managed object reference: at most 255 printable ASCII characters"}
		}
	}
	rep.Error = api.DisplayText(rep.Error, 4096)
	boot, err := bootJSON(rep)
	if err != nil {
		return api.InstantRecovery{}, err
	}
	cur, err := s.cat.InstantRecoveryByID(ctx, id)
	if err != nil {
		return api.InstantRecovery{}, err
	}
	if cur.AgentID != agentID {
		return api.InstantRecovery{}, fmt.Errorf("instant recovery %s: %w", id, catalog.ErrNotYours)
	}
	u := catalog.InstantRecoveryUpdate{VMRef: rep.VMRef, DatastoreRef: rep.DatastoreRef, Error: rep.Error, Boot: boot}
	switch {
	case rep.Action == api.IRActionStart && rep.Status == api.JobSucceeded:
		u.Status = api.IRRunning
	case rep.Action == api.IRActionStart:
		u.Status, u.Pending = api.IRStopping, api.IRActionStop
		if u.Error == "" {
			u.Error = "start failed"
		}
	case rep.Action == api.IRActionStop && rep.Status == api.JobSucceeded:
		u.Status = api.IRStopped
		if cur.Error != "" {
			u.Status = api.IRFailed
		}
	case rep.Action == api.IRActionStop:
		u.Status, u.Pending = api.IRStopping, api.IRActionStop
	case rep.Action == api.IRActionMigrate && rep.Status == api.JobSucceeded:
		u.Status = api.IRMigrated
	case rep.Action == api.IRActionMigrate:
		// Storage vMotion fails whole: the VM still runs from the export.
		u.Status = api.IRRunning
	default:
		return api.InstantRecovery{}, &api.FieldError{Field: "action", Msg: "must be start, stop or migrate"}
	}
	r, err := s.cat.FinishInstantRecoveryAction(ctx, id, agentID, rep.Action, u)
	if err != nil {
		return api.InstantRecovery{}, err
	}
	level := s.log.InfoContext
	if rep.Status != api.JobSucceeded {
		level = s.log.WarnContext
	}
	level(ctx, "instant recovery action finished", "session_id", id, "agent_id", agentID, "action", rep.Action,
		"result", rep.Status, "status", r.Status, "vm_ref", r.VMRef, "err", rep.Error)
	if r.Status == api.IRStopped || r.Status == api.IRFailed || r.Status == api.IRMigrated {
		if err := s.exp.Remove(id, true); err != nil {
			s.log.WarnContext(ctx, "drop instant recovery overlay", "session_id", id, "err", err)
		}
	}
	if r.Pending != "" {
		s.poll.Wake(agentID)
	}
	return s.info(r, s.exp.Overlays()), nil
}

// Restore serves the active sessions again after a hub start and drops the folders of every
// other one. A session that can no longer be served (its backup was deleted) is stopped: the
// agent undoes whatever it made, and the session ends failed.
func (s *Service) Restore(ctx context.Context) error {
	keep, err := s.Sync(ctx)
	if err != nil {
		return err
	}
	dropped, err := s.exp.DropExcept(keep)
	for _, id := range dropped {
		s.log.InfoContext(ctx, "instant recovery folder of an ended session dropped", "session_id", id)
	}
	if err != nil {
		return err
	}
	if len(keep) > 0 {
		s.log.InfoContext(ctx, "instant recoveries served", "sessions", len(keep))
	}
	return nil
}

// Sync serves every active session that is not served yet (one started with the command line,
// which writes its folder and row but serves nothing) and stops serving sessions that ended.
// It returns the sessions served.
func (s *Service) Sync(ctx context.Context) (map[string]bool, error) {
	rows, err := s.cat.ActiveInstantRecoveries(ctx)
	if err != nil {
		return nil, err
	}
	served := s.exp.Overlays()
	keep := map[string]bool{}
	for i := range rows {
		r := &rows[i]
		if _, ok := served[r.ID]; ok {
			keep[r.ID] = true
			continue
		}
		if err := s.reexport(ctx, r); err != nil {
			s.log.WarnContext(ctx, "instant recovery cannot be served; stopping it", "session_id", r.ID, "err", err)
			_ = s.exp.Remove(r.ID, true)
			if r.Status == api.IRStarting && r.ClaimedAt.IsZero() {
				if err := s.cat.FailInstantRecovery(ctx, r.ID, "cannot be served: "+err.Error()); err != nil {
					return nil, err
				}
				continue
			}
			if _, err := s.cat.StopInstantRecovery(ctx, r.ID); err != nil {
				return nil, err
			}
			continue
		}
		keep[r.ID] = true
	}
	for id := range served {
		if keep[id] {
			continue
		}
		// Only a session the catalog says has ended is dropped: one with no row yet is being
		// started (its export is made before its row); a hub start drops true orphans.
		r, err := s.cat.InstantRecoveryByID(ctx, id)
		if err != nil {
			continue
		}
		if r.Status == api.IRStopped || r.Status == api.IRFailed || r.Status == api.IRMigrated {
			if err := s.exp.Remove(id, true); err != nil {
				s.log.WarnContext(ctx, "drop instant recovery overlay", "session_id", id, "err", err)
			}
		}
	}
	return keep, nil
}

// Run keeps the served sessions in step with the catalog every interval until ctx ends.
func (s *Service) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "sync instant recoveries", "err", err)
		}
	}
}

func (s *Service) reexport(ctx context.Context, r *catalog.InstantRecovery) error {
	var sp spec
	if err := json.Unmarshal([]byte(r.Spec), &sp); err != nil {
		return fmt.Errorf("decode spec: %w", err)
	}
	cfg, err := s.cfgs.VMConfig(ctx, r.BackupID)
	if err != nil {
		return err
	}
	return s.export(ctx, r, cfg, sp)
}
