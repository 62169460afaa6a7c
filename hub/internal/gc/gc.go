// Package gc reclaims repository space: it marks every chunk that an index or an open upload
// session names and removes the unmarked chunks older than a grace period, so that a backup
// running at the same time never loses a chunk.
package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/schedule"
	"github.com/sendense/sendense/shared/chunk"
)

// gcCatalog is what garbage collection needs from the catalog.
type gcCatalog interface {
	Repositories(ctx context.Context) ([]catalog.Repository, error)
	OpenSessionDigests(ctx context.Context, repositoryID string) ([]string, error)
	OldestWrite(ctx context.Context, repositoryID string) (time.Time, error)
	IndexedDisks(ctx context.Context, repositoryID string) ([]catalog.IndexedDisk, error)
	RecordGC(ctx context.Context, repositoryID string, at time.Time) error
}

// Repository is what garbage collection needs of one repository.
type Repository interface {
	// WalkIndexes calls fn for every index; an error from fn stops the walk and is returned.
	WalkIndexes(ctx context.Context, fn func(ref repository.IndexRef) error) error
	// ReadIndex reads and checks one index.
	ReadIndex(ctx context.Context, ref repository.IndexRef) (*fidx.Index, error)
	// ChunkName returns the name the chunk with digest d is stored under (d itself unless the
	// repository is encrypted, which names chunks by a keyed digest).
	ChunkName(d chunk.Digest) chunk.Digest
	// WalkChunks calls fn for every chunk with its stored name, size and modification time.
	WalkChunks(ctx context.Context, fn func(name chunk.Digest, size int64, modTime time.Time) error) error
	// RemoveChunkIfOlder removes the chunk stored under name only if its modification time is
	// before cutoff, which a backup in any process that touched or stored the chunk since has
	// moved past; a missing chunk is not an error.
	RemoveChunkIfOlder(ctx context.Context, name chunk.Digest, cutoff time.Time) (removed bool, size int64, err error)
	// ClockMargin is how far the times of the repository's objects may lag this host's clock.
	ClockMargin() time.Duration
	// LockGC takes the repository's collection lock, held across processes, without waiting:
	// an error wrapping repository.ErrLocked while another collection holds it.
	LockGC(ctx context.Context) (release func() error, err error)
}

// OpenFunc opens the repository with a catalog id.
type OpenFunc func(ctx context.Context, id string) (Repository, error)

// metrics of garbage collection, labelled by repository name (operators name few repositories).
type metrics struct {
	FreedBytes  *prometheus.CounterVec
	FreedChunks *prometheus.CounterVec
	Duration    *prometheus.GaugeVec
	LastRun     *prometheus.GaugeVec
	Size        *prometheus.GaugeVec
	Chunks      *prometheus.GaugeVec
}

// newMetrics registers the metrics on reg (nil: unregistered).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		FreedBytes:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sendense_hub_gc_freed_bytes_total", Help: "Bytes of chunks removed by garbage collection."}, []string{"repository"}),
		FreedChunks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sendense_hub_gc_freed_chunks_total", Help: "Chunks removed by garbage collection."}, []string{"repository"}),
		Duration:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sendense_hub_gc_duration_seconds", Help: "Duration of the last garbage collection."}, []string{"repository"}),
		LastRun:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sendense_hub_gc_last_run_timestamp_seconds", Help: "Unix time of the last garbage collection."}, []string{"repository"}),
		Size:        prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sendense_hub_repository_size_bytes", Help: "Bytes of chunk files in the repository, as of the last garbage collection."}, []string{"repository"}),
		Chunks:      prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sendense_hub_repository_chunks", Help: "Chunks in the repository, as of the last garbage collection."}, []string{"repository"}),
	}
	if reg != nil {
		reg.MustRegister(m.FreedBytes, m.FreedChunks, m.Duration, m.LastRun, m.Size, m.Chunks)
	}
	return m
}

// clockMargin is subtracted from every cutoff; see collect.
const clockMargin = 5 * time.Second

// Report is the outcome of collecting one repository.
type Report struct {
	Repository  string
	Indexes     int
	Referenced  int // distinct chunks named by indexes or open sessions
	Chunks      int // chunks found
	FreedChunks int
	FreedBytes  int64
	KeptBytes   int64
	YoungSpared int // unreferenced but younger than the cutoff
	// Retained counts unreferenced chunks the store refused to remove because their retention
	// date (S3 Object Lock) has not passed; a later collection removes them.
	Retained int
	Duration time.Duration
	DryRun   bool
	Cutoff   time.Time
}

// Collector collects garbage.
type Collector struct {
	cat  gcCatalog
	open OpenFunc
	log  *slog.Logger
	m    *metrics
	now  func() time.Time
	// removeParallel overrides the repositories' RemovalParallelism when > 0.
	removeParallel int
	settle         time.Duration // the least wait of a starting schedule: schedule.Settle
}

// New returns a collector and registers its metrics on reg (nil: none).
func New(cat gcCatalog, open OpenFunc, log *slog.Logger, reg prometheus.Registerer) *Collector {
	return &Collector{cat: cat, open: open, log: log, m: newMetrics(reg), now: time.Now, settle: schedule.Settle}
}

// Run collects the named repository (every repository when name is empty). A chunk is removed
// only when no index and no open upload session names it and it is older than both the grace
// period and the oldest open session (every chunk a running backup wrote or reused is younger
// than its session: reused chunks are touched). An index that cannot be read stops the
// collection of its repository: what it references is unknown, so nothing may be removed.
//
// Damaged chunks that verify or restore moved into quarantine are not chunks any more: they are
// neither counted nor removed here, and stay until an operator removes them (repo check lists
// them).
//
// Only one collection of a repository runs at a time, across processes: a repository whose
// collection lock another process holds is an error wrapping repository.ErrLocked when named,
// and skipped with a warning otherwise. Every repository (name empty) is collected whatever
// the others' errors, which are returned joined after the reports of the others.
func (g *Collector) Run(ctx context.Context, name string, grace time.Duration, dryRun bool) ([]Report, error) {
	rs, err := g.cat.Repositories(ctx)
	if err != nil {
		return nil, err
	}
	var out []Report
	var errs []error
	found := false
	for _, r := range rs {
		if name != "" && r.Name != name {
			continue
		}
		found = true
		rep, err := g.collect(ctx, r, grace, dryRun)
		if errors.Is(err, repository.ErrLocked) && name == "" {
			g.log.WarnContext(ctx, "garbage collection skipped: another one is running", "repository", r.Name)
			continue
		}
		if errors.Is(err, errSweepTooLong) && name == "" {
			g.log.WarnContext(ctx, "garbage collection of a repository stopped early; the next one goes on", "repository", r.Name, "err", err)
			out = append(out, rep)
			continue
		}
		if err != nil && name == "" && ctx.Err() == nil {
			// One repository that cannot be collected (unreachable, its server's clock
			// behind) does not keep the others from being collected.
			errs = append(errs, fmt.Errorf("repository %s: %w", r.Name, err))
			continue
		}
		if err != nil {
			return out, fmt.Errorf("repository %s: %w", r.Name, err)
		}
		out = append(out, rep)
	}
	if name != "" && !found {
		return nil, fmt.Errorf("repository %q: %w", name, catalog.ErrNotFound)
	}
	return out, errors.Join(errs...)
}

func (g *Collector) collect(ctx context.Context, r catalog.Repository, grace time.Duration, dryRun bool) (Report, error) {
	start := g.now()
	rep := Report{Repository: r.Name, DryRun: dryRun}
	repo, err := g.open(ctx, r.ID)
	if err != nil {
		return rep, err
	}
	release, err := repo.LockGC(ctx)
	if err != nil {
		return rep, err
	}
	defer func() { _ = release() }()
	// The cutoff is taken before marking: chunks written after it are spared whatever marking
	// saw.
	cutoff := start.Add(-grace)
	oldest, err := g.cat.OldestWrite(ctx, r.ID)
	if err != nil {
		return rep, err
	}
	if !oldest.IsZero() && oldest.Before(cutoff) {
		cutoff = oldest
	}
	// File times come from the kernel's coarse clock, which lags time.Now by milliseconds: a
	// chunk written just after the collection started can look older than the cutoff. The margin
	// keeps such chunks (and absorbs small clock differences between hub instances), and is at
	// least what the store allows its own clock to lag (an S3 server's).
	cutoff = cutoff.Add(-max(clockMargin, repo.ClockMargin()))
	rep.Cutoff = cutoff
	// marked holds stored names (ChunkName), which is what the walk of the chunks sees.
	marked := map[chunk.Digest]struct{}{}
	seen := map[repository.IndexRef]bool{}
	mark := func(idx *fidx.Index) {
		rep.Indexes++
		for _, d := range idx.Referenced() {
			marked[repo.ChunkName(d)] = struct{}{}
		}
	}
	err = repo.WalkIndexes(ctx, func(ref repository.IndexRef) error {
		idx, err := repo.ReadIndex(ctx, ref)
		switch {
		case errors.Is(err, repository.ErrIndexNotFound):
			return nil // removed since it was listed; the catalog's pass below reads it if written again
		case err != nil:
			return fmt.Errorf("index %s cannot be read, so nothing can be collected: %w", ref, err)
		}
		seen[ref] = true
		mark(idx)
		return nil
	})
	if err != nil {
		return rep, err
	}
	// The open sessions are read before the indexes the catalog records: a session that commits
	// in between is then named by the one or the other.
	open, err := g.cat.OpenSessionDigests(ctx, r.ID)
	if err != nil {
		return rep, err
	}
	for _, h := range open {
		d, err := chunk.ParseDigest(h)
		if err != nil {
			return rep, fmt.Errorf("open session names a bad digest %q: %w", h, err)
		}
		marked[repo.ChunkName(d)] = struct{}{}
	}
	// The walk may miss an index written while it ran (a listing is a snapshot) and also miss
	// that index's parent, removed before the walk reached it — allowed once the child has
	// committed, whose index then alone names the chunks it inherited. The catalog records a
	// disk's index in the transaction that ends its session, before its parent can be removed:
	// read after the walk, it names every such index.
	disks, err := g.cat.IndexedDisks(ctx, r.ID)
	if err != nil {
		return rep, err
	}
	for _, d := range disks {
		ref := repository.IndexRef{VMUUID: d.InstanceUUID, DiskID: d.DiskID, BackupID: d.JobID}
		if seen[ref] {
			continue
		}
		idx, err := repo.ReadIndex(ctx, ref)
		switch {
		case errors.Is(err, repository.ErrIndexNotFound):
			continue // removed since, or lost before (the check reports that): nothing to keep
		case err != nil:
			return rep, fmt.Errorf("index %s cannot be read, so nothing can be collected: %w", ref, err)
		}
		mark(idx)
	}
	rep.Referenced = len(marked)
	var doomed []chunk.Digest
	var sizes []int64
	err = repo.WalkChunks(ctx, func(d chunk.Digest, size int64, mod time.Time) error {
		rep.Chunks++
		if _, ok := marked[d]; ok {
			rep.KeptBytes += size
			return nil
		}
		if !mod.Before(cutoff) {
			rep.YoungSpared++
			rep.KeptBytes += size
			return nil
		}
		doomed = append(doomed, d)
		sizes = append(sizes, size)
		return nil
	})
	if err != nil {
		return rep, err
	}
	if dryRun {
		rep.FreedChunks = len(doomed)
		for _, sz := range sizes {
			rep.FreedBytes += sz
		}
	} else if err := g.sweep(ctx, repo, r.Name, doomed, sizes, cutoff, start, &rep); err != nil {
		return rep, err
	}
	rep.Duration = g.now().Sub(start)
	if !dryRun {
		// The schedule counts from here (Schedule); failing to record it only makes the next
		// scheduled collection come sooner.
		end := g.now()
		if err := g.cat.RecordGC(ctx, r.ID, end); err != nil {
			g.log.WarnContext(ctx, "record the end of garbage collection", "repository", r.Name, "err", err)
		}
		g.m.FreedBytes.WithLabelValues(r.Name).Add(float64(rep.FreedBytes))
		g.m.FreedChunks.WithLabelValues(r.Name).Add(float64(rep.FreedChunks))
		g.m.Duration.WithLabelValues(r.Name).Set(rep.Duration.Seconds())
		g.m.LastRun.WithLabelValues(r.Name).Set(float64(end.Unix()))
		g.m.Size.WithLabelValues(r.Name).Set(float64(rep.KeptBytes))
		g.m.Chunks.WithLabelValues(r.Name).Set(float64(rep.Chunks - rep.FreedChunks))
	}
	g.log.InfoContext(ctx, "garbage collection finished", "repository", r.Name, "indexes", rep.Indexes, "chunks", rep.Chunks,
		"referenced", rep.Referenced, "freed_chunks", rep.FreedChunks, "freed_bytes", rep.FreedBytes, "young_spared", rep.YoungSpared, "retained", rep.Retained,
		"dry_run", dryRun, "duration_seconds", rep.Duration.Seconds())
	return rep, nil
}

// sweep removes the doomed chunks that are still older than cutoff, as many at once as the
// repository suggests (RemovalParallelism: S3 removals are remote requests) unless the collector
// was told otherwise. Each removal checks the chunk's time again as it removes it, whatever runs
// beside it, so parallel removals are as safe as one at a time. The first error stops the sweep.
//
// Where a touch holds a chunk only for a while (touchHolds: a retention date under S3 Object
// Lock), a chunk touched by a backup after this collection read what is referenced is safe from
// it only that long: the sweep stops with errSweepTooLong at half of it after the collection
// started, and the next collection goes on from a fresh look.
func (g *Collector) sweep(ctx context.Context, repo Repository, name string, doomed []chunk.Digest, sizes []int64, cutoff, start time.Time, rep *Report) error {
	n := g.removeParallel
	if n <= 0 {
		n = 1
		if p, ok := repo.(removalParallelism); ok {
			n = max(p.RemovalParallelism(), 1)
		}
	}
	var stop time.Time
	if h, ok := repo.(touchHolds); ok && h.TouchHolds() > 0 {
		stop = start.Add(h.TouchHolds() / 2)
	}
	var mu sync.Mutex
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(n)
	for i, d := range doomed {
		if !stop.IsZero() && g.now().After(stop) {
			// A removal that failed meanwhile is reported with the stop, not lost behind it.
			return errors.Join(fmt.Errorf("%w (%s since it started)", errSweepTooLong, g.now().Sub(start).Round(time.Second)), eg.Wait())
		}
		eg.Go(func() error {
			// Checked again as it is removed: a backup in any process may have reused (touched)
			// it since the walk, and then it stays.
			removed, size, err := repo.RemoveChunkIfOlder(ctx, d, cutoff)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, repository.ErrRetained):
				rep.Retained++
				rep.KeptBytes += sizes[i]
				g.log.DebugContext(ctx, "chunk kept under retention", "repository", name, "chunk_name", d.String(), "err", err)
			case err != nil:
				return err
			case !removed:
				rep.YoungSpared++
				rep.KeptBytes += sizes[i]
			default:
				rep.FreedChunks++
				rep.FreedBytes += size
				g.log.DebugContext(ctx, "chunk removed", "repository", name, "chunk_name", d.String(), "cutoff", cutoff)
			}
			return nil
		})
	}
	return eg.Wait()
}

// errSweepTooLong: a collection reached the end of what the repository's touches hold (see
// sweep) before it removed everything it found unreferenced.
var errSweepTooLong = errors.New("garbage collection stopped: it ran longer than a reused chunk is held for it; the next collection goes on")

// touchHolds is implemented by repositories whose touches hold a chunk only for a while
// (*repository.Repository).
type touchHolds interface {
	TouchHolds() time.Duration
}

// removalParallelism is implemented by repositories that suggest how many chunk removals run at
// once (*repository.Repository).
type removalParallelism interface {
	RemovalParallelism() int
}

// SetRemovalParallelism makes every collection remove n chunks at once (0: what each repository
// suggests — 16 on S3, 1 on a local directory). Not safe to call while a collection runs.
func (g *Collector) SetRemovalParallelism(n int) { g.removeParallel = n }

// Schedule runs a collection of every repository every interval until ctx ends. The first comes
// an interval after the least recent collection the catalog records (of any repository; at
// once, after the hub settled, when one was never collected), not an interval after this
// start: a hub restarted more often than the interval still collects.
func (g *Collector) Schedule(ctx context.Context, interval, grace time.Duration) error {
	wait := interval
	if last, err := g.leastRecent(ctx); err != nil {
		g.log.WarnContext(ctx, "scheduled garbage collection: the last one is not known; the first comes an interval from now", "err", err)
	} else {
		wait = schedule.FirstWait(last, interval, g.settle, g.now())
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = interval
		if _, err := g.Run(ctx, "", grace, false); err != nil && ctx.Err() == nil {
			g.log.ErrorContext(ctx, "scheduled garbage collection failed", "err", err)
		}
	}
}

// leastRecent returns the time of the least recent collection among the repositories: the zero
// Time when one was never collected (or there are none).
func (g *Collector) leastRecent(ctx context.Context) (time.Time, error) {
	rs, err := g.cat.Repositories(ctx)
	if err != nil {
		return time.Time{}, err
	}
	var least time.Time
	for i, r := range rs {
		if r.GCAt.IsZero() {
			return time.Time{}, nil
		}
		if i == 0 || r.GCAt.Before(least) {
			least = r.GCAt
		}
	}
	return least, nil
}

// Measure sets the size and chunk gauges of every repository from a walk of its chunks, and
// makes the per-repository series exist before the first collection (at hub start).
func (g *Collector) Measure(ctx context.Context) error {
	rs, err := g.cat.Repositories(ctx)
	if err != nil {
		return err
	}
	for _, r := range rs {
		g.m.FreedBytes.WithLabelValues(r.Name)
		g.m.FreedChunks.WithLabelValues(r.Name)
		g.m.Duration.WithLabelValues(r.Name)
		if r.GCAt.IsZero() {
			g.m.LastRun.WithLabelValues(r.Name)
		} else {
			g.m.LastRun.WithLabelValues(r.Name).Set(float64(r.GCAt.Unix())) // a restart keeps it
		}
		repo, err := g.open(ctx, r.ID)
		if err != nil {
			return err
		}
		var n, size int64
		err = repo.WalkChunks(ctx, func(_ chunk.Digest, s int64, _ time.Time) error {
			n++
			size += s
			return nil
		})
		if err != nil {
			return err
		}
		g.m.Size.WithLabelValues(r.Name).Set(float64(size))
		g.m.Chunks.WithLabelValues(r.Name).Set(float64(n))
	}
	return nil
}
