package inventory

import (
	"context"
	"fmt"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/api"
)

// RefreshDisks records what the snapshot of job jobID shows of its VM's disks: a disk added since the
// last discovery is recorded at once (disk_added), a disk whose size changed takes the new size
// (disk_resized). Only geometry is taken from a job's report; discovery keeps the rest (controller,
// provisioning) and marks disks gone. The report must have been validated.
func (s *Service) RefreshDisks(ctx context.Context, agentID, addr, jobID, vmContextID string, disks []api.Disk) error {
	vm, err := s.cat.ResolveVM(ctx, vmContextID)
	if err != nil {
		return err
	}
	if vm.AgentID != agentID {
		return fmt.Errorf("vm %s: %w", vmContextID, catalog.ErrNotYours)
	}
	have, err := s.cat.VMDisks(ctx, vmContextID)
	if err != nil {
		return err
	}
	byID := make(map[string]*catalog.VMDisk, len(have))
	for i := range have {
		byID[have[i].DiskID] = &have[i]
	}
	now := s.cat.Now()
	ch := &catalog.InventoryChanges{}
	var evs []api.InventoryEvent
	for i := range disks {
		rd := &disks[i]
		ed := byID[rd.DiskID]
		switch {
		case ed == nil:
			nd := newDisk(rd, vmContextID, now)
			nd.JobID = jobID // the job that found it is the first to touch it
			ch.NewDisks = append(ch.NewDisks, nd)
			evs = append(evs, api.InventoryEvent{Kind: api.EventDiskAdded, VMContextID: vmContextID, VMName: vm.VMName, DiskID: rd.DiskID, Detail: "seen by a backup's snapshot"})
		case ed.Status == api.DiskPresent && (ed.CapacityBytes != rd.CapacityBytes || ed.Backupable != rd.Backupable):
			up := *ed
			if ed.CapacityBytes != rd.CapacityBytes {
				evs = append(evs, api.InventoryEvent{Kind: api.EventDiskResized, VMContextID: vmContextID, VMName: vm.VMName, DiskID: rd.DiskID,
					Detail: fmt.Sprintf("%d → %d bytes, seen by a backup's snapshot", ed.CapacityBytes, rd.CapacityBytes)})
			}
			up.CapacityBytes, up.Backupable, up.DiskMode, up.UpdatedAt = rd.CapacityBytes, rd.Backupable, rd.DiskMode, now
			ch.Disks = append(ch.Disks, up)
		}
	}
	if ch.Empty() {
		return nil
	}
	ch.Events = eventRows(evs, now, agentID, addr, vm.SourceName)
	if err := s.cat.ApplyDiskChanges(ctx, ch); err != nil {
		return err
	}
	for _, e := range evs {
		s.events.WithLabelValues(e.Kind).Inc()
		s.log.InfoContext(ctx, "inventory change", "event", e.Kind, "agent_id", agentID, "source", vm.SourceName,
			"vm_context_id", e.VMContextID, "vm_name", e.VMName, "disk_id", e.DiskID, "detail", e.Detail)
	}
	return nil
}
