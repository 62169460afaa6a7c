package backup_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/sendense/sendense/agent/internal/backup"
	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/shared/api"
)

// configureVM gives a lab VM what vcsim does not make by default: two NICs (a standard port
// group with a manual MAC, a distributed port group), a CD-ROM, EFI with secure boot, 4 vCPUs
// in 2 sockets, a CPU reservation, an annotation and extraConfig (boot-relevant and not).
func configureVM(t *testing.T, l *lab.Lab, vm string) {
	t.Helper()
	ctx := t.Context()
	pgKey, _, switchUUID, err := l.DistributedPortgroup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	std := &types.VirtualVmxnet3{}
	std.Key = -1
	std.AddressType = string(types.VirtualEthernetCardMacTypeManual)
	std.MacAddress = "00:50:56:12:34:56"
	std.Backing = &types.VirtualEthernetCardNetworkBackingInfo{VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "VM Network"}}
	std.Connectable = &types.VirtualDeviceConnectInfo{StartConnected: true, Connected: true}
	dv := &types.VirtualE1000e{}
	dv.Key = -2
	dv.Backing = &types.VirtualEthernetCardDistributedVirtualPortBackingInfo{Port: types.DistributedVirtualSwitchPortConnection{PortgroupKey: pgKey, SwitchUuid: switchUUID}}
	dv.Connectable = &types.VirtualDeviceConnectInfo{StartConnected: false}
	cd := &types.VirtualCdrom{}
	cd.Key = -3
	cd.ControllerKey = 200 // the simulator's IDE controller on bus 0
	cd.UnitNumber = types.NewInt32(0)
	cd.Backing = &types.VirtualCdromRemotePassthroughBackingInfo{}
	spec := types.VirtualMachineConfigSpec{
		NumCPUs: 4, NumCoresPerSocket: types.NewInt32(2), MemoryMB: 2048,
		Firmware:      string(types.GuestOsDescriptorFirmwareTypeEfi),
		Annotation:    "web server\nowner: ops",
		CpuAllocation: &types.ResourceAllocationInfo{Reservation: types.NewInt64(500), Limit: types.NewInt64(-1)},
		ExtraConfig: []types.BaseOptionValue{
			&types.OptionValue{Key: "bios.bootOrder", Value: "hdd,cdrom"},
			&types.OptionValue{Key: "ethernet0.pciSlotNumber", Value: "192"},
			&types.OptionValue{Key: "guestinfo.secret", Value: "not for the repository"},
		},
		DeviceChange: []types.BaseVirtualDeviceConfigSpec{
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: std},
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: dv},
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: cd},
		},
	}
	if err := l.Reconfigure(ctx, vm, spec); err != nil {
		t.Fatal(err)
	}
	// Secure boot needs EFI to be in place first.
	if err := l.Reconfigure(ctx, vm, types.VirtualMachineConfigSpec{BootOptions: &types.VirtualMachineBootOptions{EfiSecureBootEnabled: types.NewBool(true)}}); err != nil {
		t.Fatal(err)
	}
}

func vmConfigSpec(vm string) lab.Spec {
	return lab.Spec{VMs: []lab.VMSpec{{Name: vm, CBT: true, Disks: []lab.DiskSpec{
		{Key: 2000, Size: "8MiB"}, {Key: 2001, Size: "12MiB"},
	}}}}
}

// A backup carries the VM's configuration as the snapshot recorded it: GET /backups/{id}/vm
// answers what vCenter says of the VM, the blob lies in the repository under its key with the
// digest the catalog recorded, and `backup show` summarises it.
func TestBackupCarriesVMConfig(t *testing.T) {
	e := newEnv(t, vmConfigSpec("web1"), envOptions{})
	configureVM(t, e.lab, "web1")
	b := e.backup("web1", "")
	if b.Status != api.JobSucceeded {
		t.Fatalf("backup: %+v\n%s", b, e.logs)
	}
	var got api.VMConfig
	if code := e.api(http.MethodGet, api.Path(api.PathBackupVM, b.ID), nil, &got); code != http.StatusOK {
		t.Fatalf("GET vm: %d", code)
	}
	want, err := e.lab.Config(t.Context(), "web1")
	if err != nil {
		t.Fatal(err)
	}
	checkVMConfig(t, got, want)

	// The blob, under its key in the default repository, hashes to the catalog's digest.
	if b.VMConfig == nil || b.VMConfig.NumCPU != 4 || b.VMConfig.NICs != 2 || b.VMConfig.Disks != 2 || b.VMConfig.Firmware != "efi" {
		t.Fatalf("backup summary: %+v", b.VMConfig)
	}
	blob, err := os.ReadFile(filepath.Join(e.hub.DataDir, "repositories", "default", "vmconfigs", want.InstanceUuid, b.ID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(blob)
	if hex.EncodeToString(sum[:]) != b.VMConfig.Digest {
		t.Fatalf("the blob's sha-256 is %x, the catalog recorded %s", sum, b.VMConfig.Digest)
	}
	var stored api.VMConfig
	if err := json.Unmarshal(blob, &stored); err != nil || stored.Name != "web1" || len(stored.NICs) != 2 {
		t.Fatalf("stored config: %+v %v", stored, err)
	}
	var shown api.Backup
	if err := json.Unmarshal([]byte(e.hub.CLI("backup", "show", b.ID)), &shown); err != nil || shown.VMConfig == nil || *shown.VMConfig != *b.VMConfig {
		t.Fatalf("backup show: %+v %v", shown.VMConfig, err)
	}
}

func checkVMConfig(t *testing.T, got api.VMConfig, want *types.VirtualMachineConfigInfo) {
	t.Helper()
	errorf := func(format string, args ...any) { t.Errorf("vm config: "+format, args...) }
	if got.Version != api.VMConfigVersion || got.InstanceUUID != want.InstanceUuid || got.BIOSUUID != want.Uuid || got.Name != want.Name {
		errorf("identity %d %s %s %s", got.Version, got.InstanceUUID, got.BIOSUUID, got.Name)
	}
	if got.NumCPU != want.Hardware.NumCPU || got.NumCPU != 4 || got.CoresPerSocket != *want.Hardware.NumCoresPerSocket || got.MemoryMB != int64(want.Hardware.MemoryMB) {
		errorf("cpu %d/%d memory %d; vcsim says %d/%d %d", got.NumCPU, got.CoresPerSocket, got.MemoryMB, want.Hardware.NumCPU, *want.Hardware.NumCoresPerSocket, want.Hardware.MemoryMB)
	}
	if got.Firmware != "efi" || got.Firmware != want.Firmware || !got.SecureBoot || got.HardwareVersion != want.Version || got.GuestID != want.GuestId {
		errorf("firmware %s secure boot %v hw %s guest %s; vcsim says %s %s %s", got.Firmware, got.SecureBoot, got.HardwareVersion, got.GuestID, want.Firmware, want.Version, want.GuestId)
	}
	if got.Annotation != want.Annotation || got.CPUAllocation == nil || got.CPUAllocation.Reservation != 500 || got.CPUAllocation.Limit != -1 {
		errorf("annotation %q cpu allocation %+v", got.Annotation, got.CPUAllocation)
	}
	if len(got.ExtraConfig) != 2 || got.ExtraConfig["bios.bootOrder"] != "hdd,cdrom" || got.ExtraConfig["ethernet0.pciSlotNumber"] != "192" {
		errorf("extra config %v: want exactly the two boot-relevant keys", got.ExtraConfig)
	}

	ctrls := map[int32]api.VMController{}
	for _, c := range got.Controllers {
		ctrls[c.Key] = c
	}
	var disks, nics, cdroms []string
	for _, dev := range want.Hardware.Device {
		switch d := dev.(type) {
		case *types.ParaVirtualSCSIController:
			if c, ok := ctrls[d.Key]; !ok || c.Type != "pvscsi" || c.BusNumber != d.BusNumber || c.Sharing != string(d.SharedBus) {
				errorf("controller %d: %+v", d.Key, c)
			}
		case *types.VirtualIDEController:
			if c, ok := ctrls[d.Key]; !ok || c.Type != "ide" || c.BusNumber != d.BusNumber {
				errorf("controller %d: %+v", d.Key, c)
			}
		case *types.VirtualDisk:
			disks = append(disks, fmt.Sprintf("disk-%d %d bytes on %d unit %d", d.Key, d.CapacityInBytes, d.ControllerKey, *d.UnitNumber))
		case types.BaseVirtualEthernetCard:
			c := d.GetVirtualEthernetCard()
			net := ""
			switch b := c.Backing.(type) {
			case *types.VirtualEthernetCardNetworkBackingInfo:
				net = "network " + b.DeviceName
			case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
				net = "distributed " + b.Port.PortgroupKey + " " + b.Port.SwitchUuid
			}
			typ := map[bool]string{true: "vmxnet3", false: "e1000e"}[fmt.Sprintf("%T", d) == "*types.VirtualVmxnet3"]
			nics = append(nics, fmt.Sprintf("%d %s %s %s %s %v", c.Key, typ, net, c.MacAddress, c.AddressType, c.Connectable.StartConnected))
		case *types.VirtualCdrom:
			cdroms = append(cdroms, fmt.Sprintf("%d on %d unit %d", d.Key, d.ControllerKey, *d.UnitNumber))
		}
	}
	var gotDisks, gotNICs, gotCDROMs []string
	for _, d := range got.Disks {
		gotDisks = append(gotDisks, fmt.Sprintf("%s %d bytes on %d unit %d", d.DiskID, d.CapacityBytes, d.Controller.Key, d.UnitNumber))
		if d.Controller.Type != "pvscsi" || d.Provisioning != "thin" || d.Mode != "persistent" || d.Datastore != "LocalDS_0" {
			errorf("disk %s: %+v", d.DiskID, d)
		}
	}
	for _, n := range got.NICs {
		net := n.BackingType + " " + n.Network
		if n.BackingType == "distributed" {
			net = n.BackingType + " " + n.PortgroupKey + " " + n.SwitchUUID
			if n.Network == "" {
				errorf("nic %d: no port group name", n.Key)
			}
		}
		gotNICs = append(gotNICs, fmt.Sprintf("%d %s %s %s %s %v", n.Key, n.AdapterType, net, n.MACAddress, n.AddressType, n.StartConnected))
	}
	for _, c := range got.CDROMs {
		gotCDROMs = append(gotCDROMs, fmt.Sprintf("%d on %d unit %d", c.Key, c.Controller.Key, c.UnitNumber))
	}
	for _, l := range []struct {
		what      string
		got, want []string
	}{{"disks", gotDisks, disks}, {"nics", gotNICs, nics}, {"cdroms", gotCDROMs, cdroms}} {
		if strings.Join(l.got, "\n") != strings.Join(l.want, "\n") || len(l.want) == 0 {
			errorf("%s:\n%s\nvcsim says:\n%s", l.what, strings.Join(l.got, "\n"), strings.Join(l.want, "\n"))
		}
	}
	if len(nics) != 2 || len(disks) != 2 {
		errorf("the lab VM has %d NICs and %d disks, want 2 and 2", len(nics), len(disks))
	}
}

// oldAgent is an agent that does not send a VM configuration; it first tries two the hub must
// refuse.
type oldAgent struct {
	*hubclient.Client
	refused []int
}

func (a *oldAgent) PutVMConfig(ctx context.Context, jobID string, cfg api.VMConfig) error {
	bad := cfg
	bad.Name = "web1\x1b]0;owned\x07"
	long := cfg
	long.Annotation = strings.Repeat("x", api.MaxAnnotationLen+1)
	for _, c := range []api.VMConfig{bad, long} {
		err := a.Client.PutVMConfig(ctx, jobID, c)
		var he *hubclient.Error
		if !errors.As(err, &he) {
			return fmt.Errorf("a bad configuration was not refused: %v", err)
		}
		a.refused = append(a.refused, he.Status)
	}
	return nil
}

// A configuration with a control character or an oversized field is refused with 400 and
// changes nothing; a backup without a configuration answers 404 with a JSON error.
func TestBackupWithoutVMConfig(t *testing.T) {
	e := newEnv(t, vmConfigSpec("old1"), envOptions{})
	agent := &oldAgent{Client: e.hc}
	runner := backup.NewRunner(agent, func(name string) (backup.Source, error) {
		c, err := e.srcs.Get(name)
		if err != nil {
			return nil, err
		}
		return c, nil
	}, slog.New(slog.DiscardHandler), nil,
		backup.RunnerOptions{ProgressInterval: 200 * time.Millisecond})
	queued := e.startBackup("old1", "")
	job, err := e.hc.NextJob(t.Context(), 10*time.Second, nil)
	if err != nil || job == nil || job.ID != queued.ID {
		t.Fatalf("claim: %+v %v", job, err)
	}
	if err := runner.Run(t.Context(), job); err != nil {
		t.Fatalf("backup: %v\n%s", err, e.logs)
	}
	if fmt.Sprint(agent.refused) != "[400 400]" {
		t.Fatalf("bad configurations answered %v, want [400 400]", agent.refused)
	}
	b := e.get(job.ID)
	if b.Status != api.JobSucceeded || b.VMConfig != nil {
		t.Fatalf("backup: %s, vm config %+v", b.Status, b.VMConfig)
	}
	var body api.Error
	if code := e.apiError(http.MethodGet, api.Path(api.PathBackupVM, b.ID), &body); code != http.StatusNotFound || body.Code != api.CodeNotFound || !strings.Contains(body.Error, "no VM configuration") {
		t.Fatalf("GET vm of a backup without one: %d %+v", code, body)
	}
	info, _ := e.lab.VM("old1")
	if _, err := os.Stat(filepath.Join(e.hub.DataDir, "repositories", "default", "vmconfigs", info.InstanceUUID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused configuration left something in the repository: %v", err)
	}
}

// apiError calls the operator API and decodes the error body of a refused request.
func (e *env) apiError(method, path string, out *api.Error) int {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(e.t.Context(), method, e.hub.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+e.operator)
	resp, err := e.op.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, out); err != nil {
		e.t.Fatalf("%s %s: %d, not a JSON error body: %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// slowConfigAgent is an agent whose VM configuration reaches the hub only after a disk was
// committed, or, with refuse set, is refused.
type slowConfigAgent struct {
	*hubclient.Client
	committed chan struct{}
	once      sync.Once
	refuse    bool
}

func (a *slowConfigAgent) Commit(ctx context.Context, sessionID string, req api.CommitRequest) (api.BackupDisk, error) {
	bd, err := a.Client.Commit(ctx, sessionID, req)
	if err == nil {
		a.once.Do(func() { close(a.committed) })
	}
	return bd, err
}

func (a *slowConfigAgent) PutVMConfig(ctx context.Context, jobID string, cfg api.VMConfig) error {
	if a.refuse {
		return errors.New("the link dropped the VM configuration")
	}
	select {
	case <-a.committed:
		return a.Client.PutVMConfig(ctx, jobID, cfg)
	case <-time.After(30 * time.Second):
		return errors.New("the disks waited for the VM configuration")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runWith runs the next backup of vm with hub as the agent's side of the hub.
func (e *env) runWith(hub *slowConfigAgent, vm string) (api.Backup, error) {
	e.t.Helper()
	runner := backup.NewRunner(hub, func(name string) (backup.Source, error) {
		c, err := e.srcs.Get(name)
		if err != nil {
			return nil, err
		}
		return c, nil
	}, slog.New(slog.DiscardHandler), nil, backup.RunnerOptions{ProgressInterval: 200 * time.Millisecond})
	queued := e.startBackup(vm, "")
	job, err := e.hc.NextJob(e.t.Context(), 10*time.Second, nil)
	if err != nil || job == nil || job.ID != queued.ID {
		e.t.Fatalf("claim: %+v %v", job, err)
	}
	err = runner.Run(e.t.Context(), job)
	return e.get(job.ID), err
}

// The VM configuration travels beside the disks, not before them (over a long link each round
// trip waited for is time lost): here it reaches the hub only after a disk was committed, and
// the backup succeeds with it. When it cannot be stored, the backup fails (no restore point),
// though its disks were sent.
func TestVMConfigTravelsBesideTheDisks(t *testing.T) {
	e := newEnv(t, vmConfigSpec("web1"), envOptions{})
	configureVM(t, e.lab, "web1")
	b, err := e.runWith(&slowConfigAgent{Client: e.hc, committed: make(chan struct{})}, "web1")
	if err != nil || b.Status != api.JobSucceeded || b.VMConfig == nil || b.VMConfig.NICs != 2 {
		t.Fatalf("backup: %v %s, vm config %+v\n%s", err, b.Status, b.VMConfig, e.logs)
	}

	b, err = e.runWith(&slowConfigAgent{Client: e.hc, committed: make(chan struct{}), refuse: true}, "web1")
	if err == nil || b.Status != api.JobFailed || !strings.Contains(b.Error, "send the VM configuration: the link dropped") {
		t.Fatalf("backup without its configuration: %v %s %q", err, b.Status, b.Error)
	}
}
