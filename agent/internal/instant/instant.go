// Package instant carries out the agent's side of instant recovery: mount the hub's NFS export
// on an ESXi host, register the VM and boot it (start), power it off, unregister it and unmount
// the export (stop), or move it to a production datastore and unmount the export (migrate),
// then report the outcome to the hub.
package instant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/vsphere"
	"github.com/sendense/sendense/shared/api"
)

// irHub is what the runner needs of the hub.
type irHub interface {
	// CompleteInstantRecovery reports an action's outcome; retried by the client, and a
	// repeated report of the same outcome is refused as a conflict, not applied twice.
	CompleteInstantRecovery(ctx context.Context, id string, rep api.InstantRecoveryReport) error
	// InstantRecoveryState returns the session's state; CancelRequested says its stop is
	// pending. Read-only; a failed call is retried at the next ask.
	InstantRecoveryState(ctx context.Context, id string) (api.JobState, error)
}

var _ irHub = (*hubclient.Client)(nil)

// Target is one connected vCenter as instant recovery uses it (*vsphere.Client). Both calls
// may be repeated: a start reuses what an earlier one made, a stop of nothing does nothing.
type Target interface {
	StartInstant(ctx context.Context, s vsphere.InstantSpec) (vsphere.InstantVM, error)
	StopInstant(ctx context.Context, id, host string) error
	MigrateInstant(ctx context.Context, id, host, datastore string) (vsphere.InstantVM, error)
	// WaitBoot waits until the VM's guest boots (see vsphere.Client.WaitBoot).
	WaitBoot(ctx context.Context, vmRef string, tcpPort int, poll time.Duration) (vsphere.BootSignal, error)
}

var _ Target = (*vsphere.Client)(nil)

// reportTimeout bounds reporting an outcome after the agent was told to stop.
const reportTimeout = 30 * time.Second

// Runner runs instant-recovery actions. It is safe for concurrent use.
type Runner struct {
	hub     irHub
	targets func(ctx context.Context, source string) (Target, error)
	log     *slog.Logger

	mu sync.Mutex
	// active holds the sessions with an action running, each with a channel closed when it ends.
	active map[string]chan struct{}
}

// NewRunner returns a runner; targets resolves a job's agent-local source name.
func NewRunner(hub irHub, targets func(ctx context.Context, source string) (Target, error), log *slog.Logger) *Runner {
	return &Runner{hub: hub, targets: targets, log: log, active: map[string]chan struct{}{}}
}

// Busy lists the sessions with an action running now.
func (r *Runner) Busy() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.active))
	for id := range r.active {
		out = append(out, id)
	}
	return out
}

// Run carries out one action and reports its outcome (also when ctx ended meanwhile: the
// report runs under its own timeout). A start that fails is reported failed; the hub then
// hands out the stop that undoes whatever it made. Actions of one session never overlap: one
// handed out while another runs (the hub does not, unless the agent's busy list was taken
// before that action registered) waits for it to end; when ctx ends first it returns without
// a report, and the hub hands it out again.
func (r *Runner) Run(ctx context.Context, job *api.InstantRecoveryJob) error {
	log := r.log.With("session_id", job.ID, "action", job.Action, "host", job.Host, "source", job.Source)
	if err := r.enter(ctx, job.ID); err != nil {
		log.WarnContext(ctx, "instant recovery action not run", "err", err)
		return err
	}
	defer r.leave(job.ID)
	rep := api.InstantRecoveryReport{Action: job.Action, Status: api.JobSucceeded}
	began := time.Now()
	err := r.run(ctx, job, &rep, began)
	if err != nil {
		rep.Status, rep.Error = api.JobFailed, err.Error()
		log.WarnContext(ctx, "instant recovery action failed", "err", err)
	} else {
		log.InfoContext(ctx, "instant recovery action done", "vm_ref", rep.VMRef, "datastore_ref", rep.DatastoreRef)
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer cancel()
	rerr := r.hub.CompleteInstantRecovery(rctx, job.ID, rep)
	if rerr != nil && rep.Boot != nil && rep.Boot.Reason == reasonStopPending && hubclient.StatusOf(rerr) == http.StatusConflict {
		// The hub refuses the outcome of a start its stop overtook: expected, the stop follows.
		log.InfoContext(ctx, "instant recovery start overtaken by its stop", "err", rerr)
		return err
	}
	if rerr != nil {
		log.WarnContext(ctx, "report instant recovery action", "err", rerr)
		return fmt.Errorf("report %s of instant recovery %s: %w", job.Action, job.ID, rerr)
	}
	return err
}

// enter marks the session busy, first waiting for an action of it that runs to end.
func (r *Runner) enter(ctx context.Context, id string) error {
	for {
		r.mu.Lock()
		running, ok := r.active[id]
		if !ok {
			r.active[id] = make(chan struct{})
			r.mu.Unlock()
			return nil
		}
		r.mu.Unlock()
		select {
		case <-running:
		case <-ctx.Done():
			return fmt.Errorf("instant recovery %s: wait for its running action: %w", id, ctx.Err())
		}
	}
}

// leave marks the session free and wakes an action waiting for it.
func (r *Runner) leave(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.active[id])
	delete(r.active, id)
}

func (r *Runner) run(ctx context.Context, job *api.InstantRecoveryJob, rep *api.InstantRecoveryReport, began time.Time) error {
	t, err := r.targets(ctx, job.Source)
	if err != nil {
		return err
	}
	switch job.Action {
	case api.IRActionStart:
		vm, err := t.StartInstant(ctx, vsphere.InstantSpec{
			ID: job.ID, Host: job.Host, NFSServer: job.NFSServer, NFSPath: job.NFSPath,
			VMX: job.VMX, Name: job.Name, NetworkMap: job.NetworkMap, PowerOn: job.PowerOn,
		})
		rep.VMRef, rep.DatastoreRef = vm.VMRef, vm.DatastoreRef
		if err != nil || job.Boot == nil {
			return err
		}
		rep.Boot = r.waitBoot(ctx, t, job.ID, vm.VMRef, *job.Boot, began)
		return nil
	case api.IRActionStop:
		// A stop runs to its end even when the agent is told to stop: half-undone is worse.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		return t.StopInstant(sctx, job.ID, job.Host)
	case api.IRActionMigrate:
		vm, err := t.MigrateInstant(ctx, job.ID, job.Host, job.Datastore)
		rep.VMRef, rep.DatastoreRef = vm.VMRef, vm.DatastoreRef
		return err
	}
	return fmt.Errorf("instant recovery %s: unknown action %q", job.ID, job.Action)
}

// bootPoll is how often the agent reads a booting guest's state; stopPoll how often it asks the
// hub meanwhile whether the session's stop is pending (a cheap read: one row by its key).
var bootPoll, stopPoll = 2 * time.Second, 3 * time.Second

// errStopPending ends a guest wait whose session the hub wants stopped, with the reason
// reasonStopPending.
var errStopPending = errors.New("the session's stop is pending")

const reasonStopPending = "stopped while waiting for the guest"

// waitBoot waits for the started VM's guest as w asks and says what it saw. A guest that gives
// no signal within the timeout is an observation, not a failure of the start. A stop of the
// session asked meanwhile ends the wait within stopPoll: the start then reports, and the stop
// is handed out after it (never beside it), instead of the VM running until the timeout.
func (r *Runner) waitBoot(ctx context.Context, t Target, id, vmRef string, w api.InstantRecoveryBootWait, began time.Time) *api.InstantRecoveryBoot {
	timeout := time.Duration(w.TimeoutSeconds) * time.Second
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sctx, stop := context.WithCancelCause(wctx)
	defer stop(nil)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		r.watchStop(sctx, id, stop)
	}()
	sig, err := t.WaitBoot(sctx, vmRef, w.TCPPort, bootPoll)
	stopped := errors.Is(context.Cause(sctx), errStopPending)
	stop(nil)
	<-watched
	out := &api.InstantRecoveryBoot{Seconds: time.Since(began).Seconds()}
	switch {
	case err == nil:
		out.Signal, out.IP, out.SignalAt = sig.Signal, sig.IP, sig.At
		out.Seconds = sig.At.Sub(began).Seconds()
	case stopped:
		out.Reason = reasonStopPending
	case ctx.Err() != nil:
		out.Reason = "the agent stopped before the guest reported running: " + err.Error()
	case errors.Is(err, vsphere.ErrNoBootSignal) && w.TCPPort > 0:
		out.Reason = fmt.Sprintf("guest did not answer on tcp port %d within %s (%v)", w.TCPPort, timeout, err)
	case errors.Is(err, vsphere.ErrNoBootSignal):
		out.Reason = fmt.Sprintf("guest did not report running within %s (%v)", timeout, err)
	default:
		out.Reason = "watch the guest: " + err.Error()
	}
	return out
}

// watchStop asks the hub every stopPoll whether the session's stop is pending and, when it is,
// ends the wait with errStopPending. It returns when ctx ends. A failed ask is only logged: the
// wait goes on and the next ask may reach the hub.
func (r *Runner) watchStop(ctx context.Context, id string, stop context.CancelCauseFunc) {
	tick := time.NewTicker(stopPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		st, err := r.hub.InstantRecoveryState(ctx, id)
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.DebugContext(ctx, "ask whether the session's stop is pending", "session_id", id, "err", err)
		case err == nil && st.CancelRequested:
			r.log.InfoContext(ctx, "instant recovery stop pending: ending the wait for the guest", "session_id", id)
			stop(errStopPending)
			return
		}
	}
}
