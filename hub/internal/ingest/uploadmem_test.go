package ingest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/semaphore"
)

func uploadMemService(size int64, wait time.Duration) *Service {
	return &Service{metrics: newMetrics(nil), inFlight: map[string]*agentUploads{},
		uploadMem: semaphore.NewWeighted(size), uploadMemSize: size, uploadWait: wait}
}

// One agent holds at most half of the upload memory: its next upload waits (and is refused
// after the upload wait) while another agent still gets the other half at once.
func TestUploadMemoryAgentShare(t *testing.T) {
	s := uploadMemService(8<<20, 100*time.Millisecond)
	a, _ := s.acquire("a")
	endA, err := s.reserveUpload(t.Context(), a, bytes.NewReader(nil), 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := s.acquire("a")
	if _, err := s.reserveUpload(t.Context(), a2, bytes.NewReader(nil), 1); !errors.Is(err, ErrNoUploadMemory) {
		t.Fatalf("an agent past its share: %v, want ErrNoUploadMemory", err)
	}
	s.release("a")
	b, _ := s.acquire("b")
	start := time.Now()
	endB, err := s.reserveUpload(t.Context(), b, bytes.NewReader(nil), 4<<20)
	if err != nil {
		t.Fatalf("another agent, with half of the memory free: %v", err)
	}
	if took := time.Since(start); took >= 100*time.Millisecond {
		t.Errorf("another agent waited %s for the free half", took)
	}
	endA()
	endB()
	s.release("a")
	s.release("b")
	if !s.uploadMem.TryAcquire(8 << 20) {
		t.Fatal("upload memory still held after every upload ended")
	}
	if len(s.inFlight) != 0 {
		t.Fatalf("agents still counted in flight: %v", s.inFlight)
	}
}

// A waiting upload whose request ends just as memory frees up keeps nothing: however the race
// between the release and the cancellation goes, all of the memory and the agent's share come
// back.
func TestUploadMemoryCancelledWaitKeepsNothing(t *testing.T) {
	s := uploadMemService(2, 5*time.Second)
	for range 2000 {
		holder, _ := s.acquire("a")
		end, err := s.reserveUpload(t.Context(), holder, bytes.NewReader(nil), 2)
		if err != nil {
			t.Fatal(err)
		}
		waiter, _ := s.acquire("b")
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan func(), 1)
		body := &heldBody{waiting: make(chan struct{})}
		go func() {
			e, err := s.reserveUpload(ctx, waiter, body, 2)
			if err != nil {
				e = func() {}
			}
			done <- e
		}()
		<-body.waiting // about to wait
		var wg sync.WaitGroup
		wg.Go(end)
		wg.Go(cancel)
		wg.Wait()
		(<-done)()
		s.release("a")
		s.release("b")
	}
	if !s.uploadMem.TryAcquire(2) {
		t.Fatal("upload memory leaked by waits cancelled as it was freed")
	}
}

// heldBody tells when its upload starts to wait for memory (it holds its deadline).
type heldBody struct {
	bytes.Reader
	waiting chan struct{}
}

func (b *heldBody) HoldDeadline() func() {
	close(b.waiting)
	return func() {}
}

// OnIdle runs once the uploads holding memory have all ended and none began for IdleAfter; an
// upload in flight holds it off.
func TestOnIdleRunsWhenUploadsStop(t *testing.T) {
	idle := make(chan struct{}, 4)
	s := uploadMemService(8<<20, time.Second)
	s.uploads = newQuiet(50*time.Millisecond, func() { idle <- struct{}{} })
	a, _ := s.acquire("a")
	defer s.release("a")
	end, err := s.reserveUpload(t.Context(), a, bytes.NewReader(nil), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-idle:
		t.Fatal("idle while an upload held memory")
	case <-time.After(200 * time.Millisecond):
	}
	end()
	select {
	case <-idle:
	case <-time.After(5 * time.Second):
		t.Fatal("not idle 5s after the last upload ended")
	}
}
