package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/disk"
	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/vsphere"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// A small disk keeps the tests fast: 16 slots of 4 KiB, the last one cut short.
const (
	testChunk    = 4096
	testCapacity = 15*testChunk + 1000
)

// testDisk returns the disk's bytes: random, except slots 2 and 6, which are zero.
func testDisk() []byte {
	b := make([]byte, testCapacity)
	r := rand.NewChaCha8([32]byte{7})
	_, _ = r.Read(b)
	for _, s := range []int{2, 6} {
		clear(b[s*testChunk : (s+1)*testChunk])
	}
	return b
}

func slotExtent(slots ...int64) []vsphere.Extent {
	var out []vsphere.Extent
	for _, s := range slots {
		out = append(out, vsphere.Extent{Offset: s * testChunk, Length: min(testChunk, testCapacity-s*testChunk)})
	}
	return out
}

// diskRun is one backupDisk call against the fakes.
type diskRun struct {
	requested string // job's requested type; "" is auto
	parent    *api.ParentRef
	changeID  string // the disk's change ID in the snapshot
	capacity  int64  // the disk's capacity in the snapshot; 0 is testCapacity
	cbtWasOff bool
	tracker   *fakeTracker
	done      [][2]int64 // slots the hub already holds (a resumed session)
	drift     bool       // the hub found CBT drift in the session before (a resumed session)
}

func (d diskRun) run(t *testing.T) (*fakeHub, *fakeTracker, error) {
	t.Helper()
	hub := newFakeHub()
	hub.done, hub.drift = d.done, d.drift
	tr := d.tracker
	if tr == nil {
		// A full backup lists the allocated slots; an incremental from 52 aa/4 one slot.
		tr = &fakeTracker{changed: map[string][]vsphere.Extent{
			"*":       slotExtent(0, 1, 2, 5, 15),
			"52 aa/4": slotExtent(3),
		}}
	}
	capacity := d.capacity
	if capacity == 0 {
		capacity = testCapacity
	}
	job := &api.Job{ID: "job-1", RequestedType: d.requested, Repository: api.JobRepo{ChunkSize: testChunk}}
	jd := api.JobDisk{DiskID: "disk-2000", Key: 2000, CapacityBytes: capacity, Parent: d.parent}
	sd := vsphere.SnapshotDisk{Key: 2000, DiskID: "disk-2000", CapacityBytes: capacity, ChangeID: d.changeID, Backupable: true}
	r := NewRunner(hub, nil, slog.New(slog.DiscardHandler), nil, RunnerOptions{Upload: UploadOptions{GroupSlots: 2}})
	data := testDisk()
	if int64(len(data)) < capacity {
		data = append(data, make([]byte, capacity-int64(len(data)))...)
	}
	err := r.backupDisk(t.Context(), job, jd, tr, sd, memSource{data}, d.cbtWasOff, &Counters{}, &jobStatus{}, slog.New(slog.DiscardHandler))
	return hub, tr, err
}

// TestFullOrIncremental checks what the hub is told for each reason a backup must be full, and
// that an incremental reads only the changed slots. "malformed change IDs" fails on code that
// ignores ParseChangeID's ok: both IDs parse to an empty UUID and compare equal.
func TestFullOrIncremental(t *testing.T) {
	good := &api.ParentRef{BackupID: "bk-parent", ChangeID: "52 aa/4", CapacityBytes: testCapacity}
	withID := func(id string) *api.ParentRef { p := *good; p.ChangeID = id; return &p }
	allocated := []int64{0, 1, 2, 5, 15}
	all := make([]int64, 16)
	for i := range all {
		all[i] = int64(i)
	}
	for _, tt := range []struct {
		name       string
		run        diskRun
		wantType   string
		wantReason string
		wantAsked  []string // change IDs CBT was asked about, in order
		wantSlots  []int64  // slots the hub ends up holding
	}{
		{"incremental", diskRun{parent: good, changeID: "52 aa/7"},
			api.BackupIncremental, "changed blocks since 52 aa/4", []string{"52 aa/4"}, []int64{3}},
		{"job asks for full", diskRun{requested: api.BackupFull, parent: good, changeID: "52 aa/7"},
			api.BackupFull, "full backup requested", []string{"*"}, allocated},
		{"no parent", diskRun{changeID: "52 aa/7"},
			api.BackupFull, "no earlier backup", []string{"*"}, allocated},
		{"cbt was off for the vm", diskRun{parent: good, changeID: "52 aa/7", cbtWasOff: true},
			api.BackupFull, "changed block tracking was off", []string{"*"}, allocated},
		{"cbt off for the disk", diskRun{parent: good, changeID: ""},
			api.BackupFull, "no change ID (no CBT): every slot read", nil, all},
		{"disk resized", diskRun{parent: withID("52 aa/4"), changeID: "52 aa/7", capacity: testCapacity + testChunk},
			api.BackupFull, fmt.Sprintf("disk resized from %d to %d bytes", testCapacity, testCapacity+testChunk), []string{"*"}, allocated},
		{"change id uuid changed", diskRun{parent: good, changeID: "52 bb/1"},
			api.BackupFull, "UUID changed", []string{"*"}, allocated},
		{"parent without change id", diskRun{parent: withID(""), changeID: "52 aa/7"},
			api.BackupFull, "parent backup has no change ID", []string{"*"}, allocated},
		{"malformed change ids", diskRun{parent: withID("garbage"), changeID: "junk"},
			api.BackupFull, `parent backup's change ID "garbage" is malformed`, []string{"*"}, allocated},
		{"malformed parent change id", diskRun{parent: withID("52 aa/"), changeID: "52 aa/7"},
			api.BackupFull, `change ID "52 aa/" is malformed`, []string{"*"}, allocated},
		{"malformed disk change id", diskRun{parent: good, changeID: "52 aa"},
			api.BackupFull, `disk's change ID "52 aa" is malformed`, []string{"*"}, allocated},
		{"parent change id no longer valid", diskRun{parent: good, changeID: "52 aa/7", tracker: &fakeTracker{
			changed: map[string][]vsphere.Extent{"*": slotExtent(0, 1, 2, 5, 15)},
			errs:    map[string]error{"52 aa/4": vsphere.ErrChangeIDInvalid},
		}}, api.BackupFull, "no longer valid", []string{"52 aa/4", "*"}, allocated},
		{"cbt unavailable", diskRun{changeID: "52 aa/7", tracker: &fakeTracker{
			errs: map[string]error{"*": vsphere.ErrCBTUnavailable},
		}}, api.BackupFull, "CBT unavailable", []string{"*"}, all},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hub, tr, err := tt.run.run(t)
			if err != nil {
				t.Fatal(err)
			}
			if len(hub.opened) != 1 {
				t.Fatalf("%d sessions opened, want 1", len(hub.opened))
			}
			req := hub.opened[0]
			if req.Type != tt.wantType || !strings.Contains(req.Reason, tt.wantReason) {
				t.Errorf("session %s (%q), want %s with reason containing %q", req.Type, req.Reason, tt.wantType, tt.wantReason)
			}
			wantParent, wantBase := "", ""
			if tt.wantType == api.BackupIncremental {
				wantParent, wantBase = tt.run.parent.BackupID, tt.run.parent.ChangeID
			}
			if req.ParentBackupID != wantParent || req.BaseChangeID != wantBase || req.ChangeID != tt.run.changeID {
				t.Errorf("session parent %q base %q change ID %q, want %q %q %q",
					req.ParentBackupID, req.BaseChangeID, req.ChangeID, wantParent, wantBase, tt.run.changeID)
			}
			if !slices.Equal(tr.asked, tt.wantAsked) {
				t.Errorf("CBT asked about %q, want %q", tr.asked, tt.wantAsked)
			}
			checkHolds(t, hub, tt.run, tt.wantSlots)
		})
	}
}

// checkHolds checks that the hub recorded exactly want and that each recorded slot's chunk
// holds the disk's bytes.
func checkHolds(t *testing.T, hub *fakeHub, d diskRun, want []int64) {
	t.Helper()
	if got := hub.recorded(); !slices.Equal(got, want) {
		t.Fatalf("hub holds slots %v, want %v", got, want)
	}
	capacity := d.capacity
	if capacity == 0 {
		capacity = testCapacity
	}
	data := testDisk()
	data = append(data, make([]byte, max(0, capacity-int64(len(data))))...)
	g := chunk.Grid{Capacity: capacity, ChunkSize: testChunk}
	for _, s := range want {
		b := data[g.Offset(s) : g.Offset(s)+g.Len(s)]
		if got := hub.slots[s]; got != chunk.Sum(b).String() {
			t.Errorf("slot %d recorded as %s, want the digest of its bytes", s, got)
		}
	}
	if len(hub.commits) != 1 || hub.commits[0].SlotsChanged == 0 && len(want) > 0 {
		t.Errorf("commits %+v", hub.commits)
	}
}

// A resumed session skips the slots the hub reports done and reads the rest.
func TestResumedSessionSkipsDoneSlots(t *testing.T) {
	d := diskRun{changeID: "52 aa/7", done: [][2]int64{{0, 2}}}
	hub, _, err := d.run(t)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hub.recorded(), []int64{2, 5, 15}; !slices.Equal(got, want) {
		t.Fatalf("the resumed session recorded %v, want %v (0 and 1 were done)", got, want)
	}
	if c := hub.commits[0]; c.SlotsChanged != 5 || c.BytesRead != 2*testChunk+1000 {
		t.Fatalf("commit %+v: want 5 slots changed and only the 3 left read", c)
	}
}

// An incremental's session in which CBT drift was found before the agent stopped: the agent
// resuming it reads every slot not yet recorded, not only those CBT reports, and commits it as
// drifted.
func TestResumedSessionWithDriftReadsTheWholeDisk(t *testing.T) {
	parent := &api.ParentRef{BackupID: "bk-parent", ChangeID: "52 aa/4", CapacityBytes: testCapacity}
	d := diskRun{parent: parent, changeID: "52 aa/7", done: [][2]int64{{0, 2}}, drift: true}
	hub, _, err := d.run(t)
	if err != nil {
		t.Fatal(err)
	}
	slots := int64((testCapacity + testChunk - 1) / testChunk)
	var want []int64
	for s := int64(2); s < slots; s++ {
		want = append(want, s)
	}
	if got := hub.recorded(); !slices.Equal(got, want) {
		t.Fatalf("the resumed session recorded %v, want every slot but the 2 done (%v)", got, want)
	}
	if c := hub.commits[0]; !c.CBTDrift || c.SlotsChanged != slots {
		t.Fatalf("commit %+v: want drift and every slot changed", c)
	}
}

// Two malformed change IDs both parse to an empty UUID; the decision must not read that as
// "unchanged" and plan an incremental from a base CBT cannot know.
func TestDecideMalformedChangeIDsForceFull(t *testing.T) {
	for _, ids := range [][2]string{{"garbage", "junk"}, {"*", "*"}, {"/1", "/2"}, {"52 aa/", "52 aa/"}, {"52 aa/4", "x"}, {"x", "52 aa/4"}} {
		parent := &api.ParentRef{BackupID: "bk-1", ChangeID: ids[0], CapacityBytes: testCapacity}
		p := decide(&api.Job{}, api.JobDisk{Parent: parent}, vsphere.SnapshotDisk{CapacityBytes: testCapacity, ChangeID: ids[1]}, false)
		if p.typ != api.BackupFull || !strings.Contains(p.reason, "malformed") || p.parent != "" || p.baseID != "" {
			t.Errorf("parent %q, disk %q: plan %+v, want a full because a change ID is malformed", ids[0], ids[1], p)
		}
	}
}

// hangingDisk is a source whose reads never return until it is closed.
type hangingDisk struct {
	size   int64
	closed chan struct{}
	once   sync.Once
}

func (d *hangingDisk) Size() int64 { return d.size }

func (d *hangingDisk) Close() error {
	d.once.Do(func() { close(d.closed) })
	return nil
}

func (d *hangingDisk) ReadAt([]byte, int64) (int, error) {
	<-d.closed
	return 0, errors.New("read on a closed disk")
}

type hangingSource struct{ d *hangingDisk }

func (hangingSource) FindVM(context.Context, string) (*vsphere.VM, error) { return nil, nil }

func (s hangingSource) OpenDisk(context.Context, vsphere.SnapshotDisk) (disk.Reader, error) {
	return s.d, nil
}

// A read stuck on an unresponsive source does not keep a cancelled job: it returns.
func TestCancelEndsAStuckRead(t *testing.T) {
	d := &hangingDisk{size: testCapacity, closed: make(chan struct{})}
	job := &api.Job{ID: "job-1", Repository: api.JobRepo{ChunkSize: testChunk}}
	jd := api.JobDisk{DiskID: "disk-2000", Key: 2000, CapacityBytes: testCapacity}
	sd := vsphere.SnapshotDisk{Key: 2000, DiskID: "disk-2000", CapacityBytes: testCapacity, ChangeID: "52 aa/7", Backupable: true}
	tr := &fakeTracker{changed: map[string][]vsphere.Extent{"*": slotExtent(0, 1, 2, 5, 15)}}
	r := NewRunner(newFakeHub(), nil, slog.New(slog.DiscardHandler), nil, RunnerOptions{Upload: UploadOptions{GroupSlots: 2}})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- r.backupDisk(ctx, job, jd, tr, sd, hangingSource{d}, false, &Counters{}, &jobStatus{}, slog.New(slog.DiscardHandler))
	}()
	time.Sleep(200 * time.Millisecond) // the reads are in flight
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a cancelled backup with stuck reads reported success")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the backup was still blocked on its reads 10 s after it was cancelled")
	}
}

// flakyCompletions is a hub that answers the first completions with errs, then accepts.
type flakyCompletions struct {
	*fakeHub
	mu    sync.Mutex
	errs  []error
	calls int
}

func (h *flakyCompletions) Complete(context.Context, string, api.JobCompletion) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if len(h.errs) == 0 {
		return nil
	}
	err := h.errs[0]
	h.errs = h.errs[1:]
	return err
}

// A job's outcome is reported again while the hub is away or answers with a server error, and
// not again after an answer that will not change (a 4xx).
func TestCompletionIsRetriedWhileTheHubIsAway(t *testing.T) {
	down := errors.New("dial tcp 127.0.0.1:8443: connect: connection refused")
	for _, tc := range []struct {
		name      string
		errs      []error
		wantErr   bool
		wantCalls int
	}{
		{"hub back after two failures", []error{down, &hubclient.Error{Status: http.StatusServiceUnavailable}}, false, 3},
		{"a conflict is final", []error{&hubclient.Error{Status: http.StatusConflict}}, true, 1},
		{"hub away for good", []error{down, down, down, down, down, down, down, down, down, down, down, down, down, down, down, down}, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hub := &flakyCompletions{fakeHub: newFakeHub(), errs: tc.errs}
			r := NewRunner(hub, nil, slog.New(slog.DiscardHandler), nil, RunnerOptions{CompleteWithin: time.Second})
			ctx, cancel := context.WithTimeout(t.Context(), r.opts.CompleteWithin)
			defer cancel()
			err := r.complete(ctx, "bk-1", &Counters{}, api.JobCompletion{Status: api.JobSucceeded}, slog.New(slog.DiscardHandler))
			if (err != nil) != tc.wantErr || (tc.wantCalls > 0 && hub.calls != tc.wantCalls) || (tc.wantCalls == 0 && hub.calls < 3) {
				t.Fatalf("complete: %v after %d calls", err, hub.calls)
			}
		})
	}
}

// refusingHub records the end-of-job requests it gets and refuses a completion's progress field
// with refusal: "progress" is an unknown field to a hub from before completions carried
// progress; "progress.bytes_read" a value out of its bounds.
type refusingHub struct {
	*fakeHub
	refusal string
	mu      sync.Mutex
	got     []string // "progress read=N", "complete with progress read=N", "complete"
}

func (h *refusingHub) Progress(_ context.Context, _ string, p api.JobProgress) (api.JobState, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, fmt.Sprintf("progress read=%d", p.BytesRead))
	return api.JobState{Status: api.JobRunning}, nil
}

func (h *refusingHub) Complete(_ context.Context, _ string, c api.JobCompletion) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c.Progress == nil {
		h.got = append(h.got, "complete")
		return nil
	}
	h.got = append(h.got, fmt.Sprintf("complete with progress read=%d", c.Progress.BytesRead))
	if h.refusal != "" {
		return &hubclient.Error{Status: http.StatusBadRequest, Body: api.Error{Error: "refused", Field: h.refusal}}
	}
	return nil
}

// The end of a job is one request carrying the last progress; a hub that refuses that field
// (an older one does not know it) gets the progress and the outcome as two requests, and the
// job ends either way.
func TestCompletionCarriesTheLastProgress(t *testing.T) {
	for _, tc := range []struct {
		refusal string
		want    []string
	}{
		{"", []string{"complete with progress read=7"}},
		{"progress", []string{"complete with progress read=7", "progress read=7", "complete"}},
		{"progress.bytes_read", []string{"complete with progress read=7", "progress read=7", "complete"}},
	} {
		hub := &refusingHub{fakeHub: newFakeHub(), refusal: tc.refusal}
		r := NewRunner(hub, nil, slog.New(slog.DiscardHandler), nil, RunnerOptions{CompleteWithin: time.Second})
		c := &Counters{}
		c.BytesRead.Store(7)
		if err := r.complete(t.Context(), "bk-1", c, api.JobCompletion{Status: api.JobFailed}, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatalf("progress refused as %q: %v", tc.refusal, err)
		}
		if !slices.Equal(hub.got, tc.want) {
			t.Errorf("progress refused as %q: the hub got %q, want %q", tc.refusal, hub.got, tc.want)
		}
	}
}

// A disk whose change ID keeps the parent's UUID but a lower sequence (a snapshot reverted to)
// cannot be asked for the changes since the parent: a full backup.
func TestDecideSequenceGoneBackForcesFull(t *testing.T) {
	for _, tc := range []struct {
		parent, disk string
		full         bool
	}{{"52 aa/7", "52 aa/3", true}, {"52 aa/7", "52 aa/7", false}, {"52 aa/7", "52 aa/12", false}, {"52 aa/x", "52 aa/3", false}} {
		parent := &api.ParentRef{BackupID: "bk-1", ChangeID: tc.parent, CapacityBytes: testCapacity}
		p := decide(&api.Job{}, api.JobDisk{Parent: parent}, vsphere.SnapshotDisk{CapacityBytes: testCapacity, ChangeID: tc.disk}, false)
		if got := p.typ == api.BackupFull; got != tc.full || (got && !strings.Contains(p.reason, "went back from 7 to 3")) {
			t.Errorf("parent %q, disk %q: plan %+v, want full %v", tc.parent, tc.disk, p, tc.full)
		}
	}
}
