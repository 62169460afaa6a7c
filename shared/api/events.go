package api

import "time"

// Event types: what the hub records when it notices a change (inventory), when an operator acts
// (audit), and when it finds damage in a repository or sees it mended (repository).
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
	// EventSourceConflict records a refused push: the agent reported a vCenter, or a VM, that
	// belongs to another agent's source.
	EventSourceConflict = "source_conflict"
	EventAudit          = "audit"

	// EventChunkQuarantined: verify or restore read a chunk that fails its checks and moved it
	// into the repository's quarantine, so that the next backup holding its bytes uploads them
	// again. Details: repository, repository_id, digest, quarantine_key, reason, found_by
	// (verify or restore), and backup_id/disk_id where a restore found it.
	EventChunkQuarantined = "chunk_quarantined"
	// EventBackupHealed: a backup that verification had found damaged verified sound again, every
	// chunk it names present and intact (a later backup uploaded the quarantined ones again).
	// Details: backup_id, repository.
	EventBackupHealed = "backup_healed"
	// EventCBTDrift: an incremental found slots CBT called unchanged whose content had changed,
	// and read the whole disk instead. Details: backup_id, disk_id, drift_count and slots (the
	// first api.MaxDriftSlots, comma-separated).
	EventCBTDrift = "cbt_drift"
	// EventRestoreTest: a restore test finished. Outcome is its result (passed or failed).
	// Details: restore_test_id, backup_id, result, bytes_read, seconds, mb_per_s, and reason
	// (the failed checks with their errors) when it failed.
	EventRestoreTest = "restore_test"
	// EventCopyRun: a run of a copy policy finished. Outcome is its status (succeeded or
	// failed). Details: policy, copy_run_id, from, to, backups_copied, backups_present,
	// backups_failed, copies_pruned, chunks, bytes, seconds, and error when it failed.
	EventCopyRun = "copy_run"
)

// InventoryEventTypes lists the types of the events inventory pushes cause.
var InventoryEventTypes = []string{EventVMAdded, EventVMGone, EventVMReturned, EventVMRenamed, EventCBTDisabled,
	EventDiskAdded, EventDiskRemoved, EventDiskResized, EventDiskMoved, EventDiskReturn, EventSourceConflict}

// RepositoryEventTypes lists the types of the events of repository damage and its repair, and
// of copies between repositories.
var RepositoryEventTypes = []string{EventChunkQuarantined, EventBackupHealed, EventCopyRun}

// BackupEventTypes lists the types of the events backups and their restore tests record.
var BackupEventTypes = []string{EventCBTDrift, EventRestoreTest}

// EventTypes lists every event type.
var EventTypes = append(append(append(append([]string(nil), InventoryEventTypes...), EventAudit), RepositoryEventTypes...), BackupEventTypes...)

// Event outcomes besides the HTTP status codes of audit events.
const (
	// OutcomeOK is the outcome of every inventory and repository event: the change was recorded.
	OutcomeOK = "ok"
	// OutcomeRefused is the outcome of a source_conflict event: nothing of the push was recorded.
	OutcomeRefused = "refused"
)

// Event is one recorded event: an inventory change an agent reported or an operator's request.
// Every field is always present; those that do not apply are empty.
type Event struct {
	ID   int64  `json:"id"`
	Type string `json:"type"` // one of EventTypes
	// VM is the VM's name at the time of the event; VMContextID names it for good.
	VM          string    `json:"vm"`
	VMContextID string    `json:"vm_context_id"`
	At          time.Time `json:"at"`
	AgentID     string    `json:"agent_id"`
	// Actor is who caused the event: an agent id for inventory events, an API token's name for
	// audit events ("" when the request carried no valid token). Never a secret.
	Actor string `json:"actor"`
	// SourceAddress is the client IP address of the request that caused the event.
	SourceAddress string `json:"source_address"`
	// Outcome is OutcomeOK for inventory and repository events and the HTTP status code ("201",
	// "403") for audit events.
	Outcome string `json:"outcome"`
	// Details are type-specific: disk_id, detail and source for inventory events; method, route,
	// status and api_token_id for audit events; see each repository event type for its own.
	Details map[string]string `json:"details,omitempty"`
}

// EventList is the body of GET /api/v1/events, newest first.
type EventList struct {
	Events []Event `json:"events"`
	Page   Page    `json:"page"`
}
