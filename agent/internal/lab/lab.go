// Package lab runs a simulated vCenter (govmomi's vcsim) whose virtual machines have real disk
// bytes and Changed Block Tracking, so tests, the demo and benchmarks exercise discovery,
// snapshots, QueryChangedDiskAreas and disk reads without a real vSphere.
//
// What a client sees:
//   - A disk backing's FileName names the descriptor, "[LocalDS_0] pgtest1/pgtest1.vmdk"; the raw
//     bytes are in the extent it names, "[LocalDS_0] pgtest1/pgtest1-flat.vmdk", readable with
//     Range requests at /folder/pgtest1/pgtest1-flat.vmdk?dcPath=DC0&dsName=LocalDS_0.
//   - With CBT on, each snapshot stamps every tracked disk's ChangeId "<uuid>/<n>", the UUID in
//     vSphere's "52 xx xx xx xx xx xx xx-xx xx xx xx xx xx xx xx" form. QueryChangedDiskAreas
//     answers one window (Options.QueryWindow) per call; "*" lists the allocated areas.
//   - Imports (ResourcePool.ImportVApp) keep what is uploaded into their lease: a
//     stream-optimized VMDK is written, sparsely, into the new disk's flat file; leases expire
//     without renewal (Options.LeaseTimeout). See nfc.go.
//   - Faults: FileFault when change tracking is off, unsupported (independent disks,
//     DiskSpec.CBTUnsupported) or was reset since the change ID or snapshot; InvalidArgument for
//     a malformed change ID, one newer than the snapshot, an unknown device key or an offset
//     outside the disk.
//
// The simulator has no copy-on-write: a snapshot does not freeze a disk's bytes, and reads of a
// snapshot's disk see the live flat file. A test must not write to a disk between taking a
// snapshot and finishing the read of it; writes made meanwhile are reported by the next
// incremental, not this one.
package lab

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// Errors callers branch on; test with errors.Is.
var (
	ErrClosed       = errors.New("lab closed")
	ErrVMNotFound   = errors.New("vm not found")
	ErrVMExists     = errors.New("vm already exists")
	ErrDiskNotFound = errors.New("disk not found")
	ErrOutOfRange   = errors.New("outside the disk")
	ErrShrink       = errors.New("disks only grow")
	ErrDirInUse     = errors.New("lab directory already holds a datastore")
)

const (
	// DefaultQueryWindow is how much of a disk one QueryChangedDiskAreas answer covers: like
	// vSphere, the lab answers a window at a time and callers loop until the disk's end.
	DefaultQueryWindow = int64(4) << 30
	defaultListen      = "127.0.0.1:0"
	datastoreName      = "LocalDS_0"
	username           = "administrator@vsphere.local"
	closeTimeout       = 10 * time.Second
)

// Options tune a lab.
type Options struct {
	// Dir holds the datastore (Dir/datastore) and the CA certificate (Dir/ca.pem). Empty: a
	// temporary directory that Close removes. A directory given here is kept by Close.
	Dir string
	// Listen is the SDK's host:port; default 127.0.0.1:0 (a free port).
	Listen string
	// Log receives the lab's progress; nil discards it.
	Log *slog.Logger
	// QueryWindow is the bytes of disk one QueryChangedDiskAreas answer covers; default
	// DefaultQueryWindow.
	QueryWindow int64
	// LeaseTimeout is how long an import lease lives without a renewal; default
	// DefaultLeaseTimeout (see nfc.go).
	LeaseTimeout time.Duration
	// NASDir says which local directory an NFS datastore the lab's hosts mount shows
	// (CreateNasDatastore of remoteHost:remotePath); nil: an empty directory under Dir.
	NASDir func(remoteHost, remotePath string) (string, error)
}

// Lab is a running simulated vCenter. Its methods are safe for concurrent use.
type Lab struct {
	log     *slog.Logger
	dir     string
	ownsDir bool
	// madeDatastore: Start made dsDir (it was absent or empty), so a failed Start removes it.
	madeDatastore bool
	dsDir         string
	dcName        string
	window        int64
	nasDir        func(remoteHost, remotePath string) (string, error)
	password      string
	tls           *serverTLS
	caFile        string
	sdkURL        string
	model         *simulator.Model
	server        *simulator.Server
	client        *vim25.Client // in-process, for the lab's own inventory changes
	// inProcessSession is the key of the simulator's in-process session (see handle).
	inProcessSession string
	datacenter       *object.Datacenter
	vmFolder         *object.Folder
	pool             *object.ResourcePool

	nfc nfcState

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	// invMu serializes the lab's own inventory changes (create, remove, rename, resize).
	invMu sync.Mutex
	// mu guards byName and vms. Lock order: simulator object locks, then a diskState's mu,
	// then mu; never take a simulator lock while holding mu or a diskState's mu.
	mu     sync.Mutex
	byName map[string]types.ManagedObjectReference
	vms    map[types.ManagedObjectReference]*vmState
	// silent names the VMs whose guest never reports running (SilenceGuest); guarded by mu.
	silent map[string]bool
}

// vmState is what the lab knows about a VM beyond the simulator's view.
type vmState struct {
	quiesceFails bool
	disks        map[int32]*diskState
}

// VMInfo describes a lab VM as a client would discover it.
type VMInfo struct {
	Name         string     `json:"name"`
	MoRef        string     `json:"moref"` // managed object ID, e.g. "vm-57"
	InstanceUUID string     `json:"instance_uuid"`
	BIOSUUID     string     `json:"bios_uuid"`
	PowerState   string     `json:"power_state"`
	Template     bool       `json:"template"`
	CBT          bool       `json:"cbt"`
	Disks        []DiskInfo `json:"disks"`
}

// DiskInfo describes one virtual disk of a lab VM.
type DiskInfo struct {
	DiskID        string `json:"disk_id"` // "disk-<key>"
	Key           int32  `json:"key"`
	Label         string `json:"label"`
	CapacityBytes int64  `json:"capacity_bytes"`
	Mode          string `json:"mode"`
	Datastore     string `json:"datastore"`
	// DatastorePath is the disk's descriptor as the backing's FileName shows it:
	// "[LocalDS_0] pgtest1/pgtest1.vmdk".
	DatastorePath string `json:"datastore_path"`
	// FlatDatastorePath holds the raw bytes: "[LocalDS_0] pgtest1/pgtest1-flat.vmdk", served
	// at /folder/pgtest1/pgtest1-flat.vmdk?dcPath=DC0&dsName=LocalDS_0.
	FlatDatastorePath string `json:"flat_datastore_path"`
	// FlatPath is FlatDatastorePath on this machine's file system.
	FlatPath string `json:"flat_path"`
	// ChangeID is the backing's current CBT change ID ("" until a snapshot with CBT on).
	ChangeID string `json:"change_id,omitempty"`
}

// Start builds the lab: a simulated vCenter (one datacenter, a cluster of hosts, datastore
// LocalDS_0 under opts.Dir) with exactly the VMs and disks of spec, their flat files sized
// (sparse) and filled, serving the vSphere API over HTTPS on opts.Listen.
func Start(ctx context.Context, spec Spec, opts Options) (_ *Lab, err error) {
	if spec.Datacenter == "" {
		spec.Datacenter = "DC0"
	}
	plans, err := spec.plan(nil)
	if err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	listen := opts.Listen
	if listen == "" {
		listen = defaultListen
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", listen, err)
	}
	l := &Lab{
		log:    log,
		dcName: spec.Datacenter,
		window: opts.QueryWindow,
		nasDir: opts.NASDir,
		byName: make(map[string]types.ManagedObjectReference),
		vms:    make(map[types.ManagedObjectReference]*vmState),
	}
	if l.window <= 0 {
		l.window = DefaultQueryWindow
	}
	l.nfc = nfcState{timeout: opts.LeaseTimeout, now: time.Now, leases: map[string]*importLease{}}
	if l.nfc.timeout <= 0 {
		l.nfc.timeout = DefaultLeaseTimeout
	}
	defer func() {
		if err != nil {
			_ = l.Close()
			if l.madeDatastore && !l.ownsDir {
				// Nothing half-built stays in the caller's directory to block the next Start.
				_ = os.RemoveAll(l.dsDir)
				_ = os.Remove(l.caFile)
			}
		}
	}()
	if err := l.makeDirs(opts.Dir); err != nil {
		return nil, err
	}
	start := time.Now()

	if l.tls, err = newServerTLS(host, start); err != nil {
		return nil, err
	}
	l.caFile = filepath.Join(l.dir, "ca.pem")
	if err := os.WriteFile(l.caFile, l.tls.caPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write CA certificate: %w", err)
	}
	l.password = randomToken(18)

	model := simulator.VPX()
	model.Machine = 0   // the spec's VMs only
	model.Datastore = 0 // the lab's datastore lives under Dir, made below
	if err := model.Create(); err != nil {
		return nil, fmt.Errorf("create simulator inventory: %w", err)
	}
	l.model = model
	// Every vCenter has an instance UUID of its own, which the hub keys a source by; the
	// simulator hands each model the same one.
	if si, ok := model.Map().Get(vim25.ServiceInstance).(*simulator.ServiceInstance); ok {
		si.Content.About.InstanceUuid = newUUID()
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{l.tls.cert}, MinVersion: tls.VersionTLS12}
	model.Service.Listen = &url.URL{Host: listen, User: url.UserPassword(username, l.password)}
	model.Map().Handler = l.handle
	if model.Service.ServeMux == nil {
		model.Service.ServeMux = http.NewServeMux()
	}
	// More specific than the simulator's "/nfc/", which keeps serving downloads.
	model.Service.ServeMux.HandleFunc("POST /nfc/", l.serveNFCUpload)
	model.Service.ServeMux.HandleFunc("PUT /nfc/", l.serveNFCUpload)
	if l.server, err = startServer(model); err != nil {
		return nil, err
	}
	u := *l.server.URL
	u.User = nil
	l.sdkURL = u.String()
	if l.client, err = vim25.NewClient(ctx, model.Service); err != nil {
		return nil, fmt.Errorf("in-process simulator client: %w", err)
	}
	us, err := session.NewManager(l.client).UserSession(ctx)
	if err != nil {
		return nil, fmt.Errorf("in-process simulator session: %w", err)
	}
	if us == nil {
		return nil, errors.New("in-process simulator session: none")
	}
	l.inProcessSession = us.Key
	if err := l.setupInventory(ctx); err != nil {
		return nil, err
	}
	var filled int64
	for i, p := range plans {
		if err := l.createVM(ctx, p); err != nil {
			return nil, err
		}
		for _, d := range p.disks {
			filled += d.data
		}
		if (i+1)%100 == 0 {
			log.Info("lab VMs created", "vms", i+1, "total", len(plans))
		}
	}
	log.Info("lab ready", "sdk_url", l.sdkURL, "datacenter", l.dcName, "vms", len(plans),
		"filled_bytes", filled, "dir", l.dir, "duration_seconds", time.Since(start).Seconds())
	return l, nil
}

func (l *Lab) makeDirs(dir string) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "sendense-lab-")
		if err != nil {
			return fmt.Errorf("create lab directory: %w", err)
		}
		l.dir, l.ownsDir = d, true
	} else {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create lab directory: %w", err)
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return fmt.Errorf("lab directory %s: %w", dir, err)
		}
		l.dir = abs
	}
	l.dsDir = filepath.Join(l.dir, "datastore")
	if entries, err := os.ReadDir(l.dsDir); err == nil && len(entries) > 0 {
		return fmt.Errorf("%w: %s is not empty (remove it or use another directory)", ErrDirInUse, l.dsDir)
	}
	if err := os.MkdirAll(l.dsDir, 0o700); err != nil {
		return fmt.Errorf("create datastore directory: %w", err)
	}
	l.madeDatastore = true
	return nil
}

// startServer starts the simulator's HTTPS server; the simulator panics when it cannot listen.
func startServer(m *simulator.Model) (s *simulator.Server, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("start simulator server on %s: %v", m.Service.Listen.Host, r)
		}
	}()
	return m.Service.NewServer(), nil
}

// setupInventory names the datacenter and mounts the lab's datastore on every host.
func (l *Lab) setupInventory(ctx context.Context) error {
	dcEntity := l.model.Map().Any("Datacenter")
	if dcEntity == nil {
		return errors.New("simulator has no datacenter")
	}
	l.datacenter = object.NewDatacenter(l.client, dcEntity.Reference())
	if l.dcName != "DC0" {
		task, err := l.datacenter.Rename(ctx, l.dcName)
		if err != nil {
			return fmt.Errorf("rename datacenter to %q: %w", l.dcName, err)
		}
		if err := task.Wait(ctx); err != nil {
			return fmt.Errorf("rename datacenter to %q: %w", l.dcName, err)
		}
	}
	for _, h := range l.model.Map().All("HostSystem") {
		host := object.NewHostSystem(l.client, h.Reference())
		dss, err := host.ConfigManager().DatastoreSystem(ctx)
		if err != nil {
			return fmt.Errorf("datastore system of %s: %w", h.Reference().Value, err)
		}
		if _, err := dss.CreateLocalDatastore(ctx, datastoreName, l.dsDir); err != nil {
			return fmt.Errorf("mount datastore %s on %s: %w", datastoreName, h.Reference().Value, err)
		}
	}
	folders, err := l.datacenter.Folders(ctx)
	if err != nil {
		return fmt.Errorf("datacenter folders: %w", err)
	}
	l.vmFolder = folders.VmFolder
	cluster := l.model.Map().Any("ClusterComputeResource")
	if cluster == nil {
		return errors.New("simulator has no cluster")
	}
	l.pool, err = object.NewClusterComputeResource(l.client, cluster.Reference()).ResourcePool(ctx)
	if err != nil {
		return fmt.Errorf("cluster resource pool: %w", err)
	}
	return nil
}

// SDKURL is the vSphere API endpoint, https://127.0.0.1:PORT/sdk, without credentials.
func (l *Lab) SDKURL() string { return l.sdkURL }

// Username is the account the SDK accepts.
func (l *Lab) Username() string { return username }

// Password is the account's password, random per lab.
func (l *Lab) Password() string { return l.password }

// Thumbprint is the SHA-256 of the server certificate as vSphere shows it ("AB:CD:...");
// govmomi's soap.Client.SetThumbprint accepts it.
func (l *Lab) Thumbprint() string { return l.tls.thumbprint }

// CACertPEM is the certificate of the CA that signed the server certificate (valid for
// localhost, 127.0.0.1, ::1 and the listen host).
func (l *Lab) CACertPEM() []byte { return append([]byte(nil), l.tls.caPEM...) }

// CACertFile is the path of CACertPEM on disk (Dir/ca.pem), for soap.Client.SetRootCAs.
func (l *Lab) CACertFile() string { return l.caFile }

// Dir is the lab directory; Dir/datastore is the root of datastore LocalDS_0.
func (l *Lab) Dir() string { return l.dir }

// Datacenter is the datacenter's name (the dcPath of /folder URLs).
func (l *Lab) Datacenter() string { return l.dcName }

// Datastore is the datastore's name (the dsName of /folder URLs).
func (l *Lab) Datastore() string { return datastoreName }

// VM describes the lab VM called name.
func (l *Lab) VM(name string) (VMInfo, error) {
	if l.closed.Load() {
		return VMInfo{}, ErrClosed
	}
	ref, err := l.lookup(name)
	if err != nil {
		return VMInfo{}, err
	}
	var info VMInfo
	err = l.withVM(ref, func(vm *simulator.VirtualMachine) { info = l.vmInfo(vm) })
	if err != nil {
		return VMInfo{}, fmt.Errorf("vm %s: %w", name, err)
	}
	return info, nil
}

// VMs describes every lab VM, sorted by name.
func (l *Lab) VMs() ([]VMInfo, error) {
	l.mu.Lock()
	names := make([]string, 0, len(l.byName))
	for n := range l.byName {
		names = append(names, n)
	}
	l.mu.Unlock()
	slices.Sort(names)
	out := make([]VMInfo, 0, len(names))
	for _, n := range names {
		info, err := l.VM(n)
		if errors.Is(err, ErrVMNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

// Close stops the simulator (waiting up to 10 s for requests in flight, such as a client's
// WaitForUpdates) and removes what the lab created unless Options.Dir was given.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		var errs []error
		if l.server != nil {
			done := make(chan struct{})
			go func() {
				l.server.CloseClientConnections()
				l.server.Close()
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(closeTimeout):
				errs = append(errs, fmt.Errorf("stop simulator: requests still in flight after %s", closeTimeout))
			}
		}
		if l.model != nil {
			l.model.Remove()
		}
		if l.ownsDir && l.dir != "" {
			if err := os.RemoveAll(l.dir); err != nil {
				errs = append(errs, fmt.Errorf("remove lab directory: %w", err))
			}
		}
		l.closeErr = errors.Join(errs...)
		l.log.Info("lab closed", "dir", l.dir)
	})
	return l.closeErr
}

// lookup finds a lab VM by name.
func (l *Lab) lookup(name string) (types.ManagedObjectReference, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ref, ok := l.byName[name]
	if !ok {
		return ref, fmt.Errorf("%w: %q", ErrVMNotFound, name)
	}
	return ref, nil
}

// withVM runs f under the simulator's lock of the VM.
func (l *Lab) withVM(ref types.ManagedObjectReference, f func(vm *simulator.VirtualMachine)) error {
	vm, ok := l.model.Map().Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return fmt.Errorf("%w: %s", ErrVMNotFound, ref.Value)
	}
	ctx := &simulator.Context{Context: context.Background(), Map: l.model.Map()}
	ctx.WithLock(vm, func() { f(vm) })
	return nil
}

// vmInfo describes vm; the caller holds the VM's lock.
func (l *Lab) vmInfo(vm *simulator.VirtualMachine) VMInfo {
	info := VMInfo{
		Name:       vm.Name,
		MoRef:      vm.Self.Value,
		PowerState: string(vm.Runtime.PowerState),
	}
	if c := vm.Config; c != nil {
		info.InstanceUUID = c.InstanceUuid
		info.BIOSUUID = c.Uuid
		info.Template = c.Template
		info.CBT = c.ChangeTrackingEnabled != nil && *c.ChangeTrackingEnabled
		for _, dev := range c.Hardware.Device {
			if disk, ok := dev.(*types.VirtualDisk); ok {
				info.Disks = append(info.Disks, l.diskInfo(disk))
			}
		}
	}
	return info
}

// diskInfo describes a disk device; the caller holds the VM's lock.
func (l *Lab) diskInfo(disk *types.VirtualDisk) DiskInfo {
	d := DiskInfo{
		DiskID:        diskID(disk.Key),
		Key:           disk.Key,
		CapacityBytes: capacityOf(disk),
	}
	if desc := disk.DeviceInfo; desc != nil {
		d.Label = desc.GetDescription().Label
	}
	if b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
		d.Mode = b.DiskMode
		d.ChangeID = b.ChangeId
		d.DatastorePath = b.FileName
		var p object.DatastorePath
		if p.FromString(b.FileName) {
			d.Datastore = p.Datastore
			p.Path = simulator.VirtualDiskBackingFileName(p.Path)
			d.FlatDatastorePath = p.String()
		}
		d.FlatPath, _ = l.flatPath(b.FileName)
	}
	return d
}

// flatPath maps a disk's descriptor datastore path to its flat file on this machine.
func (l *Lab) flatPath(fileName string) (string, error) {
	return l.hostPath(fileName, simulator.VirtualDiskBackingFileName)
}

// hostPath maps a datastore path on the lab's datastore to this machine's file system, after
// rename changes the path part (nil: none).
func (l *Lab) hostPath(datastorePath string, rename func(string) string) (string, error) {
	var p object.DatastorePath
	if !p.FromString(datastorePath) || p.Datastore != datastoreName || p.Path == "" {
		return "", fmt.Errorf("file %q is not on datastore %s", datastorePath, datastoreName)
	}
	if rename != nil {
		p.Path = rename(p.Path)
	}
	return filepath.Join(l.dsDir, filepath.FromSlash(p.Path)), nil
}

// disk returns the lab's state of a VM disk, creating it on first use (disks a client added).
func (l *Lab) disk(ref types.ManagedObjectReference, key int32) *diskState {
	l.mu.Lock()
	defer l.mu.Unlock()
	vs, ok := l.vms[ref]
	if !ok {
		vs = &vmState{disks: make(map[int32]*diskState)}
		l.vms[ref] = vs
	}
	d, ok := vs.disks[key]
	if !ok {
		d = &diskState{}
		vs.disks[key] = d
	}
	return d
}

func (l *Lab) quiesceFails(ref types.ManagedObjectReference) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	vs, ok := l.vms[ref]
	return ok && vs.quiesceFails
}

// capacityOf is a disk's capacity in bytes (older clients set only the KB field).
func capacityOf(disk *types.VirtualDisk) int64 {
	if disk.CapacityInBytes > 0 {
		return disk.CapacityInBytes
	}
	return disk.CapacityInKB * 1024
}

func diskID(key int32) string { return "disk-" + strconv.Itoa(int(key)) }

// parseDiskID accepts "disk-2000" (as discovery names disks) or a bare key "2000".
func parseDiskID(id string) (int32, error) {
	n, err := strconv.ParseInt(strings.TrimPrefix(id, "disk-"), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: bad disk id %q (want disk-<key>)", ErrDiskNotFound, id)
	}
	return int32(n), nil
}

// randomToken is n random bytes, base64url: passwords and control tokens.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b)
}
