package vsphere

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/vmware/govmomi/nfc"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sendense/sendense/shared/api"
)

// StreamVMDKType is the content type of a stream-optimized VMDK uploaded into an import lease.
const StreamVMDKType = "application/x-vnd.vmware-streamVmdk"

// ImportedVM is a VM a restore creates through vSphere's import path (ResourcePool.ImportVApp):
// the VM exists from the start, and its disks are written through the HttpNfcLease's device
// URLs, each as a stream-optimized VMDK, which vSphere writes sparsely (thin disks stay thin).
// The lease must be kept alive (Progress, more often than LeaseTimeout) until Complete or
// Abort. Its methods other than UploadDisk must not run concurrently with each other.
type ImportedVM struct {
	*RestoredVM
	lease   *nfc.Lease
	timeout time.Duration
	urls    map[string]*url.URL // device URL by the backup's disk id
	ended   bool
}

// ImportVM creates the VM a restore describes in the placement, powered off, through
// ResourcePool.ImportVApp, and waits for its import lease to be ready. The VM has the
// backup's CPUs, cores, memory, firmware and secure boot, hardware version, guest, allocations,
// boot-relevant extraConfig and storage controllers, each disk on its controller and unit (thin
// or thick as asked, empty until uploaded), and each NIC on its mapped network with its MAC
// kept (manual) or generated. CD-ROMs are not created: their ISO files belong to the source
// environment. The annotation starts with api.RestoreVMPrefix and the job id, so a half-made
// VM can be recognised. On an error after the lease was taken it aborts the lease; the VM it
// returns with an error (if any) is for the caller to remove.
func (p *Placement) ImportVM(ctx context.Context, job *api.RestoreJob) (*ImportedVM, error) {
	spec, err := vmSpec(job, p)
	if err != nil {
		return nil, err
	}
	lease, err := p.pool.ImportVApp(ctx, &types.VirtualMachineImportSpec{ConfigSpec: *spec}, p.folder, p.host)
	if err != nil {
		return nil, fmt.Errorf("import vm %s: %w", job.Target.Name, err)
	}
	info, err := lease.Wait(ctx, nil)
	if err != nil {
		abortLease(ctx, lease, err)
		return nil, fmt.Errorf("import vm %s: wait for the import lease: %w", job.Target.Name, err)
	}
	v := &ImportedVM{
		RestoredVM: &RestoredVM{p: p, obj: object.NewVirtualMachine(p.c.vc, info.Entity), Disks: map[string]RestoredDisk{}},
		lease:      lease,
		timeout:    time.Duration(info.LeaseTimeout) * time.Second,
		urls:       map[string]*url.URL{},
	}
	fail := func(err error) (*ImportedVM, error) {
		_ = v.Abort(ctx, err)
		return v, err
	}
	if err := v.readDisks(ctx, job); err != nil {
		return fail(err)
	}
	devs, err := deviceURLs(info.DeviceUrl, v.Disks)
	if err != nil {
		return fail(fmt.Errorf("import vm %s: %w", job.Target.Name, err))
	}
	for id, dev := range devs {
		u, err := p.c.vc.ParseURL(dev.Url) // also puts the host in for ESXi's "*"
		if err != nil {
			return fail(fmt.Errorf("import vm %s: device url of disk %s: %w", job.Target.Name, id, err))
		}
		if dev.SslThumbprint != "" {
			p.c.vc.SetThumbprint(u.Host, dev.SslThumbprint)
		}
		v.urls[id] = u
	}
	return v, nil
}

// deviceURLs maps each disk to its device URL of the lease: by the import key's device, the
// last part of the key — "<controller class><bus>:<unit>" as vCenter writes it (after the VM's
// name, escaped as vCenter escapes names) — else by the URL's target id when that is the file
// name of one disk's descriptor and of no other's (the simulator names the files), else by
// "disk:<n>", n counting the VM's disks in device order, as the simulator's keys do. A disk
// with no URL, or with more than one, and a URL two disks would take fail the import: an image
// written into another disk would be a restore that succeeds with the wrong bytes.
func deviceURLs(urls []types.HttpNfcLeaseDeviceUrl, disks map[string]RestoredDisk) (map[string]types.HttpNfcLeaseDeviceUrl, error) {
	bases := map[string]int{}
	for _, d := range disks {
		bases[path.Base(d.descriptor)]++
	}
	byKey := func(key string) []int {
		var found []int
		for i, u := range urls {
			if k := u.ImportKey[strings.LastIndex(u.ImportKey, "/")+1:]; u.Disk != nil && *u.Disk && k == key {
				found = append(found, i)
			}
		}
		return found
	}
	out := map[string]types.HttpNfcLeaseDeviceUrl{}
	taken := map[int]string{}
	for id, d := range disks {
		found := byKey(fmt.Sprintf("%s%d:%d", d.controllerClass, d.bus, d.unit))
		if base := path.Base(d.descriptor); len(found) == 0 && bases[base] == 1 {
			for i, u := range urls {
				if u.TargetId == base {
					found = append(found, i)
				}
			}
		}
		if len(found) == 0 {
			found = byKey(fmt.Sprintf("disk:%d", d.index))
		}
		switch {
		case len(found) == 0:
			return nil, fmt.Errorf("the lease has no device url for disk %s (%s)", id, d.descriptor)
		case len(found) > 1:
			return nil, fmt.Errorf("the lease has %d device urls that could be disk %s (%s)", len(found), id, d.descriptor)
		}
		if other, ok := taken[found[0]]; ok {
			return nil, fmt.Errorf("disks %s and %s both map to the lease's device url %s", min(id, other), max(id, other), urls[found[0]].ImportKey)
		}
		taken[found[0]] = id
		out[id] = urls[found[0]]
	}
	return out, nil
}

// LeaseTimeout is how long vSphere keeps the lease without a Progress call.
func (v *ImportedVM) LeaseTimeout() time.Duration { return v.timeout }

// UploadDisk sends one disk's stream-optimized VMDK (as vmdk.Write makes it) to the lease; the
// stream's length need not be known (chunked). Disks may be uploaded concurrently.
func (v *ImportedVM) UploadDisk(ctx context.Context, diskID string, stream io.Reader) error {
	u, ok := v.urls[diskID]
	if !ok {
		return fmt.Errorf("upload disk %s: not a disk of the import", diskID)
	}
	err := v.p.c.vc.Client.Upload(ctx, stream, u, &soap.Upload{Method: "POST", Type: StreamVMDKType, ContentLength: -1})
	if err != nil {
		return fmt.Errorf("upload disk %s into the import lease: %w", diskID, err)
	}
	return nil
}

// Progress renews the lease and reports how far the import is (0–100).
func (v *ImportedVM) Progress(ctx context.Context, percent int32) error {
	if err := v.lease.Progress(ctx, min(max(percent, 0), 100)); err != nil {
		return fmt.Errorf("renew the import lease of vm %s: %w", v.MoRef(), err)
	}
	return nil
}

// Complete ends the import: vSphere releases the VM, whose disks now hold what was uploaded.
func (v *ImportedVM) Complete(ctx context.Context) error {
	if err := v.lease.Complete(ctx); err != nil {
		return fmt.Errorf("complete the import of vm %s: %w", v.MoRef(), err)
	}
	v.ended = true
	return nil
}

// Abort ends a failed import's lease, with cause as its fault, also when ctx is already
// cancelled (it then has its own 30 s). It is a no-op once the lease ended. The VM stays: the
// caller removes it (DestroyRestoredVM), as vSphere may or may not.
func (v *ImportedVM) Abort(ctx context.Context, cause error) error {
	if v.ended {
		return nil
	}
	v.ended = true
	return abortLease(ctx, v.lease, cause)
}

func abortLease(ctx context.Context, lease *nfc.Lease, cause error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	msg := "the restore stopped"
	if cause != nil {
		msg = cause.Error()
	}
	err := lease.Abort(ctx, &types.LocalizedMethodFault{Fault: &types.SystemError{Reason: msg}, LocalizedMessage: msg})
	if err != nil && !isGone(err) {
		return fmt.Errorf("abort import lease %s: %w", lease.Reference().Value, err)
	}
	return nil
}
