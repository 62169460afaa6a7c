package ingest

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// slotGate is the catalog of PutChunk's tests: one open session of a running job, and a
// RecordSlots that reports each call reaching it and then waits until the test opens the gate.
// PutChunk uses nothing else of the catalog (the embedded interface is nil).
type slotGate struct {
	ingestCatalog
	ls      catalog.LiveSession
	reached chan []catalog.UploadSlot
	open    chan struct{}
}

func (g *slotGate) AgentLiveSession(_ context.Context, id, agentID string) (*catalog.LiveSession, error) {
	if id != g.ls.ID || agentID != g.ls.AgentID {
		return nil, catalog.ErrNotFound
	}
	ls := g.ls
	return &ls, nil
}

func (g *slotGate) RecordSlots(ctx context.Context, _ string, slots []catalog.UploadSlot) error {
	g.reached <- slots
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// repoOpener opens the test's one repository whatever the id.
type repoOpener struct{ r *repository.Repository }

func (o repoOpener) Open(context.Context, string) (*repository.Repository, error) { return o.r, nil }

// An upload gives its memory back once its chunk is stored, before its slots are recorded: with
// upload memory for one chunk only, a second upload is read and stored while the first still
// waits for its catalog commit, instead of waiting for that commit itself.
func TestPutChunkFreesMemoryBeforeRecordingSlots(t *testing.T) {
	const chunkSize = 64 << 10
	repo, err := repository.InitDir(t.Context(), t.TempDir(), chunkSize, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	gate := &slotGate{reached: make(chan []catalog.UploadSlot, 2), open: make(chan struct{}),
		ls: catalog.LiveSession{JobStatus: api.JobRunning, UploadSession: catalog.UploadSession{ID: "us-1", AgentID: "agent-1",
			RepositoryID: "repo-1", Status: api.SessionOpen, CapacityBytes: 4 * chunkSize, ChunkSize: chunkSize, SlotCount: 4}}}
	s := New[*repository.Repository](gate, repoOpener{repo}, slog.New(slog.DiscardHandler), nil,
		Options{UploadMemory: MaxChunkUpload(chunkSize) + 1, UploadMemoryWait: time.Minute})

	rng := rand.New(rand.NewPCG(3, 4))
	type result struct {
		stored api.ChunkStored
		err    error
	}
	upload := func(slot int64) <-chan result {
		plain := make([]byte, chunkSize)
		for i := range plain {
			plain[i] = byte(rng.Uint32())
		}
		blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan result, 1)
		go func() {
			st, err := s.PutChunk(t.Context(), "agent-1", "us-1", "", []int64{slot}, bytes.NewReader(blob), int64(len(blob)))
			done <- result{st, err}
		}()
		return done
	}
	waitRecord := func(what string) []catalog.UploadSlot {
		t.Helper()
		select {
		case slots := <-gate.reached:
			return slots
		case <-time.After(20 * time.Second):
			t.Fatalf("%s never reached RecordSlots: it waited for the memory the first upload holds while its slots are recorded", what)
			return nil
		}
	}
	first := upload(0)
	waitRecord("the first upload")
	second := upload(1)
	waitRecord("the second upload, with the first one's slots not yet recorded,")
	close(gate.open)
	for i, done := range []<-chan result{first, second} {
		r := <-done
		if r.err != nil {
			t.Fatalf("upload %d: %v", i, r.err)
		}
		d, err := chunk.ParseDigest(r.stored.Digest)
		if err != nil {
			t.Fatalf("upload %d answered digest %q: %v", i, r.stored.Digest, err)
		}
		if err := repo.TouchChunk(t.Context(), d); err != nil {
			t.Fatalf("upload %d: chunk %s not in the repository: %v", i, d, err)
		}
	}
}
