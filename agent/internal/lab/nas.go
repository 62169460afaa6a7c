package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// The simulator mounts an NFS datastore by taking its LocalPath as a directory on this machine
// and cannot remove a datastore at all (no RemoveDatastore); registering a VM needs the .vmx,
// the nvram and the log to exist, which ESXi makes itself; a Storage vMotion moves no file. The
// lab fills these gaps, so an instant recovery runs against it end to end: mount, register,
// power on, power off, unregister, unmount, or migrate and unmount.

// validNASName is what the lab accepts as an NFS datastore's name.
var validNASName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$`)

// handleNAS prepares the NFS datastore methods before the simulator runs them; a fault it
// returns answers the call.
func (l *Lab) handleNAS(ctx *simulator.Context, m *simulator.Method) types.BaseMethodFault {
	switch m.Name {
	case "CreateNasDatastore":
		req, ok := m.Body.(*types.CreateNasDatastore)
		if !ok {
			return nil
		}
		dir, err := l.nasMount(req.Spec.RemoteHost, req.Spec.RemotePath, req.Spec.LocalPath)
		if err != nil {
			return &types.PlatformConfigFault{HostConfigFault: types.HostConfigFault{}, Text: err.Error()}
		}
		req.Spec.LocalPath = dir
	case "RemoveDatastore":
		dss, ok := ctx.Map.Get(m.This).(*simulator.HostDatastoreSystem)
		if ok {
			ctx.WithLock(dss, func() { ctx.Session.Put(&nasDatastoreSystem{HostDatastoreSystem: dss, lab: l}) })
		}
	case "RegisterVM_Task":
		if req, ok := m.Body.(*types.RegisterVM_Task); ok {
			l.registerFiles(ctx, req)
		}
	case "RelocateVM_Task":
		if req, ok := m.Body.(*types.RelocateVM_Task); ok && req.Spec.Datastore != nil {
			l.relocateFiles(ctx, m.This, *req.Spec.Datastore)
		}
	}
	return nil
}

// relocateFiles does for a Storage vMotion what the simulator leaves out (it only changes the
// VM's datastore list): the VM's folder is copied to the target datastore (what files exist
// there: a flat file served by the hub over NFS has no file in the lab), its .vmx path moves,
// and the datastores' VM lists follow, so that the source datastore can be unmounted.
func (l *Lab) relocateFiles(ctx *simulator.Context, ref, dsRef types.ManagedObjectReference) {
	vm, ok := ctx.Map.Get(ref).(*simulator.VirtualMachine)
	target, ok2 := ctx.Map.Get(dsRef).(*simulator.Datastore)
	if !ok || !ok2 {
		return
	}
	var old []types.ManagedObjectReference
	var vmx string
	ctx.WithLock(vm, func() {
		old = append(old, vm.Datastore...)
		if vm.Config != nil {
			vmx = vm.Config.Files.VmPathName
		}
	})
	dsName, rel, ok := cutDatastorePath(vmx)
	if !ok {
		return
	}
	for _, o := range old {
		src, ok := ctx.Map.Get(o).(*simulator.Datastore)
		if !ok || o == dsRef {
			continue
		}
		if src.Name == dsName {
			from := filepath.Join(src.Summary.Url, filepath.FromSlash(path.Dir(rel)))
			to := filepath.Join(target.Summary.Url, filepath.FromSlash(path.Dir(rel)))
			_ = copyDir(from, to)
		}
		ctx.Map.RemoveReference(ctx, src, &src.Vm, ref)
	}
	ctx.Map.AddReference(ctx, target, &target.Vm, ref)
	moved := "[" + target.Name + "] " + rel
	ctx.WithLock(vm, func() {
		vm.Config.Files.VmPathName = moved
		vm.Summary.Config.VmPathName = moved
	})
}

// copyDir copies the regular files of one directory into another.
func copyDir(from, to string) error {
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// nasMount makes the directory an NFS datastore named name shows, as a link under the lab's
// directory (the simulator names the datastore after the last element of that path).
func (l *Lab) nasMount(remoteHost, remotePath, name string) (string, error) {
	if !validNASName.MatchString(name) {
		return "", fmt.Errorf("nfs datastore name %q: not accepted by the lab", name)
	}
	base := filepath.Join(l.dir, "nas")
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", err
	}
	target := filepath.Join(base, name+".empty")
	if l.nasDir != nil {
		t, err := l.nasDir(remoteHost, remotePath)
		if err != nil {
			return "", fmt.Errorf("mount %s:%s: %w", remoteHost, remotePath, err)
		}
		target = t
	} else if err := os.MkdirAll(target, 0o755); err != nil {
		return "", err
	}
	link := filepath.Join(base, name)
	if cur, err := os.Readlink(link); err == nil && cur == target {
		return link, nil
	}
	_ = os.Remove(link)
	if err := os.Symlink(target, link); err != nil {
		return "", err
	}
	return link, nil
}

// registerFiles makes the nvram and log files ESXi would make for a VM registered from a
// .vmx that exists.
func (l *Lab) registerFiles(ctx *simulator.Context, req *types.RegisterVM_Task) {
	ds, rest, ok := cutDatastorePath(req.Path)
	if !ok {
		return
	}
	var local string
	for _, o := range ctx.Map.All("Datastore") {
		if d, ok := o.(*simulator.Datastore); ok && d.Name == ds {
			local = filepath.Join(d.Summary.Url, filepath.FromSlash(rest))
		}
	}
	if local == "" {
		return
	}
	if _, err := os.Stat(local); err != nil {
		return // the simulator reports it
	}
	name := req.Name
	if name == "" {
		name = path.Dir(rest)
	}
	for _, f := range []string{name + ".nvram", "vmware.log"} {
		p := filepath.Join(filepath.Dir(local), f)
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			_ = os.WriteFile(p, nil, 0o644)
		}
	}
}

// cutDatastorePath splits "[ds] dir/file" into "ds" and "dir/file".
func cutDatastorePath(s string) (string, string, bool) {
	if len(s) < 3 || s[0] != '[' {
		return "", "", false
	}
	for i := 1; i < len(s); i++ {
		if s[i] == ']' {
			rest := s[i+1:]
			for len(rest) > 0 && rest[0] == ' ' {
				rest = rest[1:]
			}
			return s[1:i], rest, true
		}
	}
	return "", "", false
}

// nasDatastoreSystem is a host's datastore system with RemoveDatastore, which the simulator
// lacks: a datastore that holds no VM is removed from its hosts and folder; the directory it
// showed is left alone (unmounting an NFS share deletes nothing on the server).
type nasDatastoreSystem struct {
	*simulator.HostDatastoreSystem
	lab *Lab
}

// RemoveDatastore unmounts the datastore.
func (w *nasDatastoreSystem) RemoveDatastore(ctx *simulator.Context, req *types.RemoveDatastore) soap.HasFault {
	body := new(methods.RemoveDatastoreBody)
	ds, ok := ctx.Map.Get(req.Datastore).(*simulator.Datastore)
	if !ok {
		body.Fault_ = simulator.Fault("", &types.ManagedObjectNotFound{Obj: req.Datastore})
		return body
	}
	if len(ds.Vm) != 0 {
		body.Fault_ = simulator.Fault("", &types.ResourceInUse{Type: ds.Self.Type, Name: ds.Name})
		return body
	}
	res, ok := ds.DestroyTask(ctx, &types.Destroy_Task{This: ds.Self}).(*methods.Destroy_TaskBody)
	if !ok || res.Res == nil {
		body.Fault_ = simulator.Fault("destroy datastore", &types.HostConfigFault{})
		return body
	}
	if t, ok := ctx.Map.Get(res.Res.Returnval).(*simulator.Task); ok {
		t.Wait()
		if t.Info.Error != nil {
			body.Fault_ = simulator.Fault(t.Info.Error.LocalizedMessage, t.Info.Error.Fault)
			return body
		}
	}
	if filepath.Dir(ds.Summary.Url) == filepath.Join(w.lab.dir, "nas") {
		_ = os.Remove(ds.Summary.Url)
	}
	body.Res = new(types.RemoveDatastoreResponse)
	return body
}

// Hosts returns the names of the lab's ESXi hosts.
func (l *Lab) Hosts() []string {
	var out []string
	for _, o := range l.model.Map().All("HostSystem") {
		if h, ok := o.(*simulator.HostSystem); ok {
			out = append(out, h.Name)
		}
	}
	return out
}

// NASDatastore is an NFS datastore mounted in the lab.
type NASDatastore struct {
	Name, RemoteHost, RemotePath string
	Hosts                        int // how many hosts mount it
	VMs                          int
}

// NASDatastores returns the NFS datastores mounted in the lab.
func (l *Lab) NASDatastores() []NASDatastore {
	var out []NASDatastore
	for _, o := range l.model.Map().All("Datastore") {
		ds, ok := o.(*simulator.Datastore)
		if !ok {
			continue
		}
		var n NASDatastore
		ctx := &simulator.Context{Context: context.Background(), Map: l.model.Map()}
		ctx.WithLock(ds, func() {
			if info, ok := ds.Info.(*types.NasDatastoreInfo); ok && info.Nas != nil {
				n = NASDatastore{Name: ds.Name, RemoteHost: info.Nas.RemoteHost, RemotePath: info.Nas.RemotePath, Hosts: len(ds.Host), VMs: len(ds.Vm)}
			}
		})
		if n.Name != "" {
			out = append(out, n)
		}
	}
	return out
}

// RegisteredVM is a VM found by name in the lab, however it was made.
type RegisteredVM struct {
	MoRef, PowerState, VMPathName string
}

// FindVMByName returns the VM of that name, or false.
func (l *Lab) FindVMByName(name string) (RegisteredVM, bool) {
	for _, o := range l.model.Map().All("VirtualMachine") {
		vm, ok := o.(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		var r RegisteredVM
		ctx := &simulator.Context{Context: context.Background(), Map: l.model.Map()}
		ctx.WithLock(vm, func() {
			if vm.Name == name {
				r = RegisteredVM{MoRef: vm.Self.Value, PowerState: string(vm.Runtime.PowerState)}
				if vm.Config != nil {
					r.VMPathName = vm.Config.Files.VmPathName
				}
			}
		})
		if r.MoRef != "" {
			return r, true
		}
	}
	return RegisteredVM{}, false
}

// RenameHost renames an ESXi host, as one added to vCenter by a DNS name or address is named:
// instant recovery lets only the addresses of the host's name mount its export. (The
// simulator's hosts do not implement Rename_Task: the lab renames the object in place.)
func (l *Lab) RenameHost(ctx context.Context, from, to string) error {
	for _, o := range l.model.Map().All("HostSystem") {
		h, ok := o.(*simulator.HostSystem)
		if !ok {
			continue
		}
		found := false
		sctx := &simulator.Context{Context: ctx, Map: l.model.Map()}
		sctx.WithLock(h, func() {
			if h.Name == from {
				h.Name, h.Summary.Config.Name, found = to, to, true
			}
		})
		if found {
			return nil
		}
	}
	return fmt.Errorf("host %s: not in the lab", from)
}
