package restore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
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
