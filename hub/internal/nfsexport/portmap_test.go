package nfsexport

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/sendense/sendense/hub/internal/nfstest"
	"github.com/sendense/sendense/hub/internal/portmap"
)

// The way ESXi mounts: ask the portmapper for MOUNT's and NFS's ports, then mount there. The
// portmapper answers only hosts some session allows, as the export does.
func TestMountThroughThePortmapper(t *testing.T) {
	img := diskImage(t, 3)
	im, _ := restorePoint(t, img, "disk-2000")
	s, addr := serve(t, t.TempDir())
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pm := portmap.New(portmap.NFS(uint16(port), uint16(ln.Addr().(*net.TCPAddr).Port)), s.Allows, slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan error, 1)
	go func() { done <- pm.ServeTCP(t.Context(), ln) }()
	t.Cleanup(func() { ln.Close(); <-done })

	getport := func(prog uint32) (int, error) {
		c, err := nfstest.Dial(ln.Addr().String())
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return (&rpc.Portmapper{Client: c}).Getport(rpc.Mapping{Prog: prog, Vers: 3, Prot: rpc.IPProtoTCP})
	}
	// answered reports whether a GETPORT over a plain connection gets any reply (the Go
	// client would retry a closed connection for ten seconds).
	answered := func() bool {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		call := make([]byte, 56)
		for i, v := range []uint32{1, 0, 2, portmap.Program, portmap.Version, portmap.ProcGetPort, 0, 0, 0, 0, portmap.ProgNFS, 3, portmap.ProtoTCP, 0} {
			binary.BigEndian.PutUint32(call[4*i:], v)
		}
		if err := portmap.WriteRecord(c, call); err != nil {
			return false
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = portmap.ReadRecord(c, 1024)
		return err == nil
	}
	// No session names this host yet: nothing is answered.
	if answered() {
		t.Fatal("a host no session names was answered")
	}
	if err := s.Add(Export{ID: "ir-pm", Folder: "vm", Allowed: []netip.Addr{loopback},
		Disks: []Disk{{Name: "vm", Image: im.Reader(t.Context()), Size: im.Size()}}}); err != nil {
		t.Fatal(err)
	}
	mountPort, err := getport(portmap.ProgMount)
	if err != nil || mountPort != port {
		t.Fatalf("GETPORT MOUNT v3 = %d, %v; want the NFS listener's %d", mountPort, err, port)
	}
	nfsPort, err := getport(portmap.ProgNFS)
	if err != nil || nfsPort != port {
		t.Fatalf("GETPORT NFS v3 = %d, %v; want %d", nfsPort, err, port)
	}
	tg := mustMount(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(mountPort)), Path("ir-pm"))
	if got := readFile(t, tg, "vm/vm-flat.vmdk", int64(len(img))); !bytes.Equal(got, img) {
		t.Fatal("the disk read through the port the portmapper named differs from the restore point")
	}
	// When the session ends, the host is no longer answered.
	if err := s.Remove("ir-pm", true); err != nil {
		t.Fatal(err)
	}
	if answered() {
		t.Fatal("after the session ended the host was still answered")
	}
}
