package api

// Event types: what the hub records when it notices a change (inventory) or an operator acts
// (audit).
const (
	EventVMAdded     = "vm_added"
	EventVMGone      = "vm_gone"
	EventVMReturned  = "vm_returned"
	EventVMRenamed   = "vm_renamed"
	EventCBTDisabled = "cbt_disabled"
	EventDiskAdded   = "disk_added"
	EventDiskRemoved = "disk_removed"
	EventDiskResized = "disk_resized"
	EventDiskMoved   = "disk_moved"
	EventDiskReturn  = "disk_returned"
)
