package lab

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"

	"github.com/vmware/govmomi/session"
)

// Several clients with their own sessions at once: per VM an owner writes, snapshots and checks
// that each incremental is exactly its writes, while other sessions take, query and remove
// snapshots of the same VMs and list the inventory. Run with -race.
func TestConcurrentSessions(t *testing.T) {
	const vms, disturbers, rounds = 3, 2, 4
	var spec Spec
	for i := range vms {
		spec.VMs = append(spec.VMs, VMSpec{Name: fmt.Sprintf("vm%d", i), CBT: true,
			Disks: []DiskSpec{{Size: "32MiB", Fill: FillSparse, Data: "4MiB"}}})
	}
	l := startLab(t, spec, Options{QueryWindow: 8 << 20})
	ctx := t.Context()

	var wg sync.WaitGroup
	errs := make(chan error, vms*(1+disturbers))
	for i := range vms {
		name := fmt.Sprintf("vm%d", i)
		wg.Go(func() {
			if err := owner(ctx, l, name, uint64(i), rounds); err != nil {
				errs <- fmt.Errorf("owner of %s: %w", name, err)
			}
		})
		for range disturbers {
			wg.Go(func() {
				if err := disturber(ctx, l, name, rounds); err != nil {
					errs <- fmt.Errorf("disturber of %s: %w", name, err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// owner writes to a VM's disk between its snapshots and checks each incremental is exactly its
// writes, removing the previous snapshot as a backup does.
func owner(ctx context.Context, l *Lab, name string, seed uint64, rounds int) error {
	c, err := dial(ctx, l)
	if err != nil {
		return err
	}
	defer func() { _ = session.NewManager(c).Logout(context.WithoutCancel(ctx)) }()
	vm, _, err := lookupVM(ctx, c, name)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	prevSnap, prevDisks, err := snapshotDisks(ctx, vm, "owner-0", false)
	if err != nil {
		return err
	}
	for r := 1; r <= rounds; r++ {
		var writes []Extent
		for range 2 {
			w := Extent{Offset: rng.Int64N(31<<20) &^ 511, Length: 512 + rng.Int64N(64<<10)}
			if err := l.Write(name, "disk-2000", w.Offset, make([]byte, w.Length)); err != nil {
				return err
			}
			writes = append(writes, w)
		}
		snap, disks, err := snapshotDisks(ctx, vm, fmt.Sprintf("owner-%d", r), false)
		if err != nil {
			return err
		}
		got, _, err := changedAreas(ctx, c, vm.Reference(), snap, disks[2000], changeID(prevDisks[2000]))
		if err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
		if want := mergeExtents(writes); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("round %d: incremental %v, want %v", r, got, want)
		}
		if err := removeSnapshot(ctx, c, prevSnap); err != nil {
			return fmt.Errorf("round %d: remove snapshot: %w", r, err)
		}
		prevSnap, prevDisks = snap, disks
	}
	return nil
}

// disturber takes, fully queries and removes snapshots of a VM and lists the lab meanwhile.
func disturber(ctx context.Context, l *Lab, name string, rounds int) error {
	c, err := dial(ctx, l)
	if err != nil {
		return err
	}
	defer func() { _ = session.NewManager(c).Logout(context.WithoutCancel(ctx)) }()
	vm, _, err := lookupVM(ctx, c, name)
	if err != nil {
		return err
	}
	for r := range rounds {
		snap, disks, err := snapshotDisks(ctx, vm, fmt.Sprintf("other-%d", r), false)
		if err != nil {
			return err
		}
		if _, _, err := changedAreas(ctx, c, vm.Reference(), snap, disks[2000], "*"); err != nil {
			return fmt.Errorf("full query: %w", err)
		}
		if err := removeSnapshot(ctx, c, snap); err != nil {
			return fmt.Errorf("remove snapshot: %w", err)
		}
		if _, err := l.VMs(); err != nil {
			return err
		}
	}
	return nil
}
