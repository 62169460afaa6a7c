package api

import "time"

// VMContext is a VM as the hub knows it.
type VMContext struct {
	ContextID     string    `json:"context_id"`
	VMName        string    `json:"vm_name"`
	CurrentStatus string    `json:"current_status"`
	AgentID       string    `json:"agent_id"`
	Source        string    `json:"source"`
	InstanceUUID  string    `json:"instance_uuid"`
	BIOSUUID      string    `json:"bios_uuid,omitempty"`
	PowerState    string    `json:"power_state"`
	GuestOS       string    `json:"guest_os,omitempty"`
	NumCPU        int       `json:"num_cpu"`
	MemoryMB      int64     `json:"memory_mb"`
	Datacenter    string    `json:"datacenter,omitempty"`
	Cluster       string    `json:"cluster,omitempty"`
	Host          string    `json:"host,omitempty"`
	Folder        string    `json:"folder,omitempty"`
	Template      bool      `json:"template"`
	CBTEnabled    bool      `json:"cbt_enabled"`
	GoneAt        time.Time `json:"gone_at,omitzero"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	Disks         []VMDisk  `json:"disks,omitempty"`
}

// VMDisk is a VM disk as the hub knows it. JobID is null until a backup job touches the disk.
type VMDisk struct {
	VMContextID    string    `json:"vm_context_id"`
	DiskID         string    `json:"disk_id"`
	DeviceKey      int32     `json:"device_key"`
	Label          string    `json:"label,omitempty"`
	CapacityBytes  int64     `json:"capacity_bytes"`
	Datastore      string    `json:"datastore,omitempty"`
	VMDKPath       string    `json:"vmdk_path,omitempty"`
	BackingType    string    `json:"backing_type,omitempty"`
	Provisioning   string    `json:"provisioning,omitempty"`
	ControllerType string    `json:"controller_type,omitempty"`
	ControllerBus  int32     `json:"controller_bus"`
	UnitNumber     int32     `json:"unit_number"`
	DiskMode       string    `json:"disk_mode,omitempty"`
	Backupable     bool      `json:"backupable"`
	ChangeID       string    `json:"change_id,omitempty"`
	Status         string    `json:"status"`
	JobID          *string   `json:"job_id"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// VMList is the body of GET /api/v1/vms.
type VMList struct {
	VMs  []VMContext `json:"vms"`
	Page Page        `json:"page"`
}

// InventoryResult is the answer to an inventory push: what changed.
type InventoryResult struct {
	Source      string           `json:"source"`
	VMs         int              `json:"vms"`
	Disks       int              `json:"disks"`
	Events      []InventoryEvent `json:"events,omitempty"`
	Unchanged   bool             `json:"unchanged"`
	AppliedAt   time.Time        `json:"applied_at"`
	ElapsedSecs float64          `json:"elapsed_seconds"`
}

// InventoryEvent is one change an inventory push caused.
type InventoryEvent struct {
	Kind        string `json:"kind"` // vm_added, vm_gone, vm_returned, vm_renamed, cbt_disabled, disk_added, disk_removed, disk_resized, disk_moved
	VMContextID string `json:"vm_context_id"`
	VMName      string `json:"vm_name"`
	DiskID      string `json:"disk_id,omitempty"`
	Detail      string `json:"detail,omitempty"`
}

// VM statuses (VMContext.CurrentStatus).
const (
	VMDiscovered = "discovered"
	VMProtected  = "protected"
	VMGone       = "gone"
)

// Disk statuses (VMDisk.Status).
const (
	DiskPresent = "present"
	DiskGone    = "gone"
)

// VMDiskList is the body of GET /api/v1/vms/{id}/disks.
type VMDiskList struct {
	VMContextID string   `json:"vm_context_id"`
	Disks       []VMDisk `json:"disks"`
}
