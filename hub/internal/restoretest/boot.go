package restoretest

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/instantrecovery"
	"github.com/sendense/sendense/shared/api"
)

// sessions runs the boot check's instant-recovery sessions (instantrecovery.Service). Stop of
// a session that is stopping or over changes nothing; the agent of the VM's source carries
// the start and the stop out and reports to any hub, so the session is read back from the
// catalog. CheckHost refuses, with an *api.FieldError naming host, an ESXi host the hub cannot
// find the address of (a start would refuse it too).
type sessions interface {
	CheckHost(ctx context.Context, host string) error
	StartBoot(ctx context.Context, req api.InstantRecoveryRequest, w api.InstantRecoveryBootWait) (api.InstantRecovery, error)
	Get(ctx context.Context, id string) (api.InstantRecovery, error)
	Stop(ctx context.Context, id string) (api.InstantRecovery, error)
	List(ctx context.Context, f instantrecovery.ListFilter) (api.InstantRecoveryList, error)
}

// vmConfigs reads a restore point's VM configuration (jobs.Service), for its NICs' networks.
type vmConfigs interface {
	VMConfig(ctx context.Context, backupID string) (api.VMConfig, error)
}

var _ sessions = (*instantrecovery.Service)(nil)

// EnableBoot lets the service run the boot check through the hub's instant recovery; without
// it a request for the check is refused (and a queued one fails), naming what is missing.
func (s *Service) EnableBoot(ir sessions, cfgs vmConfigs) {
	s.ir, s.cfgs = ir, cfgs
}

// errNoBoot says why a hub cannot run the boot check.
const errNoBoot = "the boot check needs instant recovery on the hub: set nfs_listen and nfs_address"

// bootVMName is the name of the VM a test's boot check registers: the tested VM's name and the
// test's id, so that an operator looking at vCenter sees what it is and whose it is, and so
// that a hub failing the test as stale finds its session again. vSphere allows 80 characters.
func bootVMName(t *catalog.RestoreTest) string {
	suffix := "-" + t.ID
	name := t.VMName
	for len(name)+len(suffix) > 80 {
		_, n := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-n]
	}
	return name + suffix
}

// ended reports whether a session is over: nothing of it is left on the host or the hub.
func ended(status string) bool {
	return status == api.IRStopped || status == api.IRFailed || status == api.IRMigrated
}

// checkBoot boots the restore point with instant recovery, waits for the agent's observation
// of the guest and records it, then stops the session and waits for it to be cleaned up. The
// session is stopped whatever happened, also when ctx ends (then without waiting).
func (s *Service) checkBoot(ctx context.Context, t *catalog.RestoreTest) (c api.RestoreTestCheck) {
	start := time.Now()
	c = api.RestoreTestCheck{Name: api.CheckBoot}
	defer func() { c.Seconds = time.Since(start).Seconds() }()
	switch {
	case t.Boot == nil:
		c.Error = "the test has no boot settings (host, network)"
		return c
	case s.ir == nil:
		c.Error = errNoBoot
		return c
	}
	b := *t.Boot
	c.Host = b.Host
	cfg, err := s.cfgs.VMConfig(ctx, t.BackupID)
	if err != nil {
		c.Error = "read the restore point's VM configuration: " + err.Error()
		return c
	}
	nets := map[string]string{}
	for _, n := range cfg.NICs {
		if n.Network != "" {
			nets[n.Network] = b.Network
		}
	}
	timeout := b.Timeout()
	requested := time.Now()
	ir, err := s.ir.StartBoot(ctx, api.InstantRecoveryRequest{BackupID: t.BackupID, Host: b.Host, Name: bootVMName(t), NetworkMap: nets, PowerOn: true},
		api.InstantRecoveryBootWait{TCPPort: b.TCPPort, TimeoutSeconds: int(timeout / time.Second)})
	if err != nil {
		c.Error = "start the instant recovery: " + err.Error()
		return c
	}
	c.SessionID = ir.ID
	log := s.log.With("restore_test_id", t.ID, "session_id", ir.ID, "host", b.Host)
	log.InfoContext(ctx, "restore test: instant recovery started for the boot check", "vm_name", ir.Name, "network", b.Network, "tcp_port", b.TCPPort, "boot_timeout", timeout.String())
	defer func() {
		status, err := s.stopSession(ctx, ir.ID)
		c.SessionStatus = status
		if err != nil {
			c.Passed = false
			c.Error = joinReasons(c.Error, "cleanup: "+err.Error())
			log.WarnContext(ctx, "restore test: boot session not cleaned up", "err", err)
		}
	}()

	// The agent claims the start, mounts, registers and powers on, then waits up to timeout
	// for the guest: StartWait bounds everything but the guest's own time.
	deadline := time.NewTimer(s.opts.StartWait + timeout)
	defer deadline.Stop()
	tick := time.NewTicker(s.opts.BootPoll)
	defer tick.Stop()
	var readErr error
	for {
		switch {
		case ir.Boot != nil && ir.Boot.Signal != "":
			c.Passed, c.Signal, c.Address = true, ir.Boot.Signal, ir.Boot.IP
			c.RTOSeconds = time.Since(requested).Seconds()
			log.InfoContext(ctx, "restore test: guest booted", "signal", c.Signal, "rto_seconds", c.RTOSeconds)
			return c
		case ir.Boot != nil:
			c.Error = ir.Boot.Reason
			return c
		case ir.Status == api.IRRunning:
			c.Error = "the agent started the VM without watching its guest (an agent too old for the boot check)"
			return c
		case (ir.Status == api.IRStopping || ir.Status == api.IRStopped) && ir.Error == "":
			// Someone else (an operator, another hub's runner) stopped the session: its agent
			// ends the wait for the guest and the stop follows.
			c.Error = "the session was stopped while waiting for the guest"
			return c
		case ir.Status != api.IRStarting:
			c.Error = fmt.Sprintf("the instant recovery did not start (%s): %s", ir.Status, orUnknown(ir.Error))
			return c
		}
		select {
		case <-ctx.Done():
			c.Error = "cancelled while waiting for the guest: " + ctx.Err().Error()
			return c
		case <-deadline.C:
			c.Error = fmt.Sprintf("the agent did not report the start within %s of the request (the guest had %s of it)", s.opts.StartWait+timeout, timeout)
			if readErr != nil {
				c.Error += "; last read: " + readErr.Error()
			}
			return c
		case <-tick.C:
		}
		cur, err := s.ir.Get(ctx, ir.ID)
		if err != nil {
			readErr = err // the catalog may be back at the next tick
			continue
		}
		ir = cur
	}
}

// stopSession stops a boot check's session and, unless ctx ended (the hub is stopping: the
// agent finishes the stop and reports it to whichever hub runs then), waits up to CleanupWait
// for it to end. It returns the session's last status; an error says it did not end.
func (s *Service) stopSession(ctx context.Context, id string) (string, error) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	ir, err := s.ir.Stop(sctx, id)
	if err != nil {
		return "", fmt.Errorf("stop instant recovery %s: %w", id, err)
	}
	if ctx.Err() != nil || ended(ir.Status) {
		return ir.Status, nil
	}
	wait := time.NewTimer(s.opts.CleanupWait)
	defer wait.Stop()
	tick := time.NewTicker(s.opts.BootPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ir.Status, nil
		case <-wait.C:
			return ir.Status, fmt.Errorf("instant recovery %s still %s after %s: the agent stops it when it can", id, ir.Status, s.opts.CleanupWait)
		case <-tick.C:
		}
		if cur, err := s.ir.Get(ctx, id); err == nil {
			ir = cur
		}
		if ended(ir.Status) {
			return ir.Status, nil
		}
	}
}

// stopOrphanSessions stops the boot sessions whose test is over: the hub that ran the test
// stopped mid-test (the test is then failed as stale) or between recording the test and
// stopping its session, or the stop could not be recorded. A session is a test's when its VM
// name is the test's bootVMName and it boots the test's restore point; the session of a test
// still running is its test's to stop. The runner calls it every round, so a hub dying at any
// point leaves no booted copy running for longer than a round after the test is over.
func (s *Service) stopOrphanSessions(ctx context.Context) {
	if s.ir == nil {
		return
	}
	for _, status := range []string{api.IRStarting, api.IRRunning} {
		l, err := s.ir.List(ctx, instantrecovery.ListFilter{Status: status})
		if err != nil {
			s.log.WarnContext(ctx, "list instant recoveries for boot sessions left running", "err", err)
			return
		}
		for _, ir := range l.InstantRecoveries {
			i := strings.LastIndex(ir.Name, "-"+api.RestoreTestIDPrefix)
			if i < 0 {
				continue
			}
			t, err := s.cat.RestoreTestByID(ctx, ir.Name[i+1:])
			if err != nil { // not a test's session, or the catalog is away until the next round
				continue
			}
			if t.Boot == nil || t.BackupID != ir.BackupID || bootVMName(t) != ir.Name || (t.Status != api.RestoreTestPassed && t.Status != api.RestoreTestFailed) {
				continue
			}
			if _, err := s.ir.Stop(ctx, ir.ID); err != nil {
				s.log.WarnContext(ctx, "stop the boot session of a finished restore test", "restore_test_id", t.ID, "session_id", ir.ID, "err", err)
				continue
			}
			s.log.InfoContext(ctx, "boot session of a finished restore test stopped", "restore_test_id", t.ID, "session_id", ir.ID, "test_status", t.Status)
		}
	}
}

func joinReasons(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func orUnknown(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}
