package api

import (
	"fmt"
	"time"
)

// InstantRecoveryIDPrefix starts every instant-recovery session's id ("ir-20261130-160000-0a1b2c3d").
const InstantRecoveryIDPrefix = "ir-"

// Statuses of an instant-recovery session.
const (
	IRStarting = "starting" // queued for the agent, or being mounted, registered and booted
	IRRunning  = "running"  // the VM is registered (and powered on when asked) on the export
	IRStopping = "stopping" // the agent is powering off, unregistering and unmounting
	IRStopped  = "stopped"  // cleaned up: the VM is gone from the host, the overlay deleted
	IRFailed   = "failed"   // could not start; cleaned up like a stopped session
	// IRMigrating: the agent moves the running VM to a production datastore (Storage vMotion).
	IRMigrating = "migrating"
	// IRMigrated: the VM runs from the production datastore; the export is unmounted and the
	// overlay deleted.
	IRMigrated = "migrated"
)

// Actions the agent carries out for a session.
const (
	IRActionStart   = "start"
	IRActionStop    = "stop"
	IRActionMigrate = "migrate"
)

// InstantRecoveryMigrateRequest moves a running session's VM to a production datastore.
type InstantRecoveryMigrateRequest struct {
	Datastore string `json:"datastore"`
}

// InstantRecoveryRequest starts a session: the backup is served over NFS to the ESXi host,
// where the agent of the backed-up VM's source (or of Source) registers it as Name.
type InstantRecoveryRequest struct {
	BackupID string `json:"backup_id"`
	// Host is the ESXi host, by its inventory name; only its addresses may mount the export.
	Host string `json:"host"`
	Name string `json:"name"`
	// NetworkMap maps the backed-up VM's networks to networks on the host.
	NetworkMap map[string]string `json:"network_map,omitempty"`
	PowerOn    bool              `json:"power_on"`
	// Source is the vCenter (source) whose agent does the work; default the VM's own.
	Source string `json:"source,omitempty"`
}

// Normalize checks the request; a *FieldError names the bad field.
func (r *InstantRecoveryRequest) Normalize() error {
	for _, f := range []struct {
		name, v  string
		required bool
	}{{"backup_id", r.BackupID, true}, {"host", r.Host, true}, {"name", r.Name, true}, {"source", r.Source, false}} {
		if err := checkName(f.name, f.v, f.required); err != nil {
			return err
		}
	}
	if len(r.Name) > 80 {
		return &FieldError{"name", "longer than 80 characters (the vSphere limit for a VM name)"}
	}
	for from, to := range r.NetworkMap {
		if err := checkName("network_map", from, true); err != nil {
			return err
		}
		if err := checkName(fmt.Sprintf("network_map[%s]", from), to, true); err != nil {
			return err
		}
	}
	return nil
}

// InstantRecovery is a session as operators see it.
type InstantRecovery struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	// NFSExport is what the host mounts: "hub-address:/ir-…".
	NFSExport  string            `json:"nfs_export"`
	BackupID   string            `json:"backup_id"`
	AgentID    string            `json:"agent_id"`
	Source     string            `json:"source"`
	Host       string            `json:"host"`
	Name       string            `json:"name"`
	NetworkMap map[string]string `json:"network_map,omitempty"`
	PowerOn    bool              `json:"power_on"`
	// Pending is the action waiting for the agent ("start", "stop" or "").
	Pending string `json:"pending,omitempty"`
	// TargetDatastore is where a migration moves (or moved) the VM.
	TargetDatastore string `json:"target_datastore,omitempty"`
	VMRef           string `json:"vm_ref,omitempty"`
	DatastoreRef    string `json:"datastore_ref,omitempty"`
	// OverlayBytes is what the VM's writes take in the session's overlay, of OverlayLimitBytes.
	OverlayBytes      int64  `json:"overlay_bytes"`
	OverlayLimitBytes int64  `json:"overlay_limit_bytes"`
	Error             string `json:"error,omitempty"`
	// Boot is what the agent saw of the guest, for a session started with a boot wait (a
	// restore test's boot check).
	Boot       *InstantRecoveryBoot `json:"boot,omitempty"`
	CreatedAt  time.Time            `json:"created_at"`
	FinishedAt time.Time            `json:"finished_at,omitzero"`
}

// InstantRecoveryList is a page of sessions, newest first.
type InstantRecoveryList struct {
	InstantRecoveries []InstantRecovery `json:"instant_recoveries"`
	Page              Page              `json:"page"`
}

// InstantRecoveryJob is the action an agent carries out for a session.
type InstantRecoveryJob struct {
	ID     string `json:"id"`
	Action string `json:"action"` // start or stop
	// Source is the vCenter, as the agent names it, that holds Host.
	Source string `json:"source"`
	Host   string `json:"host"`
	// NFSServer and NFSPath are the export to mount.
	NFSServer string `json:"nfs_server"`
	NFSPath   string `json:"nfs_path"`
	// VMX is the configuration's path in the export ("web01/web01.vmx").
	VMX        string            `json:"vmx"`
	Name       string            `json:"name"`
	NetworkMap map[string]string `json:"network_map,omitempty"`
	PowerOn    bool              `json:"power_on"`
	// Datastore is where a migrate moves the VM.
	Datastore string `json:"datastore,omitempty"`
	// Boot, on a start, asks the agent to wait for the guest to boot once the VM runs and to
	// report what it saw (InstantRecoveryReport.Boot); nil: no wait. A restore test's boot check
	// sets it.
	Boot *InstantRecoveryBootWait `json:"boot,omitempty"`
}

// Boot signals an agent reports (InstantRecoveryBoot.Signal).
const (
	// BootSignalTools: VMware Tools in the guest report running (toolsRunningStatus).
	BootSignalTools = "tools_running"
	// BootSignalTCP: the agent connected to the guest's address on the asked TCP port.
	BootSignalTCP = "tcp"
)

// InstantRecoveryBootWait is how the agent waits for a started VM's guest: until VMware Tools
// report it running, or, with TCPPort, until the guest's address answers on that port.
type InstantRecoveryBootWait struct {
	TCPPort        int `json:"tcp_port,omitempty"`
	TimeoutSeconds int `json:"timeout_seconds"`
}

// Validate checks the wait; a *FieldError names the bad field.
func (w *InstantRecoveryBootWait) Validate() error {
	if w.TCPPort < 0 || w.TCPPort > 65535 {
		return &FieldError{"tcp_port", fmt.Sprintf("%d is not a TCP port (1-65535)", w.TCPPort)}
	}
	if w.TimeoutSeconds <= 0 || w.TimeoutSeconds > 24*3600 {
		return &FieldError{"timeout_seconds", fmt.Sprintf("%d is outside 1 to 86400", w.TimeoutSeconds)}
	}
	return nil
}

// InstantRecoveryBoot is what the agent saw of the guest after a start that asked for a boot
// wait. Signal is empty when the guest gave none; Reason then says why.
type InstantRecoveryBoot struct {
	Signal string `json:"signal,omitempty"`
	// IP is the guest's address as its tools report it.
	IP string `json:"ip,omitempty"`
	// SignalAt is when the agent saw the signal (the agent's clock).
	SignalAt time.Time `json:"signal_at,omitzero"`
	// Seconds is from the agent taking the start to the signal (or to giving up).
	Seconds float64 `json:"seconds"`
	Reason  string  `json:"reason,omitempty"`
}

// InstantRecoveryReport is the outcome of an action.
type InstantRecoveryReport struct {
	Action       string `json:"action"`
	Status       string `json:"status"` // succeeded or failed (JobSucceeded, JobFailed)
	Error        string `json:"error,omitempty"`
	VMRef        string `json:"vm_ref,omitempty"`
	DatastoreRef string `json:"datastore_ref,omitempty"`
	// Boot answers a start's InstantRecoveryJob.Boot. A start whose VM runs but whose guest
	// gives no boot signal still succeeded: the session runs until it is stopped.
	Boot *InstantRecoveryBoot `json:"boot,omitempty"`
}
