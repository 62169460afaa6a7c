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

	mu     sync.Mutex
	active map[string]bool
}

// NewRunner returns a runner; targets resolves a job's agent-local source name.
func NewRunner(hub irHub, targets func(ctx context.Context, source string) (Target, error), log *slog.Logger) *Runner {
	return &Runner{hub: hub, targets: targets, log: log, active: map[string]bool{}}
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
// hands out the stop that undoes whatever it made.
func (r *Runner) Run(ctx context.Context, job *api.InstantRecoveryJob) error {
	r.mu.Lock()
	r.active[job.ID] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.active, job.ID)
		r.mu.Unlock()
	}()
	log := r.log.With("session_id", job.ID, "action", job.Action, "host", job.Host, "source", job.Source)
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
	if rerr := r.hub.CompleteInstantRecovery(rctx, job.ID, rep); rerr != nil {
		log.WarnContext(ctx, "report instant recovery action", "err", rerr)
		return fmt.Errorf("report %s of instant recovery %s: %w", job.Action, job.ID, rerr)
	}
	return err
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
		rep.Boot = r.waitBoot(ctx, t, vm.VMRef, *job.Boot, began)
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

// bootPoll is how often the agent reads a booting guest's state.
var bootPoll = 2 * time.Second

// waitBoot waits for the started VM's guest as w asks and says what it saw. A guest that gives
// no signal within the timeout is an observation, not a failure of the start.
func (r *Runner) waitBoot(ctx context.Context, t Target, vmRef string, w api.InstantRecoveryBootWait, began time.Time) *api.InstantRecoveryBoot {
	timeout := time.Duration(w.TimeoutSeconds) * time.Second
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sig, err := t.WaitBoot(wctx, vmRef, w.TCPPort, bootPoll)
	out := &api.InstantRecoveryBoot{Seconds: time.Since(began).Seconds()}
	switch {
	case err == nil:
		out.Signal, out.IP, out.SignalAt = sig.Signal, sig.IP, sig.At
		out.Seconds = sig.At.Sub(began).Seconds()
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
