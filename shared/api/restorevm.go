package api

import (
	"fmt"
	"sort"
	"time"
)

// RestoreIDPrefix starts every restore job's id ("rs-20261130-160000-0a1b2c3d").
const RestoreIDPrefix = "rs-"

// RestoreVMPrefix starts the annotation line an agent writes into every VM it creates for a
// restore, "sendense-restore <job id>": a restarted agent finds half-made VMs by it.
const RestoreVMPrefix = "sendense-restore "

// Disk provisioning of a restored VM (RestoreRequest.DiskProvisioning).
const (
	ProvisionThin  = "thin"
	ProvisionThick = "thick"
)

// MAC handling of a restored VM (RestoreRequest.MACAddresses).
const (
	MACNew  = "new"  // vSphere generates new addresses (default: the original may still run)
	MACKeep = "keep" // the addresses the backup recorded, set as manual
)

// Phases of a running restore (RestoreProgress.Phase, Restore.Phase).
const (
	PhaseChecking = "checking" // resolving and checking the target objects: nothing created yet
	PhaseCreating = "creating" // creating the VM
	PhaseWriting  = "writing"  // writing the disks
	PhaseCleanup  = "cleanup"  // removing a half-made VM after a failure or cancel
)

// RestoreTarget names where a VM is restored. Source is the hub's name of a vCenter (as in
// GET /api/v1/sources); Folder, Cluster, Host and ResourcePool are optional: the default is
// the datacenter's VM folder and its first compute resource's root pool. DiskDatastores
// places single disks (disk id → datastore) elsewhere than Datastore.
type RestoreTarget struct {
	Source         string            `json:"source"`
	Datacenter     string            `json:"datacenter"`
	Folder         string            `json:"folder,omitempty"`
	Cluster        string            `json:"cluster,omitempty"`
	Host           string            `json:"host,omitempty"`
	ResourcePool   string            `json:"resource_pool,omitempty"`
	Datastore      string            `json:"datastore"`
	DiskDatastores map[string]string `json:"disk_datastores,omitempty"`
	Name           string            `json:"name"`
}

// RestoreRequest is the body of POST /api/v1/restores: restore a backup as a new VM, or with
// InPlace over the VM it was taken of.
type RestoreRequest struct {
	BackupID string `json:"backup_id"`
	// Repository reads the backup from a copy of it in the repository of that name (see
	// Backup.Copies); empty: from the backup's own repository.
	Repository string `json:"repository,omitempty"`
	// InPlace powers the backed-up VM off, overwrites its disks with the backup's and resets
	// its changed block tracking (the next backup is full); the VM keeps its identity (instance
	// UUID, MACs, configuration). Confirm must then be the VM's name, and Target, NetworkMap,
	// DiskProvisioning and MACAddresses stay empty. The VM is powered on again if it was on
	// (or if PowerOn). Refused while a backup of the VM is queued or running.
	InPlace bool   `json:"in_place,omitempty"`
	Confirm string `json:"confirm,omitempty"`
	// Target is where a new VM goes; the hub fills Source and Name for an in-place restore.
	Target RestoreTarget `json:"target"`
	// NetworkMap maps a network name the backup's NICs use to one on the target; a NIC whose
	// network is not mapped keeps its name, which must then exist on the target.
	NetworkMap       map[string]string `json:"network_map,omitempty"`
	DiskProvisioning string            `json:"disk_provisioning,omitempty"` // thin (default) or thick
	MACAddresses     string            `json:"mac_addresses,omitempty"`     // new (default) or keep
	PowerOn          bool              `json:"power_on"`
}

// MaxNetworkMap bounds RestoreRequest.NetworkMap and RestoreTarget.DiskDatastores.
const MaxNetworkMap = 64

// Normalize fills defaults and checks a RestoreRequest; the error is a *FieldError.
func (r *RestoreRequest) Normalize() error {
	if r.BackupID == "" {
		return &FieldError{"backup_id", "is required"}
	}
	if err := checkName("backup_id", r.BackupID, true); err != nil {
		return err
	}
	if err := checkName("repository", r.Repository, false); err != nil {
		return err
	}
	if r.InPlace {
		return r.normalizeInPlace()
	}
	if r.Confirm != "" {
		return &FieldError{"confirm", "only for an in-place restore (in_place: true)"}
	}
	t := &r.Target
	for _, f := range []struct {
		name, v  string
		required bool
	}{
		{"target.source", t.Source, true}, {"target.datacenter", t.Datacenter, true}, {"target.datastore", t.Datastore, true},
		{"target.name", t.Name, true}, {"target.folder", t.Folder, false}, {"target.cluster", t.Cluster, false},
		{"target.host", t.Host, false}, {"target.resource_pool", t.ResourcePool, false},
	} {
		if err := checkName(f.name, f.v, f.required); err != nil {
			return err
		}
	}
	if len(t.Name) > 80 {
		return &FieldError{"target.name", "longer than 80 characters (the vSphere limit for a VM name)"}
	}
	if t.Cluster != "" && t.Host != "" {
		return &FieldError{"target.host", "give a cluster or a host, not both"}
	}
	if len(t.DiskDatastores) > MaxNetworkMap {
		return &FieldError{"target.disk_datastores", fmt.Sprintf("at most %d entries", MaxNetworkMap)}
	}
	for _, k := range sortedKeys(t.DiskDatastores) {
		if err := checkName("target.disk_datastores", k, true); err != nil {
			return err
		}
		if err := checkName("target.disk_datastores["+k+"]", t.DiskDatastores[k], true); err != nil {
			return err
		}
	}
	if len(r.NetworkMap) > MaxNetworkMap {
		return &FieldError{"network_map", fmt.Sprintf("at most %d entries", MaxNetworkMap)}
	}
	for _, k := range sortedKeys(r.NetworkMap) {
		if err := checkName("network_map", k, true); err != nil {
			return err
		}
		if err := checkName("network_map["+k+"]", r.NetworkMap[k], true); err != nil {
			return err
		}
	}
	switch r.DiskProvisioning {
	case "":
		r.DiskProvisioning = ProvisionThin
	case ProvisionThin, ProvisionThick:
	default:
		return &FieldError{"disk_provisioning", "must be thin or thick"}
	}
	switch r.MACAddresses {
	case "":
		r.MACAddresses = MACNew
	case MACNew, MACKeep:
	default:
		return &FieldError{"mac_addresses", "must be new or keep"}
	}
	return nil
}

func (r *RestoreRequest) normalizeInPlace() error {
	if r.Confirm == "" {
		return &FieldError{"confirm", "is required for an in-place restore: the name of the VM whose disks are overwritten"}
	}
	if err := checkName("confirm", r.Confirm, true); err != nil {
		return err
	}
	switch {
	case r.Target.Source != "" || r.Target.Datacenter != "" || r.Target.Folder != "" || r.Target.Cluster != "" ||
		r.Target.Host != "" || r.Target.ResourcePool != "" || r.Target.Datastore != "" || r.Target.Name != "" ||
		len(r.Target.DiskDatastores) > 0:
		return &FieldError{"target", "not used by an in-place restore: the VM is restored where it is"}
	case len(r.NetworkMap) > 0:
		return &FieldError{"network_map", "not used by an in-place restore: the VM keeps its NICs"}
	case r.DiskProvisioning != "":
		return &FieldError{"disk_provisioning", "not used by an in-place restore: the VM keeps its disks"}
	case r.MACAddresses != "":
		return &FieldError{"mac_addresses", "not used by an in-place restore: the VM keeps its MACs"}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Restore is one restore job as operators see it.
type Restore struct {
	ID               string            `json:"id"`
	BackupID         string            `json:"backup_id"`
	Repository       string            `json:"repository,omitempty"` // the copy it reads, when not the backup's own repository
	VMName           string            `json:"vm_name,omitempty"`    // the backed-up VM's name
	InPlace          bool              `json:"in_place,omitempty"`
	AgentID          string            `json:"agent_id"`
	Target           RestoreTarget     `json:"target"`
	NetworkMap       map[string]string `json:"network_map,omitempty"`
	DiskProvisioning string            `json:"disk_provisioning"`
	MACAddresses     string            `json:"mac_addresses"`
	PowerOn          bool              `json:"power_on"`
	Status           string            `json:"status"` // queued, running, succeeded, failed, cancelled
	CancelRequested  bool              `json:"cancel_requested,omitempty"`
	Phase            string            `json:"phase,omitempty"`
	// VMRef is the managed object reference of the VM the restore created ("vm-123"); it is
	// kept after a failure only when removing the half-made VM failed too.
	VMRef           string    `json:"vm_ref,omitempty"`
	BytesWritten    int64     `json:"bytes_written"`
	BytesTotal      int64     `json:"bytes_total,omitempty"`
	Error           string    `json:"error,omitempty"`
	CreatedAt       time.Time `json:"created_at"`
	StartedAt       time.Time `json:"started_at,omitzero"`
	FinishedAt      time.Time `json:"finished_at,omitzero"`
	DurationSeconds float64   `json:"duration_seconds,omitempty"`
	ThroughputBPS   float64   `json:"throughput_bytes_per_second,omitempty"`
}

// RestoreList is the body of GET /api/v1/restores.
type RestoreList struct {
	Restores []Restore `json:"restores"`
	Page     Page      `json:"page"`
}

// ---- Agent side of a restore job ----

// RestoreJob is a restore handed to the agent of the target source.
type RestoreJob struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	BackupID string `json:"backup_id"`
	// Source is the agent-local name of the target vCenter.
	Source           string            `json:"source"`
	Target           RestoreTarget     `json:"target"`
	NetworkMap       map[string]string `json:"network_map,omitempty"`
	DiskProvisioning string            `json:"disk_provisioning"`
	MACAddresses     string            `json:"mac_addresses"`
	PowerOn          bool              `json:"power_on"`
	// InPlace: overwrite the disks of the VM with VM.InstanceUUID, whose name must still be
	// Confirm, instead of creating one (Target.Name is that VM's name too).
	InPlace bool   `json:"in_place,omitempty"`
	Confirm string `json:"confirm,omitempty"`
	// VM is the configuration the backup recorded; Disks are the backup's disks, each readable
	// at PathAgentRestoreImage.
	VM    VMConfig          `json:"vm"`
	Disks []RestoreDiskSpec `json:"disks"`
	// VMRef is the VM an earlier run of this job created (the agent restarted): it is removed
	// before the job is run again or failed. Never set for an in-place restore.
	VMRef   string `json:"vm_ref,omitempty"`
	Resumed bool   `json:"resumed"`
	// VMWasOn is, for an in-place restore, the power state its first run found the VM in
	// (nil until a run reported it): a resumed run finds the VM off and powers it on again
	// when this says it was on.
	VMWasOn *bool `json:"vm_was_on,omitempty"`
}

// RestoreDiskSpec is one disk of a restore: its image size and where it goes.
type RestoreDiskSpec struct {
	DiskID        string `json:"disk_id"`
	CapacityBytes int64  `json:"capacity_bytes"`
	Datastore     string `json:"datastore"`
}

// RestoreProgress is the body of POST /api/v1/agent/restores/{id}/progress: liveness, the
// phase, the VM created so far (recorded so that a restarted agent or the operator can find
// it) and the bytes written.
type RestoreProgress struct {
	Phase        string `json:"phase"`
	VMRef        string `json:"vm_ref,omitempty"`
	BytesWritten int64  `json:"bytes_written"`
	BytesTotal   int64  `json:"bytes_total"`
	// VMWasOn is the power state an in-place restore found the VM in, reported before it
	// powers the VM off; the hub keeps the first report.
	VMWasOn *bool `json:"vm_was_on,omitempty"`
}

// RestoreCompletion is the body of POST /api/v1/agent/restores/{id}/complete.
type RestoreCompletion struct {
	Status string `json:"status"` // succeeded, failed or cancelled
	Error  string `json:"error,omitempty"`
	// VMRef is the VM the restore leaves: the new VM on success; after a failure or cancel
	// the half-made VM only when removing it failed (else "").
	VMRef string `json:"vm_ref,omitempty"`
	// BytesWritten is how many bytes of the backup's disks the restore wrote: a succeeded
	// restore wrote every byte of every disk.
	BytesWritten int64 `json:"bytes_written"`
}
