package api

import (
	"regexp"
	"strings"
	"time"
)

// Backup types.
const (
	BackupAuto        = "auto"
	BackupFull        = "full"
	BackupIncremental = "incremental"
)

// Job statuses.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
)

// Upload session statuses (Session.Status). A session is committing from the moment the hub
// starts writing its index until the disk's result is recorded: it takes no more slots, and a
// commit interrupted there may be sent again.
const (
	SessionOpen       = "open"
	SessionCommitting = "committing"
	SessionCommitted  = "committed"
	SessionAborted    = "aborted"
)

// SnapshotPrefix starts the name of every snapshot an agent takes, "sendense-<job id>".
const SnapshotPrefix = "sendense-"

// jobIDForm is the form of a backup job's id (catalog.NewID("bk-", …)).
var jobIDForm = regexp.MustCompile(`^bk-[0-9]{8}-[0-9]{6}-[0-9a-f]{8}$`)

// SnapshotDescription is the description of the snapshot of backup job jobID taken by agent
// agentID: it marks the snapshot as that agent's.
func SnapshotDescription(jobID, agentID string) string {
	return "Sendense backup job " + jobID + " of agent " + agentID + "; removed automatically when the job ends"
}

// SnapshotJob returns the backup job whose snapshot, taken by agent agentID, has this name and
// description; false for any other snapshot — a user's named like ours, another agent's (of this
// hub or another), one of an older agent that did not mark its snapshots — which an agent's
// reaper must leave alone.
func SnapshotJob(name, description, agentID string) (string, bool) {
	id, ok := strings.CutPrefix(name, SnapshotPrefix)
	if !ok || !jobIDForm.MatchString(id) || agentID == "" || description != SnapshotDescription(id, agentID) {
		return "", false
	}
	return id, true
}

// StartBackupRequest is the body of POST /api/v1/backups.
type StartBackupRequest struct {
	VM         string `json:"vm"`                   // VM name or context id
	Type       string `json:"type,omitempty"`       // auto (default), full or incremental
	Repository string `json:"repository,omitempty"` // repository name; default "default"
	// CBTSample is the fraction (0..1) of the slots CBT calls unchanged that an incremental
	// re-reads and compares with its parent's index, to catch CBT that lies; absent:
	// DefaultCBTSample. 0 turns the check off except for its floor of MinCBTSampleSlots.
	CBTSample *float64 `json:"cbt_sample,omitempty"`
}

// DefaultCBTSample is the fraction of unchanged slots an incremental re-reads when the request
// names none: 1% of a 100 GiB disk in 4 MiB slots is 256 slots, 1 GiB read.
const DefaultCBTSample = 0.01

// MinCBTSampleSlots is the floor of the drift check: an incremental re-reads at least this many
// unchanged slots (all when fewer), whatever the fraction.
const MinCBTSampleSlots = 8

// MaxDriftSlots bounds the slots a commit reports as drifted; the count is exact beyond it.
const MaxDriftSlots = 64

// Backup is one backup job as operators see it.
type Backup struct {
	ID                string    `json:"id"`
	VMContextID       string    `json:"vm_context_id"`
	VMName            string    `json:"vm_name"`
	AgentID           string    `json:"agent_id"`
	Repository        string    `json:"repository"`
	RequestedType     string    `json:"requested_type"`
	Type              string    `json:"type,omitempty"`
	Status            string    `json:"status"`
	CancelRequested   bool      `json:"cancel_requested,omitempty"`
	Protected         bool      `json:"protected"`
	SnapshotName      string    `json:"snapshot_name,omitempty"`
	CreatedAt         time.Time `json:"created_at"`
	StartedAt         time.Time `json:"started_at,omitzero"`
	FinishedAt        time.Time `json:"finished_at,omitzero"`
	DurationSeconds   float64   `json:"duration_seconds,omitempty"`
	BytesRead         int64     `json:"bytes_read"`
	BytesSent         int64     `json:"bytes_sent"`
	BytesDeduplicated int64     `json:"bytes_deduplicated"`
	BytesZero         int64     `json:"bytes_zero"`
	BytesTotal        int64     `json:"bytes_total,omitempty"` // while running: what the agent plans to read
	Phase             string    `json:"phase,omitempty"`       // while running: PhaseSnapshot, PhaseReading, ...
	ThroughputBPS     float64   `json:"throughput_bytes_per_second,omitempty"`
	Error             string    `json:"error,omitempty"`
	Notes             string    `json:"notes,omitempty"`
	VerifiedAt        time.Time `json:"verified_at,omitzero"`
	VerifyStatus      string    `json:"verify_status,omitempty"`
	// CBTDrift: a disk's incremental found slots CBT called unchanged that had changed; the
	// agent then read the whole disk, so the backup is correct.
	CBTDrift bool         `json:"cbt_drift"`
	Disks    []BackupDisk `json:"disks,omitempty"`
	// SkippedDisks are the VM's disks the backup could not capture (independent disks,
	// physical RDMs): a succeeded backup with skipped disks succeeded with warnings.
	SkippedDisks []SkippedDisk `json:"skipped_disks,omitempty"`
	// VMConfig summarises the VM configuration stored with a succeeded backup (GET
	// /api/v1/backups/{id}/vm has all of it); absent for backups taken before it was captured.
	VMConfig *VMConfigSummary `json:"vm_config,omitempty"`
	// Copies are the other repositories that hold a verified copy of the backup (copies off
	// site, sendense-hub repo copy); the backup restores from any of them.
	Copies []BackupCopy `json:"copies,omitempty"`
}

// BackupCopy is one copy of a backup in another repository.
type BackupCopy struct {
	Repository string    `json:"repository"`
	CopiedAt   time.Time `json:"copied_at"`
	// VerifiedAt and VerifyStatus are the copy's last verification, as for the backup: absent
	// until the copy is verified, and again once it is copied anew; "damaged" copies are copied
	// again by the next run of their copy policy.
	VerifiedAt   time.Time `json:"verified_at,omitzero"`
	VerifyStatus string    `json:"verify_status,omitempty"`
}

// SkippedDisk is a disk of the VM that a backup left out, and why.
type SkippedDisk struct {
	DiskID string `json:"disk_id"`
	Label  string `json:"label,omitempty"`
	Reason string `json:"reason"`
}

// BackupDisk is the outcome of one disk in a backup.
type BackupDisk struct {
	DiskID            string    `json:"disk_id"`
	Type              string    `json:"type"`
	Reason            string    `json:"reason,omitempty"`
	ParentBackupID    string    `json:"parent_backup_id,omitempty"`
	BaseChangeID      string    `json:"base_change_id,omitempty"`
	ChangeID          string    `json:"change_id,omitempty"`
	CapacityBytes     int64     `json:"capacity_bytes"`
	ChunkSize         int64     `json:"chunk_size"`
	SlotsTotal        int64     `json:"slots_total"`
	SlotsChanged      int64     `json:"slots_changed"`
	BytesRead         int64     `json:"bytes_read"`
	BytesSent         int64     `json:"bytes_sent"`
	BytesDeduplicated int64     `json:"bytes_deduplicated"`
	BytesZero         int64     `json:"bytes_zero"`
	Status            string    `json:"status"`
	CBTDrift          bool      `json:"cbt_drift"`
	Error             string    `json:"error,omitempty"`
	DurationSeconds   float64   `json:"duration_seconds,omitempty"`
	ThroughputBPS     float64   `json:"throughput_bytes_per_second,omitempty"`
	StartedAt         time.Time `json:"started_at,omitzero"`
	FinishedAt        time.Time `json:"finished_at,omitzero"`
}

// BackupList is the body of GET /api/v1/backups.
type BackupList struct {
	Backups []Backup `json:"backups"`
	Page    Page     `json:"page"`
}

// ChainEntry is one backup of one disk in GET /api/v1/backups/{vm_name}/chain.
type ChainEntry struct {
	BackupID     string    `json:"backup_id"`
	Type         string    `json:"type"`
	Reason       string    `json:"reason,omitempty"`
	BaseChangeID string    `json:"base_change_id,omitempty"`
	ChangeID     string    `json:"change_id,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	Protected    bool      `json:"protected"`
}

// Chain is the body of GET /api/v1/backups/{vm_name}/chain: per disk, oldest first.
type Chain struct {
	VMContextID string                  `json:"vm_context_id"`
	VMName      string                  `json:"vm_name"`
	Disks       map[string][]ChainEntry `json:"disks"`
}

// Repository kinds.
const (
	RepositoryLocal = "local" // a directory on the hub
	RepositoryS3    = "s3"    // a prefix of an S3-compatible bucket
)

// Repository is a backup repository as admins see it.
type Repository struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Kind string `json:"kind"` // RepositoryLocal or RepositoryS3
	// Path is a local repository's directory; for an S3 repository, endpoint/bucket/prefix.
	Path      string    `json:"path"`
	ChunkSize int64     `json:"chunk_size"`
	CreatedAt time.Time `json:"created_at"`

	// Encrypted: the repository seals what it stores (repo create --encrypt).
	Encrypted bool `json:"encrypted,omitempty"`

	S3Settings
}

// S3Settings are the settings of an S3 repository, the same as the flags of `sendense-hub repo
// create`. The credentials are read from the file S3CredentialsFile names on the hub (the access
// key id on its first line, the secret on its second) whenever the hub opens the repository;
// no request or response carries them.
type S3Settings struct {
	S3Endpoint        string `json:"s3_endpoint,omitempty"` // http(s)://host[:port]
	S3Bucket          string `json:"s3_bucket,omitempty"`   // must exist
	S3Prefix          string `json:"s3_prefix,omitempty"`   // key prefix inside the bucket
	S3Region          string `json:"s3_region,omitempty"`
	S3CAFile          string `json:"s3_ca_file,omitempty"` // PEM authorities to trust beside the system's
	S3CredentialsFile string `json:"s3_credentials_file,omitempty"`
	// S3ObjectLock ("compliance" or "governance") makes the repository set S3 Object Lock
	// retention dates: the objects of a backup cannot be deleted, by the hub or anyone with
	// its credentials, for S3LockDays days after the backup (and after every retention run that
	// keeps it or finds it protected). The bucket must have been created with Object Lock.
	S3ObjectLock string `json:"s3_object_lock,omitempty"`
	S3LockDays   int    `json:"s3_lock_days,omitempty"`
}

// CreateRepositoryRequest is the body of POST /api/v1/repositories: a local repository (Path)
// or an S3 one (S3Endpoint, S3Bucket, S3CredentialsFile, …), not both.
type CreateRepositoryRequest struct {
	Name      string `json:"name"`
	Path      string `json:"path,omitempty"`
	ChunkSize int64  `json:"chunk_size,omitempty"`
	S3Settings
}

// ---- Agent side of a backup job ----

// MaxJobWait bounds the long poll of GET /api/v1/agent/jobs.
const MaxJobWait = 60 * time.Second

// Job is a backup job handed to an agent.
type Job struct {
	ID            string    `json:"id"`
	Status        string    `json:"status"`
	RequestedType string    `json:"requested_type"` // auto, full, incremental
	SnapshotName  string    `json:"snapshot_name"`  // sendense-<job id>
	VM            JobVM     `json:"vm"`
	Repository    JobRepo   `json:"repository"`
	Disks         []JobDisk `json:"disks"`
	Resumed       bool      `json:"resumed"` // the agent had claimed this job before (restart)
	// CBTSample is the fraction of the slots CBT calls unchanged that an incremental re-reads
	// to check CBT (at least MinCBTSampleSlots).
	CBTSample float64 `json:"cbt_sample"`
}

// JobVM identifies the VM to back up.
type JobVM struct {
	ContextID    string `json:"context_id"`
	Name         string `json:"name"`
	Source       string `json:"source"` // agent-local source name
	InstanceUUID string `json:"instance_uuid"`
	CBTEnabled   bool   `json:"cbt_enabled"` // as last discovered
}

// JobRepo is the repository a job writes to.
type JobRepo struct {
	ID        string `json:"id"`
	ChunkSize int64  `json:"chunk_size"`
}

// JobDisk is one disk to back up, with its parent backup when one exists.
type JobDisk struct {
	DiskID        string     `json:"disk_id"`
	Key           int32      `json:"key"`
	CapacityBytes int64      `json:"capacity_bytes"` // as last discovered
	Parent        *ParentRef `json:"parent,omitempty"`
	// FullReason, when set, makes this disk's backup a full one for the reason given (the
	// VM was restored in place after the parent: CBT does not see what the restore wrote).
	FullReason string `json:"full_reason,omitempty"`
}

// ParentRef is the latest successful backup of a disk in the job's repository.
type ParentRef struct {
	BackupID      string `json:"backup_id"`
	ChangeID      string `json:"change_id"`
	CapacityBytes int64  `json:"capacity_bytes"`
}

// JobProgress is the body of POST .../progress: a liveness heartbeat with counters so far.
type JobProgress struct {
	Phase             string    `json:"phase"` // PhaseSnapshot, PhaseReading, PhaseFinished
	SnapshotRef       string    `json:"snapshot_ref,omitempty"`
	SnapshotCreatedAt time.Time `json:"snapshot_created_at,omitzero"`
	// The counters cover the disks not yet committed; the hub adds those of committed disks, so
	// a job's totals stay right across an agent restart.
	BytesRead         int64 `json:"bytes_read"`
	BytesSent         int64 `json:"bytes_sent"`
	BytesDeduplicated int64 `json:"bytes_deduplicated"`
	BytesZero         int64 `json:"bytes_zero"`
	BytesTotal        int64 `json:"bytes_total"` // bytes the agent plans to read in all
}

// Phases of a running job (JobProgress.Phase, Backup.Phase).
const (
	PhaseSnapshot = "snapshot" // taking the snapshot
	PhaseReading  = "reading"  // reading, hashing and uploading disks
	PhaseFinished = "finished" // done; the outcome follows
)

// JobState is the hub's answer to progress and GET: cancel when the operator asked for it.
// For an instant-recovery session (GET PathAgentInstantRecovery), Status is the session's and
// CancelRequested says its stop is pending: a start still waiting for its guest ends the wait.
type JobState struct {
	ID              string `json:"id"`
	Status          string `json:"status"`
	CancelRequested bool   `json:"cancel_requested"`
}

// JobCompletion is the body of POST .../complete.
type JobCompletion struct {
	Status string `json:"status"` // succeeded, failed or cancelled
	Error  string `json:"error,omitempty"`
	Notes  string `json:"notes,omitempty"` // e.g. "quiesce failed; crash-consistent snapshot"
	// Progress, when set, is the job's last progress report, recorded (and checked) as POST
	// .../progress would before the outcome: one round trip instead of two at the end of a job.
	Progress *JobProgress `json:"progress,omitempty"`
}

// OpenSessionRequest opens (or reopens) the upload session of one disk of a job.
type OpenSessionRequest struct {
	Type           string `json:"type"`   // full or incremental
	Reason         string `json:"reason"` // why this type, e.g. "no parent backup", "disk resized"
	ParentBackupID string `json:"parent_backup_id,omitempty"`
	BaseChangeID   string `json:"base_change_id,omitempty"`
	ChangeID       string `json:"change_id,omitempty"` // change ID of the disk in the snapshot
	CapacityBytes  int64  `json:"capacity_bytes"`      // capacity in the snapshot
	ChunkSize      int64  `json:"chunk_size"`
}

// Session is an upload session: where the slots of one disk of one job are collected.
type Session struct {
	ID            string `json:"id"`
	JobID         string `json:"job_id"`
	DiskID        string `json:"disk_id"`
	Type          string `json:"type"`
	CapacityBytes int64  `json:"capacity_bytes"`
	ChunkSize     int64  `json:"chunk_size"`
	SlotCount     int64  `json:"slot_count"`
	Status        string `json:"status"` // open, committing, committed or aborted
	// CBTDrift says a drift check of this session found slots CBT called unchanged that had
	// changed: CBT is not trusted for the disk, and the session commits only once every slot is
	// recorded (an agent resuming it reads them all).
	CBTDrift bool `json:"cbt_drift"`
	// Done lists, as half-open [start, end) slot ranges, the slots already recorded: a resumed
	// upload skips them.
	Done [][2]int64 `json:"done"`
	// KnownBackupID is the backup whose chunks the session may reference without uploading
	// them (an incremental's parent, else the disk's latest backup in the repository: the
	// known-chunks rule). Empty when there is none: the hub then holds for the session only the
	// chunks it recorded itself.
	KnownBackupID string `json:"known_backup_id,omitempty"`
}

// SlotDigest names the content of one slot: the SHA-256 (hex) of its plaintext.
type SlotDigest struct {
	Slot   int64  `json:"slot"`
	Digest string `json:"digest"`
}

// MaxSlotBatch bounds one SlotBatch.
const MaxSlotBatch = 1024

// MaxUploadsPerAgent bounds the chunk uploads one agent has in flight at a hub: the hub refuses
// more (busy), and an agent keeps every upload of its process within it.
const MaxUploadsPerAgent = 32

// ChunkStored answers the upload of a chunk the hub names (PathAgentChunks): the name it gave,
// the SHA-256 (hex) of the plaintext, and whether the chunk was new.
type ChunkStored struct {
	Digest string `json:"digest"`
	Stored bool   `json:"stored"`
}

// SlotBatch records slots whose chunks the hub holds (or that are all zero).
type SlotBatch struct {
	Slots []SlotDigest `json:"slots"`
}

// SlotBatchResult says which slots were recorded and which digests the hub lacks: the agent
// uploads those chunks and sends their slots again.
type SlotBatchResult struct {
	Recorded int      `json:"recorded"`
	Missing  []string `json:"missing,omitempty"`
}

// CommitRequest closes a session; the hub writes the disk's index.
type CommitRequest struct {
	SlotsChanged      int64 `json:"slots_changed"`
	BytesRead         int64 `json:"bytes_read"`
	BytesSent         int64 `json:"bytes_sent"`
	BytesDeduplicated int64 `json:"bytes_deduplicated"`
	BytesZero         int64 `json:"bytes_zero"`
	// CBTDrift: the drift check found slots CBT called unchanged whose content differs from the
	// parent's; every slot of the disk was read in this session. DriftSlots lists the first
	// MaxDriftSlots of them, DriftCount counts them all.
	CBTDrift   bool    `json:"cbt_drift,omitempty"`
	DriftSlots []int64 `json:"drift_slots,omitempty"`
	DriftCount int64   `json:"drift_count,omitempty"`
}

// MaxCheckSlots bounds one CheckRequest.
const MaxCheckSlots = 1024

// CheckRequest asks the hub to compare slot digests the agent read with the parent index of an
// incremental's session: the drift check.
type CheckRequest struct {
	Slots []SlotDigest `json:"slots"`
}

// CheckResult lists the slots of a CheckRequest whose digest differs from the parent's.
type CheckResult struct {
	Mismatched []int64 `json:"mismatched"`
}

// RepositoryList is the body of GET /api/v1/repositories.
type RepositoryList struct {
	Repositories []Repository `json:"repositories"`
}

// Verify statuses of a backup and of a copy (VerifyStatus): "" until verified. A copy that
// repo attach found and recorded is VerifyPending until its first verification: it does not
// stand in for its backup (as a prune of the backup's home would have it) before then.
const (
	VerifyOK      = "ok"
	VerifyDamaged = "damaged"
	VerifyPending = "pending"
)

// VerifyRequest asks for a verification of every succeeded backup, or of BackupID only.
type VerifyRequest struct {
	BackupID string `json:"backup_id,omitempty"`
}

// VerifyReport is what a verification found: damaged chunks are quarantined, backups damaged
// before and sound again are healed.
type VerifyReport struct {
	Backups        int                 `json:"backups"`
	Chunks         int                 `json:"chunks"`
	DamagedChunks  []string            `json:"damaged_chunks"`
	Quarantined    []string            `json:"quarantined"`
	DamagedBackups map[string][]string `json:"damaged_backups"` // backup id → what is wrong
	// Copies counts the copies verified with the backups (in the repositories that hold them);
	// DamagedCopies names what is wrong with each damaged one: backup id → repository → problems.
	// A damaged copy leaves the backup itself sound.
	Copies        int                            `json:"copies"`
	DamagedCopies map[string]map[string][]string `json:"damaged_copies"`
	// SkippedRepositories names the repositories of copies that could not be read (repository
	// → why); their copies keep their last verification. A repository holding backups of its
	// own is never skipped: the verification fails instead.
	SkippedRepositories map[string]string `json:"skipped_repositories"`
	Healed              []string          `json:"healed"`
	DurationNanos       int64             `json:"duration_nanoseconds"`
}

// BackupHold keeps a restore point from being deleted, pruned or moved while a client reads it
// in several requests (a restore of each of its disks, say), until ExpiresAt: the client renews
// it before then and ends it when done. A client that dies stops renewing, and the hold expires.
type BackupHold struct {
	ID        string    `json:"id"`
	BackupID  string    `json:"backup_id"`
	ExpiresAt time.Time `json:"expires_at"`
	// TTLSeconds is the hold's lifetime from each renewal: a client renews well within it,
	// counted on its own clock, which may differ from the hub's.
	TTLSeconds int `json:"ttl_seconds"`
}
