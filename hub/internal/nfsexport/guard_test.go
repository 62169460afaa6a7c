package nfsexport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/testenv"
)

// words encodes XDR words.
func words(vs ...uint32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.BigEndian.PutUint32(b[4*i:], v)
	}
	return b
}

// rpcCall is an RPC call header with null credential and verifier.
func rpcCall(prog, proc uint32) []byte {
	return words(1, 0, 2, prog, 3, proc, 0, 0, 0, 0)
}

// record frames body as one last fragment.
func record(body []byte) []byte {
	return append(words(0x80000000|uint32(len(body))), body...)
}

func hostileServer(t *testing.T) (*Server, string) {
	t.Helper()
	s, addr := serve(t, t.TempDir())
	if err := s.Add(Export{ID: "ir-1", Folder: "d", Allowed: []netip.Addr{loopback},
		Disks: []Disk{{Name: "d", Image: bytes.NewReader(make([]byte, 16<<20)), Size: 16 << 20}}}); err != nil {
		t.Fatal(err)
	}
	return s, addr
}

// closedByServer reports whether the server closes c within 10 s without answering.
func closedByServer(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 4))
	return n == 0 && err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// Requests of a few bytes that claim huge lengths — a credential, a handle, a MOUNT path, a
// LOOKUP name, WRITE data — make the hub allocate nothing of what they claim: the connection is
// closed. Before the guard each cost about 4 GiB.
func TestClaimedLengthsAllocateNothing(t *testing.T) {
	_, addr := hostileServer(t)
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"credential", append(words(1, 0, 2, progNFS, 3, 0, 1, 0x7ffffffc), words(0)...)},
		{"GETATTR handle", append(rpcCall(progNFS, 1), words(0xffffffff)...)},
		{"MNT path", append(rpcCall(progMount, 1), words(0xffffffff)...)},
		{"LOOKUP name", append(rpcCall(progNFS, 3), words(16, 0, 0, 0, 0, 0x7ffffffc, 0)...)},
		{"WRITE data", append(rpcCall(progNFS, 7), words(16, 0, 0, 0, 0, 0, 0, 0, 0, 0x7ffffffc, 0)...)},
		{"fragment over the bound", words(0x80000000|(maxRecord+4), 1, 0, 2)},
		{"not the last fragment", words(64, 1, 0, 2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			msg := tc.body
			if tc.name != "fragment over the bound" && tc.name != "not the last fragment" {
				msg = record(tc.body)
			}
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			if !closedByServer(t, c) {
				t.Fatal("the connection stayed open")
			}
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
				t.Fatalf("the hub allocated %d MiB for a request of %d bytes", grew>>20, len(msg))
			}
		})
	}
}

// Connections a client ends with a malformed record give their slots back: a host that sent
// more of them than it may hold connections can still mount.
func TestRefusedRecordsReleaseTheirSlots(t *testing.T) {
	s, addr := hostileServer(t)
	for range maxNFSConnsPerClient + 1 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(words(0x80000000|8, 1, 0)); err != nil {
			t.Fatal(err)
		}
		closedByServer(t, c)
		c.Close()
	}
	testenv.WaitFor(t, 10*time.Second, "every slot released", func() bool {
		s.conns.mu.Lock()
		defer s.conns.mu.Unlock()
		return s.conns.by[loopback] == 0
	})
	mustMount(t, addr, "/ir-1")
}

// A READ asking for 4 GiB gets at most maxIO bytes back.
func TestReadCountIsClamped(t *testing.T) {
	s, addr := hostileServer(t)
	h := &handler{s: s, client: loopback}
	s.mu.RLock()
	ex := s.exports["ir-1"]
	s.mu.RUnlock()
	fh := h.ToHandle(ex.fs, []string{"d", "d-flat.vmdk"})
	body := append(rpcCall(progNFS, 6), words(uint32(len(fh)))...)
	body = append(body, fh...)
	body = append(body, make([]byte, (4-len(fh)%4)%4)...)
	body = append(body, words(0, 0, 0xffffffff)...)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(record(body)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var mark [4]byte
	if _, err := io.ReadFull(c, mark[:]); err != nil {
		t.Fatal(err)
	}
	n := binary.BigEndian.Uint32(mark[:]) & 0x7fffffff
	if n < maxIO || n > maxIO+4096 {
		t.Fatalf("reply of %d bytes to a READ of 4 GiB, want maxIO (%d) and its headers", n, maxIO)
	}
}
