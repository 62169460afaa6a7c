package backup

import (
	"context"
	"fmt"
	"io"
	"math"

	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// pickSample chooses the slots an incremental re-reads to check CBT: fraction of the slots of
// the disk (total) that CBT did not report (changed: ascending, unique), at least floor of them
// or all when fewer. They are spread evenly over the unchanged slots, the first at phase
// (0 ≤ phase < 1) of the step: a new phase each run checks different slots, so over many runs
// the whole disk is covered. It holds no list of the unchanged slots: a 64 TiB disk has 16 M.
func pickSample(total int64, changed []int64, fraction float64, floor int, phase float64) []int64 {
	unchanged := total - int64(len(changed))
	if unchanged <= 0 {
		return nil
	}
	n := max(int64(math.Ceil(fraction*float64(unchanged))), int64(floor))
	n = min(n, unchanged)
	if n <= 0 {
		return nil
	}
	step := float64(unchanged) / float64(n)
	out := make([]int64, 0, n)
	var s, u int64 // s walks the disk's slots; u counts the unchanged slots before s
	ci := 0
	for i := range n {
		// The i-th sample is the t-th unchanged slot; t grows strictly since step ≥ 1.
		t := min(int64(float64(i)*step+phase*step), unchanged-1)
		for {
			if ci < len(changed) && changed[ci] == s {
				ci++
				s++
				continue
			}
			if u == t {
				break
			}
			u++
			s++
		}
		out = append(out, s)
	}
	return out
}

// checkSample reads the sampled slots and asks the hub which differ from the parent's index:
// slots CBT called unchanged whose content changed. The reads count in no disk's totals (the
// disk's counters cover the data of the backup), only in the agent's read metric. The slots are
// read into one buffer of the upload pool, as the upload's own reads are: the pool's budget is
// most of the agent's heap, and memory beyond it would leave the garbage collector no room
// under the agent's memory limit (it then runs on every allocation).
func (r *Runner) checkSample(ctx context.Context, hub jobHub, sessionID string, rd io.ReaderAt, g chunk.Grid, sample []int64) ([]int64, error) {
	if len(sample) == 0 {
		return nil, nil
	}
	pool := r.opts.Upload.Pool
	bufs, err := pool.getGroup(ctx, 1, chunk.HeaderSize+int(g.ChunkSize))
	if err != nil {
		return nil, err
	}
	defer pool.put(bufs[0])
	buf := bufs[0].b[chunk.HeaderSize:]
	var mismatched []int64
	for i := 0; i < len(sample); i += api.MaxCheckSlots {
		batch := sample[i:min(i+api.MaxCheckSlots, len(sample))]
		req := api.CheckRequest{Slots: make([]api.SlotDigest, 0, len(batch))}
		for _, s := range batch {
			off := s * g.ChunkSize
			p := buf[:min(g.ChunkSize, g.Capacity-off)]
			if err := readFull(rd, p, off); err != nil {
				return nil, fmt.Errorf("read sampled slot %d at offset %d: %w", s, off, err)
			}
			r.metrics.readBytes.Add(float64(len(p)))
			var d chunk.Digest
			if isZero(p) {
				d = chunk.ZeroDigest(len(p))
			} else {
				d = chunk.Sum(p)
			}
			req.Slots = append(req.Slots, api.SlotDigest{Slot: s, Digest: d.String()})
		}
		res, err := hub.Check(ctx, sessionID, req)
		if err != nil {
			return nil, fmt.Errorf("check sampled slots %d..%d: %w", batch[0], batch[len(batch)-1], err)
		}
		mismatched = append(mismatched, res.Mismatched...)
	}
	return mismatched, nil
}
