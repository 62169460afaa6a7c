// Package copies owns copies of restore points from one repository to another (3-2-1: a copy
// off site): each backup's chunks that the target lacks, verified on arrival, then its indexes,
// its VM configuration and its backup record, so that the target alone can restore it, or be
// attached by a hub that lost the original.
package copies

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// Repository is what a copy needs of the repositories at both ends (*repository.Repository).
// Every method is safe for concurrent use.
type Repository interface {
	ID() string
	ChunkSize() int64
	// Source side: reads check what they return (digests, index framing, the recorded digest
	// of a VM configuration).
	ReadIndex(ctx context.Context, ref repository.IndexRef) (*fidx.Index, error)
	ReadChunk(ctx context.Context, d chunk.Digest, dst []byte) ([]byte, error)
	ReadVMConfig(ctx context.Context, vmUUID, backupID, digest string) ([]byte, error)
	// Target side: every write is durable when it returns and idempotent; PutChunk re-hashes
	// the blob, WriteIndex refuses an index naming a chunk the target lacks.
	// TouchChunk refreshes a chunk's time (repository.ErrChunkNotFound when there is none).
	TouchChunk(ctx context.Context, d chunk.Digest) error
	PutChunk(ctx context.Context, d chunk.Digest, blob []byte) (bool, error)
	VerifyChunk(ctx context.Context, d chunk.Digest) error
	WriteIndex(ctx context.Context, ref repository.IndexRef, idx *fidx.Index) (string, error)
	WriteVMConfig(ctx context.Context, vmUUID, backupID string, data []byte) (string, error)
	WriteBackupRecord(ctx context.Context, rec *repository.BackupRecord) error
	// Target side, repairing a copy verification found damaged: a damaged chunk is moved into
	// quarantine (repository.ErrChunkSound when it reads sound by then), a damaged index or
	// VM configuration removed (hidden, under a retention date), before they are copied again.
	QuarantineChunk(ctx context.Context, d chunk.Digest) (string, error)
	RemoveDamagedIndex(ctx context.Context, ref repository.IndexRef) error
	RemoveDamagedVMConfig(ctx context.Context, vmUUID, backupID, digest string) error
	// TouchHolds is how long TouchChunk holds a chunk when not for good (S3 Object Lock: a
	// retention date), else 0.
	TouchHolds() time.Duration
}

// copyCatalog is what a copy needs of the catalog.
type copyCatalog interface {
	Backups(ctx context.Context, f catalog.BackupFilter) ([]catalog.BackupRow, int, error)
	BackupRows(ctx context.Context, id string) (*catalog.BackupRows, error)
	BackupCopies(ctx context.Context, backupID string) ([]catalog.BackupCopy, error)
	BeginCopyWrite(ctx context.Context, backupID, repositoryID string, ttl time.Duration) (*catalog.CopyWrite, error)
	RenewCopyWrite(ctx context.Context, id string, ttl time.Duration) error
	FinishCopyWrite(ctx context.Context, id string, cp *catalog.BackupCopy) error
	EndCopyWrite(ctx context.Context, id string) error
}

// writeTTL is how long a copy's record of writing into its target (catalog.CopyWrite) holds
// garbage collection back there without renewal; it is renewed every writeTTL/4.
const writeTTL = 2 * time.Minute

// Opener opens a repository by catalog id.
type Opener func(ctx context.Context, id string) (Repository, error)

// Report says what one run copied.
type Report struct {
	Backups      int      // backups copied in this run
	Present      int      // backups the target had already
	Chunks       int64    // chunks copied (the target lacked them)
	ChunksShared int64    // chunks the target had already
	Bytes        int64    // plaintext bytes of the chunks copied
	Failed       int      // backups that could not be copied (CopyBackups goes on past them)
	Errors       []string // why, one per failed backup
	Duration     time.Duration
}

// Copier copies backups between repositories.
type Copier struct {
	cat      copyCatalog
	open     Opener
	log      *slog.Logger
	parallel int
	ttl      time.Duration // writeTTL; a field so that a test can shorten it
}

// New returns a copier that copies up to parallel chunks at once (at least 1).
func New(cat copyCatalog, open Opener, log *slog.Logger, parallel int) *Copier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Copier{cat: cat, open: open, log: log, parallel: max(parallel, 1), ttl: writeTTL}
}

// Run copies every successful backup of the repository fromID (or only backupID, when not
// empty) into the repository toID, oldest first, and records each copy in the catalog. A backup
// copied before is skipped; a run stopped half-way is resumed by the next, which copies only the
// chunks still missing. A copy that verification found damaged is copied again: its damaged
// chunks were quarantined, so the chunks still missing are those. It stops at the first backup
// that cannot be copied.
func (c *Copier) Run(ctx context.Context, fromID, toID, backupID string) (Report, error) {
	rows, _, err := c.cat.Backups(ctx, catalog.BackupFilter{RepositoryID: fromID, Status: api.JobSucceeded})
	if err != nil {
		return Report{}, err
	}
	var ids []string
	for i := len(rows) - 1; i >= 0; i-- { // oldest first: a parent is copied before its children
		if backupID == "" || rows[i].ID == backupID {
			ids = append(ids, rows[i].ID)
		}
	}
	return c.copy(ctx, fromID, toID, ids, false)
}

// CopyBackups copies the backups ids (successful backups of the repository fromID, oldest
// first) into toID like Run, but goes on past a backup that cannot be copied: each failure is
// counted and listed in the report, and the error returned is only that of the repositories
// (they cannot be opened, or do not fit together) or of ctx.
func (c *Copier) CopyBackups(ctx context.Context, fromID, toID string, ids []string) (Report, error) {
	return c.copy(ctx, fromID, toID, ids, true)
}

func (c *Copier) copy(ctx context.Context, fromID, toID string, ids []string, keepGoing bool) (Report, error) {
	start := time.Now()
	var rep Report
	if fromID == toID {
		return rep, errors.New("a repository cannot be copied into itself")
	}
	src, err := c.open(ctx, fromID)
	if err != nil {
		return rep, err
	}
	dst, err := c.open(ctx, toID)
	if err != nil {
		return rep, err
	}
	if src.ChunkSize() != dst.ChunkSize() {
		return rep, fmt.Errorf("the repositories have different chunk sizes (%d and %d): indexes cannot be copied", src.ChunkSize(), dst.ChunkSize())
	}
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		state, err := c.copied(ctx, id, toID)
		if err != nil {
			return rep, err
		}
		if state == copySound {
			rep.Present++
			continue
		}
		if err := c.copyBackup(ctx, src, dst, id, state == copyDamaged, &rep); err != nil {
			err = fmt.Errorf("copy backup %s: %w", id, err)
			if !keepGoing || ctx.Err() != nil {
				return rep, err
			}
			rep.Failed++
			rep.Errors = append(rep.Errors, err.Error())
			c.log.WarnContext(ctx, "backup not copied", "job_id", id, "to_repository_id", toID, "err", err)
			continue
		}
		rep.Backups++
	}
	rep.Duration = time.Since(start)
	c.log.InfoContext(ctx, "copy finished", "from_repository_id", fromID, "to_repository_id", toID, "backups", rep.Backups,
		"present", rep.Present, "failed", rep.Failed, "chunks", rep.Chunks, "chunks_shared", rep.ChunksShared, "bytes", rep.Bytes, "duration_seconds", rep.Duration.Seconds())
	return rep, nil
}

// What a target holds of a backup.
const (
	copyNone    = iota // no copy recorded
	copySound          // a copy, not found damaged by its last verification
	copyDamaged        // a copy its last verification found damaged: repaired by copying it again
)

// copied says what toID holds of the backup.
func (c *Copier) copied(ctx context.Context, backupID, toID string) (int, error) {
	cps, err := c.cat.BackupCopies(ctx, backupID)
	if err != nil {
		return copyNone, err
	}
	for _, cp := range cps {
		if cp.RepositoryID != toID {
			continue
		}
		if cp.VerifyStatus == api.VerifyDamaged {
			c.log.InfoContext(ctx, "copy found damaged by verification: copying it again", "job_id", backupID, "to_repository_id", toID)
			return copyDamaged, nil
		}
		return copySound, nil
	}
	return copyNone, nil
}

// copyBackup copies one backup: chunks, verified in the target; indexes; VM configuration;
// record last, so that the target describes the backup only once all of it is there.
//
// Garbage collection in the target spares what the copy writes, from its start to its record:
// the copy is recorded in the catalog as writing there (catalog.CopyWrite, renewed as it goes),
// which holds the collection's cutoff back to the copy's start, and the chunks the target holds
// already are touched instead of only looked at. The copy is recorded only while that hold is
// unbroken; a copy whose hold lapsed (the catalog unreachable for writeTTL) fails.
//
// repair copies again a copy verification found damaged: every chunk the target holds is
// verified rather than only touched (a damaged one quarantined and copied again), and a damaged
// index or VM configuration is removed and written again.
func (c *Copier) copyBackup(ctx context.Context, src, dst Repository, id string, repair bool, rep *Report) (err error) {
	w, err := c.cat.BeginCopyWrite(ctx, id, dst.ID(), c.ttl)
	if err != nil {
		return err
	}
	wctx, stop := c.holdWrite(ctx, w.ID)
	recorded := false
	defer func() {
		stop()
		if cause := context.Cause(wctx); err != nil && errors.Is(err, context.Canceled) && cause != nil {
			err = cause
		}
		if !recorded {
			if eerr := c.cat.EndCopyWrite(context.WithoutCancel(ctx), w.ID); eerr != nil {
				c.log.WarnContext(ctx, "copy: could not end its record of writing (it expires)", "job_id", id, "err", eerr)
			}
		}
	}()
	chunks, bytes, err := c.copyBackupData(wctx, src, dst, id, repair, rep)
	if err != nil {
		return err
	}
	cp := catalog.BackupCopy{BackupID: id, RepositoryID: dst.ID(), ChunksCopied: chunks, BytesCopied: bytes}
	if err := c.cat.FinishCopyWrite(wctx, w.ID, &cp); err != nil {
		return err
	}
	recorded = true
	return nil
}

// holdWrite renews the copy write id every ttl/4 until stop is called. A renewal that fails
// cancels the returned context with the reason: the copy must not go on unprotected.
func (c *Copier) holdWrite(ctx context.Context, id string) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(c.ttl / 4)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := c.cat.RenewCopyWrite(ctx, id, c.ttl); err != nil && ctx.Err() == nil {
				cancel(fmt.Errorf("the copy's hold on garbage collection in the target lapsed: %w", err))
				return
			}
		}
	}()
	return ctx, func() {
		close(done)
		<-stopped
		cancel(nil)
	}
}

// copyBackupData writes everything of backup id into dst but its record in the catalog, and
// returns the chunks it copied and their plaintext bytes.
func (c *Copier) copyBackupData(ctx context.Context, src, dst Repository, id string, repair bool, rep *Report) (copied, copiedBytes int64, err error) {
	rows, err := c.cat.BackupRows(ctx, id)
	if err != nil {
		return 0, 0, err
	}
	rec := repository.RecordOf(rows)
	vm := rows.VM.InstanceUUID
	var chunks, bytes atomic.Int64
	idxs := map[string]*fidx.Index{}
	heldSince := time.Now()
	for _, d := range rec.Disks {
		ref := repository.IndexRef{VMUUID: vm, DiskID: d.DiskID, BackupID: id}
		idx, err := src.ReadIndex(ctx, ref)
		if err != nil {
			return 0, 0, err
		}
		idxs[d.DiskID] = idx
		refd := idx.Referenced()
		missing, err := c.touchHeld(ctx, dst, refd, repair)
		if err != nil {
			return 0, 0, err
		}
		rep.ChunksShared += int64(len(refd) - len(missing))
		if err := c.copyChunks(ctx, src, dst, missing, &chunks, &bytes); err != nil {
			return 0, 0, err
		}
	}
	for _, d := range rec.Disks {
		// Each index is written while the chunks it names are held: before each, they are
		// touched again when the copy has run long, and an index whose writing outlasted
		// their hold fails the copy (garbage collection does not see it until it is recorded).
		if heldSince, err = c.holdAgain(ctx, src, dst, rec, idxs, heldSince, &chunks, &bytes); err != nil {
			return 0, 0, err
		}
		ref := repository.IndexRef{VMUUID: vm, DiskID: d.DiskID, BackupID: id}
		if repair {
			if err := dst.RemoveDamagedIndex(ctx, ref); err != nil {
				return 0, 0, fmt.Errorf("copy: %w", err)
			}
		}
		digest, err := dst.WriteIndex(ctx, ref, idxs[d.DiskID])
		if err != nil {
			return 0, 0, err
		}
		if digest != d.IndexDigest {
			return 0, 0, fmt.Errorf("index %s: sha-256 %s in the copy, the catalog recorded %s", ref, digest, d.IndexDigest)
		}
		if hold := dst.TouchHolds(); hold > 0 && time.Since(heldSince) >= hold/2 {
			return 0, 0, fmt.Errorf("index %s: written %s after the chunks it names were touched, too long for their hold of %s: the copy cannot count on them",
				ref, time.Since(heldSince).Round(time.Second), hold)
		}
	}
	rep.Chunks += chunks.Load()
	rep.Bytes += bytes.Load()
	if rec.VMConfigDigest != "" {
		data, err := src.ReadVMConfig(ctx, vm, id, rec.VMConfigDigest)
		if err != nil {
			return 0, 0, err
		}
		if repair {
			if err := dst.RemoveDamagedVMConfig(ctx, vm, id, rec.VMConfigDigest); err != nil {
				return 0, 0, fmt.Errorf("copy: %w", err)
			}
		}
		if _, err := dst.WriteVMConfig(ctx, vm, id, data); err != nil {
			return 0, 0, err
		}
	}
	if err := dst.WriteBackupRecord(ctx, rec); err != nil {
		return 0, 0, err
	}
	return chunks.Load(), bytes.Load(), nil
}

// holdSlack is how much of half a touch's hold (TouchHolds) a copy keeps in hand for writing its
// indexes once every chunk is in place.
const holdSlack = time.Hour

// holdAgain touches the chunks dst held already once more when the copy has run so long since it
// first touched them (heldSince) that their hold may lapse before its indexes name them: where a
// touch holds a chunk for a while only (TouchHolds, S3 Object Lock), a collection starting half
// of that later could otherwise remove them. Chunks gone meanwhile are copied. It returns when
// the chunks were last touched: heldSince, or when it touched them again. A copy that cannot
// touch them all again in that time fails.
func (c *Copier) holdAgain(ctx context.Context, src, dst Repository, rec *repository.BackupRecord, idxs map[string]*fidx.Index, heldSince time.Time, chunks, bytes *atomic.Int64) (time.Time, error) {
	hold := dst.TouchHolds()
	window := hold/2 - holdSlack
	if hold <= 0 || time.Since(heldSince) < window {
		return heldSince, nil
	}
	again := time.Now()
	for _, d := range rec.Disks {
		missing, err := c.touchHeld(ctx, dst, idxs[d.DiskID].Referenced(), false)
		if err != nil {
			return heldSince, err
		}
		if err := c.copyChunks(ctx, src, dst, missing, chunks, bytes); err != nil {
			return heldSince, err
		}
	}
	if took := time.Since(again); window > 0 && took >= window {
		return heldSince, fmt.Errorf("touching the chunks the target holds took %s, too long for their hold of %s: the copy cannot count on them", took.Round(time.Second), hold)
	}
	return again, nil
}

// touchHeld touches each chunk of ds that dst holds, so that garbage collection there spares it
// from now on (the copy's hold spares only what was stored or touched since the copy began),
// and returns the others, each once, c.parallel at a time. With repair it verifies each held
// chunk first, and a damaged one is quarantined and returned with the missing ones.
func (c *Copier) touchHeld(ctx context.Context, dst Repository, ds []chunk.Digest, repair bool) ([]chunk.Digest, error) {
	var (
		mu      sync.Mutex
		missing []chunk.Digest
	)
	seen := make(map[chunk.Digest]struct{}, len(ds))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.parallel)
	for _, d := range ds {
		if _, dup := seen[d]; dup {
			continue
		}
		seen[d] = struct{}{}
		g.Go(func() error {
			if repair {
				err := dst.VerifyChunk(gctx, d)
				if errors.Is(err, repository.ErrChunkDamaged) {
					_, err = dst.QuarantineChunk(gctx, d)
					if errors.Is(err, repository.ErrChunkSound) {
						err = nil // a sound copy was stored meanwhile
					}
				}
				if err != nil && !errors.Is(err, repository.ErrChunkNotFound) {
					return fmt.Errorf("verify chunk %s in the copy: %w", d, err)
				}
			}
			err := dst.TouchChunk(gctx, d)
			if errors.Is(err, repository.ErrChunkNotFound) {
				mu.Lock()
				missing = append(missing, d)
				mu.Unlock()
				return nil
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return missing, nil
}

// copyChunks reads each chunk from src (which re-hashes it), stores it in dst as a zstd blob
// (which re-hashes it again and seals it under the target's key) and reads it back from dst
// (verification on arrival), c.parallel at a time.
func (c *Copier) copyChunks(ctx context.Context, src, dst Repository, ds []chunk.Digest, chunks, bytes *atomic.Int64) error {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return err
	}
	defer enc.Close()
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(c.parallel)
	for _, d := range ds {
		g.Go(func() error {
			plain, err := src.ReadChunk(ctx, d, nil)
			if err != nil {
				return err
			}
			blob, err := chunk.AppendBlob(nil, chunk.CodecZstd, len(plain), enc.EncodeAll(plain, nil))
			if err != nil {
				return fmt.Errorf("frame chunk %s: %w", d, err)
			}
			if _, err := dst.PutChunk(ctx, d, blob); err != nil {
				return err
			}
			if err := dst.VerifyChunk(ctx, d); err != nil {
				return fmt.Errorf("chunk %s after copying: %w", d, err)
			}
			chunks.Add(1)
			bytes.Add(int64(len(plain)))
			return nil
		})
	}
	return g.Wait()
}
