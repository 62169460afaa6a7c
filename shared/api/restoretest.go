package api

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// RestoreTestIDPrefix starts every restore test's id ("rt-20261130-160000-0a1b2c3d").
const RestoreTestIDPrefix = "rt-"

// Checks a restore test can run (StartRestoreTestRequest.Checks, Policy.Checks).
const (
	// CheckRead reads every disk of the restore point in full through the hub's restore path:
	// every chunk is verified against its digest, and a damaged chunk is quarantined.
	CheckRead = "read"
)

// RestoreTestChecks lists the checks the hub runs today; DefaultRestoreTestChecks is what a
// request without checks asks for.
var (
	RestoreTestChecks        = []string{CheckRead}
	DefaultRestoreTestChecks = []string{CheckRead}
)

// PlannedRestoreTestChecks names checks that are designed but not built yet, each with what it
// will do: a request naming one is refused rather than reported as passed.
var PlannedRestoreTestChecks = map[string]string{
	"paths": "paths that must exist inside the restored file systems (needs file-level restore)",
	"boot":  "an instant-recovery boot with a guest heartbeat or TCP check (needs instant recovery)",
}

// States of a restore test (RestoreTest.Status). Passed and failed are final.
const (
	RestoreTestQueued  = "queued"
	RestoreTestRunning = "running"
	RestoreTestPassed  = "passed"
	RestoreTestFailed  = "failed"
)

// ValidateChecks checks a list of restore-test check names; field names the list in errors
// ("checks"). The error is a *FieldError naming the entry.
func ValidateChecks(field string, checks []string) error {
	if len(checks) > 16 {
		return &FieldError{field, "at most 16 checks"}
	}
	for i, c := range checks {
		f := fmt.Sprintf("%s[%d]", field, i)
		if what, ok := PlannedRestoreTestChecks[c]; ok {
			return &FieldError{f, fmt.Sprintf("the %q check (%s) is not available yet; available: %s", c, what, strings.Join(RestoreTestChecks, ", "))}
		}
		if !slices.Contains(RestoreTestChecks, c) {
			return &FieldError{f, fmt.Sprintf("unknown check %q; available: %s", c, strings.Join(RestoreTestChecks, ", "))}
		}
		if slices.Index(checks, c) != i {
			return &FieldError{f, fmt.Sprintf("check %q is listed twice", c)}
		}
	}
	return nil
}

// StartRestoreTestRequest is the body of POST /api/v1/restore-tests: test the VM's latest
// successful restore point, or BackupID (a successful backup of that VM).
type StartRestoreTestRequest struct {
	VM       string   `json:"vm"` // name or context id
	BackupID string   `json:"backup_id,omitempty"`
	Checks   []string `json:"checks,omitempty"` // default DefaultRestoreTestChecks
}

// RestoreTestCheck is the outcome of one check of a restore test. A read check covers one
// disk; Error says why a check failed (the disk, the slot and the damage found).
type RestoreTestCheck struct {
	Name      string  `json:"name"`
	DiskID    string  `json:"disk_id,omitempty"`
	Passed    bool    `json:"passed"`
	Error     string  `json:"error,omitempty"`
	BytesRead int64   `json:"bytes_read"`
	DataBytes int64   `json:"data_bytes"` // of BytesRead, those held in chunks (zero slots are not stored)
	Seconds   float64 `json:"seconds"`
}

// RestoreTest is one restore test with its evidence. BytesRead counts the disk bytes read and
// verified through the restore path (zero slots included, as a restore writes them), DataBytes
// those of them held in chunks, read from the repository and checked against their digests;
// MBPerS is BytesRead per second in 10^6 bytes; Seconds is the time from start to finish, the
// measured time to restore the VM's disks (RTO of a full restore).
type RestoreTest struct {
	ID              string             `json:"id"`
	VMName          string             `json:"vm_name"`
	VMContextID     string             `json:"vm_context_id"`
	BackupID        string             `json:"backup_id"`
	BackupCreatedAt time.Time          `json:"backup_created_at"`
	Repository      string             `json:"repository"`
	Policy          string             `json:"policy,omitempty"` // the policy's id when a policy started it
	Actor           string             `json:"actor"`            // who started it: an API token's name, "cli", "policy"
	Status          string             `json:"status"`
	Passed          bool               `json:"passed"`
	RequestedChecks []string           `json:"requested_checks"`
	Checks          []RestoreTestCheck `json:"checks"`
	BytesRead       int64              `json:"bytes_read"`
	DataBytes       int64              `json:"data_bytes"`
	BytesTotal      int64              `json:"bytes_total"`
	MBPerS          float64            `json:"mb_per_s"`
	Seconds         float64            `json:"seconds"`
	Error           string             `json:"error,omitempty"`
	CreatedAt       time.Time          `json:"created_at"`
	StartedAt       time.Time          `json:"started_at,omitzero"`
	FinishedAt      time.Time          `json:"finished_at,omitzero"`
}

// RestoreTestList is the body of GET /api/v1/restore-tests, newest first.
type RestoreTestList struct {
	RestoreTests []RestoreTest `json:"restore_tests"`
	Page         Page          `json:"page"`
}

// RestoreTestReport is what `sendense-hub report restore-tests` reports for a period: every
// VM with its runs, and the VMs that had none.
type RestoreTestReport struct {
	From        time.Time           `json:"from"`
	To          time.Time           `json:"to"`
	GeneratedAt time.Time           `json:"generated_at"`
	Runs        int                 `json:"runs"`
	Passed      int                 `json:"passed"`
	Failed      int                 `json:"failed"`
	VMs         []RestoreTestVM     `json:"vms"`
	Untested    []RestoreTestVMName `json:"untested"`
}

// RestoreTestVM is one VM's restore tests in a report, newest first.
type RestoreTestVM struct {
	VMName      string        `json:"vm_name"`
	VMContextID string        `json:"vm_context_id"`
	Passed      int           `json:"passed"`
	Failed      int           `json:"failed"`
	LastResult  string        `json:"last_result"`
	Runs        []RestoreTest `json:"runs"`
}

// RestoreTestVMName names a VM in a report.
type RestoreTestVMName struct {
	VMName      string `json:"vm_name"`
	VMContextID string `json:"vm_context_id"`
}
