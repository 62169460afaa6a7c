package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sendense/sendense/agent/internal/vmdk"
)

// Imports (ResourcePool.ImportVApp and its HttpNfcLease), which the simulator answers but whose
// uploads it throws away.
//
// What the lab adds to the simulator:
//   - An upload (POST or PUT) to a lease's disk URL, /nfc/<lease>/<disk>.vmdk, is decoded as a
//     stream-optimized VMDK and written into the disk's flat file, truncated to the disk's
//     capacity first and written only where grains hold data: holes stay holes, as a thin disk
//     imported into vSphere stays thin. A stream that is not a well-formed stream-optimized
//     VMDK, or whose capacity is not the disk's, is refused with 400 and its bytes are not
//     trusted (the flat file may hold part of it, like a failed import on a datastore).
//   - A lease expires when no HttpNfcLeaseProgress renews it for Options.LeaseTimeout (the
//     lease's info still says the simulator's 300 s): uploads, renewals and Complete are then
//     refused, as vSphere does with a lease it timed out. The VM stays; the importer removes it.
//   - Complete and Abort end a lease; OpenLeases lists the leases neither ended nor expired,
//     Imports what each upload received and wrote.

// DefaultLeaseTimeout is how long an import lease lives without renewal (vSphere's 300 s).
const DefaultLeaseTimeout = 300 * time.Second

// Lease states as OpenLeases and Imports report them.
const (
	LeaseOpen      = "open"
	LeaseCompleted = "completed"
	LeaseAborted   = "aborted"
	LeaseExpired   = "expired"
)

// Import is one upload into an import lease.
type Import struct {
	Lease        string `json:"lease"`
	VM           string `json:"vm"`        // moref of the importing VM
	FlatPath     string `json:"flat_path"` // the flat file written, on this machine
	StreamBytes  int64  `json:"stream_bytes"`
	WrittenBytes int64  `json:"written_bytes"` // bytes of non-zero grains written
	Err          string `json:"error,omitempty"`
}

// importLease is what the lab knows of a lease beyond the simulator.
type importLease struct {
	lease   *simulator.HttpNfcLease
	state   string
	renewed time.Time
}

type nfcState struct {
	timeout time.Duration
	now     func() time.Time

	mu      sync.Mutex
	leases  map[string]*importLease // by lease moref
	imports []Import
}

// state returns a lease's state after expiring it when due; the caller holds mu.
func (n *nfcState) stateLocked(il *importLease) string {
	if il.state == LeaseOpen && n.now().Sub(il.renewed) > n.timeout {
		il.state = LeaseExpired
	}
	return il.state
}

// OpenLeases lists the import leases that are neither completed, aborted nor expired.
func (l *Lab) OpenLeases() []string {
	l.nfc.mu.Lock()
	defer l.nfc.mu.Unlock()
	var out []string
	for ref, il := range l.nfc.leases {
		if l.nfc.stateLocked(il) == LeaseOpen {
			out = append(out, ref)
		}
	}
	slices.Sort(out)
	return out
}

// LeaseState is a lease's state ("" for a lease the lab never saw).
func (l *Lab) LeaseState(ref string) string {
	l.nfc.mu.Lock()
	defer l.nfc.mu.Unlock()
	if il, ok := l.nfc.leases[ref]; ok {
		return l.nfc.stateLocked(il)
	}
	return ""
}

// Imports lists every upload into an import lease so far, oldest first.
func (l *Lab) Imports() []Import {
	l.nfc.mu.Lock()
	defer l.nfc.mu.Unlock()
	return slices.Clone(l.nfc.imports)
}

// importPool is a resource pool whose ImportVApp tells the lab of the lease it hands out. The
// hook puts it into the calling session before its first ImportVApp: the simulator dispatches
// to the session's object (a receiver returned by the hook would be ignored).
type importPool struct {
	*simulator.ResourcePool
	lab *Lab
}

func (p *importPool) ImportVApp(ctx *simulator.Context, req *types.ImportVApp) soap.HasFault {
	res := p.ResourcePool.ImportVApp(ctx, req)
	if body, ok := res.(*methods.ImportVAppBody); ok && body.Res != nil {
		if lease, ok := ctx.Session.Get(body.Res.Returnval).(*simulator.HttpNfcLease); ok {
			p.lab.nfc.mu.Lock()
			p.lab.nfc.leases[body.Res.Returnval.Value] = &importLease{lease: lease, state: LeaseOpen, renewed: p.lab.nfc.now()}
			p.lab.nfc.mu.Unlock()
		}
	}
	return res
}

// handleNFC is the method hook's part for imports: handled says the call concerns imports;
// a fault answers the call instead of the simulator.
func (l *Lab) handleNFC(ctx *simulator.Context, m *simulator.Method) (handled bool, fault types.BaseMethodFault) {
	switch {
	case m.This.Type == "ResourcePool" && m.Name == "ImportVApp":
		pool, ok := ctx.Map.Get(m.This).(*simulator.ResourcePool)
		if !ok {
			return true, nil
		}
		if w, ok := ctx.Session.Registry.Get(m.This).(*importPool); ok {
			if w.lab == l && w.ResourcePool == pool {
				return true, nil
			}
			ctx.Session.Registry.Remove(ctx, m.This) // another lab's, or a replaced pool
		}
		ctx.WithLock(pool, func() { ctx.Session.Put(&importPool{ResourcePool: pool, lab: l}) })
		return true, nil
	case m.This.Type != "HttpNfcLease":
		return false, nil
	}
	l.nfc.mu.Lock()
	defer l.nfc.mu.Unlock()
	il, ok := l.nfc.leases[m.This.Value]
	if !ok {
		return true, nil
	}
	state := l.nfc.stateLocked(il)
	switch m.Name {
	case "HttpNfcLeaseProgress", "HttpNfcLeaseComplete":
		if state != LeaseOpen {
			return true, &types.InvalidState{}
		}
		if m.Name == "HttpNfcLeaseComplete" {
			il.state = LeaseCompleted
		} else {
			il.renewed = l.nfc.now()
		}
	case "HttpNfcLeaseAbort":
		if state == LeaseOpen {
			il.state = LeaseAborted
		}
	}
	return true, nil
}

// serveNFCUpload writes an uploaded stream-optimized VMDK into the flat file of the lease's disk.
func (l *Lab) serveNFCUpload(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/nfc/"), "/")
	if len(parts) != 2 {
		http.NotFound(w, r)
		return
	}
	ref, name := parts[0], parts[1]
	l.nfc.mu.Lock()
	il, ok := l.nfc.leases[ref]
	state := ""
	if ok {
		state = l.nfc.stateLocked(il)
	}
	l.nfc.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if state != LeaseOpen {
		http.Error(w, "lease "+ref+" is "+state, http.StatusForbidden)
		return
	}
	imp := Import{Lease: ref}
	flat, capacity, vm, err := l.leaseDisk(il.lease, name)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	imp.VM, imp.FlatPath = vm, flat
	body := &countReader{r: r.Body}
	code, err := writeImport(body, flat, capacity, &imp)
	imp.StreamBytes = body.n.Load()
	if err != nil {
		imp.Err = err.Error()
	}
	l.nfc.mu.Lock()
	l.nfc.imports = append(l.nfc.imports, imp)
	l.nfc.mu.Unlock()
	if err != nil {
		l.log.Warn("lab import refused", "lease", ref, "file", flat, "err", err)
		http.Error(w, err.Error(), code)
		return
	}
	l.log.Info("lab import written", "lease", ref, "file", flat, "stream_bytes", imp.StreamBytes, "written_bytes", imp.WrittenBytes)
	w.WriteHeader(http.StatusOK)
}

func writeImport(body io.Reader, flat string, capacity int64, imp *Import) (int, error) {
	vr, err := vmdk.NewReader(body)
	if err != nil {
		return http.StatusBadRequest, err
	}
	if vr.Capacity() != capacity {
		return http.StatusBadRequest, fmt.Errorf("the stream is a disk of %d bytes, the lease's disk has %d", vr.Capacity(), capacity)
	}
	f, err := os.OpenFile(flat, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return http.StatusInternalServerError, fmt.Errorf("open %s: %w", flat, err)
	}
	defer f.Close()
	// A fresh, sparse file of the disk's size: the import replaces whatever was there.
	if err := f.Truncate(0); err == nil {
		err = f.Truncate(capacity)
	}
	if err != nil {
		return http.StatusInternalServerError, fmt.Errorf("size %s: %w", flat, err)
	}
	st, err := vr.WriteTo(f)
	imp.WrittenBytes = st.WrittenBytes
	if err != nil {
		if errors.Is(err, vmdk.ErrFormat) {
			return http.StatusBadRequest, err
		}
		return http.StatusInternalServerError, err
	}
	if err := f.Sync(); err != nil {
		return http.StatusInternalServerError, fmt.Errorf("sync %s: %w", flat, err)
	}
	return http.StatusOK, nil
}

// leaseDisk finds the disk of the lease's VM whose descriptor is name: its flat file here,
// its capacity and the VM's moref.
func (l *Lab) leaseDisk(lease *simulator.HttpNfcLease, name string) (string, int64, string, error) {
	ctx := &simulator.Context{Context: context.Background(), Map: l.model.Map()}
	var entity types.ManagedObjectReference
	ctx.WithLock(lease, func() {
		if lease.Info != nil {
			entity = lease.Info.Entity
		}
	})
	vm, ok := l.model.Map().Get(entity).(*simulator.VirtualMachine)
	if !ok {
		return "", 0, "", fmt.Errorf("the lease's vm %s does not exist", entity.Value)
	}
	var flat string
	var capacity int64
	var err error
	ctx.WithLock(vm, func() {
		for _, d := range object.VirtualDeviceList(vm.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil)) {
			disk := d.(*types.VirtualDisk)
			b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			if !ok || path.Base(b.FileName) != name {
				continue
			}
			flat, err = l.flatPath(b.FileName)
			capacity = capacityOf(disk)
			return
		}
		err = fmt.Errorf("vm %s has no disk %s", entity.Value, name)
	})
	return flat, capacity, entity.Value, err
}

type countReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
