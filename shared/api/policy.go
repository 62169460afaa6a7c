package api

import "time"

// Retention says which backups a policy keeps, with restic/Proxmox semantics: the newest backup
// of each of the most recent N hours, days, ISO weeks, months and years with backups, and the N
// newest. All zero keeps everything. Protected backups are always kept.
type Retention struct {
	KeepLast    int `json:"keep_last,omitempty"`
	KeepHourly  int `json:"keep_hourly,omitempty"`
	KeepDaily   int `json:"keep_daily,omitempty"`
	KeepWeekly  int `json:"keep_weekly,omitempty"`
	KeepMonthly int `json:"keep_monthly,omitempty"`
	KeepYearly  int `json:"keep_yearly,omitempty"`
}

// Kinds of policy (Policy.Kind).
const (
	PolicyBackup      = "backup"       // back the VMs up (the default)
	PolicyRestoreTest = "restore_test" // test the VMs' latest restore points
	PolicyCopy        = "copy"         // copy the VMs' backups into another repository
)

// Policy says which VMs are backed up when, to which repository, and how long backups are kept;
// or, with Kind restore_test, which VMs' latest restore points (in Repository) are tested when,
// with which Checks. A restore-test policy has no retention, cadence or CBT sample. With Kind
// copy, which VMs' successful backups in From are copied when into To, and how long the copies
// are kept there (Retention applies to the copies in To, never to the backups in From).
type Policy struct {
	ID      string `json:"id,omitempty"`
	Name    string `json:"name"`
	Kind    string `json:"kind,omitempty"` // backup (default) or restore_test
	Enabled bool   `json:"enabled"`
	// Checks are the restore-test checks of a restore_test policy (default: read).
	Checks []string `json:"checks,omitempty"`
	// Paths are the paths a restore_test policy's paths check looks for in every covered VM's
	// restore point (see SplitTestPath).
	Paths []string `json:"paths,omitempty"`
	// RestoreTestBoot holds a restore_test policy's boot check settings (host, network,
	// tcp_port, boot_timeout); required with the boot check, refused without it.
	RestoreTestBoot
	// VMs selects VMs by exact name or context id; VMGlob by name pattern (path.Match syntax,
	// e.g. "db-*"); Agent restricts both to one agent's VMs. With neither VMs nor VMGlob, every
	// VM (of Agent, when set) is covered. Templates and gone VMs are never covered.
	VMs        []string `json:"vms,omitempty"`
	VMGlob     string   `json:"vm_glob,omitempty"`
	Agent      string   `json:"agent,omitempty"`
	Repository string   `json:"repository,omitempty"` // default "default"
	// From and To are a copy policy's source and target repositories (From defaults to
	// Repository, then "default"); a copy policy's Repository is its From.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// Schedule is a 5-field cron expression ("0 3 * * *"), a shorthand ("@daily") or an interval
	// ("@every 6h"); Timezone is an IANA zone for cron (default UTC).
	Schedule  string    `json:"schedule"`
	Timezone  string    `json:"timezone,omitempty"`
	Retention Retention `json:"retention"`
	// FullEveryIncrementals and FullEveryDays force a full backup after that many incrementals
	// or days; 0 (the default) never forces one: every backup is a full restore point anyway.
	FullEveryIncrementals int `json:"full_every_incrementals,omitempty"`
	FullEveryDays         int `json:"full_every_days,omitempty"`
	// CBTSample is the fraction (0..1) of the slots CBT calls unchanged that the policy's
	// incrementals re-read to check CBT (see StartBackupRequest.CBTSample); absent: DefaultCBTSample.
	CBTSample     *float64  `json:"cbt_sample,omitempty"`
	LastRunAt     time.Time `json:"last_run_at,omitzero"`
	NextRunAt     time.Time `json:"next_run_at,omitzero"`
	LastStatus    string    `json:"last_status,omitempty"` // of the last finished backup, or restore test (passed, failed)
	LastSuccessAt time.Time `json:"last_success_at,omitzero"`
	CreatedAt     time.Time `json:"created_at,omitzero"`
}

// PruneDecision is what prune decided for one backup, and why.
type PruneDecision struct {
	BackupID  string    `json:"backup_id"`
	VMName    string    `json:"vm_name"`
	CreatedAt time.Time `json:"created_at"`
	Keep      bool      `json:"keep"`
	Reasons   []string  `json:"reasons,omitempty"`
}

// PruneRequest is the body of POST /api/v1/prune: which VMs retention is applied to (empty:
// those of every enabled policy), and whether to remove anything.
type PruneRequest struct {
	Policy string `json:"policy,omitempty"` // name or id
	VM     string `json:"vm,omitempty"`     // name or context id
	DryRun bool   `json:"dry_run,omitempty"`
}

// PruneResult is the answer of POST /api/v1/prune: every decision, kept and removed, with its
// reasons, and the backups that could not be removed.
type PruneResult struct {
	Decisions []PruneDecision `json:"decisions"`
	Removed   int             `json:"removed"`
	Errors    []string        `json:"errors,omitempty"`
}

// PolicyList is the body of GET /api/v1/policies.
type PolicyList struct {
	Policies []Policy `json:"policies"`
}
