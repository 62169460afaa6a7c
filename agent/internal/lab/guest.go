package lab

import (
	"context"
	"path"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// The simulator leaves a VM's guest as the VM was made: one registered from a .vmx reports
// VMware Tools not running for ever, powered on or not. The lab boots guests instead: a VM
// powered on reports its tools running, a green heartbeat and the address GuestIP shortly
// after, unless its name was given to SilenceGuest (a guest that never boots). Powered off, the
// tools stop.

// GuestIP is the address a lab guest reports once booted: the loopback, so that a test can
// answer for the guest on a TCP port.
const GuestIP = "127.0.0.1"

// guestBootWait bounds how long the lab watches a powering-on VM for its power state.
const guestBootWait = 30 * time.Second

// SilenceGuest makes the guest of the VM of that name never report running after a power-on
// (silent true), or boot again as usual (false). It applies to VMs made or registered later
// too: the name is what counts. The name may be a path.Match pattern ("vm1-rt-*"), for VMs
// whose full name is made by the product.
func (l *Lab) SilenceGuest(name string, silent bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.silent == nil {
		l.silent = map[string]bool{}
	}
	if silent {
		l.silent[name] = true
	} else {
		delete(l.silent, name)
	}
}

func (l *Lab) guestSilenced(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p := range l.silent {
		if ok, _ := path.Match(p, name); ok || p == name {
			return true
		}
	}
	return false
}

// handleGuest watches the VM a power-on or power-off is asked of, and sets its guest once
// the simulator's task changed the power state.
func (l *Lab) handleGuest(m *simulator.Method) {
	switch m.Name {
	case "PowerOnVM_Task", "PowerOffVM_Task":
		if m.This.Type == "VirtualMachine" {
			go l.followPower(m.This, m.Name == "PowerOnVM_Task")
		}
	}
}

func (l *Lab) followPower(ref types.ManagedObjectReference, on bool) {
	want := types.VirtualMachinePowerStatePoweredOff
	if on {
		want = types.VirtualMachinePowerStatePoweredOn
	}
	deadline := time.Now().Add(guestBootWait)
	for !l.closed.Load() && time.Now().Before(deadline) {
		vm, ok := l.model.Map().Get(ref).(*simulator.VirtualMachine)
		if !ok {
			return
		}
		ctx := &simulator.Context{Context: context.Background(), Map: l.model.Map()}
		var name string
		var state types.VirtualMachinePowerState
		ctx.WithLock(vm, func() { name, state = vm.Name, vm.Runtime.PowerState })
		if state == want {
			if on && l.guestSilenced(name) {
				return
			}
			l.setGuest(ctx, vm, on)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// setGuest sets the guest's tools, heartbeat and address as running (or stopped) and
// publishes the changes to property collectors.
func (l *Lab) setGuest(ctx *simulator.Context, vm *simulator.VirtualMachine, running bool) {
	tools, status, heartbeat, state, ip := types.VirtualMachineToolsRunningStatusGuestToolsNotRunning,
		types.VirtualMachineToolsStatusToolsNotRunning, types.ManagedEntityStatusGray, "notRunning", ""
	if running {
		tools, status, heartbeat, state, ip = types.VirtualMachineToolsRunningStatusGuestToolsRunning,
			types.VirtualMachineToolsStatusToolsOk, types.ManagedEntityStatusGreen, "running", GuestIP
	}
	ctx.WithLock(vm, func() {
		if vm.Guest == nil {
			vm.Guest = &types.GuestInfo{}
		}
		vm.Guest.ToolsRunningStatus = string(tools)
		vm.Guest.ToolsStatus = status
		vm.Guest.GuestState = state
		vm.Guest.IpAddress = ip
		vm.Summary.QuickStats.GuestHeartbeatStatus = heartbeat
		ctx.Map.Update(ctx, vm, []types.PropertyChange{
			{Name: "guest", Val: *vm.Guest},
			{Name: "guest.toolsRunningStatus", Val: string(tools)},
			{Name: "guest.toolsStatus", Val: status},
			{Name: "guest.ipAddress", Val: ip},
			{Name: "guestHeartbeatStatus", Val: heartbeat},
			{Name: "summary.quickStats.guestHeartbeatStatus", Val: heartbeat},
		})
	})
}
