package restore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/api"
)

// flakyHub serves one image and breaks the body of the first opens after cut bytes.
type flakyHub struct {
	fakeHub
	image   []byte
	cuts    []int64 // bytes into the body at which the n-th open breaks off (-1: it does not)
	opens   []int64 // offsets asked for
	refuse  error
	shorten bool
}

type brokenBody struct{ io.Reader }

func (brokenBody) Close() error { return nil }

func (h *flakyHub) OpenRestoreImage(_ context.Context, _, _ string, off int64) (io.ReadCloser, int64, error) {
	h.opens = append(h.opens, off)
	if h.refuse != nil {
		return nil, 0, h.refuse
	}
	rest := h.image[off:]
	n := int64(len(rest))
	if h.shorten {
		n--
	}
	var r io.Reader = bytes.NewReader(rest)
	if i := len(h.opens) - 1; i < len(h.cuts) && h.cuts[i] >= 0 {
		r = io.MultiReader(bytes.NewReader(rest[:h.cuts[i]]), errReader{io.ErrUnexpectedEOF})
	}
	return brokenBody{r}, n, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// A dropped image read is reopened at the byte reached, and the reader delivers the image
// exactly; a hub that fails at the same byte again and again, refuses, or announces the
// wrong size fails it.
func TestImageReaderReopens(t *testing.T) {
	img := make([]byte, 3<<20+123)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(img)
	log := slog.New(slog.DiscardHandler)

	h := &flakyHub{image: img, cuts: []int64{1000, 0, 2 << 20}}
	got, err := io.ReadAll(newImageReader(t.Context(), h, "rs-1", "disk-2000", int64(len(img)), log))
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("read %d bytes, equal %v, err %v", len(got), bytes.Equal(got, img), err)
	}
	if want := []int64{0, 1000, 1000, 2<<20 + 1000}; !slices.Equal(h.opens, want) {
		t.Fatalf("opened at %v, want %v", h.opens, want)
	}

	stuck := &flakyHub{image: img, cuts: []int64{5000, 0, 0, 0, 0, 0, 0, 0}}
	if _, err := io.ReadAll(newImageReader(t.Context(), stuck, "rs-1", "disk-2000", int64(len(img)), log)); !errors.Is(err, io.ErrUnexpectedEOF) || len(stuck.opens) != maxImageReopens+1 {
		t.Fatalf("a hub failing at one byte: %v after %d opens", err, len(stuck.opens))
	}
	refused := &flakyHub{image: img, refuse: errors.New("403 forbidden")}
	if _, err := io.ReadAll(newImageReader(t.Context(), refused, "rs-1", "disk-2000", int64(len(img)), log)); err == nil || len(refused.opens) != 1 {
		t.Fatalf("a refused image: %v after %d opens", err, len(refused.opens))
	}
	short := &flakyHub{image: img, shorten: true}
	if _, err := io.ReadAll(newImageReader(t.Context(), short, "rs-1", "disk-2000", int64(len(img)), log)); err == nil {
		t.Fatal("an image of the wrong size was read")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	dropped := &flakyHub{image: img, cuts: []int64{10}}
	if _, err := io.ReadAll(newImageReader(ctx, dropped, "rs-1", "disk-2000", int64(len(img)), log)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// silentHub serves one image whose first body sends a few bytes, then nothing, until closed.
type silentHub struct {
	image []byte
	opens []int64
}

type silentBody struct {
	io.Reader
	closed chan struct{}
	once   sync.Once
}

func (b *silentBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if n > 0 || !errors.Is(err, io.EOF) {
		return n, err
	}
	<-b.closed
	return 0, errors.New("read on a closed body")
}

func (b *silentBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

func (h *silentHub) OpenRestoreImage(_ context.Context, _, _ string, off int64) (io.ReadCloser, int64, error) {
	h.opens = append(h.opens, off)
	rest := h.image[off:]
	if len(h.opens) == 1 {
		return &silentBody{Reader: bytes.NewReader(rest[:100]), closed: make(chan struct{})}, int64(len(rest)), nil
	}
	return io.NopCloser(bytes.NewReader(rest)), int64(len(rest)), nil
}

func (h *silentHub) RestoreProgress(context.Context, string, api.RestoreProgress) (api.JobState, error) {
	return api.JobState{}, nil
}

func (h *silentHub) CompleteRestore(context.Context, string, api.RestoreCompletion) error { return nil }

// A connection that goes silent without breaking is taken for dead after imageIdleTimeout: the
// image is reopened at the byte reached and read to its end, exactly.
func TestImageReaderReopensASilentConnection(t *testing.T) {
	defer func(d time.Duration) { imageIdleTimeout = d }(imageIdleTimeout)
	imageIdleTimeout = 100 * time.Millisecond
	img := make([]byte, 1<<20)
	_, _ = rand.NewChaCha8([32]byte{2}).Read(img)
	h := &silentHub{image: img}
	got, err := io.ReadAll(newImageReader(t.Context(), h, "rs-1", "disk-2000", int64(len(img)), slog.New(slog.DiscardHandler)))
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("read %d bytes, equal %v, err %v", len(got), bytes.Equal(got, img), err)
	}
	if !slices.Equal(h.opens, []int64{0, 100}) {
		t.Fatalf("opened at %v, want 0 then 100", h.opens)
	}
}

// A restore whose writing makes no progress for StallTimeout is failed with a cause that says
// so; one whose bytes move is left alone.
func TestStalledRestoreIsFailed(t *testing.T) {
	r := NewRunner(&fakeHub{}, nil, slog.New(slog.DiscardHandler), Options{ProgressInterval: 10 * time.Millisecond, StallTimeout: time.Second})
	// Every byte written, the import's completion and the power-on are not watched.
	written := &state{phase: api.PhaseWriting, total: 1 << 20}
	written.written.Store(1 << 20)
	wctx, wcancel := context.WithCancelCause(t.Context())
	defer wcancel(nil)
	stopWritten := r.reportProgress(wctx, "rs-3", written, wcancel, slog.New(slog.DiscardHandler))
	defer stopWritten()
	moving := &state{phase: api.PhaseWriting, total: 1 << 30}
	mctx, mcancel := context.WithCancelCause(t.Context())
	defer mcancel(nil)
	stopMoving := r.reportProgress(mctx, "rs-1", moving, mcancel, slog.New(slog.DiscardHandler))
	stuck := &state{phase: api.PhaseWriting, total: 1 << 30}
	stuck.written.Store(4096)
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	stop := r.reportProgress(ctx, "rs-2", stuck, cancel, slog.New(slog.DiscardHandler))
	defer stop()
	deadline := time.Now().Add(10 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		moving.written.Add(1)
		time.Sleep(5 * time.Millisecond)
	}
	if cause := context.Cause(ctx); !errors.Is(cause, errStalled) || !strings.Contains(cause.Error(), "4096 of") {
		t.Fatalf("the stuck restore: %v, want errStalled naming the bytes written", cause)
	}
	if mctx.Err() != nil {
		t.Fatalf("the moving restore was failed: %v", context.Cause(mctx))
	}
	if wctx.Err() != nil {
		t.Fatalf("a restore with every byte written was failed: %v", context.Cause(wctx))
	}
	stopMoving()
}
