package nfsexport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
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

// opaque encodes b as an XDR opaque: its length, then b padded to 4 bytes.
func opaque(b []byte) []byte {
	return append(words(uint32(len(b))), append(b, make([]byte, (4-len(b)%4)%4)...)...)
}

// exportHandle is the handle of a path of the hostile server's export.
func exportHandle(s *Server, p ...string) []byte {
	s.mu.RLock()
	ex := s.exports["ir-1"]
	s.mu.RUnlock()
	return (&handler{s: s, client: loopback}).ToHandle(ex.fs, p)
}

// sendCall sends body as one record on a connection of its own and returns the connection, its
// reads given 10 s.
func sendCall(t *testing.T, addr string, body []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(record(body)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return c
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
		raw  bool // body is sent as it is, its record marks included
	}{
		{"credential", append(words(1, 0, 2, progNFS, 3, 0, 1, 0x7ffffffc), words(0, 0, 0)...), false}, // 44 bytes: past the 40-byte floor
		{"GETATTR handle", append(rpcCall(progNFS, 1), words(0xffffffff)...), false},
		{"MNT path", append(rpcCall(progMount, 1), words(0xffffffff)...), false},
		{"LOOKUP name", append(rpcCall(progNFS, 3), words(16, 0, 0, 0, 0, 0x7ffffffc, 0)...), false},
		{"WRITE data", append(rpcCall(progNFS, 7), words(16, 0, 0, 0, 0, 0, 0, 0, 0, 0x7ffffffc, 0)...), false},
		{"fragment over the bound", words(0x80000000|(maxRecord+4), 1, 0, 2), true},
		{"fragments over the bound", slices.Concat(words(maxRecord), make([]byte, maxRecord), words(0x80000000|4, 0)), true},
		{"empty fragment not the last", words(0, 0x80000000|44), true},
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
			if !tc.raw {
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
	body := slices.Concat(rpcCall(progNFS, 6), opaque(exportHandle(s, "d", "d-flat.vmdk")), words(0, 0, 0xffffffff))
	c := sendCall(t, addr, body)
	var mark [4]byte
	if _, err := io.ReadFull(c, mark[:]); err != nil {
		t.Fatal(err)
	}
	n := binary.BigEndian.Uint32(mark[:]) & 0x7fffffff
	if n < maxIO || n > maxIO+4096 {
		t.Fatalf("reply of %d bytes to a READ of 4 GiB, want maxIO (%d) and its headers", n, maxIO)
	}
}

// A call cut into fragments (RFC 5531 record marking; a client may cut a record anywhere) is
// answered as if it came whole.
func TestFragmentedCallIsAnswered(t *testing.T) {
	s, addr := hostileServer(t)
	body := slices.Concat(rpcCall(progNFS, 6), opaque(exportHandle(s, "d", "d-flat.vmdk")), words(0, 0, 4096))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cuts := []int{0, 1, 14, 40, len(body)}
	for i := range len(cuts) - 1 {
		frag := body[cuts[i]:cuts[i+1]]
		mark := uint32(len(frag))
		if i == len(cuts)-2 {
			mark |= 0x80000000
		}
		// Each fragment in a write of its own, so that the guard reads them as they arrive.
		if _, err := c.Write(append(words(mark), frag...)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	head := make([]byte, 4+12)
	if _, err := io.ReadFull(c, head); err != nil {
		t.Fatalf("no answer to a fragmented READ: %v", err)
	}
	n := binary.BigEndian.Uint32(head) & 0x7fffffff
	if xid, accepted := binary.BigEndian.Uint32(head[4:]), binary.BigEndian.Uint32(head[12:]); xid != 1 || accepted != 0 || n < 4096 {
		t.Fatalf("reply of %d bytes, xid %d, reply status %d; want the READ's 4096 bytes for xid 1", n, xid, accepted)
	}
}

// FSINFO advertises the transfer sizes the guard accepts, not the library's 1 GiB: a client
// honouring 1 GiB would have its connection closed on its first WRITE past maxIO.
func TestFSInfoAdvertisesWhatTheGuardAccepts(t *testing.T) {
	_, addr := hostileServer(t)
	tg := mustMount(t, addr, Path("ir-1"))
	fi, err := tg.FSInfo()
	if err != nil {
		t.Fatal(err)
	}
	if fi.RTMax != 1<<20 || fi.WTMax != 1<<20 || fi.RTPref != 1<<20 || fi.WTPref != 1<<20 || fi.Properties&3 != 0 {
		t.Fatalf("FSINFO reads %d (preferred %d), writes %d (preferred %d), properties %#x; want 1 MiB and no links",
			fi.RTMax, fi.RTPref, fi.WTMax, fi.WTPref, fi.Properties)
	}
	// What it advertises is accepted: a WRITE of maxIO at once.
	f, err := tg.OpenFile("d/d-flat.vmdk", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := f.Write(bytes.Repeat([]byte{7}, maxIO)); n != maxIO || err != nil {
		t.Fatalf("write of maxIO: %d, %v", n, err)
	}
}

// The rewriting follows the reply records however the library's writes cut them: only a
// whole reply to a remembered FSINFO call changes, and every other byte passes as written.
func TestFSInfoRewriteFollowsTheRecords(t *testing.T) {
	fsinfo := func(xid uint32) []byte {
		b := words(xid, 1, 0, 0, 0, 0, 0, 1) // reply, accepted, null verifier, SUCCESS, NFS3_OK, attributes follow
		b = append(b, make([]byte, 84)...)
		return append(b, words(1<<30, 1<<30, 4096, 1<<30, 1<<30, 4096, 8192, 0, 1<<20, 0, 1, 3)...)
	}
	other := record(append(words(5, 1, 0, 0, 0, 0), bytes.Repeat([]byte{0xee}, 100<<10)...))
	stream := slices.Concat(other, record(fsinfo(9)), record(fsinfo(8)), record(fsinfo(9)))
	want := bytes.Clone(stream)
	at := len(other) + 4 + 4*8 + 84 // the first FSINFO's rtmax
	binary.BigEndian.PutUint32(want[at:], maxIO)
	binary.BigEndian.PutUint32(want[at+4:], maxIO)
	binary.BigEndian.PutUint32(want[at+12:], maxIO)
	binary.BigEndian.PutUint32(want[at+16:], maxIO)
	binary.BigEndian.PutUint32(want[at+44:], 0) // no links

	for _, cut := range []int{1, 3, 4096, len(other), 0} { // 0: the whole stream in one write
		a, b := net.Pipe()
		g := &guardConn{Conn: a, onClose: func() {}}
		g.noteFSInfo(9) // answered by the first reply of xid 9 only; 8 was not asked
		got := make(chan []byte)
		go func() { all, _ := io.ReadAll(b); got <- all }()
		// The library's writes: the other reply in pieces of cut bytes, each FSINFO reply whole.
		var writes [][]byte
		if cut == 0 {
			writes = [][]byte{stream}
		} else {
			writes = slices.Collect(slices.Chunk(stream[:len(other)], cut))
			writes = append(writes, slices.Collect(slices.Chunk(stream[len(other):], len(fsinfo(0))+4))...)
		}
		for _, w := range writes {
			if n, err := g.Write(w); n != len(w) || err != nil {
				t.Fatalf("write: %d, %v", n, err)
			}
		}
		a.Close()
		if all := <-got; !bytes.Equal(all, want) {
			t.Fatalf("cut %d: the stream differs from the expected rewrite", cut)
		}
	}
}

// A SYMLINK or LINK, which a client may send, is answered with an error, not a hang-up: a hard
// mount whose connection is closed retransmits the call for ever.
func TestLinksAreAnsweredWithAnError(t *testing.T) {
	s, addr := hostileServer(t)
	dir := exportHandle(s, "d")
	for _, proc := range []uint32{10, 15} { // SYMLINK, LINK
		body := slices.Concat(rpcCall(progNFS, proc), opaque(dir), opaque([]byte("etc")),
			words(0, 0, 0, 0, 0, 0), opaque([]byte("/etc"))) // no attributes set
		c := sendCall(t, addr, body)
		reply := make([]byte, 32) // mark, xid, REPLY, accepted, null verifier, SUCCESS, status
		if _, err := io.ReadFull(c, reply); err != nil {
			t.Fatalf("procedure %d: %v, want an answer", proc, err)
		}
		if st := binary.BigEndian.Uint32(reply[28:]); binary.BigEndian.Uint32(reply[20:]) != 0 || st == 0 {
			t.Fatalf("procedure %d answered status %d, want an NFS error", proc, st)
		}
	}
	_ = filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "etc" {
			t.Errorf("a link was made: %s", p)
		}
		return nil
	})
}
