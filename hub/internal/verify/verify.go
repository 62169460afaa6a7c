// Package verify proves that restore points are intact: it re-reads and re-hashes every chunk
// that successful backups and their copies reference (each chunk once in each repository that
// holds it), quarantines the damaged ones so that the next backup holding their bytes uploads
// them again (the next copy run, in a copy's repository), reports the backups and copies that a
// damaged or missing chunk or index affects, and records the outcome per backup and per copy —
// and the backups healed since the last verification.
package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/events"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/schedule"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// Verify statuses recorded per backup. A damaged backup that verifies sound again is recorded
// ok once more; its healing is an event (api.EventBackupHealed) and a line of the report.
const (
	StatusOK      = api.VerifyOK
	StatusDamaged = api.VerifyDamaged
)

// verifyCatalog is what this package needs from the catalog.
type verifyCatalog interface {
	Backups(ctx context.Context, f catalog.BackupFilter) ([]catalog.BackupRow, int, error)
	BackupByID(ctx context.Context, id string) (*catalog.BackupRow, error)
	BackupDisks(ctx context.Context, jobID string) ([]catalog.BackupDisk, error)
	BackupCopies(ctx context.Context, backupID string) ([]catalog.BackupCopy, error)
	RecordVerify(ctx context.Context, id, status string, at time.Time) error
	RecordCopyVerify(ctx context.Context, backupID, repositoryID, status string, at time.Time) error
	RecordEvents(ctx context.Context, evs []catalog.Event) error
	verifySummary
}

// Repository is what verification needs of one repository.
type Repository interface {
	// ReadIndex reads and checks one index.
	ReadIndex(ctx context.Context, ref repository.IndexRef) (*fidx.Index, error)
	// VerifyChunk re-reads and re-hashes one chunk: nil when sound, an error wrapping
	// repository.ErrChunkDamaged or ErrChunkNotFound for a verdict, any other error for an I/O
	// problem that says nothing about the chunk.
	VerifyChunk(ctx context.Context, d chunk.Digest) error
	// QuarantineChunk moves a chunk found damaged out of the way so that it counts as missing
	// and is uploaded again, and returns where it went; repository.ErrChunkSound when the chunk
	// read back after the move is sound (a good copy uploaded meanwhile) and stays,
	// ErrChunkNotFound when it is gone already.
	QuarantineChunk(ctx context.Context, d chunk.Digest) (key string, err error)
	// ReadVMConfig reads a backup's VM configuration and checks it against the digest the
	// catalog recorded: an error wrapping repository.ErrVMConfigDamaged or ErrVMConfigNotFound
	// for a verdict.
	ReadVMConfig(ctx context.Context, vmUUID, backupID, digest string) ([]byte, error)
}

// OpenFunc opens the repository with a catalog id.
type OpenFunc func(ctx context.Context, id string) (Repository, error)

// metrics counts verification work.
type metrics struct {
	ChunksVerified prometheus.Counter
	ChunksDamaged  prometheus.Counter
}

// newMetrics registers the verification metrics on reg (nil: unregistered).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		ChunksVerified: prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_verify_chunks_total", Help: "Chunks re-read and re-hashed by verification."}),
		ChunksDamaged:  prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_verify_chunk_failures_total", Help: "Chunks verification found damaged or missing."}),
	}
	if reg != nil {
		reg.MustRegister(m.ChunksVerified, m.ChunksDamaged)
	}
	return m
}

// Report is the outcome of one verification.
type Report struct {
	Backups        int
	Chunks         int
	DamagedChunks  []string            // digests, damaged or missing
	Quarantined    []string            // digests of the damaged chunks this run moved into quarantine
	DamagedBackups map[string][]string // backup id → what is wrong
	Copies         int                 // copies verified with the backups
	// DamagedCopies: backup id → repository name → what is wrong with the backup's copy there.
	// The backup itself is damaged only when its own repository's data is.
	DamagedCopies map[string]map[string][]string
	// Skipped: repository name → why it could not be read. Only a repository that holds copies
	// and no backup of its own is skipped (one of its own fails the verification); the copies
	// there keep their last verification, unless damage was found before.
	Skipped map[string]string
	// Healed lists the backups the previous verification had found damaged and this one found
	// sound: every chunk they name is present and intact again.
	Healed   []string
	Duration time.Duration
}

// OK reports whether nothing was damaged (no backup, no copy) and every repository was read.
func (r *Report) OK() bool {
	return len(r.DamagedBackups) == 0 && len(r.DamagedCopies) == 0 && len(r.Skipped) == 0
}

// damage records a problem of backup id's data in a repository: its own (copy false) or the
// copy it has there.
func (r *Report) damage(id, repoName string, copy bool, problem string) {
	if !copy {
		r.DamagedBackups[id] = append(r.DamagedBackups[id], problem)
		return
	}
	if r.DamagedCopies[id] == nil {
		r.DamagedCopies[id] = map[string][]string{}
	}
	r.DamagedCopies[id][repoName] = append(r.DamagedCopies[id][repoName], problem)
}

// Verify runs a verification (of one backup, or of all when backupID is empty) and answers
// with the report's wire form.
func (v *Verifier) Verify(ctx context.Context, backupID string) (api.VerifyReport, error) {
	r, err := v.Run(ctx, backupID)
	if err != nil {
		return api.VerifyReport{}, err
	}
	return r.API(), nil
}

// API is the report's wire form, as the API answers and the command line prints it.
func (r *Report) API() api.VerifyReport {
	nonNil := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	return api.VerifyReport{
		Backups: r.Backups, Chunks: r.Chunks, DamagedChunks: nonNil(r.DamagedChunks), Quarantined: nonNil(r.Quarantined),
		DamagedBackups: r.DamagedBackups, Copies: r.Copies, DamagedCopies: r.DamagedCopies, SkippedRepositories: r.Skipped, Healed: nonNil(r.Healed),
		DurationNanos: int64(r.Duration),
	}
}

// Verifier verifies backups.
type Verifier struct {
	cat      verifyCatalog
	open     OpenFunc
	log      *slog.Logger
	m        *metrics
	parallel int
	now      func() time.Time
}

// New returns a verifier reading parallel chunks at once, and registers its metrics on reg
// (nil: none): its own counters and what the catalog records about verification.
func New(cat verifyCatalog, open OpenFunc, log *slog.Logger, reg prometheus.Registerer, parallel int) *Verifier {
	if reg != nil {
		reg.MustRegister(newSummaryCollector(cat, log))
	}
	return &Verifier{cat: cat, open: open, log: log, m: newMetrics(reg), parallel: max(parallel, 1), now: time.Now}
}

// use is a disk of a backup naming a chunk, in the backup's own repository or in its copy's.
type use struct {
	backup string
	disk   string
	copy   bool
}

// holding is a repository holding a backup's data: its own, or one with a copy of it.
type holding struct {
	repoID, repoName string
	copy             bool
}

// stored is a chunk in one repository.
type stored struct {
	repo string
	d    chunk.Digest
}

// Run verifies one backup (backupID set) or every successful backup, and records the result on
// each backup verified.
func (v *Verifier) Run(ctx context.Context, backupID string) (*Report, error) {
	start := v.now()
	var rows []catalog.BackupRow
	if backupID != "" {
		r, err := v.cat.BackupByID(ctx, backupID)
		if errors.Is(err, catalog.ErrNotFound) {
			return nil, &api.FieldError{Field: "backup_id", Msg: fmt.Sprintf("no backup %q", backupID)}
		}
		if err != nil {
			return nil, err
		}
		if r.Status != api.JobSucceeded {
			return nil, fmt.Errorf("backup %s is %s: %w: only successful backups are restore points", backupID, r.Status, catalog.ErrConflict)
		}
		rows = []catalog.BackupRow{*r}
	} else {
		var err error
		if rows, _, err = v.cat.Backups(ctx, catalog.BackupFilter{Status: api.JobSucceeded}); err != nil {
			return nil, err
		}
	}
	rep := &Report{Backups: len(rows), DamagedBackups: map[string][]string{}, DamagedCopies: map[string]map[string][]string{}, Skipped: map[string]string{}}
	users := map[stored][]use{}
	repoName := map[string]string{}
	copiesOf := map[string][]catalog.BackupCopy{}
	homes := map[string]bool{}
	for _, r := range rows {
		homes[r.RepositoryID] = true
	}
	// skip gives up on a repository that holds only copies and cannot be read (an off-site
	// store out of reach): the backups at home are verified all the same. It reports whether it
	// did; a repository of the backups' own is not skipped (the verification fails).
	var mu sync.Mutex
	skipped := map[string]bool{}
	skip := func(repoID string, err error) bool {
		if homes[repoID] {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		if !skipped[repoID] {
			skipped[repoID] = true
			rep.Skipped[repoName[repoID]] = err.Error()
			v.log.ErrorContext(ctx, "verification: a repository of copies cannot be read; its copies are not verified", "repository", repoName[repoID], "err", err)
		}
		return true
	}
	// A chunk is checked in each repository that holds it: digests are of the plain bytes, so
	// two repositories may hold the same digest, and damage in one is not the other's. A copy is
	// verified as its backup is, in the copy's repository: a restore may read it from there.
	for _, r := range rows {
		disks, err := v.cat.BackupDisks(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		cps, err := v.cat.BackupCopies(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		copiesOf[r.ID] = cps
		rep.Copies += len(cps)
		hs := []holding{{r.RepositoryID, r.RepositoryName, false}}
		for _, cp := range cps {
			hs = append(hs, holding{cp.RepositoryID, cp.RepositoryName, true})
		}
		for _, h := range hs {
			repoName[h.repoID] = h.repoName
			if skipped[h.repoID] {
				continue
			}
			if err := v.collect(ctx, &r, disks, h, users, rep); err != nil && !skip(h.repoID, err) {
				return nil, err
			}
		}
	}
	chunks := make([]stored, 0, len(users))
	for at := range users {
		chunks = append(chunks, at)
	}
	sort.Slice(chunks, func(i, j int) bool { // disk-friendly: directory order, repository by repository
		if chunks[i].repo != chunks[j].repo {
			return chunks[i].repo < chunks[j].repo
		}
		return chunks[i].d.String() < chunks[j].d.String()
	})
	work := make(chan stored)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(work)
		for _, at := range chunks {
			select {
			case work <- at:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range v.parallel {
		g.Go(func() error {
			for at := range work {
				d := at.d
				mu.Lock()
				gone := skipped[at.repo]
				mu.Unlock()
				if gone {
					continue
				}
				repo, err := v.open(gctx, at.repo)
				if err != nil {
					if skip(at.repo, err) {
						continue
					}
					return err
				}
				verr := repo.VerifyChunk(gctx, d)
				v.m.ChunksVerified.Inc()
				if verr != nil && !errors.Is(verr, repository.ErrChunkDamaged) && !errors.Is(verr, repository.ErrChunkNotFound) {
					if gctx.Err() == nil && skip(at.repo, verr) {
						continue
					}
					return verr // an I/O problem of this machine, not a verdict on the chunk
				}
				problem, quarantined := "", false
				if errors.Is(verr, repository.ErrChunkDamaged) {
					problem, quarantined, verr = v.quarantine(gctx, repo, d, at.repo, repoName[at.repo], users[at], verr)
				} else if verr != nil {
					problem = fmt.Sprintf("chunk %s: %v", d, verr)
				}
				mu.Lock()
				rep.Chunks++
				if quarantined {
					rep.Quarantined = append(rep.Quarantined, d.String())
				}
				if verr != nil {
					v.m.ChunksDamaged.Inc()
					rep.DamagedChunks = append(rep.DamagedChunks, d.String())
					for _, u := range users[at] {
						rep.damage(u.backup, repoName[at.repo], u.copy, u.disk+": "+problem)
					}
				}
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	at := v.now()
	for _, r := range rows {
		status := StatusOK
		if _, bad := rep.DamagedBackups[r.ID]; bad {
			status = StatusDamaged
			v.log.ErrorContext(ctx, "backup damaged", "job_id", r.ID, "vm_name", r.VMName, "problems", rep.DamagedBackups[r.ID])
		}
		if err := v.cat.RecordVerify(ctx, r.ID, status, at); err != nil {
			return nil, err
		}
		if status == StatusOK && r.VerifyStatus == StatusDamaged {
			rep.Healed = append(rep.Healed, r.ID)
			v.log.InfoContext(ctx, "backup healed: every chunk it names is present and intact again", "job_id", r.ID, "vm_name", r.VMName)
			v.record(ctx, events.BackupHealed(r.ID, r.VMContextID, r.VMName, r.RepositoryName))
		}
		for _, cp := range copiesOf[r.ID] {
			status := StatusOK
			problems, bad := rep.DamagedCopies[r.ID][cp.RepositoryName]
			switch {
			case bad:
				status = StatusDamaged
				v.log.ErrorContext(ctx, "copy damaged; the next run of its copy policy copies it again", "job_id", r.ID, "vm_name", r.VMName,
					"repository", cp.RepositoryName, "problems", problems)
			case skipped[cp.RepositoryID]:
				continue // not verified: its last verification stands
			}
			if err := v.cat.RecordCopyVerify(ctx, r.ID, cp.RepositoryID, status, at); err != nil {
				return nil, err
			}
		}
	}
	rep.Duration = v.now().Sub(start)
	sort.Strings(rep.DamagedChunks)
	sort.Strings(rep.Quarantined)
	sort.Strings(rep.Healed)
	v.log.InfoContext(ctx, "verification finished", "backups", rep.Backups, "copies", rep.Copies, "chunks", rep.Chunks, "damaged_chunks", len(rep.DamagedChunks),
		"quarantined_chunks", len(rep.Quarantined), "damaged_backups", len(rep.DamagedBackups), "damaged_copies", len(rep.DamagedCopies),
		"healed_backups", len(rep.Healed), "duration_seconds", rep.Duration.Seconds())
	return rep, nil
}

// collect reads what backup r holds in one repository (its own, or its copy's): the VM
// configuration and each disk's index, checked on the way; it adds the chunks they name to users
// and their problems to rep.
func (v *Verifier) collect(ctx context.Context, r *catalog.BackupRow, disks []catalog.BackupDisk, h holding, users map[stored][]use, rep *Report) error {
	repo, err := v.open(ctx, h.repoID)
	if err != nil {
		return err
	}
	// The VM configuration is what a restore as a new VM builds the VM from: damage to it
	// damages the backup as surely as a chunk's.
	if r.VMConfigDigest != "" {
		_, err := repo.ReadVMConfig(ctx, r.InstanceUUID, r.ID, r.VMConfigDigest)
		switch {
		case errors.Is(err, repository.ErrVMConfigDamaged), errors.Is(err, repository.ErrVMConfigNotFound):
			rep.damage(r.ID, h.repoName, h.copy, fmt.Sprintf("vm config: %v", err))
		case err != nil:
			return err
		}
	}
	for _, d := range disks {
		idx, err := repo.ReadIndex(ctx, repository.IndexRef{VMUUID: r.InstanceUUID, DiskID: d.DiskID, BackupID: r.ID})
		switch {
		case err != nil && h.copy && !errors.Is(err, repository.ErrIndexDamaged) && !errors.Is(err, repository.ErrIndexNotFound):
			return err // the copy's repository cannot be read: no verdict on the copy
		case err != nil:
			rep.damage(r.ID, h.repoName, h.copy, fmt.Sprintf("%s: index: %v", d.DiskID, err))
			continue
		}
		for _, dg := range idx.Referenced() {
			at := stored{h.repoID, dg}
			users[at] = append(users[at], use{r.ID, d.DiskID, h.copy})
		}
	}
	return nil
}

// quarantine moves a chunk that verification found damaged (cause) into quarantine and records
// the event. It returns the problem to report for the chunk's backups, whether this call
// quarantined it, and the chunk's verdict: nil when the chunk read back after the move is sound
// (a good copy uploaded since the damage was seen), cause otherwise. A quarantine that fails
// leaves the chunk damaged in place; that is logged and reported, and the verification goes on.
func (v *Verifier) quarantine(ctx context.Context, repo Repository, d chunk.Digest, repoID, repoName string, users []use, cause error) (string, bool, error) {
	key, err := repo.QuarantineChunk(ctx, d)
	switch {
	case err == nil:
		v.log.WarnContext(ctx, "damaged chunk quarantined; the next backup holding its data uploads it again",
			"repository", repoName, "digest", d.String(), "quarantine_key", key, "err", cause)
		e := events.ChunkQuarantined(repoID, repoName, d.String(), key, cause.Error(), "verify")
		ids := make([]string, 0, len(users))
		for _, u := range users {
			if !slices.Contains(ids, u.backup) {
				ids = append(ids, u.backup)
			}
		}
		e.Details["backup_ids"] = strings.Join(ids, ",")
		v.record(ctx, e)
		return fmt.Sprintf("chunk %s: %v (quarantined as %s: the next backup holding its data uploads it again)", d, cause, key), true, cause
	case errors.Is(err, repository.ErrChunkSound):
		v.log.InfoContext(ctx, "chunk read damaged is sound now: a good copy was stored meanwhile", "repository", repoName, "digest", d.String())
		return "", false, nil
	case errors.Is(err, repository.ErrChunkNotFound):
		return fmt.Sprintf("chunk %s: %v (and gone since: quarantined elsewhere)", d, cause), false, cause
	default:
		v.log.ErrorContext(ctx, "quarantine a damaged chunk", "repository", repoName, "digest", d.String(), "err", err)
		return fmt.Sprintf("chunk %s: %v (quarantine failed: %v)", d, cause, err), false, cause
	}
}

// record stores one event; a failure is logged, and changes nothing else: the quarantine or the
// verdict it describes stands.
func (v *Verifier) record(ctx context.Context, e api.Event) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := v.cat.RecordEvents(ctx, []catalog.Event{events.Row(e)}); err != nil {
		v.log.ErrorContext(ctx, "record event", "type", e.Type, "details", e.Details, "err", err)
	}
}

type verifySummary interface {
	VerifySummary(ctx context.Context) (damaged int, last time.Time, err error)
	DamagedCopies(ctx context.Context) (int, error)
}

// summaryCollector exports what the catalog records about verification, so every hub instance
// reports it whoever ran the verification: sendense_hub_backups_damaged,
// sendense_hub_backup_copies_damaged and sendense_hub_verify_last_timestamp_seconds.
type summaryCollector struct {
	cat           verifySummary
	log           *slog.Logger
	damaged       *prometheus.Desc
	damagedCopies *prometheus.Desc
	last          *prometheus.Desc
}

var _ prometheus.Collector = (*summaryCollector)(nil)

func newSummaryCollector(cat verifySummary, log *slog.Logger) *summaryCollector {
	return &summaryCollector{
		cat: cat, log: log,
		damaged: prometheus.NewDesc("sendense_hub_backups_damaged", "Successful backups whose last verification found damage.", nil, nil),
		damagedCopies: prometheus.NewDesc("sendense_hub_backup_copies_damaged",
			"Copies of successful backups whose last verification found damage; the next run of their copy policy copies them again.", nil, nil),
		last: prometheus.NewDesc("sendense_hub_verify_last_timestamp_seconds", "Unix time of the most recent verification of any backup (0 when never verified).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *summaryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.damaged
	ch <- c.damagedCopies
	ch <- c.last
}

// Collect implements prometheus.Collector.
func (c *summaryCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	damaged, last, err := c.cat.VerifySummary(ctx)
	if err != nil {
		c.log.Warn("read verification summary for metrics", "err", err)
		ch <- prometheus.NewInvalidMetric(c.damaged, err)
		return
	}
	ts := 0.0
	if !last.IsZero() {
		ts = float64(last.Unix())
	}
	ch <- prometheus.MustNewConstMetric(c.damaged, prometheus.GaugeValue, float64(damaged))
	ch <- prometheus.MustNewConstMetric(c.last, prometheus.GaugeValue, ts)
	if copies, err := c.cat.DamagedCopies(ctx); err != nil {
		c.log.Warn("count damaged copies for metrics", "err", err)
		ch <- prometheus.NewInvalidMetric(c.damagedCopies, err)
	} else {
		ch <- prometheus.MustNewConstMetric(c.damagedCopies, prometheus.GaugeValue, float64(copies))
	}
}

// Schedule verifies every successful backup every interval until ctx ends. The first run comes
// an interval after the last verification the catalog records, not after this start: a hub
// restarted more often than the interval still verifies.
func (v *Verifier) Schedule(ctx context.Context, interval time.Duration) error {
	wait := interval
	if _, last, err := v.cat.VerifySummary(ctx); err != nil {
		v.log.WarnContext(ctx, "scheduled verification: the last one is not known; the first comes an interval from now", "err", err)
	} else {
		wait = schedule.FirstWait(last, interval, schedule.Settle, v.now())
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = interval
		rep, err := v.Run(ctx, "")
		switch {
		case err != nil && ctx.Err() == nil:
			v.log.ErrorContext(ctx, "scheduled verification failed", "err", err)
		case err == nil && !rep.OK():
			v.log.ErrorContext(ctx, "scheduled verification found damage", "backups", len(rep.DamagedBackups), "copies", len(rep.DamagedCopies),
				"chunks", len(rep.DamagedChunks))
		}
	}
}
