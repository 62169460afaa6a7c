package api

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// RestoreTestIDPrefix starts every restore test's id ("rt-20261130-160000-0a1b2c3d").
const RestoreTestIDPrefix = "rt-"

// Checks a restore test can run (StartRestoreTestRequest.Checks, Policy.Checks).
const (
	// CheckRead reads every disk of the restore point in full through the hub's restore path:
	// every chunk is verified against its digest, and a damaged chunk is quarantined.
	CheckRead = "read"
	// CheckPaths opens the filesystems of the restore point's disks (file-level restore) and
	// checks that each of the test's Paths exists; a regular file is read in full, a directory
	// listed, so that a damaged chunk under either fails the path.
	CheckPaths = "paths"
	// CheckBoot boots the restore point with instant recovery on an ESXi host (Host), every
	// NIC on an isolated port group (Network), waits for VMware Tools to report the guest
	// running or, with TCPPort, for the guest's address to answer on that port, records the
	// time from the request to that signal (the RTO), and always stops the session.
	CheckBoot = "boot"
)

// RestoreTestChecks lists the checks the hub runs today; DefaultRestoreTestChecks is what a
// request without checks asks for.
var (
	RestoreTestChecks        = []string{CheckRead, CheckPaths, CheckBoot}
	DefaultRestoreTestChecks = []string{CheckRead}
)

// PlannedRestoreTestChecks names checks that are designed but not built yet, each with what it
// will do: a request naming one is refused rather than reported as passed. None is left.
var PlannedRestoreTestChecks = map[string]string{}

// Bounds of the boot check's wait for the guest (RestoreTestBoot.BootTimeout).
const (
	DefaultBootTimeout = 10 * time.Minute
	MaxBootTimeout     = time.Hour
)

// RestoreTestBoot is how the boot check boots a restore point; its fields are those of a
// request, a policy and a test (JSON host, network, tcp_port, boot_timeout), all refused
// without the boot check.
type RestoreTestBoot struct {
	// Host is the ESXi host, by its inventory name, that mounts the restore point over NFS
	// and runs the VM. Required by the boot check.
	Host string `json:"host,omitempty"`
	// Network is the isolated port group every NIC of the VM is connected to, so that the
	// copy never meets the production VM on its network. Required by the boot check: there is
	// no safe default.
	Network string `json:"network,omitempty"`
	// TCPPort, when set (1-65535), is the boot signal: the agent connects to the guest's
	// address on it. Unset, the signal is VMware Tools reporting the guest running.
	TCPPort int `json:"tcp_port,omitempty"`
	// BootTimeout is how long the guest has to give its signal once the VM runs, a Go
	// duration of whole seconds ("10m", "90s"), at most MaxBootTimeout; default
	// DefaultBootTimeout.
	BootTimeout string `json:"boot_timeout,omitempty"`
}

// Timeout is the boot timeout of a normalized RestoreTestBoot.
func (b RestoreTestBoot) Timeout() time.Duration {
	d, err := time.ParseDuration(b.BootTimeout)
	if err != nil || d <= 0 {
		return DefaultBootTimeout
	}
	return d
}

// NormalizeBoot checks the boot settings against the (validated) checks and fills in the
// default timeout: with the boot check, host and network are required, tcp_port must be a TCP
// port and boot_timeout a duration of whole seconds in (0, 1h]; without it, every boot setting
// is refused. The error is a *FieldError naming the field.
func (b *RestoreTestBoot) NormalizeBoot(checks []string) error {
	if !slices.Contains(checks, CheckBoot) {
		for _, f := range []struct {
			name string
			set  bool
		}{{"host", b.Host != ""}, {"network", b.Network != ""}, {"tcp_port", b.TCPPort != 0}, {"boot_timeout", b.BootTimeout != ""}} {
			if f.set {
				return &FieldError{f.name, fmt.Sprintf("is a setting of the %q check only: add it to the checks", CheckBoot)}
			}
		}
		return nil
	}
	if b.Host == "" {
		return &FieldError{"host", fmt.Sprintf("the %q check needs the ESXi host that boots the restore point", CheckBoot)}
	}
	if err := checkName("host", b.Host, true); err != nil {
		return err
	}
	if b.Network == "" {
		return &FieldError{"network", fmt.Sprintf("the %q check needs the isolated port group every NIC of the VM is connected to (a copy must not boot on the production network)", CheckBoot)}
	}
	if err := checkName("network", b.Network, true); err != nil {
		return err
	}
	if b.TCPPort < 0 || b.TCPPort > 65535 {
		return &FieldError{"tcp_port", fmt.Sprintf("%d is not a TCP port (1-65535)", b.TCPPort)}
	}
	d := DefaultBootTimeout
	if b.BootTimeout != "" {
		var err error
		if d, err = time.ParseDuration(b.BootTimeout); err != nil {
			return &FieldError{"boot_timeout", fmt.Sprintf("%q is not a duration like 10m or 90s", b.BootTimeout)}
		}
	}
	switch {
	case d <= 0 || d > MaxBootTimeout:
		return &FieldError{"boot_timeout", fmt.Sprintf("%s is outside 1s to %s", d, MaxBootTimeout)}
	case d%time.Second != 0:
		return &FieldError{"boot_timeout", fmt.Sprintf("%s is not a whole number of seconds", d)}
	}
	b.BootTimeout = d.String()
	return nil
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

// Bounds of the paths of a restore test (StartRestoreTestRequest.Paths, Policy.Paths).
const (
	MaxRestoreTestPaths   = 64
	MaxRestoreTestPathLen = 4096
)

// SplitTestPath splits a path of the paths check into the disk it names and the path in that
// disk's file tree. Two forms are accepted:
//
//   - "disk-2000:/p1/etc/hosts": the path must exist on that disk;
//   - "/p1/etc/hosts": the path must exist on one of the restore point's disks, whichever
//     (a VM's root filesystem is not always on its first disk, and one policy covers VMs
//     laid out differently).
//
// The path is absolute in the disk's tree: its first name is the volume (p1, p2, … for
// partitions, or the name file-level restore gives a filesystem on the whole disk), the rest
// the names inside the filesystem. It must be in normal form: no empty, "." or ".." names, no
// trailing slash, no control or bidirectional-override characters, at most
// MaxRestoreTestPathLen bytes of valid UTF-8. The error says what is wrong, without the field.
func SplitTestPath(s string) (diskID, path string, err error) {
	path = s
	if !strings.HasPrefix(s, "/") {
		d, p, ok := strings.Cut(s, ":")
		if !ok || !strings.HasPrefix(p, "/") {
			return "", "", fmt.Errorf("%q is neither an absolute path (/p1/etc/hosts) nor a disk and a path (disk-2000:/p1/etc/hosts)", s)
		}
		key, err := strconv.Atoi(strings.TrimPrefix(d, "disk-"))
		if !strings.HasPrefix(d, "disk-") || err != nil || key <= 0 || DiskIDForKey(int32(key)) != d {
			return "", "", fmt.Errorf("%q names no disk: a disk is written disk-<key>, like disk-2000", d)
		}
		diskID, path = d, p
	}
	switch {
	case len(s) > MaxRestoreTestPathLen:
		return "", "", fmt.Errorf("a path of %d bytes, over %d", len(s), MaxRestoreTestPathLen)
	case !utf8.ValidString(path):
		return "", "", fmt.Errorf("%q is not valid UTF-8", path)
	case strings.IndexFunc(path, UnsafeRune) >= 0:
		return "", "", fmt.Errorf("%q holds a control or bidirectional-override character", path)
	case path == "/":
		return "", "", fmt.Errorf("%q names no volume: write /p1/… (p1 is the first partition)", path)
	}
	for _, n := range strings.Split(path[1:], "/") {
		if n == "" || n == "." || n == ".." {
			return "", "", fmt.Errorf("%q is not in normal form: no empty, \".\" or \"..\" names and no trailing slash", path)
		}
	}
	return diskID, path, nil
}

// ValidatePaths checks the paths of a restore test or policy against its (validated) checks:
// the paths check needs at least one path, paths need the paths check, and every path must be
// one SplitTestPath accepts, listed once. field names the list in errors ("paths"); the error
// is a *FieldError naming the entry.
func ValidatePaths(field string, checks, paths []string) error {
	want := slices.Contains(checks, CheckPaths)
	switch {
	case want && len(paths) == 0:
		return &FieldError{field, fmt.Sprintf("the %q check needs at least one path, like /p1/etc/hosts or disk-2000:/p1/etc/hosts", CheckPaths)}
	case !want && len(paths) > 0:
		return &FieldError{field, fmt.Sprintf("paths are checked by the %q check only: add it to the checks", CheckPaths)}
	case len(paths) > MaxRestoreTestPaths:
		return &FieldError{field, fmt.Sprintf("at most %d paths", MaxRestoreTestPaths)}
	}
	for i, p := range paths {
		f := fmt.Sprintf("%s[%d]", field, i)
		if _, _, err := SplitTestPath(p); err != nil {
			return &FieldError{f, err.Error()}
		}
		if slices.Index(paths, p) != i {
			return &FieldError{f, fmt.Sprintf("path %q is listed twice", p)}
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
	// Paths are what the paths check looks for (see SplitTestPath); required with it, refused
	// without it.
	Paths []string `json:"paths,omitempty"`
	// RestoreTestBoot holds the boot check's settings (host, network, tcp_port,
	// boot_timeout); required with it, refused without it.
	RestoreTestBoot
}

// RestoreTestCheck is the outcome of one check of a restore test. A read check covers one
// disk; Error says why a check failed (the disk, the slot and the damage found). A paths check
// covers one path: Path as the test names it, DiskID the disk it was found on (or the disk it
// names), Type what was found there (file, dir, symlink, other), BytesRead the bytes of the
// file read, and Error "missing", "damaged chunk: …" or "filesystem not readable: …".
// A boot check covers the restore point: Host the ESXi host, SessionID the instant-recovery
// session, Signal the boot signal seen (BootSignalTools or BootSignalTCP) and Address the
// guest's, RTOSeconds the time from the hub's request to the signal, SessionStatus how the
// session ended (stopped, or failed for one that could not start: cleaned up either way), and
// Error why it failed ("guest did not report running within 10m0s …").
type RestoreTestCheck struct {
	Name          string  `json:"name"`
	DiskID        string  `json:"disk_id,omitempty"`
	Path          string  `json:"path,omitempty"`
	Type          string  `json:"type,omitempty"`
	Host          string  `json:"host,omitempty"`
	SessionID     string  `json:"session_id,omitempty"`
	Signal        string  `json:"signal,omitempty"`
	Address       string  `json:"address,omitempty"`
	RTOSeconds    float64 `json:"rto_seconds,omitempty"`
	SessionStatus string  `json:"session_status,omitempty"`
	Passed        bool    `json:"passed"`
	Error         string  `json:"error,omitempty"`
	BytesRead     int64   `json:"bytes_read"`
	DataBytes     int64   `json:"data_bytes"` // of BytesRead, those held in chunks (zero slots are not stored)
	Seconds       float64 `json:"seconds"`
}

// RestoreTest is one restore test with its evidence. BytesRead counts the bytes read and
// verified through the restore path by its checks — the disk bytes of read checks (zero slots
// included, as a restore writes them) and the file bytes of paths checks —, DataBytes
// those of them held in chunks, read from the repository and checked against their digests;
// MBPerS is BytesRead per second in 10^6 bytes; Seconds is the time from start to finish, the
// measured time to restore the VM's disks (RTO of a full restore). RTOSeconds is, for a test
// whose boot check passed, the time from the hub's instant-recovery request to the guest's
// first boot signal: the RTO of an instant recovery.
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
	Paths           []string           `json:"paths,omitempty"` // of the paths check
	RestoreTestBoot                    // of the boot check
	Checks          []RestoreTestCheck `json:"checks"`
	BytesRead       int64              `json:"bytes_read"`
	DataBytes       int64              `json:"data_bytes"`
	BytesTotal      int64              `json:"bytes_total"`
	MBPerS          float64            `json:"mb_per_s"`
	Seconds         float64            `json:"seconds"`
	RTOSeconds      float64            `json:"rto_seconds,omitempty"`
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
