package lab

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"testing"

	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

func TestDemoSpecDiscoveryAndFolderReads(t *testing.T) {
	requireHoles(t)
	l := startLab(t, DemoSpec(), Options{})
	c := login(t, l)

	vm, props := findVM(t, c, "pgtest1")
	if props.Config.ChangeTrackingEnabled == nil || !*props.Config.ChangeTrackingEnabled {
		t.Errorf("pgtest1 changeTrackingEnabled = %v, want true", props.Config.ChangeTrackingEnabled)
	}
	if props.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		t.Errorf("pgtest1 power state %s, want poweredOn", props.Runtime.PowerState)
	}
	disks := disksOf(props.Config.Hardware.Device)
	want := map[int32]int64{2000: 102_000_230_400, 2001: 5_000_658_944}
	if len(disks) != len(want) {
		t.Fatalf("pgtest1 has %d disks, want %d", len(disks), len(want))
	}
	info, err := l.VM("pgtest1")
	if err != nil {
		t.Fatalf("lab VM: %v", err)
	}
	if info.InstanceUUID != props.Config.InstanceUuid || info.MoRef != vm.Reference().Value {
		t.Errorf("lab says %s/%s, vSphere says %s/%s", info.InstanceUUID, info.MoRef, props.Config.InstanceUuid, vm.Reference().Value)
	}
	for key, capacity := range want {
		disk, ok := disks[key]
		if !ok {
			t.Fatalf("pgtest1 has no disk %d", key)
		}
		b := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if disk.CapacityInBytes != capacity {
			t.Errorf("disk %d capacity %d, want %d", key, disk.CapacityInBytes, capacity)
		}
		if b.ThinProvisioned == nil || !*b.ThinProvisioned || b.DiskMode != ModePersistent || b.Uuid == "" {
			t.Errorf("disk %d backing thin=%v mode=%s uuid=%q", key, b.ThinProvisioned, b.DiskMode, b.Uuid)
		}
		var di DiskInfo
		for _, d := range info.Disks {
			if d.Key == key {
				di = d
			}
		}
		if di.DatastorePath != b.FileName || di.DiskID != fmt.Sprintf("disk-%d", key) {
			t.Errorf("lab disk %+v does not match backing %s", di, b.FileName)
		}
		fi, err := os.Stat(di.FlatPath)
		if err != nil || fi.Size() != capacity {
			t.Fatalf("flat file %s: %v, size %d", di.FlatPath, err, fi.Size())
		}
	}

	// The descriptor the backing names points at the flat file holding the bytes.
	b2000 := disks[2000].Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	desc := folderGet(t, c, l, b2000.FileName, "")
	if !bytes.Contains(desc, []byte(`RW 199219200 VMFS "pgtest1-flat.vmdk"`)) {
		t.Errorf("descriptor of %s does not name the flat extent:\n%s", b2000.FileName, desc)
	}

	// Range reads over /folder equal the flat file, in data and in holes, near the end too.
	flat := strings.Replace(b2000.FileName, ".vmdk", "-flat.vmdk", 1)
	f, err := os.Open(info.Disks[0].FlatPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	areas, err := dataExtents(f, 0, 102_000_230_400)
	if err != nil {
		t.Fatal(err)
	}
	if len(areas) < 32 {
		t.Fatalf("disk 2000 has %d allocated areas, want data spread over the disk", len(areas))
	}
	var allocatedBytes int64
	for _, a := range areas {
		allocatedBytes += a.Length
	}
	if allocatedBytes < 2<<30 || allocatedBytes > 2<<30+16<<20 {
		t.Errorf("disk 2000 has %d bytes allocated, want about 2 GiB", allocatedBytes)
	}
	last := areas[len(areas)-1]
	for _, r := range []Extent{
		{Offset: 0, Length: 1 << 20},
		{Offset: last.Offset + last.Length - 65536, Length: 131072}, // data into a hole
		{Offset: 102_000_230_400 - 4096, Length: 4096},
	} {
		got := folderGet(t, c, l, flat, fmt.Sprintf("bytes=%d-%d", r.Offset, r.End()-1))
		wantBytes := make([]byte, r.Length)
		if _, err := f.ReadAt(wantBytes, r.Offset); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(got, wantBytes) {
			t.Errorf("range %+v over /folder differs from the flat file", r)
		}
	}
}

// folderGet reads a datastore file over HTTPS /folder with the session cookie, as the https
// transport does.
func folderGet(t testing.TB, c *vim25.Client, l *Lab, datastorePath, rangeHeader string) []byte {
	t.Helper()
	u := *c.URL()
	u.Path = "/folder/" + strings.TrimPrefix(datastorePath, "["+l.Datastore()+"] ")
	u.RawQuery = url.Values{"dcPath": {l.Datacenter()}, "dsName": {l.Datastore()}}.Encode()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := http.StatusOK
	if rangeHeader != "" {
		req.Header.Set("Range", rangeHeader)
		want = http.StatusPartialContent
	}
	var body []byte
	err = c.Client.Do(t.Context(), req, func(res *http.Response) error {
		if res.StatusCode != want {
			return fmt.Errorf("GET %s: %s", u.String(), res.Status)
		}
		var err error
		body, err = io.ReadAll(res.Body)
		return err
	})
	if err != nil {
		t.Fatalf("folder get: %v", err)
	}
	return body
}

func TestTLSAndLogin(t *testing.T) {
	l := startLab(t, Spec{VMs: []VMSpec{{Name: "tiny", Disks: []DiskSpec{{Size: "1MiB"}}}}}, Options{})
	ctx := t.Context()
	raw, err := url.Parse(l.SDKURL())
	if err != nil {
		t.Fatal(err)
	}
	if raw.User != nil || raw.Scheme != "https" || raw.Path != "/sdk" {
		t.Fatalf("sdk url %s: want https://host:port/sdk without credentials", l.SDKURL())
	}
	u, err := soap.ParseURL(l.SDKURL())
	if err != nil {
		t.Fatal(err)
	}

	t.Run("unknown CA is refused", func(t *testing.T) {
		c, err := vim25.NewClient(ctx, soap.NewClient(u, false))
		if err == nil {
			_ = c
			t.Fatal("connected without trusting the lab CA")
		}
	})
	t.Run("thumbprint pins the server", func(t *testing.T) {
		sc := soap.NewClient(u, false)
		sc.SetThumbprint(u.Host, l.Thumbprint())
		c, err := vim25.NewClient(ctx, sc)
		if err != nil {
			t.Fatalf("connect with thumbprint %s: %v", l.Thumbprint(), err)
		}
		if err := session.NewManager(c).Login(ctx, url.UserPassword(l.Username(), l.Password())); err != nil {
			t.Fatalf("login: %v", err)
		}
	})
	t.Run("CA PEM verifies the server", func(t *testing.T) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(l.CACertPEM()) {
			t.Fatal("CA PEM does not parse")
		}
		conn, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: pool})
		if err != nil {
			t.Fatalf("TLS with the lab CA: %v", err)
		}
		_ = conn.Close()
	})
	t.Run("wrong password is refused", func(t *testing.T) {
		sc := soap.NewClient(u, false)
		if err := sc.SetRootCAs(l.CACertFile()); err != nil {
			t.Fatal(err)
		}
		c, err := vim25.NewClient(ctx, sc)
		if err != nil {
			t.Fatal(err)
		}
		err = session.NewManager(c).Login(ctx, url.UserPassword(l.Username(), l.Password()+"x"))
		if _, ok := faultOf(err).(*types.InvalidLogin); !ok {
			t.Fatalf("login with a wrong password: %v, want InvalidLogin", err)
		}
	})
}

func TestStartRefusesUsedDirectory(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{VMs: []VMSpec{{Name: "a", Disks: []DiskSpec{{Size: "1MiB", Fill: FillRandom}}}}}
	l := startLab(t, spec, Options{Dir: dir})
	info, err := l.VM("a")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(info.Disks[0].FlatPath); err != nil {
		t.Errorf("Close removed the disk of a caller's directory: %v", err)
	}
	if _, err := Start(t.Context(), spec, Options{Dir: dir}); !errors.Is(err, ErrDirInUse) {
		t.Fatalf("second Start on %s: %v, want ErrDirInUse", dir, err)
	}
	if !strings.HasPrefix(info.Disks[0].FlatPath, dir) || path.Base(info.Disks[0].FlatPath) != "a-flat.vmdk" {
		t.Errorf("flat path %s not under %s", info.Disks[0].FlatPath, dir)
	}
}

// Two labs in one process have VMs with the same managed object IDs; the simulator's in-process
// session is shared between them, so neither may leave anything there that answers for the
// other's objects.
func TestTwoLabsInOneProcess(t *testing.T) {
	spec := Spec{VMs: []VMSpec{{Name: "x", CBT: true, Disks: []DiskSpec{{Size: "4MiB"}}}}}
	a := startLab(t, spec, Options{})
	b := startLab(t, spec, Options{})
	ai, _ := a.VM("x")
	bi, _ := b.VM("x")
	if ai.MoRef != bi.MoRef {
		t.Skipf("the labs' VMs have different IDs (%s, %s): nothing to confuse", ai.MoRef, bi.MoRef)
	}
	if err := a.ResizeDisk("x", "disk-2000", 8<<20); err != nil {
		t.Fatal(err)
	}
	if err := b.ResizeDisk("x", "disk-2000", 16<<20); err != nil {
		t.Fatal(err)
	}
	if err := b.RemoveVM("x"); err != nil {
		t.Fatalf("remove b's VM: %v", err)
	}
	info, err := a.VM("x")
	if err != nil || info.PowerState != "poweredOn" || info.Disks[0].CapacityBytes != 8<<20 {
		t.Errorf("a's VM after b's changes: %+v, %v", info, err)
	}
	if _, err := os.Stat(bi.Disks[0].FlatPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("b's disk file after removing b's VM: %v", err)
	}
	c := login(t, a)
	vm, _ := findVM(t, c, "x")
	if _, err := createSnapshot(t.Context(), vm, "s", false); err != nil {
		t.Errorf("snapshot in a: %v", err)
	}
}

func TestFailedStartLeavesNothing(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	spec := Spec{VMs: []VMSpec{{Name: "a", Disks: []DiskSpec{{Size: "1MiB"}}}}}
	if _, err := Start(t.Context(), spec, Options{Dir: dir, Listen: busy.Addr().String()}); err == nil {
		t.Fatal("Start on a busy port succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("failed Start left %d entries in %s", len(entries), dir)
	}
	startLab(t, spec, Options{Dir: dir})
}

// Two labs are two vCenters: each answers an instance UUID of its own, as the hub keys a source
// by it.
func TestLabsHaveTheirOwnVCenterInstanceUUID(t *testing.T) {
	spec := Spec{VMs: []VMSpec{{Name: "a", Disks: []DiskSpec{{Size: "1MiB"}}}}}
	a, b := login(t, startLab(t, spec, Options{})), login(t, startLab(t, spec, Options{}))
	ua, ub := a.ServiceContent.About.InstanceUuid, b.ServiceContent.About.InstanceUuid
	if ua == "" || ua == ub {
		t.Errorf("instance UUIDs %q and %q, want two distinct ones", ua, ub)
	}
}
