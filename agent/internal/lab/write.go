package lab

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// writeSize is the size of one WritePercent write: "1% changed" means ten 1 MiB writes spread
// over a 1 GiB image, as in the peer benchmarks.
const writeSize = mib

// diskTarget is what a write needs to know about a disk, read under the VM's lock.
type diskTarget struct {
	vm, id    string
	state     *diskState
	flat      string
	capacity  int64
	cbt       bool // the VM's changeTrackingEnabled
	trackable bool
}

func (l *Lab) target(vmName, id string) (diskTarget, error) {
	if l.closed.Load() {
		return diskTarget{}, ErrClosed
	}
	ref, err := l.lookup(vmName)
	if err != nil {
		return diskTarget{}, err
	}
	key, err := parseDiskID(id)
	if err != nil {
		return diskTarget{}, err
	}
	t := diskTarget{vm: vmName, id: id}
	found := false
	var pathErr error
	err = l.withVM(ref, func(vm *simulator.VirtualMachine) {
		t.cbt = vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
		for _, dev := range vm.Config.Hardware.Device {
			disk, ok := dev.(*types.VirtualDisk)
			if !ok || disk.Key != key {
				continue
			}
			b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			if !ok {
				continue
			}
			found = true
			t.capacity = capacityOf(disk)
			t.trackable = trackable(b.DiskMode)
			t.flat, pathErr = l.flatPath(b.FileName)
		}
	})
	if err != nil {
		return diskTarget{}, err
	}
	if !found {
		return diskTarget{}, fmt.Errorf("%w: vm %s has no disk %s", ErrDiskNotFound, vmName, id)
	}
	if pathErr != nil {
		return diskTarget{}, pathErr
	}
	t.state = l.disk(ref, key)
	return t, nil
}

// Write writes data at off of a disk's flat file and journals the extent for CBT (when the VM
// has CBT on). The range must lie inside the disk (ErrOutOfRange).
func (l *Lab) Write(vm, diskID string, off int64, data []byte) error {
	t, err := l.target(vm, diskID)
	if err != nil {
		return err
	}
	e := Extent{Offset: off, Length: int64(len(data))}
	if off < 0 || e.End() > t.capacity {
		return fmt.Errorf("%w: write of %d bytes at %d to disk %s of %s (%d bytes)", ErrOutOfRange, e.Length, off, diskID, vm, t.capacity)
	}
	return t.write([]Extent{e}, true, func(p []byte, off int64) { copy(p, data[off-e.Offset:]) })
}

// WritePercent overwrites about percent % of a disk with new random data and returns the
// extents written, sorted. The writes are 1 MiB each, one per 4 MiB-aligned block, in blocks
// spread evenly (seeded) over the disk: 1% of 1 GiB is ten 1 MiB writes. Above 25% whole blocks
// are rewritten. The same seed gives the same extents and bytes.
func (l *Lab) WritePercent(vm, diskID string, percent float64, seed int64) ([]Extent, error) {
	return l.writePercent(vm, diskID, percent, seed, false)
}

// WritePercentHidden writes like WritePercent but keeps the extents out of the disk's CBT
// journal: the next QueryChangedDiskAreas does not report them, as a CBT bug would not. It lets
// tests prove that a backup catches CBT that lies.
func (l *Lab) WritePercentHidden(vm, diskID string, percent float64, seed int64) ([]Extent, error) {
	return l.writePercent(vm, diskID, percent, seed, true)
}

func (l *Lab) writePercent(vm, diskID string, percent float64, seed int64, hidden bool) ([]Extent, error) {
	if !(percent > 0 && percent <= 100) {
		return nil, fmt.Errorf("%w: percent %v not in (0, 100]", ErrOutOfRange, percent)
	}
	t, err := l.target(vm, diskID)
	if err != nil {
		return nil, err
	}
	extents := percentExtents(t.capacity, percent, seed)
	g := newGenerator("write", seed)
	err = t.write(extents, !hidden, func(p []byte, off int64) { g.random(p, uint64(off)) })
	if err != nil {
		return nil, err
	}
	return extents, nil
}

// WriteRandom writes length new random bytes (from seed) at off of a disk and journals the extent
// like Write, without holding the data in memory.
func (l *Lab) WriteRandom(vm, diskID string, off, length, seed int64) error {
	t, err := l.target(vm, diskID)
	if err != nil {
		return err
	}
	e := Extent{Offset: off, Length: length}
	if off < 0 || length < 0 || e.End() > t.capacity {
		return fmt.Errorf("%w: write of %d bytes at %d to disk %s of %s (%d bytes)", ErrOutOfRange, length, off, diskID, vm, t.capacity)
	}
	g := newGenerator("write", seed)
	return t.write([]Extent{e}, true, func(p []byte, off int64) { g.random(p, uint64(off)) })
}

// write writes extents (sorted, inside the disk) with content from fill(p, offset) in pieces of
// at most one slot, and journals them (unless track is false), holding the disk's lock so a snapshot sees a write's
// bytes and its journal entry together.
func (t diskTarget) write(extents []Extent, track bool, fill func(p []byte, off int64)) error {
	d := t.state
	d.mu.Lock()
	defer d.mu.Unlock()
	f, err := os.OpenFile(t.flat, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open disk %s of %s: %w", t.id, t.vm, err)
	}
	defer f.Close()
	buf := make([]byte, min(slotSize, maxLength(extents)))
	for _, e := range extents {
		for off := e.Offset; off < e.End(); {
			p := buf[:min(int64(len(buf)), e.End()-off)]
			fill(p, off)
			if _, err := f.WriteAt(p, off); err != nil {
				return fmt.Errorf("write disk %s of %s at %d: %w", t.id, t.vm, off, err)
			}
			off += int64(len(p))
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close disk %s of %s: %w", t.id, t.vm, err)
	}
	d.syncLocked(t.cbt && t.trackable)
	for _, e := range extents {
		if track {
			d.recordLocked(e)
		}
	}
	return nil
}

func maxLength(es []Extent) int64 {
	var n int64
	for _, e := range es {
		n = max(n, e.Length)
	}
	return n
}

// percentExtents picks the extents WritePercent writes: round(percent% of capacity / 1 MiB)
// writes of 1 MiB, each in its own 4 MiB block at a random 64 KiB-aligned position inside it;
// the blocks are stratified over the disk so the writes spread. When that needs more writes than
// the disk has blocks, whole blocks are rewritten instead.
func percentExtents(capacity int64, percent float64, seed int64) []Extent {
	blocks := (capacity + slotSize - 1) / slotSize
	total := percent / 100 * float64(capacity)
	size := writeSize
	n := max(1, int64(math.Round(total/float64(size))))
	if n > blocks {
		size = slotSize
		n = min(blocks, int64(math.Ceil(total/float64(size))))
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x77))
	out := make([]Extent, 0, n)
	for i := range n {
		lo, hi := i*blocks/n, (i+1)*blocks/n
		block := lo + rng.Int64N(hi-lo)
		start := block * slotSize
		blockEnd := min(start+slotSize, capacity)
		length := min(size, blockEnd-start)
		if slack := blockEnd - start - length; slack > 0 {
			start += rng.Int64N(slack/(64<<10)+1) * (64 << 10)
		}
		out = append(out, Extent{Offset: start, Length: length})
	}
	return out
}

// ResetCBT gives a disk a new change-tracking UUID, as turning CBT off and on does: change IDs
// issued before become invalid and QueryChangedDiskAreas faults for them, so the next backup must
// be a full one. Snapshots taken before the reset can no longer be queried.
func (l *Lab) ResetCBT(vm, diskID string) error {
	t, err := l.target(vm, diskID)
	if err != nil {
		return err
	}
	t.state.mu.Lock()
	defer t.state.mu.Unlock()
	t.state.resetLocked()
	return nil
}
