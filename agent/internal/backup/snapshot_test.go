package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/vsphere"
	"github.com/sendense/sendense/shared/api"
)

// fakeSnapshots is one endpoint's snapshots in memory.
type fakeSnapshots struct {
	mu      sync.Mutex
	snaps   []vsphere.SnapshotInfo
	failRm  map[string]bool // snapshot morefs whose removal fails
	listErr error
}

func (f *fakeSnapshots) Name() string { return "vc1" }

func (f *fakeSnapshots) Snapshots(_ context.Context, prefix string) ([]vsphere.SnapshotInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	var out []vsphere.SnapshotInfo
	for _, s := range f.snaps {
		if strings.HasPrefix(s.Name, prefix) {
			out = append(out, s)
		}
	}
	return out, nil
}

func (f *fakeSnapshots) RemoveSnapshotByRef(_ context.Context, vmUUID, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failRm[ref] {
		return errors.New("task failed: the VM is busy")
	}
	f.snaps = slices.DeleteFunc(f.snaps, func(s vsphere.SnapshotInfo) bool { return s.VMUUID == vmUUID && s.MoRef == ref })
	return nil
}

func (f *fakeSnapshots) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, s := range f.snaps {
		out = append(out, s.Name)
	}
	slices.Sort(out)
	return out
}

// fakeJobStates answers JobState from a map; a job not in it is unknown to the hub (404).
type fakeJobStates struct {
	states map[string]string
	errs   map[string]error
}

func (h fakeJobStates) JobState(_ context.Context, jobID string) (api.JobState, error) {
	if err, ok := h.errs[jobID]; ok {
		return api.JobState{}, err
	}
	st, ok := h.states[jobID]
	if !ok {
		return api.JobState{}, &hubclient.Error{Status: http.StatusNotFound}
	}
	return api.JobState{Status: st}, nil
}

func TestReaperRemovesOnlyStaleJobSnapshots(t *testing.T) {
	const agent = "agent-1b1c1901b2213233"
	id := func(n int) string { return fmt.Sprintf("bk-20261203-1200%02d-%08x", n, n) }
	ours := func(n int, ref string) vsphere.SnapshotInfo {
		return vsphere.SnapshotInfo{VMUUID: "uuid-" + ref, VMName: "vm-" + ref, Name: api.SnapshotPrefix + id(n), MoRef: ref,
			Description: api.SnapshotDescription(id(n), agent)}
	}
	other := func(name, desc, ref string) vsphere.SnapshotInfo {
		return vsphere.SnapshotInfo{VMUUID: "uuid-" + ref, VMName: "vm-" + ref, Name: name, MoRef: ref, Description: desc}
	}
	const (
		busy, resumable, failed, unknown, hubDown, stuck, succeeded, cancelled, alsoBusy, hubRefuses = 1, 2, 3, 4, 5, 6, 9, 10, 11, 12
		otherAgent, oldAgent, userNamed                                                              = 13, 14, 15
	)
	src := &fakeSnapshots{
		snaps: []vsphere.SnapshotInfo{
			ours(busy, "s1"),      // running here
			ours(resumable, "s2"), // running on the hub: this agent resumes it
			ours(failed, "s3"),    // ended on the hub
			ours(unknown, "s4"),   // the hub never heard of it (404)
			ours(hubDown, "s5"),   // the hub cannot answer: keep
			ours(stuck, "s6"),     // removal fails: kept for the next pass
			other("before-upgrade", "", "s7"),
			other("sendense", "", "s8"),
			ours(succeeded, "s9"),   // ended on the hub
			ours(cancelled, "s10"),  // ended on the hub
			ours(alsoBusy, "s11"),   // running here
			ours(hubRefuses, "s12"), // 403: keep, the hub may come round
			// Not this agent's, though named like a job snapshot and unknown to its hub (404):
			other(api.SnapshotPrefix+id(otherAgent), api.SnapshotDescription(id(otherAgent), "agent-0000000000000002"), "s13"),
			other(api.SnapshotPrefix+id(oldAgent), "Sendense backup job "+id(oldAgent)+"; removed automatically when the job ends", "s14"),
			other(api.SnapshotPrefix+"before-upgrade", "the user's", "s15"),
		},
		failRm: map[string]bool{"s6": true},
	}
	hub := fakeJobStates{
		states: map[string]string{
			id(resumable): api.JobRunning, id(failed): api.JobFailed, id(stuck): api.JobFailed,
			id(succeeded): api.JobSucceeded, id(cancelled): api.JobCancelled,
		},
		errs: map[string]error{
			id(hubDown):    errors.New("dial tcp: connection refused"),
			id(hubRefuses): &hubclient.Error{Status: http.StatusForbidden},
		},
	}
	busyJobs := func() []string { return []string{id(busy), id(alsoBusy)} }

	n := reapOnce(t.Context(), []SnapshotSource{src}, hub, agent, busyJobs, slog.New(slog.DiscardHandler))
	if n != 4 {
		t.Errorf("reaped %d snapshots, want 4 (failed, unknown, succeeded, cancelled)", n)
	}
	want := []string{"before-upgrade", "sendense", api.SnapshotPrefix + "before-upgrade"}
	for _, k := range []int{busy, alsoBusy, hubDown, hubRefuses, resumable, stuck, otherAgent, oldAgent} {
		want = append(want, api.SnapshotPrefix+id(k))
	}
	slices.Sort(want)
	if got := src.names(); !slices.Equal(got, want) {
		t.Fatalf("snapshots left = %q\nwant %q", got, want)
	}

	// A source that cannot list is skipped without touching the others.
	down := &fakeSnapshots{listErr: errors.New("vcenter unreachable")}
	rest := &fakeSnapshots{snaps: []vsphere.SnapshotInfo{ours(failed, "s20")}}
	if n := reapOnce(t.Context(), []SnapshotSource{down, rest}, hub, agent, busyJobs, slog.New(slog.DiscardHandler)); n != 1 || len(rest.names()) != 0 {
		t.Fatalf("with one source down: reaped %d, left %q", n, rest.names())
	}
}

// The snapshot-age gauge is computed when it is read: a snapshot held for a day shows a day, not
// the age it had when the job took it.
func TestSnapshotAgeIsComputedWhenRead(t *testing.T) {
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	m := NewMetrics(nil)
	r := NewRunner(nil, nil, slog.New(slog.DiscardHandler), m, RunnerOptions{Now: func() time.Time { return now }})
	age := func() float64 {
		t.Helper()
		var d dto.Metric
		if err := m.snapshotAge.Write(&d); err != nil {
			t.Fatal(err)
		}
		return d.GetGauge().GetValue()
	}
	if a := age(); a != 0 {
		t.Fatalf("age with no snapshot: %v", a)
	}
	r.track("bk-1", true)
	now = now.Add(25 * time.Hour)
	if a := age(); a != 25*3600 {
		t.Fatalf("age of a snapshot held 25 h: %v", a)
	}
	r.track("bk-1", false)
	if a := age(); a != 0 {
		t.Fatalf("age after the job let go of its snapshot: %v", a)
	}
}
