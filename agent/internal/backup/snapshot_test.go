package backup

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

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
	snap := func(name, ref string) vsphere.SnapshotInfo {
		return vsphere.SnapshotInfo{VMUUID: "uuid-" + ref, VMName: "vm-" + ref, Name: name, MoRef: ref}
	}
	src := &fakeSnapshots{
		snaps: []vsphere.SnapshotInfo{
			snap(api.SnapshotPrefix+"busy", "s1"),         // running here
			snap(api.SnapshotPrefix+"resumable", "s2"),    // running on the hub: this agent resumes it
			snap(api.SnapshotPrefix+"failed", "s3"),       // ended on the hub
			snap(api.SnapshotPrefix+"unknown", "s4"),      // the hub never heard of it (404)
			snap(api.SnapshotPrefix+"hub-down", "s5"),     // the hub cannot answer: keep
			snap(api.SnapshotPrefix+"stuck", "s6"),        // removal fails: kept for the next pass
			snap("before-upgrade", "s7"),                  // not ours
			snap("sendense", "s8"),                        // not a job snapshot name
			snap(api.SnapshotPrefix+"succeeded", "s9"),    // ended on the hub
			snap(api.SnapshotPrefix+"cancelled", "s10"),   // ended on the hub
			snap(api.SnapshotPrefix+"also-busy", "s11"),   // running here
			snap(api.SnapshotPrefix+"hub-refuses", "s12"), // 403: keep, the hub may come round
		},
		failRm: map[string]bool{"s6": true},
	}
	hub := fakeJobStates{
		states: map[string]string{
			"resumable": api.JobRunning, "failed": api.JobFailed, "stuck": api.JobFailed,
			"succeeded": api.JobSucceeded, "cancelled": api.JobCancelled,
		},
		errs: map[string]error{
			"hub-down":    errors.New("dial tcp: connection refused"),
			"hub-refuses": &hubclient.Error{Status: http.StatusForbidden},
		},
	}
	busy := func() []string { return []string{"busy", "also-busy"} }

	n := reapOnce(t.Context(), []SnapshotSource{src}, hub, busy, slog.New(slog.DiscardHandler))
	if n != 4 {
		t.Errorf("reaped %d snapshots, want 4 (failed, unknown, succeeded, cancelled)", n)
	}
	want := []string{"before-upgrade", "sendense", api.SnapshotPrefix + "also-busy", api.SnapshotPrefix + "busy",
		api.SnapshotPrefix + "hub-down", api.SnapshotPrefix + "hub-refuses", api.SnapshotPrefix + "resumable", api.SnapshotPrefix + "stuck"}
	slices.Sort(want)
	if got := src.names(); !slices.Equal(got, want) {
		t.Fatalf("snapshots left = %q\nwant %q", got, want)
	}

	// A source that cannot list is skipped without touching the others.
	down := &fakeSnapshots{listErr: errors.New("vcenter unreachable")}
	other := &fakeSnapshots{snaps: []vsphere.SnapshotInfo{snap(api.SnapshotPrefix+"failed", "s20")}}
	if n := reapOnce(t.Context(), []SnapshotSource{down, other}, hub, busy, slog.New(slog.DiscardHandler)); n != 1 || len(other.names()) != 0 {
		t.Fatalf("with one source down: reaped %d, left %q", n, other.names())
	}
}
