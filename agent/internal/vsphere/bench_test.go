package vsphere

import (
	"fmt"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// bigModel is a vCenter with 1,000 VMs of 3 disks each: 500 VMs in the cluster's pool and 500
// on the standalone host, every VM given two more disks on its SCSI controller before the
// server starts (reconfiguring 1,000 VMs through the API would dominate the setup).
func bigModel(tb testing.TB) *sim {
	tb.Helper()
	m := simulator.VPX()
	m.Machine = 500
	s := startSim(tb, m)
	n := 0
	for _, e := range m.Map().All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		devices := object.VirtualDeviceList(vm.Config.Hardware.Device)
		first := devices.SelectByType((*types.VirtualDisk)(nil))[0].(*types.VirtualDisk)
		for i := int32(1); i <= 2; i++ {
			backing := *first.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			backing.FileName = fmt.Sprintf("[LocalDS_0] %s/disk%d.vmdk", vm.Name, i+1)
			unit := i
			vm.Config.Hardware.Device = append(vm.Config.Hardware.Device, &types.VirtualDisk{
				VirtualDevice: types.VirtualDevice{
					Key: first.Key + i, ControllerKey: first.ControllerKey, UnitNumber: &unit,
					Backing:    &backing,
					DeviceInfo: &types.Description{Label: fmt.Sprintf("Hard disk %d", i+1)},
				},
				CapacityInBytes: 1 << 30,
			})
		}
		n++
	}
	if n != 1000 {
		tb.Fatalf("model has %d vms, want 1000", n)
	}
	return s
}

// BenchmarkInventory1000VMs measures one full discovery of 1,000 VMs × 3 disks, with the
// default page size (several continuation round trips) read in one stream and in parallel
// parts, and with one page for everything.
func BenchmarkInventory1000VMs(b *testing.B) {
	s := bigModel(b)
	c := s.connect(b)
	for _, run := range []struct {
		page    int32
		streams int
	}{{defaultPageSize, 1}, {defaultPageSize, defaultStreams}, {5000, 1}} {
		b.Run(fmt.Sprintf("page=%d/streams=%d", run.page, run.streams), func(b *testing.B) {
			c.pageSize, c.streams = run.page, run.streams
			for b.Loop() {
				inv, err := c.Inventory(b.Context())
				if err != nil {
					b.Fatal(err)
				}
				disks := 0
				for _, vm := range inv.VMs {
					disks += len(vm.Disks)
				}
				if len(inv.VMs) != 1000 || disks != 3000 {
					b.Fatalf("inventory has %d vms and %d disks, want 1000 and 3000", len(inv.VMs), disks)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/inventory")
		})
	}
}
