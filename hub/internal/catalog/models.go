package catalog

import (
	"time"

	"github.com/sendense/sendense/shared/api"
	"github.com/uptrace/bun"
)

// Row types, one per table. Nullable columns use bun's nullzero: the zero value is stored as NULL
// and NULL scans back as the zero value.

// Repository is a backup repository (a chunk store and its indexes).
type Repository struct {
	bun.BaseModel `bun:"table:repositories"`

	ID        string    `bun:"id,pk"`
	Name      string    `bun:"name,notnull"`
	Kind      string    `bun:"kind,notnull"` // "local" or "s3"
	Path      string    `bun:"path,notnull"` // local: the directory; s3: where, for people (endpoint/bucket/prefix)
	ChunkSize int64     `bun:"chunk_size,notnull"`
	CreatedAt time.Time `bun:"created_at,notnull"`
	UpdatedAt time.Time `bun:"updated_at,notnull"`

	// PasswordFile is the path of the file that unlocks an encrypted repository, read whenever
	// the hub opens it; empty for a plain repository. The password itself is never stored.
	PasswordFile string `bun:"password_file,notnull"`

	// Settings of an S3 repository ("" for a local one). The credentials stay in the file
	// named here, read whenever the repository is opened; the catalog never holds them.
	S3Endpoint        string `bun:"s3_endpoint,notnull"`
	S3Bucket          string `bun:"s3_bucket,notnull"`
	S3Prefix          string `bun:"s3_prefix,notnull"`
	S3Region          string `bun:"s3_region,notnull"`
	S3CAFile          string `bun:"s3_ca_file,notnull"`
	S3CredentialsFile string `bun:"s3_credentials_file,notnull"`
	// S3ObjectLock is the S3 Object Lock mode of the repository's retention dates
	// ("compliance" or "governance"; "" for none), S3LockDays how long after a backup (or
	// after a retention run that keeps it) its objects cannot be deleted.
	S3ObjectLock string `bun:"s3_object_lock,notnull"`
	S3LockDays   int    `bun:"s3_lock_days,notnull"`

	// GCAt is when garbage collection last completed on the repository (zero: never).
	GCAt time.Time `bun:"gc_at,nullzero"`
}

// Agent is an enrolled sendense-agent.
type Agent struct {
	bun.BaseModel `bun:"table:agents"`

	ID              string    `bun:"id,pk"`
	Name            string    `bun:"name,notnull"`
	Hostname        string    `bun:"hostname,notnull"`
	Version         string    `bun:"version,notnull"`
	Status          string    `bun:"status,notnull"` // api.AgentActive, api.AgentRevoked
	CertSerial      string    `bun:"cert_serial,notnull"`
	PrevCertSerial  string    `bun:"prev_cert_serial,notnull"` // still accepted until the next renewal
	CertFingerprint string    `bun:"cert_fingerprint,notnull"`
	CertNotAfter    time.Time `bun:"cert_not_after,notnull"`
	JoinTokenID     string    `bun:"join_token_id,nullzero"`
	LastSeenAt      time.Time `bun:"last_seen_at,nullzero"`
	RevokedAt       time.Time `bun:"revoked_at,nullzero"`
	CreatedAt       time.Time `bun:"created_at,notnull"`
	UpdatedAt       time.Time `bun:"updated_at,notnull"`
}

// JoinToken is a single-use enrollment token. Only the SHA-256 of its secret is stored.
type JoinToken struct {
	bun.BaseModel `bun:"table:join_tokens"`

	ID         string    `bun:"id,pk"`
	Name       string    `bun:"name,notnull"`
	SecretHash string    `bun:"secret_hash,notnull"`
	ExpiresAt  time.Time `bun:"expires_at,notnull"`
	RedeemedAt time.Time `bun:"redeemed_at,nullzero"`
	AgentID    string    `bun:"agent_id,nullzero"`
	RevokedAt  time.Time `bun:"revoked_at,nullzero"`
	CreatedAt  time.Time `bun:"created_at,notnull"`
	UpdatedAt  time.Time `bun:"updated_at,notnull"`
}

// APIToken is an operator bearer token. Only the SHA-256 of its secret is stored.
type APIToken struct {
	bun.BaseModel `bun:"table:api_tokens"`

	ID         string    `bun:"id,pk"`
	Name       string    `bun:"name,notnull"`
	Role       string    `bun:"role,notnull"` // admin, operator, viewer
	SecretHash string    `bun:"secret_hash,notnull"`
	LastUsedAt time.Time `bun:"last_used_at,nullzero"`
	RevokedAt  time.Time `bun:"revoked_at,nullzero"`
	CreatedAt  time.Time `bun:"created_at,notnull"`
	UpdatedAt  time.Time `bun:"updated_at,notnull"`
}

// Source is one vCenter/ESXi endpoint an agent reports on.
type Source struct {
	bun.BaseModel `bun:"table:sources"`

	ID              int64     `bun:"id,pk,autoincrement"`
	AgentID         string    `bun:"agent_id,notnull"`
	Name            string    `bun:"name,notnull"`
	InstanceUUID    string    `bun:"instance_uuid,nullzero"` // about.instanceUuid; NULL until first reported
	URL             string    `bun:"url,notnull"`
	Status          string    `bun:"status,notnull"`
	LastError       string    `bun:"last_error,nullzero"`
	LastInventoryAt time.Time `bun:"last_inventory_at,nullzero"`
	CreatedAt       time.Time `bun:"created_at,notnull"`
	UpdatedAt       time.Time `bun:"updated_at,notnull"`
}

// VMContext is one VM the hub knows, keyed by a context id like ctx-pgtest1-20251006-203401.
type VMContext struct {
	bun.BaseModel `bun:"table:vm_contexts,alias:vmc"`

	ContextID     string    `bun:"context_id,pk"`
	SourceID      int64     `bun:"source_id,notnull"`
	AgentID       string    `bun:"agent_id,notnull"`
	InstanceUUID  string    `bun:"instance_uuid,notnull"`
	BIOSUUID      string    `bun:"bios_uuid,notnull"`
	VMName        string    `bun:"vm_name,notnull"`
	PowerState    string    `bun:"power_state,notnull"`
	GuestOS       string    `bun:"guest_os,notnull"`
	NumCPU        int       `bun:"num_cpu,notnull"`
	MemoryMB      int64     `bun:"memory_mb,notnull"`
	Datacenter    string    `bun:"datacenter,notnull"`
	Cluster       string    `bun:"cluster,notnull"`
	Host          string    `bun:"host,notnull"`
	Folder        string    `bun:"folder,notnull"`
	IsTemplate    bool      `bun:"is_template,notnull"`
	CBTEnabled    bool      `bun:"cbt_enabled,notnull"`
	CurrentStatus string    `bun:"current_status,notnull"` // api.VMDiscovered, api.VMProtected, api.VMGone
	GoneAt        time.Time `bun:"gone_at,nullzero"`
	CreatedAt     time.Time `bun:"created_at,notnull"`
	UpdatedAt     time.Time `bun:"updated_at,notnull"`
}

// VMDisk is one virtual disk, recorded the moment discovery sees it. JobID is empty (NULL) until
// a backup job touches the disk; when set, the foreign key to backup_jobs is enforced.
type VMDisk struct {
	bun.BaseModel `bun:"table:vm_disks"`

	ID             int64     `bun:"id,pk,autoincrement"`
	VMContextID    string    `bun:"vm_context_id,notnull"`
	DiskID         string    `bun:"disk_id,notnull"`
	DeviceKey      int32     `bun:"device_key,notnull"`
	Label          string    `bun:"label,notnull"`
	CapacityBytes  int64     `bun:"capacity_bytes,notnull"`
	Datastore      string    `bun:"datastore,notnull"`
	VMDKPath       string    `bun:"vmdk_path,notnull"`
	BackingType    string    `bun:"backing_type,notnull"`
	Provisioning   string    `bun:"provisioning,notnull"`
	ControllerType string    `bun:"controller_type,notnull"`
	ControllerBus  int32     `bun:"controller_bus,notnull"`
	UnitNumber     int32     `bun:"unit_number,notnull"`
	DiskMode       string    `bun:"disk_mode,notnull"`
	Backupable     bool      `bun:"backupable,notnull"`
	ChangeID       string    `bun:"change_id,notnull"` // CBT change ID of the last successful backup
	Status         string    `bun:"status,notnull"`    // api.DiskPresent, api.DiskGone
	GoneAt         time.Time `bun:"gone_at,nullzero"`
	JobID          string    `bun:"job_id,nullzero"`
	CreatedAt      time.Time `bun:"created_at,notnull"`
	UpdatedAt      time.Time `bun:"updated_at,notnull"`
}

// BackupJob is one backup run of one VM.
type BackupJob struct {
	bun.BaseModel `bun:"table:backup_jobs,alias:j"`

	ID           string `bun:"id,pk"`
	VMContextID  string `bun:"vm_context_id,notnull"`
	AgentID      string `bun:"agent_id,notnull"`
	RepositoryID string `bun:"repository_id,notnull"`
	// OriginRepositoryID is the repository the backup was taken into when it has since moved
	// to a copy of it (RehomeBackup); empty while it lives where it was taken.
	OriginRepositoryID string    `bun:"origin_repository_id,nullzero"`
	RequestedType      string    `bun:"requested_type,notnull"` // auto, full, incremental
	Type               string    `bun:"type,notnull"`           // full or incremental once decided
	Status             string    `bun:"status,notnull"`
	CancelRequested    bool      `bun:"cancel_requested,notnull"`
	SnapshotName       string    `bun:"snapshot_name,notnull"`
	SnapshotRef        string    `bun:"snapshot_ref,notnull"`
	SnapshotCreatedAt  time.Time `bun:"snapshot_created_at,nullzero"`
	ClaimedAt          time.Time `bun:"claimed_at,nullzero"`
	StartedAt          time.Time `bun:"started_at,nullzero"`
	FinishedAt         time.Time `bun:"finished_at,nullzero"`
	HeartbeatAt        time.Time `bun:"heartbeat_at,nullzero"`
	BytesRead          int64     `bun:"bytes_read,notnull"`
	BytesSent          int64     `bun:"bytes_sent,notnull"`
	BytesDeduplicated  int64     `bun:"bytes_deduplicated,notnull"`
	BytesZero          int64     `bun:"bytes_zero,notnull"`
	BytesTotal         int64     `bun:"bytes_total,notnull"` // what the agent plans to read
	Phase              string    `bun:"phase,notnull"`       // the agent's last reported phase
	// SkippedDisks are the VM's present disks a snapshot cannot capture, recorded when the job
	// succeeds (JSON).
	SkippedDisks []api.SkippedDisk `bun:"skipped_disks,type:text,nullzero"`
	// VMConfigDigest is the SHA-256 (hex) of the VM configuration stored with the backup in
	// its repository (vmconfigs/<instance uuid>/<id>.json); empty (NULL) for a backup taken
	// before configurations were captured, and cleared when the job does not succeed.
	VMConfigDigest string    `bun:"vm_config_digest,nullzero"`
	Error          string    `bun:"error,nullzero"`
	Protected      bool      `bun:"protected,notnull"`
	PolicyID       string    `bun:"policy_id,nullzero"`
	Notes          string    `bun:"notes,nullzero"`
	VerifiedAt     time.Time `bun:"verified_at,nullzero"`
	VerifyStatus   string    `bun:"verify_status,notnull"`
	// CBTSample is the fraction of unchanged slots an incremental re-reads (the drift check);
	// CBTDrift records that a disk of the backup caught CBT missing changes.
	CBTSample float64   `bun:"cbt_sample,notnull"`
	CBTDrift  bool      `bun:"cbt_drift,notnull"`
	CreatedAt time.Time `bun:"created_at,notnull"`
	UpdatedAt time.Time `bun:"updated_at,notnull"`
}

// BackupDisk is the outcome of one disk in one backup job.
type BackupDisk struct {
	bun.BaseModel `bun:"table:backup_disks,alias:bd"`

	ID                int64     `bun:"id,pk,autoincrement"`
	JobID             string    `bun:"job_id,notnull"`
	VMContextID       string    `bun:"vm_context_id,notnull"`
	DiskID            string    `bun:"disk_id,notnull"`
	Type              string    `bun:"type,notnull"`
	Reason            string    `bun:"reason,notnull"`
	ParentJobID       string    `bun:"parent_job_id,nullzero"`
	BaseChangeID      string    `bun:"base_change_id,notnull"`
	ChangeID          string    `bun:"change_id,notnull"`
	CapacityBytes     int64     `bun:"capacity_bytes,notnull"`
	ChunkSize         int64     `bun:"chunk_size,notnull"`
	SlotsTotal        int64     `bun:"slots_total,notnull"`
	SlotsChanged      int64     `bun:"slots_changed,notnull"`
	BytesRead         int64     `bun:"bytes_read,notnull"`
	BytesSent         int64     `bun:"bytes_sent,notnull"`
	BytesDeduplicated int64     `bun:"bytes_deduplicated,notnull"`
	BytesZero         int64     `bun:"bytes_zero,notnull"`
	IndexPath         string    `bun:"index_path,notnull"`
	IndexDigest       string    `bun:"index_digest,notnull"`
	Status            string    `bun:"status,notnull"`
	CBTDrift          bool      `bun:"cbt_drift,notnull"`
	Error             string    `bun:"error,nullzero"`
	StartedAt         time.Time `bun:"started_at,nullzero"`
	FinishedAt        time.Time `bun:"finished_at,nullzero"`
	CreatedAt         time.Time `bun:"created_at,notnull"`
	UpdatedAt         time.Time `bun:"updated_at,notnull"`
}

// UploadSession collects the slots of one disk of one job until it is committed into an index.
type UploadSession struct {
	bun.BaseModel `bun:"table:upload_sessions"`

	ID            string `bun:"id,pk"`
	JobID         string `bun:"job_id,notnull"`
	DiskID        string `bun:"disk_id,notnull"`
	AgentID       string `bun:"agent_id,notnull"`
	RepositoryID  string `bun:"repository_id,notnull"`
	Type          string `bun:"type,notnull"`
	Reason        string `bun:"reason,notnull"`
	ParentJobID   string `bun:"parent_job_id,nullzero"`
	BaseChangeID  string `bun:"base_change_id,notnull"`
	ChangeID      string `bun:"change_id,notnull"`
	CapacityBytes int64  `bun:"capacity_bytes,notnull"`
	ChunkSize     int64  `bun:"chunk_size,notnull"`
	SlotCount     int64  `bun:"slot_count,notnull"`
	Status        string `bun:"status,notnull"` // api.SessionOpen, api.SessionCommitting, api.SessionCommitted, api.SessionAborted
	// DriftCount counts the slots the session's drift checks found changed although CBT called
	// them unchanged; a session with any commits only with every slot recorded.
	DriftCount int64     `bun:"drift_count,notnull"`
	CreatedAt  time.Time `bun:"created_at,notnull"`
	UpdatedAt  time.Time `bun:"updated_at,notnull"`
}

// UploadSlot records that one slot of a session has the given content digest (hex SHA-256).
type UploadSlot struct {
	bun.BaseModel `bun:"table:upload_slots,alias:us"`

	SessionID string    `bun:"session_id,pk"`
	Slot      int64     `bun:"slot,pk"`
	Digest    string    `bun:"digest,notnull"`
	CreatedAt time.Time `bun:"created_at,notnull"`
	UpdatedAt time.Time `bun:"updated_at,notnull"`
}

// Policy says which VMs are backed up when, where, and how long their backups are kept.
type Policy struct {
	bun.BaseModel `bun:"table:policies,alias:p"`

	ID      string   `bun:"id,pk"`
	Name    string   `bun:"name,notnull"`
	Kind    string   `bun:"kind,notnull"` // api.PolicyBackup, api.PolicyRestoreTest or api.PolicyCopy
	Enabled bool     `bun:"enabled,notnull"`
	Checks  []string `bun:"checks,type:text,nullzero"` // a restore-test policy's checks, stored as JSON
	Paths   []string `bun:"paths,type:text,nullzero"`  // the paths its paths check looks for, stored as JSON
	// Boot is a restore-test policy's boot check settings (JSON); nil without the boot check.
	Boot         *api.RestoreTestBoot `bun:"boot,type:text,nullzero"`
	VMNames      []string             `bun:"vm_names,type:text,nullzero"` // explicit names or context ids, stored as JSON
	VMGlob       string               `bun:"vm_glob,notnull"`
	AgentID      string               `bun:"agent_id,nullzero"`
	RepositoryID string               `bun:"repository_id,notnull"`
	// TargetRepositoryID is where a copy policy copies RepositoryID's backups to.
	TargetRepositoryID    string    `bun:"target_repository_id,nullzero"`
	Schedule              string    `bun:"schedule,notnull"`
	Timezone              string    `bun:"timezone,notnull"`
	KeepLast              int       `bun:"keep_last,notnull"`
	KeepHourly            int       `bun:"keep_hourly,notnull"`
	KeepDaily             int       `bun:"keep_daily,notnull"`
	KeepWeekly            int       `bun:"keep_weekly,notnull"`
	KeepMonthly           int       `bun:"keep_monthly,notnull"`
	KeepYearly            int       `bun:"keep_yearly,notnull"`
	FullEveryIncrementals int       `bun:"full_every_incrementals,notnull"`
	FullEveryDays         int       `bun:"full_every_days,notnull"`
	CBTSample             float64   `bun:"cbt_sample,notnull"` // the drift check's sample of its incrementals
	LastRunAt             time.Time `bun:"last_run_at,nullzero"`
	NextRunAt             time.Time `bun:"next_run_at,nullzero"`
	CreatedAt             time.Time `bun:"created_at,notnull"`
	UpdatedAt             time.Time `bun:"updated_at,notnull"`
}

// Event is one recorded event: an inventory change or an operator's request. Events are only
// ever inserted.
type Event struct {
	bun.BaseModel `bun:"table:events,alias:ev"`

	ID            int64             `bun:"id,pk,autoincrement"`
	Type          string            `bun:"type,notnull"`
	OccurredAt    time.Time         `bun:"occurred_at,notnull"`
	VMContextID   string            `bun:"vm_context_id,nullzero"`
	VMName        string            `bun:"vm_name,nullzero"`
	AgentID       string            `bun:"agent_id,nullzero"`
	Actor         string            `bun:"actor,notnull"`
	SourceAddress string            `bun:"source_address,nullzero"`
	Outcome       string            `bun:"outcome,notnull"`
	Details       map[string]string `bun:"details,type:text,nullzero"` // stored as JSON
}
