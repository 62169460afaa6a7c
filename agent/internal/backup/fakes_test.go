package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/sendense/sendense/agent/internal/disk"
	"github.com/sendense/sendense/agent/internal/vsphere"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// fakeHub is the hub as the backup package sees it (jobHub), in memory: one upload session at
// a time, chunks kept as their plaintext after checking the blob names its content.
type fakeHub struct {
	mu      sync.Mutex
	done    [][2]int64 // what OpenSession reports as already recorded (a resumed session)
	drift   bool       // what OpenSession reports as CBT drift found before (a resumed session)
	opened  []api.OpenSessionRequest
	slots   map[int64]string // recorded slot → digest
	chunks  map[string][]byte
	commits []api.CommitRequest
}

var _ jobHub = (*fakeHub)(nil)

func newFakeHub() *fakeHub {
	return &fakeHub{slots: map[int64]string{}, chunks: map[string][]byte{}}
}

func (h *fakeHub) Progress(context.Context, string, api.JobProgress) (api.JobState, error) {
	return api.JobState{Status: api.JobRunning}, nil
}

func (h *fakeHub) Complete(context.Context, string, api.JobCompletion) error { return nil }

func (h *fakeHub) ReportDisks(context.Context, string, api.JobDisksReport) (*api.Job, error) {
	return nil, errors.New("the fake hub runs single disks only")
}

func (h *fakeHub) PutVMConfig(context.Context, string, api.VMConfig) error {
	return errors.New("the fake hub runs single disks only")
}

func (h *fakeHub) OpenSession(_ context.Context, jobID, diskID string, req api.OpenSessionRequest) (api.Session, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.opened = append(h.opened, req)
	return api.Session{ID: fmt.Sprintf("sess-%d", len(h.opened)), JobID: jobID, DiskID: diskID, Type: req.Type,
		CapacityBytes: req.CapacityBytes, ChunkSize: req.ChunkSize, Status: "open", Done: h.done, CBTDrift: h.drift}, nil
}

// RecordSlots records the slots whose chunk the hub holds (the all-zero chunk it always
// holds) and names the others missing, as the real hub does.
func (h *fakeHub) RecordSlots(_ context.Context, _ string, b api.SlotBatch) (api.SlotBatchResult, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var res api.SlotBatchResult
	for _, s := range b.Slots {
		if _, ok := h.chunks[s.Digest]; ok || isZeroDigest(s.Digest) {
			h.slots[s.Slot] = s.Digest
			res.Recorded++
			continue
		}
		if !slices.Contains(res.Missing, s.Digest) {
			res.Missing = append(res.Missing, s.Digest)
		}
	}
	return res, nil
}

func isZeroDigest(d string) bool {
	for _, n := range []int{testChunk, testCapacity % testChunk} {
		if n > 0 && chunk.ZeroDigest(n).String() == d {
			return true
		}
	}
	return false
}

// PutChunk opens the blob, refuses one whose plaintext does not hash to digest (names it by that
// hash when digest is empty), and records the slots that hold it.
func (h *fakeHub) PutChunk(_ context.Context, _ string, digest string, slots []int64, size int64, body func() (io.Reader, error)) (bool, error) {
	blob, err := readBody(body, size)
	if err != nil {
		return false, err
	}
	return h.putBlob(digest, slots, blob)
}

// readBody reads one attempt's blob of an upload, which must be size bytes.
func readBody(body func() (io.Reader, error), size int64) ([]byte, error) {
	r, err := body()
	if err != nil {
		return nil, err
	}
	blob, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if int64(len(blob)) != size {
		return nil, fmt.Errorf("%d bytes read, %d announced", len(blob), size)
	}
	return blob, nil
}

// putBlob stores a blob read from an upload.
func (h *fakeHub) putBlob(digest string, slots []int64, blob []byte) (bool, error) {
	hdr, payload, err := chunk.OpenBlob(blob)
	if err != nil {
		return false, err
	}
	plain := payload
	if hdr.Codec == chunk.CodecZstd {
		dec, err := zstd.NewReader(nil)
		if err != nil {
			return false, err
		}
		defer dec.Close()
		if plain, err = dec.DecodeAll(payload, nil); err != nil {
			return false, err
		}
	}
	switch sum := chunk.Sum(plain).String(); {
	case digest == "":
		digest = sum // a chunk the hub names
	case sum != digest:
		return false, fmt.Errorf("chunk %s does not hash to its name", digest)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, held := h.chunks[digest]
	h.chunks[digest] = slices.Clone(plain)
	for _, sl := range slots {
		h.slots[sl] = digest
	}
	return !held, nil
}

func (h *fakeHub) Commit(_ context.Context, _ string, req api.CommitRequest) (api.BackupDisk, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.commits = append(h.commits, req)
	last := h.opened[len(h.opened)-1]
	return api.BackupDisk{Type: last.Type, Reason: last.Reason, BytesRead: req.BytesRead, BytesSent: req.BytesSent}, nil
}

func (h *fakeHub) Check(context.Context, string, api.CheckRequest) (api.CheckResult, error) {
	return api.CheckResult{}, nil
}

// recorded returns the recorded slots, ascending.
func (h *fakeHub) recorded() []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []int64
	for s := range h.slots {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// fakeTracker is the job snapshot's CBT: the extents changed since each change ID, or an
// error for it. It remembers what it was asked.
type fakeTracker struct {
	mu      sync.Mutex
	changed map[string][]vsphere.Extent
	errs    map[string]error
	asked   []string
}

func (f *fakeTracker) ChangedAreas(_ context.Context, _ int32, _ int64, changeID string) ([]vsphere.Extent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, changeID)
	if err := f.errs[changeID]; err != nil {
		return nil, err
	}
	e, ok := f.changed[changeID]
	if !ok {
		return nil, fmt.Errorf("%w: no such change ID %q", vsphere.ErrChangeIDInvalid, changeID)
	}
	return e, nil
}

// memSource opens every disk as the same bytes in memory.
type memSource struct{ data []byte }

func (m memSource) FindVM(context.Context, string) (*vsphere.VM, error) {
	return nil, vsphere.ErrVMNotFound
}

func (m memSource) OpenDisk(context.Context, vsphere.SnapshotDisk) (disk.Reader, error) {
	return memDisk(m.data), nil
}

// memDisk is a disk.Reader over bytes in memory.
type memDisk []byte

func (d memDisk) Size() int64  { return int64(len(d)) }
func (d memDisk) Close() error { return nil }

func (d memDisk) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(d)) {
		return 0, io.EOF
	}
	n := copy(p, d[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
