package lab

import (
	"testing"
)

// BenchmarkStartDemo builds the demo lab: 2.5 GiB of generated data written to sparse files.
func BenchmarkStartDemo(b *testing.B) {
	b.SetBytes(2<<30 + 512<<20)
	for b.Loop() {
		l, err := Start(b.Context(), DemoSpec(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkStartBulk builds the discovery benchmark's lab: 1000 VMs with three empty 1 GiB disks.
func BenchmarkStartBulk(b *testing.B) {
	for b.Loop() {
		l, err := Start(b.Context(), BulkSpec(1000, 3, "1GiB", FillZeros), Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkQueryFull asks a full ("*") QueryChangedDiskAreas of the demo's 102 GB disk, window
// by window, as a first backup does.
func BenchmarkQueryFull(b *testing.B) {
	l, err := Start(b.Context(), DemoSpec(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	c, err := dial(b.Context(), l)
	if err != nil {
		b.Fatal(err)
	}
	vm, _, err := lookupVM(b.Context(), c, "pgtest1")
	if err != nil {
		b.Fatal(err)
	}
	snap, disks, err := snapshotDisks(b.Context(), vm, "bench", false)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		areas, calls, err := changedAreas(b.Context(), c, vm.Reference(), snap, disks[2000], "*")
		if err != nil || len(areas) == 0 {
			b.Fatalf("%d areas in %d calls: %v", len(areas), calls, err)
		}
	}
}
