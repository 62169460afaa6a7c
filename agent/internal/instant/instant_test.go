package instant

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/vsphere"
	"github.com/sendense/sendense/shared/api"
)

// fakeHub records the reports (our own interface: a fake in memory).
type fakeHub struct {
	mu      sync.Mutex
	reports map[string]api.InstantRecoveryReport
	order   []string // "id action[: boot reason]", in the order the outcomes came
	stops   map[string]bool
	asked   int
}

func (h *fakeHub) CompleteInstantRecovery(_ context.Context, id string, rep api.InstantRecoveryReport) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reports[id] = rep
	o := id + " " + rep.Action
	if rep.Boot != nil && rep.Boot.Reason != "" {
		o += ": " + rep.Boot.Reason
	}
	h.order = append(h.order, o)
	return nil
}

func (h *fakeHub) InstantRecoveryState(_ context.Context, id string) (api.JobState, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.asked++
	return api.JobState{ID: id, Status: api.IRStarting, CancelRequested: h.stops[id]}, nil
}

// stop makes the session's stop pending.
func (h *fakeHub) stop(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stops == nil {
		h.stops = map[string]bool{}
	}
	h.stops[id] = true
}

// report returns the session's last outcome and the order of all.
func (h *fakeHub) report(id string) (api.InstantRecoveryReport, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reports[id], append([]string(nil), h.order...)
}

type fakeTarget struct {
	startErr error
	stopped  []string
	ctxDone  bool
}

func (t *fakeTarget) StartInstant(ctx context.Context, s vsphere.InstantSpec) (vsphere.InstantVM, error) {
	if t.startErr != nil {
		return vsphere.InstantVM{DatastoreRef: "datastore-1"}, t.startErr
	}
	return vsphere.InstantVM{DatastoreRef: "datastore-1", VMRef: "vm-" + s.Name}, nil
}

func (t *fakeTarget) StopInstant(ctx context.Context, id, host string) error {
	t.ctxDone = ctx.Err() != nil
	t.stopped = append(t.stopped, id+"@"+host)
	return nil
}

func (t *fakeTarget) WaitBoot(ctx context.Context, vmRef string, port int, poll time.Duration) (vsphere.BootSignal, error) {
	return vsphere.BootSignal{}, errors.New("the fake target boots nothing")
}

func (t *fakeTarget) MigrateInstant(ctx context.Context, id, host, ds string) (vsphere.InstantVM, error) {
	return vsphere.InstantVM{VMRef: "vm-1", DatastoreRef: ds}, nil
}

// Every action's outcome reaches the hub: a failed start names its error (and what it made),
// a stop runs even when the agent is being stopped, an unknown action fails.
func TestRunnerReportsEveryOutcome(t *testing.T) {
	hub := &fakeHub{reports: map[string]api.InstantRecoveryReport{}}
	tgt := &fakeTarget{}
	r := NewRunner(hub, func(ctx context.Context, source string) (Target, error) {
		if source != "vc1" {
			return nil, errors.New("no source " + source)
		}
		return tgt, nil
	}, slog.New(slog.DiscardHandler))

	if err := r.Run(t.Context(), &api.InstantRecoveryJob{ID: "ir-1", Action: api.IRActionStart, Source: "vc1", Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if rep := hub.reports["ir-1"]; rep.Status != api.JobSucceeded || rep.VMRef != "vm-web" || rep.Action != api.IRActionStart {
		t.Fatalf("start report %+v", rep)
	}
	tgt.startErr = errors.New("nfs mount refused by the host")
	if err := r.Run(t.Context(), &api.InstantRecoveryJob{ID: "ir-2", Action: api.IRActionStart, Source: "vc1"}); err == nil {
		t.Fatal("a failed start returned no error")
	}
	if rep := hub.reports["ir-2"]; rep.Status != api.JobFailed || !strings.Contains(rep.Error, "refused") || rep.DatastoreRef != "datastore-1" {
		t.Fatalf("failed start report %+v", rep)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_ = r.Run(ctx, &api.InstantRecoveryJob{ID: "ir-3", Action: api.IRActionStop, Source: "vc1", Host: "esx1"})
	if rep := hub.reports["ir-3"]; rep.Status != api.JobSucceeded || len(tgt.stopped) != 1 || tgt.stopped[0] != "ir-3@esx1" || tgt.ctxDone {
		t.Fatalf("stop after the agent was told to stop: report %+v, stopped %v, ran cancelled %v", rep, tgt.stopped, tgt.ctxDone)
	}
	if err := r.Run(t.Context(), &api.InstantRecoveryJob{ID: "ir-4", Action: api.IRActionMigrate, Source: "vc1", Datastore: "prod"}); err != nil {
		t.Fatal(err)
	}
	if rep := hub.reports["ir-4"]; rep.Status != api.JobSucceeded || rep.DatastoreRef != "prod" {
		t.Fatalf("migrate report %+v", rep)
	}
	for id, job := range map[string]*api.InstantRecoveryJob{
		"ir-5": {ID: "ir-5", Action: "dance", Source: "vc1"},
		"ir-6": {ID: "ir-6", Action: api.IRActionStart, Source: "elsewhere"},
	} {
		_ = r.Run(t.Context(), job)
		if rep := hub.reports[id]; rep.Status != api.JobFailed || rep.Error == "" {
			t.Fatalf("%s: report %+v", id, rep)
		}
	}
	if b := r.Busy(); len(b) != 0 {
		t.Fatalf("busy after every action ended: %v", b)
	}
}
