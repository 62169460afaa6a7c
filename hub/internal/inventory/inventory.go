// Package inventory records what agents discover: it decides what an inventory push changes (VMs
// and disks added, gone, returned, renamed, resized, moved; CBT turned off) and which catalog rows
// that writes, turns the changes into logged and counted events, and answers operators' questions
// about VMs and their disks.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/api"
)

// inventoryCatalog is what this package needs from the catalog.
type inventoryCatalog interface {
	ApplyInventory(ctx context.Context, agentID string, src api.Source, vmUUIDs []string, decide func(st *catalog.InventoryState) (*catalog.InventoryChanges, error)) error
	RecordEvents(ctx context.Context, evs []catalog.Event) error
	Sources(ctx context.Context) ([]catalog.SourceWithCounts, error)
	MoveSource(ctx context.Context, id int64, agentID string) error
	VMs(ctx context.Context, f catalog.VMFilter) ([]catalog.VMWithSource, int, error)
	ResolveVM(ctx context.Context, idOrName string) (*catalog.VMWithSource, error)
	VMDisks(ctx context.Context, contextID string) ([]catalog.VMDisk, error)
	ApplyDiskChanges(ctx context.Context, ch *catalog.InventoryChanges) error
	Now() time.Time
}

// ErrAmbiguous is returned when a VM name matches several VMs.
var ErrAmbiguous = catalog.ErrAmbiguous

// Service applies inventories and answers VM queries.
type Service struct {
	cat     inventoryCatalog
	log     *slog.Logger
	events  *prometheus.CounterVec
	pushes  *prometheus.CounterVec
	applied *prometheus.HistogramVec
}

// New returns the service, registering its metrics on reg.
func New(cat inventoryCatalog, log *slog.Logger, reg prometheus.Registerer) *Service {
	s := &Service{
		cat: cat, log: log,
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sendense_hub_inventory_events_total",
			Help: "Inventory changes seen by discovery: vm_added, vm_gone, vm_returned, vm_renamed, cbt_disabled, disk_added, disk_removed, disk_resized, disk_moved, disk_returned; source_conflict counts refused pushes.",
		}, []string{"kind"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sendense_hub_inventory_pushes_total",
			Help: "Inventory pushes by result (applied, unchanged, rejected, error).",
		}, []string{"result"}),
		applied: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sendense_hub_inventory_apply_duration_seconds",
			Help:    "Time to apply one inventory push to the catalog.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}, []string{}),
	}
	for _, k := range api.InventoryEventTypes {
		s.events.WithLabelValues(k)
	}
	for _, r := range []string{"applied", "unchanged", "rejected", "error"} {
		s.pushes.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(s.events, s.pushes, s.applied)
	}
	return s
}

// Apply validates and records the complete inventory of one source of agentID, pushed from the
// client address addr. Each VM's changes are recorded together with their events, in batches
// (catalog.ApplyInventory); a push that reports another agent's source or VM is refused with a
// *catalog.SourceConflict (an ErrConflict) and recorded as a source_conflict event.
func (s *Service) Apply(ctx context.Context, agentID, addr string, inv *api.Inventory) (api.InventoryResult, error) {
	if err := inv.Validate(); err != nil {
		s.pushes.WithLabelValues("rejected").Inc()
		return api.InventoryResult{}, err
	}
	start := time.Now()
	var evs []api.InventoryEvent
	uuids := make([]string, len(inv.VMs))
	for i := range inv.VMs {
		uuids[i] = inv.VMs[i].InstanceUUID
	}
	err := s.cat.ApplyInventory(ctx, agentID, inv.Source, uuids, func(st *catalog.InventoryState) (*catalog.InventoryChanges, error) {
		ch, e, err := diff(st, agentID, inv)
		if err != nil {
			return nil, err
		}
		evs = e
		ch.Events = eventRows(e, st.Now, agentID, addr, inv.Source.Name)
		return ch, nil
	})
	var conflict *catalog.SourceConflict
	if errors.As(err, &conflict) {
		s.pushes.WithLabelValues("rejected").Inc()
		s.refused(ctx, agentID, addr, conflict)
		return api.InventoryResult{}, fmt.Errorf("inventory of source %s refused: %w", inv.Source.Name, err)
	}
	if err != nil {
		s.pushes.WithLabelValues("error").Inc()
		return api.InventoryResult{}, fmt.Errorf("apply inventory of source %s: %w", inv.Source.Name, err)
	}
	elapsed := time.Since(start)
	s.applied.WithLabelValues().Observe(elapsed.Seconds())
	disks := 0
	for i := range inv.VMs {
		disks += len(inv.VMs[i].Disks)
	}
	for _, e := range evs {
		s.events.WithLabelValues(e.Kind).Inc()
		level := slog.LevelInfo
		if e.Kind == api.EventCBTDisabled || e.Kind == api.EventVMGone || e.Kind == api.EventDiskRemoved {
			level = slog.LevelWarn
		}
		s.log.Log(ctx, level, "inventory change", "event", e.Kind, "agent_id", agentID, "source", inv.Source.Name,
			"vm_context_id", e.VMContextID, "vm_name", e.VMName, "disk_id", e.DiskID, "detail", e.Detail)
	}
	result := "applied"
	if len(evs) == 0 {
		result = "unchanged"
	}
	s.pushes.WithLabelValues(result).Inc()
	s.log.DebugContext(ctx, "inventory applied", "agent_id", agentID, "source", inv.Source.Name, "vms", len(inv.VMs), "disks", disks, "events", len(evs), "duration_seconds", elapsed.Seconds())
	return api.InventoryResult{
		Source: inv.Source.Name, VMs: len(inv.VMs), Disks: disks, Events: evs, Unchanged: len(evs) == 0,
		AppliedAt: time.Now().UTC(), ElapsedSecs: elapsed.Seconds(),
	}, nil
}

// refused logs and records a push refused because it reports another agent's source or VM. The
// event is recorded even when the request was cancelled: it is the operator's evidence.
func (s *Service) refused(ctx context.Context, agentID, addr string, c *catalog.SourceConflict) {
	s.events.WithLabelValues(api.EventSourceConflict).Inc()
	s.log.WarnContext(ctx, "inventory refused", "event", api.EventSourceConflict, "agent_id", agentID, "source", c.SourceName,
		"instance_uuid", c.InstanceUUID, "vm_instance_uuid", c.VMUUID, "owner_agent_id", c.OwnerAgentID, "owner_source", c.OwnerSource)
	details := map[string]string{"source": c.SourceName, "instance_uuid": c.InstanceUUID, "owner_agent_id": c.OwnerAgentID,
		"owner_source": c.OwnerSource, "detail": c.Error()}
	if c.VMUUID != "" {
		details["vm_instance_uuid"] = c.VMUUID
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := s.cat.RecordEvents(rctx, []catalog.Event{{Type: api.EventSourceConflict, AgentID: agentID, Actor: agentID,
		SourceAddress: addr, Outcome: api.OutcomeRefused, Details: details}})
	if err != nil {
		s.log.ErrorContext(ctx, "record source conflict", "agent_id", agentID, "err", err)
	}
}

// Sources lists every source with its owning agent and VM count.
func (s *Service) Sources(ctx context.Context) ([]api.SourceInfo, error) {
	rows, err := s.cat.Sources(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.SourceInfo, 0, len(rows))
	for _, r := range rows {
		out = append(out, api.SourceInfo{ID: r.ID, Name: r.Name, AgentID: r.AgentID, InstanceUUID: r.InstanceUUID, URL: r.URL,
			VMs: r.VMs, LastInventoryAt: r.LastInventoryAt})
	}
	return out, nil
}

// MoveSource gives a source, named by its id, its instance UUID, or its name when only one source
// has it, and its VMs to another agent: the new agent's pushes are accepted, the old agent's are
// refused. It returns the source as it is now.
func (s *Service) MoveSource(ctx context.Context, source, agentID string) (api.SourceInfo, error) {
	all, err := s.Sources(ctx)
	if err != nil {
		return api.SourceInfo{}, err
	}
	var match []api.SourceInfo
	for _, src := range all {
		if strconv.FormatInt(src.ID, 10) == source || (src.InstanceUUID != "" && src.InstanceUUID == source) {
			match = []api.SourceInfo{src}
			break
		}
		if src.Name == source {
			match = append(match, src)
		}
	}
	switch len(match) {
	case 0:
		return api.SourceInfo{}, fmt.Errorf("source %q: %w", source, catalog.ErrNotFound)
	case 1:
	default:
		return api.SourceInfo{}, fmt.Errorf("source %q: several agents have a source of this name; use its id or instance uuid: %w", source, catalog.ErrConflict)
	}
	if err := s.cat.MoveSource(ctx, match[0].ID, agentID); err != nil {
		return api.SourceInfo{}, err
	}
	s.log.InfoContext(ctx, "source moved", "source", match[0].Name, "source_id", match[0].ID, "from_agent_id", match[0].AgentID, "agent_id", agentID)
	moved := match[0]
	moved.AgentID = agentID
	return moved, nil
}

// eventRows are the stored form of an inventory push's events: the agent is their actor.
func eventRows(evs []api.InventoryEvent, at time.Time, agentID, addr, source string) []catalog.Event {
	rows := make([]catalog.Event, 0, len(evs))
	for _, e := range evs {
		details := map[string]string{"source": source}
		if e.DiskID != "" {
			details["disk_id"] = e.DiskID
		}
		if e.Detail != "" {
			details["detail"] = e.Detail
		}
		rows = append(rows, catalog.Event{
			Type: e.Kind, OccurredAt: at, VMContextID: e.VMContextID, VMName: e.VMName, AgentID: agentID,
			Actor: agentID, SourceAddress: addr, Outcome: api.OutcomeOK, Details: details,
		})
	}
	return rows
}

// VMInfo converts a catalog VM (and optionally its disks) to the API form.
func VMInfo(v *catalog.VMWithSource, disks []catalog.VMDisk) api.VMContext {
	out := api.VMContext{
		ContextID: v.ContextID, VMName: v.VMName, CurrentStatus: v.CurrentStatus, AgentID: v.AgentID, Source: v.SourceName,
		InstanceUUID: v.InstanceUUID, BIOSUUID: v.BIOSUUID, PowerState: v.PowerState, GuestOS: v.GuestOS, NumCPU: v.NumCPU,
		MemoryMB: v.MemoryMB, Datacenter: v.Datacenter, Cluster: v.Cluster, Host: v.Host, Folder: v.Folder,
		Template: v.IsTemplate, CBTEnabled: v.CBTEnabled, GoneAt: v.GoneAt, CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt,
	}
	for i := range disks {
		out.Disks = append(out.Disks, DiskInfo(&disks[i]))
	}
	return out
}

// DiskInfo converts a catalog disk to the API form; a NULL job_id stays null.
func DiskInfo(d *catalog.VMDisk) api.VMDisk {
	var job *string
	if d.JobID != "" {
		j := d.JobID
		job = &j
	}
	return api.VMDisk{
		VMContextID: d.VMContextID, DiskID: d.DiskID, DeviceKey: d.DeviceKey, Label: d.Label, CapacityBytes: d.CapacityBytes,
		Datastore: d.Datastore, VMDKPath: d.VMDKPath, BackingType: d.BackingType, Provisioning: d.Provisioning,
		ControllerType: d.ControllerType, ControllerBus: d.ControllerBus, UnitNumber: d.UnitNumber, DiskMode: d.DiskMode,
		Backupable: d.Backupable, ChangeID: d.ChangeID, Status: d.Status, JobID: job, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
	}
}

// Filter selects VMs for listing. The zero Filter selects every VM.
type Filter struct {
	Name    string // exact VM name
	Status  string // api.VMDiscovered, api.VMProtected, api.VMGone
	AgentID string
	Limit   int // 0: all
	Offset  int
}

// List returns VMs matching the filter.
func (s *Service) List(ctx context.Context, f Filter) (api.VMList, error) {
	vms, total, err := s.cat.VMs(ctx, catalog.VMFilter{Name: f.Name, Status: f.Status, AgentID: f.AgentID, Limit: f.Limit, Offset: f.Offset})
	if err != nil {
		return api.VMList{}, err
	}
	out := api.VMList{VMs: make([]api.VMContext, 0, len(vms)), Page: api.Page{Limit: f.Limit, Offset: f.Offset, Total: total}}
	for i := range vms {
		out.VMs = append(out.VMs, VMInfo(&vms[i], nil))
	}
	return out, nil
}

// Resolve finds a VM by context id, or else by name when exactly one VM has it.
func (s *Service) Resolve(ctx context.Context, idOrName string) (*catalog.VMWithSource, error) {
	return s.cat.ResolveVM(ctx, idOrName)
}

// Show returns a VM with its disks.
func (s *Service) Show(ctx context.Context, idOrName string) (api.VMContext, error) {
	vm, err := s.Resolve(ctx, idOrName)
	if err != nil {
		return api.VMContext{}, err
	}
	ds, err := s.cat.VMDisks(ctx, vm.ContextID)
	if err != nil {
		return api.VMContext{}, err
	}
	return VMInfo(vm, ds), nil
}
