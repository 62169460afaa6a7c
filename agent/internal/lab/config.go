package lab

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// Reconfigure applies spec to a lab VM (ReconfigVM_Task) and waits: tests give a VM NICs,
// CD-ROMs, firmware or extraConfig this way.
func (l *Lab) Reconfigure(ctx context.Context, vmName string, spec types.VirtualMachineConfigSpec) error {
	ref, err := l.lookup(vmName)
	if err != nil {
		return err
	}
	task, err := object.NewVirtualMachine(l.client, ref).Reconfigure(ctx, spec)
	_, err = l.waitTask(ctx, "reconfigure vm "+vmName, task, err)
	return err
}

// Config reads a lab VM's current configuration through the vSphere API, as a client would.
func (l *Lab) Config(ctx context.Context, vmName string) (*types.VirtualMachineConfigInfo, error) {
	ref, err := l.lookup(vmName)
	if err != nil {
		return nil, err
	}
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(l.client).RetrieveOne(ctx, ref, []string{"config"}, &vm); err != nil {
		return nil, fmt.Errorf("read config of vm %s: %w", vmName, err)
	}
	if vm.Config == nil {
		return nil, fmt.Errorf("vm %s has no config", vmName)
	}
	return vm.Config, nil
}

// DistributedPortgroup returns a distributed port group of the lab (the simulator makes one):
// its key, name and the uuid of its switch.
func (l *Lab) DistributedPortgroup(ctx context.Context) (key, name, switchUUID string, err error) {
	pg := l.model.Map().Any("DistributedVirtualPortgroup")
	if pg == nil {
		return "", "", "", errors.New("the lab has no distributed port group")
	}
	var p mo.DistributedVirtualPortgroup
	pc := property.DefaultCollector(l.client)
	if err := pc.RetrieveOne(ctx, pg.Reference(), []string{"key", "name", "config.distributedVirtualSwitch"}, &p); err != nil {
		return "", "", "", fmt.Errorf("read port group: %w", err)
	}
	if p.Config.DistributedVirtualSwitch == nil {
		return "", "", "", errors.New("the port group has no switch")
	}
	var sw mo.DistributedVirtualSwitch
	if err := pc.RetrieveOne(ctx, *p.Config.DistributedVirtualSwitch, []string{"uuid"}, &sw); err != nil {
		return "", "", "", fmt.Errorf("read switch: %w", err)
	}
	return p.Key, p.Name, sw.Uuid, nil
}
