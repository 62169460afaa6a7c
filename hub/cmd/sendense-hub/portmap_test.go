package main

import (
	"bufio"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/portmap"
)

// serve with nfs_portmap_listen runs the portmapper on TCP and UDP of one port and answers
// only hosts of active sessions: with none, a GETPORT from loopback is not answered.
func TestServeStartsThePortmapper(t *testing.T) {
	_, logs, stop := startHubIn(t, t.TempDir(), "--nfs-listen", "127.0.0.1:0", "--nfs-address", "127.0.0.1", "--nfs-portmap-listen", "127.0.0.1:0")
	var line struct {
		NFS     string `json:"nfs_addr"`
		Portmap string `json:"portmap_addr"`
	}
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"hub listening"`) {
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if line.NFS == "" || line.Portmap == "" {
		t.Fatalf("hub listening without nfs_addr or portmap_addr:\n%s", logs.String())
	}
	// UDP is served on the same port: it is taken.
	if pc, err := net.ListenPacket("udp", line.Portmap); err == nil {
		pc.Close()
		t.Fatalf("udp %s is free: the portmapper does not listen on UDP", line.Portmap)
	}
	c, err := net.Dial("tcp", line.Portmap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call := []byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1, 0x86, 0xa0, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0, 1, 0x86, 0xa3, 0, 0, 0, 3, 0, 0, 0, 6, 0, 0, 0, 0}
	_ = portmap.WriteRecord(c, call)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if reply, err := portmap.ReadRecord(c, 1024); err == nil {
		t.Fatalf("a host without a session was answered: % x", reply)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The config refuses a portmapper without the NFS listener.
	if err := run(t.Context(), []string{"serve", "--data-dir", t.TempDir(), "--nfs-portmap-listen", "127.0.0.1:0"}, nil, nil, noEnv); err == nil || !strings.Contains(err.Error(), "nfs_portmap_listen") {
		t.Fatalf("portmapper without nfs_listen: %v", err)
	}
}
