package gc

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/repository/store/s3"
	"github.com/sendense/sendense/hub/internal/repository/store/s3/s3test"
	"github.com/sendense/sendense/shared/chunk"
	"github.com/sendense/sendense/shared/testenv"
)

// s3Repo makes a repository on cfg and a collector of it on a catalog that knows only it.
func s3Repo(tb testing.TB, cfg s3.Config) (*Collector, *repository.Repository) {
	tb.Helper()
	st, err := s3.Open(context.Background(), cfg, nil)
	if err != nil {
		tb.Fatal(err)
	}
	repo, err := repository.Init(context.Background(), st, slot)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = repo.Close() })
	cat := &fakeCatalog{repo: catalog.Repository{ID: repo.ID(), Name: "s3"}}
	open := func(context.Context, string) (Repository, error) { return repo, nil }
	return New(cat, open, slog.New(slog.DiscardHandler), nil), repo
}

// putChunks stores n small random chunks, parallel at a time.
func putChunks(tb testing.TB, repo *repository.Repository, n, parallel int) []chunk.Digest {
	tb.Helper()
	out := make([]chunk.Digest, n)
	var wg sync.WaitGroup
	errs := make(chan error, parallel)
	next := make(chan int)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				p := make([]byte, 64)
				_, _ = rand.Read(p)
				blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(p), p)
				if err == nil {
					out[i] = chunk.Sum(p)
					_, err = repo.PutChunk(context.Background(), out[i], blob)
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		tb.Fatal(err)
	default:
	}
	return out
}

// A collection of an S3 repository removes its garbage many chunks at once and stays as safe as
// one at a time: chunks an index names stay, and every chunk a backup touched while the sweep
// ran (Touch returned nil) stays; the others are all removed.
func TestParallelSweepOnS3(t *testing.T) {
	c, repo := s3Repo(t, s3test.Config(t))
	if p := repo.RemovalParallelism(); p <= 1 {
		t.Fatalf("an S3 repository suggests %d removals at once", p)
	}
	garbage := putChunks(t, repo, 300, 16)
	touched := putChunks(t, repo, 100, 16)
	indexed := putChunks(t, repo, 50, 16)
	idx, err := fidx.New(int64(len(indexed))*slot, slot)
	if err != nil {
		t.Fatal(err)
	}
	copy(idx.Digests, indexed)
	if _, err := repo.WriteIndex(t.Context(), repository.IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: "bk"}, idx); err != nil {
		t.Fatal(err)
	}
	// Old enough for a grace of 0 (the cutoff is the store's clock margin before the start).
	time.Sleep(repo.ClockMargin() + 2*time.Second)

	var kept sync.Map // touched chunks whose Touch returned nil
	done := make(chan error, 1)
	go func() {
		for _, d := range touched {
			err := repo.TouchChunk(t.Context(), d)
			if errors.Is(err, repository.ErrChunkNotFound) {
				continue // removed first: a backup would upload it again
			}
			if err != nil {
				done <- err
				return
			}
			kept.Store(d, true)
		}
		done <- nil
	}()
	started := time.Now()
	reps, err := c.Run(t.Context(), "s3", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	// The cutoff leaves the room the store allows an S3 server's clock to lag.
	if m := repo.ClockMargin(); m < 11*time.Second || reps[0].Cutoff.After(started.Add(-m+time.Second)) {
		t.Fatalf("cutoff %v for a collection started at %v; the store's clock margin is %v", reps[0].Cutoff, started, m)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	nKept := 0
	for _, d := range touched {
		ok, err := repo.HasChunk(t.Context(), d)
		if err != nil {
			t.Fatal(err)
		}
		_, mustStay := kept.Load(d)
		if mustStay {
			nKept++
		}
		if mustStay && !ok {
			t.Fatalf("chunk %s was touched during the sweep and removed", d)
		}
	}
	for name, ds := range map[string][]chunk.Digest{"indexed": indexed, "garbage": garbage} {
		for _, d := range ds {
			ok, err := repo.HasChunk(t.Context(), d)
			if err != nil || ok != (name == "indexed") {
				t.Fatalf("%s chunk %s present: %v (%v)", name, d, ok, err)
			}
		}
	}
	rep := reps[0]
	if rep.FreedChunks < len(garbage) || rep.FreedChunks+nKept > len(garbage)+len(touched) || rep.Chunks != len(garbage)+len(touched)+len(indexed) {
		t.Fatalf("report %+v; %d touched chunks kept", rep, nKept)
	}
	t.Logf("freed %d chunks, %d touched during the sweep kept, in %s", rep.FreedChunks, nKept, rep.Duration)
}

// BenchmarkGCS3 measures a collection of an S3 repository (a private SeaweedFS) holding
// SENDENSE_BENCH_GC_CHUNKS (default 100000) unreferenced chunk objects, removing one at a time
// (parallel=1) and as many at once as the store suggests (parallel=store). Run once each:
//
//	go test -run '^$' -bench BenchmarkGCS3 -benchtime 1x ./internal/gc/
func BenchmarkGCS3(b *testing.B) {
	n := 100000
	if v := os.Getenv("SENDENSE_BENCH_GC_CHUNKS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	srv := testenv.PrivateS3(b)
	for _, parallel := range []int{1, 0} {
		name := "parallel=store"
		if parallel == 1 {
			name = "parallel=1"
		}
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				var p [6]byte
				_, _ = rand.Read(p[:])
				cfg := s3.Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Prefix: fmt.Sprintf("bench-%x", p)}
				c, repo := s3Repo(b, cfg)
				c.SetRemovalParallelism(parallel)
				start := time.Now()
				putChunks(b, repo, n, 32)
				b.Logf("%d chunk objects put in %s", n, time.Since(start).Round(time.Millisecond))
				time.Sleep(repo.ClockMargin() + 2*time.Second)
				b.StartTimer()
				reps, err := c.Run(context.Background(), "s3", 0, false)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				if reps[0].FreedChunks != n {
					b.Fatalf("freed %d of %d chunks", reps[0].FreedChunks, n)
				}
				b.ReportMetric(reps[0].Duration.Seconds(), "gc-seconds")
				b.ReportMetric(float64(n)/reps[0].Duration.Seconds(), "chunks/s")
				b.Logf("%s: GC over %d chunk objects: %s (%.0f chunks/s)", name, n, reps[0].Duration.Round(time.Millisecond), float64(n)/reps[0].Duration.Seconds())
			}
		})
	}
}
