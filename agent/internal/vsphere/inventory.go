package vsphere

import (
	"cmp"
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"golang.org/x/sync/errgroup"

	"github.com/sendense/sendense/shared/api"
)

// vmProperties are the only VirtualMachine properties discovery retrieves. config.hardware.device
// is the bulk of the answer; everything else is a few bytes.
var vmProperties = []string{
	"name", "parent", "parentVApp",
	"config.instanceUuid", "config.uuid", "config.guestId", "config.guestFullName",
	"config.hardware.numCPU", "config.hardware.memoryMB", "config.hardware.device",
	"config.changeTrackingEnabled", "config.template",
	"runtime.powerState", "runtime.host",
}

// entity is a managed entity's name and parent, enough to build inventory paths.
type entity struct {
	kind   string
	name   string
	parent types.ManagedObjectReference // zero for the root folder
}

// datacenter is one datacenter of the inventory.
type datacenter struct {
	ref  types.ManagedObjectReference
	name string
	path string // inventory path, "/DC0" or "/F0/DC0"
}

// Inventory lists every VM and disk of the configured datacenters. It makes, per datacenter,
// one container view and one property retrieval (with continuation) for VMs, hosts, clusters,
// datastores and vApps, and resolves names through maps, so its cost grows with the number
// of datacenters, not of VMs. VMs whose configuration is unreadable (inaccessible, orphaned)
// are left out and logged.
func (c *Client) Inventory(ctx context.Context) (api.Inventory, error) {
	start := c.now()
	dcs, folders, err := c.datacenters(ctx)
	if err != nil {
		return api.Inventory{}, err
	}
	sourceUUID, err := c.sourceUUID(ctx)
	if err != nil {
		return api.Inventory{}, err
	}
	inv := api.Inventory{
		Source: api.Source{
			Name:         c.cfg.Name,
			URL:          c.cfg.sdkURL().String(),
			APIType:      c.about.ApiType,
			Version:      c.about.ApiVersion,
			InstanceUUID: sourceUUID,
		},
		CollectedAt: start.UTC(),
		VMs:         []api.VM{},
	}
	for _, dc := range dcs {
		vms, err := c.datacenterVMs(ctx, dc, folders)
		if err != nil {
			return api.Inventory{}, err
		}
		inv.VMs = append(inv.VMs, vms...)
	}
	slices.SortFunc(inv.VMs, func(a, b api.VM) int {
		return cmp.Or(cmp.Compare(a.Datacenter, b.Datacenter), cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.InstanceUUID, b.InstanceUUID))
	})
	c.log.Debug("vsphere inventory collected", "datacenters", len(dcs), "vms", len(inv.VMs),
		"duration_seconds", time.Since(start).Seconds())
	return inv, nil
}

// sourceUUID identifies the source for the hub: the vCenter's about.instanceUuid, or, for an
// ESXi host answering directly (which has none), the host's hardware UUID. vSphere reports both
// in lowercase; they are lowercased anyway, the form the hub accepts.
func (c *Client) sourceUUID(ctx context.Context) (string, error) {
	if c.about.InstanceUuid != "" {
		return strings.ToLower(c.about.InstanceUuid), nil
	}
	objs, err := c.retrieveView(ctx, c.vc.ServiceContent.RootFolder, map[string][]string{"HostSystem": {"hardware.systemInfo.uuid"}})
	if err != nil {
		return "", fmt.Errorf("read host uuid: %w", err)
	}
	if len(objs) != 1 {
		return "", fmt.Errorf("source %s has no instance uuid and %d hosts: cannot identify it", c.cfg.Name, len(objs))
	}
	for _, p := range objs[0].PropSet {
		if s, ok := p.Val.(string); ok && p.Name == "hardware.systemInfo.uuid" && s != "" {
			return strings.ToLower(s), nil
		}
	}
	return "", fmt.Errorf("source %s has no instance uuid and its host reports no hardware uuid", c.cfg.Name)
}

// datacenters returns the selected datacenters and every folder of the inventory (for paths).
// A datacenter named in Config.Datacenters that does not exist is an ErrDatacenterNotFound.
func (c *Client) datacenters(ctx context.Context) ([]datacenter, map[types.ManagedObjectReference]entity, error) {
	objs, err := c.retrieveView(ctx, c.vc.ServiceContent.RootFolder, map[string][]string{
		"Datacenter": {"name", "parent"},
		"Folder":     {"name", "parent"},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list datacenters: %w", err)
	}
	ents := make(map[types.ManagedObjectReference]entity, len(objs))
	for _, o := range objs {
		e := entity{kind: o.Obj.Type}
		for _, p := range o.PropSet {
			switch p.Name {
			case "name":
				e.name, _ = p.Val.(string)
			case "parent":
				e.parent, _ = p.Val.(types.ManagedObjectReference)
			}
		}
		ents[o.Obj] = e
	}
	var all, out []datacenter
	for ref, e := range ents {
		if e.kind == "Datacenter" {
			all = append(all, datacenter{ref: ref, name: e.name, path: entityPath(ents, ref)})
		}
	}
	slices.SortFunc(all, func(a, b datacenter) int { return cmp.Compare(a.path, b.path) })
	for _, dc := range all {
		if c.wantDatacenter(dc.name, dc.path) {
			out = append(out, dc)
		}
	}
	for _, want := range c.cfg.Datacenters {
		if !slices.ContainsFunc(all, func(dc datacenter) bool {
			return dc.name == want || strings.Trim(dc.path, "/") == strings.Trim(want, "/")
		}) {
			return nil, nil, fmt.Errorf("%w: %q (configured in datacenters of source %s)", ErrDatacenterNotFound, want, c.cfg.Name)
		}
	}
	return out, ents, nil
}

// entityPath builds the inventory path of ref ("/DC0/vm/prod") from a name/parent map. The
// root folder (the entity without parent) is not part of paths. Unknown entities end the walk.
func entityPath(ents map[types.ManagedObjectReference]entity, ref types.ManagedObjectReference) string {
	var parts []string
	for i := 0; i < 64; i++ { // inventories are shallow; the bound only guards against cycles
		e, ok := ents[ref]
		if !ok || e.parent.Value == "" {
			break
		}
		parts = append(parts, e.name)
		ref = e.parent
	}
	slices.Reverse(parts)
	return "/" + strings.Join(parts, "/")
}

// datacenterVMs lists the VMs of one datacenter.
func (c *Client) datacenterVMs(ctx context.Context, dc datacenter, folders map[types.ManagedObjectReference]entity) ([]api.VM, error) {
	var objs []types.ObjectContent
	var found []foundVM
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		objs, err = c.retrieveView(gctx, dc.ref, map[string][]string{
			"HostSystem":             {"name", "parent"},
			"ComputeResource":        {"name"},
			"ClusterComputeResource": {"name"},
			"Datastore":              {"name"},
			"VirtualApp":             {"name", "parentFolder", "parentVApp"},
		})
		return err
	})
	g.Go(func() error {
		var err error
		found, err = c.retrieveVMs(gctx, dc.ref)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("list vms of datacenter %s: %w", dc.path, err)
	}

	names := make(map[types.ManagedObjectReference]string) // hosts, clusters, datastores, vApps
	hostParent := make(map[types.ManagedObjectReference]types.ManagedObjectReference)
	vappParent := make(map[types.ManagedObjectReference]types.ManagedObjectReference)
	for _, o := range objs {
		for _, p := range o.PropSet {
			switch p.Name {
			case "name":
				names[o.Obj], _ = p.Val.(string)
			case "parent":
				hostParent[o.Obj], _ = p.Val.(types.ManagedObjectReference)
			case "parentFolder", "parentVApp":
				if ref, ok := p.Val.(types.ManagedObjectReference); ok {
					vappParent[o.Obj] = ref
				}
			}
		}
	}

	// folderPath resolves a VM's folder: a Folder, or a vApp (itself in a folder or a vApp).
	var folderPath func(ref types.ManagedObjectReference, depth int) string
	folderPath = func(ref types.ManagedObjectReference, depth int) string {
		if ref.Type == "VirtualApp" && depth < 16 {
			parent, ok := vappParent[ref]
			if !ok {
				return ""
			}
			return path.Join(folderPath(parent, depth+1), names[ref])
		}
		return entityPath(folders, ref)
	}

	vms := make([]api.VM, len(found))
	for i := range found {
		vms[i] = found[i].resolve(dc, names, hostParent, folderPath)
	}
	return vms, nil
}

// foundVM is one VM as read from vSphere, before the names of its host, cluster, folder and
// datastores are known. It keeps none of the properties' bulk (the device list), so a large
// inventory is held in this form while its pages arrive.
type foundVM struct {
	vm                       api.VM // without Datacenter, Host, Cluster, Folder and Disks
	parent, parentVApp, host types.ManagedObjectReference
	disks                    []foundDisk
}

// foundDisk is one disk of a foundVM: the wire type, with the datastore its backing names (zero
// when none) still to be resolved.
type foundDisk struct {
	disk      api.Disk // Datastore: the name in the backing file's path, the fallback
	datastore types.ManagedObjectReference
}

// readVM takes from one VirtualMachine's properties what the inventory needs. It reports false
// (and logs) for a VM without readable configuration.
func (c *Client) readVM(o types.ObjectContent) (foundVM, bool) {
	var f foundVM
	vm := &f.vm
	vm.MoRef = o.Obj.Value
	var devices object.VirtualDeviceList
	var guestID, guestFull string
	for _, p := range o.PropSet {
		switch p.Name {
		case "name":
			vm.Name, _ = p.Val.(string)
		case "parent":
			f.parent, _ = p.Val.(types.ManagedObjectReference)
		case "parentVApp":
			f.parentVApp, _ = p.Val.(types.ManagedObjectReference)
		case "config.instanceUuid":
			vm.InstanceUUID, _ = p.Val.(string)
		case "config.uuid":
			vm.BIOSUUID, _ = p.Val.(string)
		case "config.guestId":
			guestID, _ = p.Val.(string)
		case "config.guestFullName":
			guestFull, _ = p.Val.(string)
		case "config.hardware.numCPU":
			n, _ := p.Val.(int32)
			vm.NumCPU = int(n)
		case "config.hardware.memoryMB":
			n, _ := p.Val.(int32)
			vm.MemoryMB = int64(n)
		case "config.hardware.device":
			if a, ok := p.Val.(types.ArrayOfVirtualDevice); ok {
				devices = a.VirtualDevice
			}
		case "config.changeTrackingEnabled":
			vm.CBTEnabled, _ = p.Val.(bool)
		case "config.template":
			vm.Template, _ = p.Val.(bool)
		case "runtime.powerState":
			if s, ok := p.Val.(types.VirtualMachinePowerState); ok {
				vm.PowerState = string(s)
			}
		case "runtime.host":
			f.host, _ = p.Val.(types.ManagedObjectReference)
		}
	}
	if vm.InstanceUUID == "" {
		reason := "configuration unreadable"
		if len(o.MissingSet) > 0 {
			reason = fmt.Sprintf("property %s: %T", o.MissingSet[0].Path, o.MissingSet[0].Fault.Fault)
		}
		c.log.Warn("vm left out of inventory: no instance uuid", "moref", vm.MoRef, "vm_name", vm.Name, "reason", reason)
		return foundVM{}, false
	}
	vm.GuestOS = cmp.Or(guestFull, guestID)
	for _, d := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		facts := describeDisk(d.(*types.VirtualDisk), devices)
		fd := foundDisk{disk: facts.apiDisk(datastoreFromPath(facts.fileName))}
		if facts.datastoreRef != nil {
			fd.datastore = *facts.datastoreRef
		}
		f.disks = append(f.disks, fd)
	}
	slices.SortFunc(f.disks, func(a, b foundDisk) int { return cmp.Compare(a.disk.Key, b.disk.Key) })
	return f, true
}

// resolve returns the VM in the wire type, in datacenter dc, its host, cluster and datastores
// named from names (a host's parent in hostParent) and its folder by folderPath.
func (f *foundVM) resolve(dc datacenter, names map[types.ManagedObjectReference]string,
	hostParent map[types.ManagedObjectReference]types.ManagedObjectReference,
	folderPath func(types.ManagedObjectReference, int) string,
) api.VM {
	vm := f.vm
	vm.Datacenter = dc.name
	if f.host.Value != "" {
		vm.Host = names[f.host]
		if cr := hostParent[f.host]; cr.Type == "ClusterComputeResource" {
			vm.Cluster = names[cr]
		}
	}
	switch {
	case f.parent.Value != "":
		vm.Folder = folderPath(f.parent, 0)
	case f.parentVApp.Value != "":
		vm.Folder = folderPath(f.parentVApp, 0)
	}
	vm.Disks = make([]api.Disk, len(f.disks))
	for i, fd := range f.disks {
		vm.Disks[i] = fd.disk
		if ds := names[fd.datastore]; fd.datastore.Value != "" && ds != "" {
			vm.Disks[i].Datastore = ds
		}
	}
	return vm
}

// retrieveVMs retrieves vmProperties of every VM under container. A large inventory is read
// in up to c.streams retrievals at once, each over a contiguous part of the VM list: the
// server encodes one answer while the agent decodes another, where one retrieval with
// continuation leaves each side idle while the other works. A VM removed between listing and
// reading makes its part fail with ManagedObjectNotFound; the whole list is then read again
// through one view, which skips removed VMs. Each answer is read into foundVMs as it arrives:
// the device lists, the bulk of an answer, are garbage by the next one, so a large inventory
// is read within a small heap (a daemon's heap is bounded).
func (c *Client) retrieveVMs(ctx context.Context, container types.ManagedObjectReference) ([]foundVM, error) {
	read := func(dst *[]foundVM) func([]types.ObjectContent) {
		return func(objs []types.ObjectContent) {
			for _, o := range objs {
				if f, ok := c.readVM(o); ok {
					*dst = append(*dst, f)
				}
			}
		}
	}
	viaView := func() ([]foundVM, error) {
		var found []foundVM
		err := c.viewPages(ctx, container, map[string][]string{"VirtualMachine": vmProperties}, read(&found))
		return found, err
	}
	refs, err := c.viewMembers(ctx, container, "VirtualMachine")
	if err != nil {
		return nil, err
	}
	page := max(int(c.pageSize), 1)
	streams := min(c.streams, (len(refs)+page-1)/page)
	if streams <= 1 {
		return viaView()
	}
	parts := make([][]foundVM, streams)
	g, gctx := errgroup.WithContext(ctx)
	for i := range streams {
		lo, hi := i*len(refs)/streams, (i+1)*len(refs)/streams
		g.Go(func() error {
			return c.objectPages(gctx, refs[lo:hi], "VirtualMachine", vmProperties, read(&parts[i]))
		})
	}
	if err := g.Wait(); err != nil {
		if fault.Is(err, &types.ManagedObjectNotFound{}) && ctx.Err() == nil {
			c.log.Debug("a vm went away while the inventory was read; reading it again through one view", "err", err)
			return viaView()
		}
		return nil, err
	}
	return slices.Concat(parts...), nil
}

// destroyView destroys a container view, also after ctx has ended (a view lives as long as the
// session otherwise).
func (c *Client) destroyView(ctx context.Context, v *view.ContainerView) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := v.Destroy(dctx); err != nil {
		c.log.Debug("destroy container view", "err", err)
	}
}

// viewMembers lists the objects of one kind under container through a container view.
func (c *Client) viewMembers(ctx context.Context, container types.ManagedObjectReference, kind string) ([]types.ManagedObjectReference, error) {
	v, err := view.NewManager(c.vc).CreateContainerView(ctx, container, []string{kind}, true)
	if err != nil {
		return nil, fmt.Errorf("create container view: %w", err)
	}
	defer c.destroyView(ctx, v)
	var cv mo.ContainerView
	if err := property.DefaultCollector(c.vc).RetrieveOne(ctx, v.Reference(), []string{"view"}, &cv); err != nil {
		return nil, fmt.Errorf("list %s objects: %w", kind, err)
	}
	return cv.View, nil
}

// objectPages retrieves the given properties of the listed objects of one kind and hands each
// answer to each (see retrievePages).
func (c *Client) objectPages(ctx context.Context, refs []types.ManagedObjectReference, kind string, props []string, each func([]types.ObjectContent)) error {
	set := make([]types.ObjectSpec, len(refs))
	for i, r := range refs {
		set[i] = types.ObjectSpec{Obj: r}
	}
	return c.retrievePages(ctx, types.RetrievePropertiesEx{
		This:    c.vc.ServiceContent.PropertyCollector,
		Options: types.RetrieveOptions{MaxObjects: c.pageSize},
		SpecSet: []types.PropertyFilterSpec{{ObjectSet: set, PropSet: []types.PropertySpec{{Type: kind, PathSet: props}}}},
	}, each)
}

// retrievePages runs one property retrieval and hands each answer's objects to each, in order,
// following continuation tokens; a retrieval that fails midway is cancelled on the server. each
// keeps nothing of what it is handed that it does not need: the answers are not collected.
func (c *Client) retrievePages(ctx context.Context, req types.RetrievePropertiesEx, each func([]types.ObjectContent)) error {
	res, err := methods.RetrievePropertiesEx(ctx, c.vc, &req)
	if err != nil {
		return fmt.Errorf("retrieve properties: %w", err)
	}
	if res.Returnval == nil {
		return nil
	}
	each(res.Returnval.Objects)
	token := res.Returnval.Token
	for token != "" {
		next, err := methods.ContinueRetrievePropertiesEx(ctx, c.vc, &types.ContinueRetrievePropertiesEx{This: req.This, Token: token})
		if err != nil {
			c.cancelRetrieval(ctx, req.This, token)
			return fmt.Errorf("retrieve properties (continued): %w", err)
		}
		each(next.Returnval.Objects)
		token = next.Returnval.Token
	}
	return nil
}

// cancelRetrieval frees the server's state of a retrieval left unfinished, also after ctx has
// ended; a failure only leaves it to the session's end.
func (c *Client) cancelRetrieval(ctx context.Context, collector types.ManagedObjectReference, token string) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := methods.CancelRetrievePropertiesEx(cctx, c.vc, &types.CancelRetrievePropertiesEx{This: collector, Token: token}); err != nil {
		c.log.Debug("cancel property retrieval", "err", err)
	}
}

// retrieveView is viewPages collecting every answer.
func (c *Client) retrieveView(ctx context.Context, container types.ManagedObjectReference, props map[string][]string) ([]types.ObjectContent, error) {
	var objs []types.ObjectContent
	err := c.viewPages(ctx, container, props, func(page []types.ObjectContent) { objs = append(objs, page...) })
	return objs, err
}

// viewPages creates a recursive container view of the given kinds under container, retrieves
// the given properties per kind, handing each answer to each (see retrievePages), and destroys
// the view. The view is session-scoped; creating it is the call that re-logs in after a lost
// session.
func (c *Client) viewPages(ctx context.Context, container types.ManagedObjectReference, props map[string][]string, each func([]types.ObjectContent)) error {
	kinds := make([]string, 0, len(props))
	for k := range props {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	v, err := view.NewManager(c.vc).CreateContainerView(ctx, container, kinds, true)
	if err != nil {
		return fmt.Errorf("create container view: %w", err)
	}
	defer c.destroyView(ctx, v)
	specs := make([]types.PropertySpec, 0, len(kinds))
	for _, k := range kinds {
		specs = append(specs, types.PropertySpec{Type: k, PathSet: props[k]})
	}
	return c.retrievePages(ctx, types.RetrievePropertiesEx{
		This:    c.vc.ServiceContent.PropertyCollector,
		Options: types.RetrieveOptions{MaxObjects: c.pageSize},
		SpecSet: []types.PropertyFilterSpec{{
			ObjectSet: []types.ObjectSpec{{
				Obj:  v.Reference(),
				Skip: types.NewBool(true),
				SelectSet: []types.BaseSelectionSpec{&types.TraversalSpec{
					Type: "ContainerView",
					Path: "view",
				}},
			}},
			PropSet: specs,
		}},
	}, each)
}
