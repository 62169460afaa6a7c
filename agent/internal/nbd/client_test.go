package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/testenv"
)

// imageSize is deliberately not a multiple of 512 so the last block is partial.
const imageSize = 3*DefaultMaxRequest + 3333

// readCase is one ReadAt call compared against the file itself.
type readCase struct {
	name string
	off  int64
	n    int
}

func readCases(size int64) []readCase {
	return []readCase{
		{"one byte at start", 0, 1},
		{"4 KiB at start", 0, 4096},
		{"unaligned", 12345, 4097},
		{"4 MiB slot", 8 << 20, 4 << 20},
		{"crosses 32 MiB split", DefaultMaxRequest - 4<<20, 40 << 20},
		{"two splits, unaligned", 1, 2*DefaultMaxRequest + 1},
		{"exactly to the end", size - 4096, 4096},
		{"last partial block", size - 1000, 4096},
		{"big read past the end", size - DefaultMaxRequest - 77, DefaultMaxRequest + 4096},
		{"at the end", size, 10},
		{"past the end", size + 4096, 10},
		{"empty", 100, 0},
	}
}

// checkRead compares c.ReadAt with os.File.ReadAt on the same image: bytes, count and io.EOF.
func checkRead(t *testing.T, c io.ReaderAt, ref *os.File, off int64, n int) {
	t.Helper()
	want := make([]byte, n)
	wantN, wantErr := ref.ReadAt(want, off)
	got := make([]byte, n)
	gotN, gotErr := c.ReadAt(got, off)
	if gotN != wantN {
		t.Fatalf("ReadAt(%d bytes at %d) = %d bytes, want %d (err %v)", n, off, gotN, wantN, gotErr)
	}
	if (wantErr == io.EOF) != (gotErr == io.EOF) || (gotErr != nil && gotErr != io.EOF) {
		t.Fatalf("ReadAt(%d bytes at %d) error = %v, want %v", n, off, gotErr, wantErr)
	}
	if !bytes.Equal(got[:gotN], want[:wantN]) {
		i := 0
		for i < gotN && got[i] == want[i] {
			i++
		}
		t.Fatalf("ReadAt(%d bytes at %d): bytes differ from the file at offset %d", n, off, off+int64(i))
	}
}

func openRef(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func dialUnix(t *testing.T, srv *testServer, export string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, "unix", srv.socket, export)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestReadAtMatchesFile(t *testing.T) {
	img := makeSparseImage(t, imageSize)
	ref := openRef(t, img)
	// Block sizes a server may impose: the client must align and split on its own, and the
	// policy filter turns any violation into EINVAL. The policy image size is aligned because
	// an unaligned tail is unreachable under a minimum block size.
	alignedImg := makeSparseImage(t, imageSize-imageSize%4096)
	servers := []struct {
		name string
		img  string
		args []string
	}{
		{"file plugin", img, []string{"file", "file=" + img}},
		{"non-fixed newstyle (NBD_OPT_EXPORT_NAME)", img, []string{"--mask-handshake=0", "file", "file=" + img}},
		{"block size 4K..1M enforced", alignedImg, []string{"--filter=blocksize-policy", "file", "file=" + alignedImg,
			"blocksize-minimum=4096", "blocksize-maximum=1M", "blocksize-error-policy=error"}},
	}
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			srv := startNBDKit(t, s.args...)
			c := dialUnix(t, srv, "")
			ref := ref
			if s.img != img {
				ref = openRef(t, s.img)
			}
			st, err := ref.Stat()
			if err != nil {
				t.Fatal(err)
			}
			if c.Size() != st.Size() {
				t.Fatalf("Size() = %d, want %d", c.Size(), st.Size())
			}
			for _, rc := range readCases(st.Size()) {
				// The reads of 32 MiB and more cost seconds under -race; the plain server
				// covers them, the others split at smaller sizes or not at all.
				if rc.n >= DefaultMaxRequest && s.name != "file plugin" {
					continue
				}
				t.Run(rc.name, func(t *testing.T) { checkRead(t, c, ref, rc.off, rc.n) })
			}
		})
	}
	if t.Failed() {
		return
	}
	t.Run("negative offset", func(t *testing.T) {
		c := dialUnix(t, startNBDKit(t, "file", "file="+img), "")
		if _, err := c.ReadAt(make([]byte, 1), -1); err == nil || err == io.EOF {
			t.Fatalf("ReadAt at -1: err = %v, want an error", err)
		}
	})
}

func TestConcurrentReadAt(t *testing.T) {
	img := makeSparseImage(t, imageSize)
	ref := openRef(t, img)
	srv := startNBDKit(t, "file", "file="+img)
	c := dialUnix(t, srv, "")

	const goroutines, reads = 16, 16
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 99))
			for i := range reads {
				// Mostly small reads, every eighth a 4 MiB slot; some run past the end.
				n := 1 + rng.IntN(256<<10)
				if i%8 == 0 {
					n = 4 << 20
				}
				off := rng.Int64N(imageSize + 100)
				want := make([]byte, n)
				wantN, _ := ref.ReadAt(want, off)
				got := make([]byte, n)
				gotN, err := c.ReadAt(got, off)
				if err != nil && err != io.EOF {
					errs <- fmt.Errorf("ReadAt(%d at %d): %w", n, off, err)
					return
				}
				if gotN != wantN || !bytes.Equal(got[:gotN], want[:wantN]) {
					errs <- fmt.Errorf("ReadAt(%d at %d): wrong bytes (n %d, want %d)", n, off, gotN, wantN)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestServerErrorKeepsConnection(t *testing.T) {
	img := makeSparseImage(t, 1<<20)
	ref := openRef(t, img)
	trigger := filepath.Join(t.TempDir(), "fail")
	srv := startNBDKit(t, "--filter=error", "file", "file="+img,
		"error-pread=EIO", "error-pread-rate=100%", "error-pread-file="+trigger)
	c := dialUnix(t, srv, "")

	if err := os.WriteFile(trigger, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := c.ReadAt(make([]byte, 4096), 0)
	var errno Errno
	if !errors.As(err, &errno) || errno != 5 {
		t.Fatalf("ReadAt with injected EIO: err = %v, want Errno 5", err)
	}
	if !strings.Contains(err.Error(), "EIO") {
		t.Errorf("error %q does not name EIO", err)
	}
	if errors.Is(err, ErrConnLost) {
		t.Errorf("an error reply must not be reported as a lost connection: %v", err)
	}

	if err := os.Remove(trigger); err != nil {
		t.Fatal(err)
	}
	checkRead(t, c, ref, 4096, 8192)
}

func TestUnknownExport(t *testing.T) {
	img := makeSparseImage(t, 1<<20)
	for _, tc := range []struct {
		name  string
		extra []string
		want  string
	}{
		{"NBD_OPT_GO", nil, "NBD_REP_ERR_UNKNOWN"},
		{"NBD_OPT_EXPORT_NAME", []string{"--mask-handshake=0"}, "closed the connection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(tc.extra, "--filter=exportname", "file", "file="+img, "exportname=disk", "exportname-strict=true")
			srv := startNBDKit(t, args...)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()

			c, err := Dial(ctx, "unix", srv.socket, "nosuchdisk")
			if err == nil {
				_ = c.Close()
				t.Fatal("Dial of an unknown export succeeded")
			}
			if !errors.Is(err, ErrUnknownExport) {
				t.Errorf("err = %v, want ErrUnknownExport", err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "nosuchdisk") {
				t.Errorf("err = %q, want it to name %q and the export", err, tc.want)
			}

			c, err = Dial(ctx, "unix", srv.socket, "disk")
			if err != nil {
				t.Fatalf("Dial of the known export: %v", err)
			}
			defer c.Close()
			if c.Size() != 1<<20 {
				t.Errorf("Size() = %d, want %d", c.Size(), 1<<20)
			}
		})
	}
}

// startReads launches n concurrent 1 MiB reads and returns a channel with their errors.
func startReads(c *Client, n int) <-chan error {
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := c.ReadAt(make([]byte, 1<<20), int64(i)<<20)
			errs <- err
		}()
	}
	return errs
}

// waitPending waits until n reads are pending on c: the case the caller tests.
func waitPending(t *testing.T, c *Client, n int) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, fmt.Sprintf("%d pending reads", n), func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) >= n
	})
}

// collect waits for n results, failing the test instead of hanging.
func collect(t *testing.T, errs <-chan error, n int) []error {
	t.Helper()
	var out []error
	for range n {
		select {
		case err := <-errs:
			out = append(out, err)
		case <-time.After(15 * time.Second):
			t.Fatalf("only %d of %d reads returned: a pending ReadAt hangs", len(out), n)
		}
	}
	return out
}

func TestServerKilledMidRead(t *testing.T) {
	img := makeSparseImage(t, 16<<20)
	// Every read takes 30 s, so no read can succeed before the kill.
	srv := startNBDKit(t, "--filter=delay", "file", "file="+img, "delay-read=30")
	c := dialUnix(t, srv, "")

	errs := startReads(c, 8)
	waitPending(t, c, 8)
	if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, err := range collect(t, errs, 8) {
		if !errors.Is(err, ErrConnLost) {
			t.Errorf("pending ReadAt: err = %v, want ErrConnLost", err)
		}
	}
	if _, err := c.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrConnLost) {
		t.Errorf("ReadAt after the server died: err = %v, want ErrConnLost", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close after connection loss: %v", err)
	}
}

func TestCloseFailsPendingReads(t *testing.T) {
	img := makeSparseImage(t, 16<<20)
	srv := startNBDKit(t, "--filter=delay", "file", "file="+img, "delay-read=30")
	c := dialUnix(t, srv, "")

	errs := startReads(c, 8)
	waitPending(t, c, 8)
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	for _, err := range collect(t, errs, 8) {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("pending ReadAt: err = %v, want ErrClosed", err)
		}
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := c.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadAt after Close: err = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
