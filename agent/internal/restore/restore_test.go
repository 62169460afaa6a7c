package restore

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/sendense/sendense/agent/internal/vsphere"
	"github.com/sendense/sendense/shared/api"
)

type fakeHub struct {
	mu       sync.Mutex
	progress []api.RestoreProgress
	done     []api.RestoreCompletion
}

func (h *fakeHub) RestoreProgress(_ context.Context, _ string, p api.RestoreProgress) (api.JobState, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.progress = append(h.progress, p)
	return api.JobState{Status: api.JobRunning}, nil
}

func (h *fakeHub) CompleteRestore(_ context.Context, _ string, c api.RestoreCompletion) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.done = append(h.done, c)
	return nil
}

func (h *fakeHub) OpenRestoreImage(context.Context, string, string, int64) (io.ReadCloser, int64, error) {
	return nil, 0, errors.New("not used")
}

type fakeTarget struct {
	resolveErr error
	destroyErr error
	destroyed  []string
}

func (t *fakeTarget) ResolveRestore(context.Context, *api.RestoreJob) (*vsphere.Placement, error) {
	return nil, t.resolveErr
}

func (t *fakeTarget) ResolveInPlace(context.Context, *api.RestoreJob) (*vsphere.InPlaceVM, error) {
	return nil, t.resolveErr
}

func (t *fakeTarget) DestroyRestoredVM(_ context.Context, moref, _ string) error {
	t.destroyed = append(t.destroyed, moref)
	return t.destroyErr
}

func (t *fakeTarget) DatastoreHTTP(context.Context, string, string, string) (string, *http.Client, error) {
	return "", nil, errors.New("not used")
}

// A restore refused by its checks, or resumed after a restart, reports failed and leaves no VM
// of its own behind.
func TestRunFailsAndRemovesEarlierVM(t *testing.T) {
	for _, tc := range []struct {
		name       string
		vmRef      string
		destroyErr error
		wantGone   []string
		wantLeft   string
	}{
		{name: "fresh"},
		{name: "resumed", vmRef: "vm-42", wantGone: []string{"vm-42"}},
		{name: "resumed, removal fails", vmRef: "vm-42", destroyErr: errors.New("vCenter down"), wantGone: []string{"vm-42", "vm-42"}, wantLeft: "vm-42"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hub := &fakeHub{}
			target := &fakeTarget{resolveErr: vsphere.ErrTargetNotFound, destroyErr: tc.destroyErr}
			r := NewRunner(hub, func(context.Context, string) (Target, error) { return target, nil }, slog.New(slog.DiscardHandler), Options{})
			job := &api.RestoreJob{ID: "rs-1", BackupID: "b-1", Source: "lab", VMRef: tc.vmRef, Resumed: tc.vmRef != ""}
			if err := r.Run(t.Context(), job); err == nil {
				t.Fatal("Run succeeded")
			}
			if len(hub.done) != 1 || hub.done[0].Status != api.JobFailed || hub.done[0].VMRef != tc.wantLeft {
				t.Fatalf("completion %+v, want one failed leaving vm %q", hub.done, tc.wantLeft)
			}
			if !slices.Equal(target.destroyed, tc.wantGone) {
				t.Fatalf("destroyed %v, want %v", target.destroyed, tc.wantGone)
			}
			if len(r.Busy()) != 0 {
				t.Fatalf("still busy: %v", r.Busy())
			}
		})
	}
}
