package api

import (
	"strconv"
	"time"
)

// Limits of one inventory push, above what one vCenter holds (vSphere 8: 45,000 registered VMs,
// 256 virtual disks per VM). A body over MaxInventoryBytes is refused with 413; more VMs or
// disks than these with 400 naming the limit. A 64 MiB inventory is about 125,000 small VMs.
const (
	MaxInventoryBytes = 64 << 20
	MaxInventoryVMs   = 50_000
	MaxDisksPerVM     = 256
)

// Ranges of the numbers an inventory carries, above vSphere 8's configuration maximums (768
// vCPUs, 24 TiB of memory, 62 TB per virtual disk, 64 TB per RDM) with room to grow.
const (
	MaxVMCPUs            = 4096
	MaxVMMemoryMB        = 64 << 20 // 64 TiB
	MaxDiskCapacityBytes = 1 << 50  // 1 PiB
)

// Inventory is the complete view of one vCenter/ESXi source at one moment. Pushing the same
// inventory twice changes nothing; a VM or disk missing from it is marked gone.
type Inventory struct {
	Source      Source    `json:"source"`
	CollectedAt time.Time `json:"collected_at"`
	VMs         []VM      `json:"vms"`
}

// Source identifies the vCenter or ESXi host an inventory came from.
type Source struct {
	// Name is the agent-local name of the source from its configuration, e.g. "vc1".
	Name string `json:"name"`
	// URL is the SDK endpoint, e.g. https://vcenter.example.com/sdk.
	URL string `json:"url"`
	// APIType is "VirtualCenter" or "HostAgent".
	APIType string `json:"api_type,omitempty"`
	// Version is the vSphere API version, e.g. "8.0.3.0".
	Version string `json:"version,omitempty"`
	// InstanceUUID identifies the vCenter for good: about.instanceUuid of its ServiceContent
	// (lowercase 8-4-4-4-12 hex). An ESXi host answering directly has none; the agent then sends
	// the host's hardware UUID (hardware.systemInfo.uuid) in the same form. Required: the hub
	// gives a source to the agent that first reports its UUID, and refuses (409) the pushes of
	// any other agent until an operator moves the source.
	InstanceUUID string `json:"instance_uuid"`
}

// VM is one virtual machine. InstanceUUID (config.instanceUuid) is its identity within a source.
type VM struct {
	InstanceUUID string `json:"instance_uuid"`
	BIOSUUID     string `json:"bios_uuid,omitempty"`
	MoRef        string `json:"moref,omitempty"` // managed object id, e.g. "vm-42"
	Name         string `json:"name"`
	PowerState   string `json:"power_state"` // poweredOn, poweredOff, suspended
	GuestOS      string `json:"guest_os,omitempty"`
	NumCPU       int    `json:"num_cpu"`
	MemoryMB     int64  `json:"memory_mb"`
	Datacenter   string `json:"datacenter,omitempty"`
	Cluster      string `json:"cluster,omitempty"`
	Host         string `json:"host,omitempty"`
	Folder       string `json:"folder,omitempty"` // inventory path of the VM's folder, e.g. /DC0/vm/prod
	Template     bool   `json:"template"`
	CBTEnabled   bool   `json:"cbt_enabled"`
	Disks        []Disk `json:"disks"`
}

// Disk is one virtual disk of a VM.
type Disk struct {
	// Key is the device key, unique within the VM (2000, 2001, ...).
	Key int32 `json:"key"`
	// DiskID is "disk-<key>", e.g. "disk-2000".
	DiskID        string `json:"disk_id"`
	Label         string `json:"label,omitempty"`
	CapacityBytes int64  `json:"capacity_bytes"`
	Datastore     string `json:"datastore,omitempty"`
	// BackingFile is the datastore path of the disk descriptor, e.g. "[LocalDS_0] vm1/vm1.vmdk".
	BackingFile string `json:"backing_file,omitempty"`
	// BackingType is flatVer2, seSparse, sparseVer2, rdmVirtual, rdmPhysical or another backing name.
	BackingType string `json:"backing_type,omitempty"`
	// Provisioning is thin, thick or eagerZeroedThick.
	Provisioning   string `json:"provisioning,omitempty"`
	ControllerType string `json:"controller_type,omitempty"` // pvscsi, lsilogic, lsilogic-sas, buslogic, nvme, sata, ide
	ControllerBus  int32  `json:"controller_bus"`
	UnitNumber     int32  `json:"unit_number"`
	// DiskMode is persistent, independent_persistent, independent_nonpersistent, ...
	DiskMode string `json:"disk_mode,omitempty"`
	// Backupable is false for disks a snapshot cannot capture (independent modes, physical RDM).
	Backupable          bool   `json:"backupable"`
	NotBackupableReason string `json:"not_backupable_reason,omitempty"`
	// ChangeID is the disk's current CBT change ID as vSphere reports it, "" when CBT is off.
	ChangeID string `json:"change_id,omitempty"`
}

// DiskIDForKey returns the disk id for a device key: "disk-2000".
func DiskIDForKey(key int32) string { return "disk-" + strconv.FormatInt(int64(key), 10) }

// SourceInfo is one source as operators see it: the vCenter or ESXi host an agent reports on.
type SourceInfo struct {
	ID      int64  `json:"id"`
	Name    string `json:"name"`
	AgentID string `json:"agent_id"`
	// InstanceUUID is "" for a source recorded before instance UUIDs were, until its agent's
	// next push.
	InstanceUUID    string    `json:"instance_uuid"`
	URL             string    `json:"url"`
	VMs             int       `json:"vms"` // VMs not gone
	LastInventoryAt time.Time `json:"last_inventory_at"`
}

// MoveSourceRequest is the body of POST /api/v1/sources/{id}/move: the agent that reports on
// the source and its VMs from now on.
type MoveSourceRequest struct {
	AgentID string `json:"agent_id"`
}

// SourceList is the body of GET /api/v1/sources.
type SourceList struct {
	Sources []SourceInfo `json:"sources"`
}
