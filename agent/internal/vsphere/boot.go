package vsphere

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/sendense/sendense/shared/api"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// Boot signals WaitBoot reports (BootSignal.Signal).
const (
	// SignalToolsRunning: VMware Tools in the guest report running (toolsRunningStatus).
	SignalToolsRunning = api.BootSignalTools
	// SignalTCP: the agent connected to the guest's address on the asked TCP port.
	SignalTCP = api.BootSignalTCP
)

// BootSignal is the first sign of a booted guest WaitBoot saw.
type BootSignal struct {
	Signal string
	// IP is the guest's address as its tools report it (empty if they report none).
	IP string
	// At is when the signal was seen.
	At time.Time
}

// ErrNoBootSignal: the guest gave no boot signal before the context ended.
var ErrNoBootSignal = errors.New("no boot signal from the guest")

// WaitBoot polls the VM (by its managed object id) every poll until its guest boots: with
// tcpPort 0, until VMware Tools report running; otherwise until the agent can connect to the
// address the tools report on that port. It ends with ErrNoBootSignal, wrapped with what was
// last seen, when ctx ends first.
func (c *Client) WaitBoot(ctx context.Context, vmRef string, tcpPort int, poll time.Duration) (BootSignal, error) {
	if tcpPort < 0 || tcpPort > 65535 {
		return BootSignal{}, fmt.Errorf("tcp port %d out of range", tcpPort)
	}
	if poll <= 0 {
		poll = time.Second
	}
	ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: vmRef}
	last := "nothing read yet"
	for {
		var vm mo.VirtualMachine
		err := c.collector().RetrieveOne(ctx, ref, []string{"guest.toolsRunningStatus", "guest.ipAddress"}, &vm)
		switch {
		case err != nil && ctx.Err() != nil:
			return BootSignal{}, fmt.Errorf("%w (last seen: %s)", ErrNoBootSignal, last)
		case err != nil && isGone(err):
			return BootSignal{}, fmt.Errorf("vm %s: %w", vmRef, ErrTargetNotFound)
		case err != nil:
			return BootSignal{}, fmt.Errorf("read guest of vm %s: %w", vmRef, err)
		}
		tools, ip := "", ""
		if vm.Guest != nil {
			tools, ip = vm.Guest.ToolsRunningStatus, vm.Guest.IpAddress
		}
		last = "tools " + orNone(tools) + ", address " + orNone(ip)
		if tcpPort == 0 && tools == string(types.VirtualMachineToolsRunningStatusGuestToolsRunning) {
			return BootSignal{Signal: SignalToolsRunning, IP: ip, At: time.Now()}, nil
		}
		if tcpPort > 0 && ip != "" {
			addr := net.JoinHostPort(ip, strconv.Itoa(tcpPort))
			d := net.Dialer{Timeout: min(poll, 5*time.Second)}
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				_ = conn.Close()
				return BootSignal{Signal: SignalTCP, IP: ip, At: time.Now()}, nil
			}
			last += ", connect " + addr + ": " + err.Error()
		}
		select {
		case <-ctx.Done():
			return BootSignal{}, fmt.Errorf("%w (last seen: %s)", ErrNoBootSignal, last)
		case <-time.After(poll):
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
