package portmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/sendense/sendense/hub/internal/nfstest"
)

const (
	nfsPort  = 20490
	selfPort = 1110
)

// start serves the NFS table for port nfsPort on loopback TCP and UDP, answering the
// addresses allow accepts.
func start(t *testing.T, allow func(netip.Addr) bool) (tcpAddr, udpAddr string) {
	t.Helper()
	s := New(NFS(nfsPort, selfPort), allow, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() { done <- s.ServeTCP(t.Context(), ln) }()
	go func() { done <- s.ServeUDP(t.Context(), pc) }()
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		<-done
		<-done
	})
	return ln.Addr().String(), pc.LocalAddr().String()
}

func all(netip.Addr) bool { return true }

// call encodes a portmapper call with AUTH_NONE credentials and verifier.
func call(xid, proc uint32, args ...uint32) []byte {
	return append(be(xid, 0, 2, Program, Version, proc, 0, 0, 0, 0), be(args...)...)
}

// result checks that reply is a successful reply to xid and returns its results.
func result(t *testing.T, xid uint32, reply []byte) []byte {
	t.Helper()
	if len(reply) < 24 {
		t.Fatalf("reply of %d bytes", len(reply))
	}
	if got := be(xid, 1, 0, 0, 0, 0); !bytes.Equal(reply[:24], got) {
		t.Fatalf("reply header % x, want % x", reply[:24], got)
	}
	return reply[24:]
}

// udpCall sends msg and waits for the answer: up to answerWait when one is due, and only
// noAnswerWait where the test expects none (it then waits that long every time).
func udpCall(t *testing.T, addr string, msg []byte) ([]byte, error) {
	return udpCallWithin(t, addr, msg, answerWait)
}

const answerWait, noAnswerWait = 5 * time.Second, 500 * time.Millisecond

func udpCallWithin(t *testing.T, addr string, msg []byte, wait time.Duration) ([]byte, error) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	return buf[:n], err
}

func tcpCall(t *testing.T, c net.Conn, msg []byte) ([]byte, error) {
	t.Helper()
	if err := WriteRecord(c, msg); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	return ReadRecord(c, 1<<20)
}

func TestGetPortOverTCPWithTheNFSClientsPortmapper(t *testing.T) {
	addr, _ := start(t, all)
	c, err := nfstest.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pm := &rpc.Portmapper{Client: c}
	for _, tc := range []struct {
		m    rpc.Mapping
		want int
	}{
		{rpc.Mapping{Prog: ProgNFS, Vers: 3, Prot: ProtoTCP}, nfsPort},
		{rpc.Mapping{Prog: ProgMount, Vers: 3, Prot: ProtoTCP}, nfsPort},
		{rpc.Mapping{Prog: ProgNFS, Vers: 3, Prot: ProtoUDP}, 0}, // not served on UDP
		{rpc.Mapping{Prog: ProgNFS, Vers: 4, Prot: ProtoTCP}, 0},
		{rpc.Mapping{Prog: ProgMount, Vers: 1, Prot: ProtoTCP}, 0},
		{rpc.Mapping{Prog: 100021, Vers: 4, Prot: ProtoTCP}, 0}, // NLM: unknown
		{rpc.Mapping{Prog: Program, Vers: Version, Prot: ProtoTCP}, selfPort},
		{rpc.Mapping{Prog: Program, Vers: Version, Prot: ProtoUDP}, selfPort},
		{rpc.Mapping{Prog: Program, Vers: 4, Prot: ProtoTCP}, 0}, // rpcbind v4 is not served
	} {
		got, err := pm.Getport(tc.m)
		if err != nil || got != tc.want {
			t.Errorf("GETPORT %+v = %d, %v; want %d", tc.m, got, err, tc.want)
		}
	}
}

func TestGetPortNullAndDumpOverUDP(t *testing.T) {
	_, addr := start(t, all)
	reply, err := udpCall(t, addr, call(7, ProcGetPort, ProgMount, 3, ProtoTCP, 0))
	if err != nil {
		t.Fatal(err)
	}
	if got := result(t, 7, reply); !bytes.Equal(got, be(nfsPort)) {
		t.Fatalf("GETPORT MOUNT v3 over UDP = % x, want port %d", got, nfsPort)
	}
	reply, err = udpCall(t, addr, call(8, ProcGetPort, 100024, 1, ProtoUDP, 0))
	if err != nil {
		t.Fatal(err)
	}
	if got := result(t, 8, reply); !bytes.Equal(got, be(0)) {
		t.Fatalf("GETPORT of an unknown program = % x, want 0", got)
	}
	reply, err = udpCall(t, addr, call(9, ProcNull))
	if err != nil {
		t.Fatal(err)
	}
	if got := result(t, 9, reply); len(got) != 0 {
		t.Fatalf("NULL returned % x", got)
	}
	reply, err = udpCall(t, addr, call(10, ProcDump))
	if err != nil {
		t.Fatal(err)
	}
	want := append(be(1, Program, Version, ProtoTCP, selfPort, 1, Program, Version, ProtoUDP, selfPort,
		1, ProgNFS, 3, ProtoTCP, nfsPort, 1, ProgMount, 3, ProtoTCP, nfsPort), be(0)...)
	if got := result(t, 10, reply); !bytes.Equal(got, want) {
		t.Fatalf("DUMP = % x, want % x", got, want)
	}
}

func TestSetAndUnsetAreRefused(t *testing.T) {
	addr, _ := start(t, all)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, proc := range []uint32{ProcSet, ProcUnset} {
		reply, err := tcpCall(t, c, call(uint32(20+i), proc, ProgNFS, 3, ProtoTCP, 1))
		if err != nil {
			t.Fatal(err)
		}
		if got := result(t, uint32(20+i), reply); !bytes.Equal(got, be(0)) {
			t.Fatalf("proc %d answered % x, want FALSE", proc, got)
		}
	}
	reply, err := tcpCall(t, c, call(30, ProcGetPort, ProgNFS, 3, ProtoTCP, 0))
	if err != nil {
		t.Fatal(err)
	}
	if got := result(t, 30, reply); !bytes.Equal(got, be(nfsPort)) {
		t.Fatalf("after SET and UNSET, GETPORT NFS = % x, want %d", got, nfsPort)
	}
	// CALLIT (5) is not served; another program or version is told so.
	reply, _ = tcpCall(t, c, call(31, 5, ProgNFS, 3, 0, 0))
	if !bytes.Equal(reply, be(31, 1, 0, 0, 0, acceptProcUnavail)) {
		t.Fatalf("CALLIT answered % x, want PROC_UNAVAIL", reply)
	}
	msg := call(32, ProcNull)
	binary.BigEndian.PutUint32(msg[16:], 3) // portmapper version 3 (rpcbind)
	reply, _ = tcpCall(t, c, msg)
	if !bytes.Equal(reply, be(32, 1, 0, 0, 0, acceptProgMismatch, 2, 2)) {
		t.Fatalf("version 3 answered % x, want PROG_MISMATCH 2..2", reply)
	}
}

func TestDisallowedAddressGetsNothing(t *testing.T) {
	var open atomic.Bool
	tcpAddr, udpAddr := start(t, func(a netip.Addr) bool { return open.Load() && a == netip.MustParseAddr("127.0.0.1") })
	if reply, err := udpCallWithin(t, udpAddr, call(1, ProcGetPort, ProgNFS, 3, ProtoTCP, 0), noAnswerWait); err == nil {
		t.Fatalf("a disallowed address got a UDP answer: % x", reply)
	}
	c, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if reply, err := tcpCall(t, c, call(2, ProcGetPort, ProgNFS, 3, ProtoTCP, 0)); err == nil {
		t.Fatalf("a disallowed address got a TCP answer: % x", reply)
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isReset(err) {
		t.Fatalf("a disallowed connection: %v, want it closed", err)
	}
	// Once a session names the host, it is answered.
	open.Store(true)
	reply, err := udpCall(t, udpAddr, call(3, ProcGetPort, ProgNFS, 3, ProtoTCP, 0))
	if err != nil {
		t.Fatalf("an allowed address got no answer: %v", err)
	}
	if got := result(t, 3, reply); !bytes.Equal(got, be(nfsPort)) {
		t.Fatalf("GETPORT = % x", got)
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

func TestHostileInputIsBounded(t *testing.T) {
	addr, udpAddr := start(t, all)
	// A record claiming more than MaxRecord bytes: the connection is closed, nothing is read.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(be(0x80000000 | (MaxRecord + 1))); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(make([]byte, 16)); err == nil || isTimeout(err) {
		t.Fatalf("an oversized record: read %d, %v; want the connection closed", n, err)
	}
	// Many small fragments adding up to more than MaxRecord: closed too.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	for range MaxRecord/512 + 1 {
		if _, err := c2.Write(append(be(512), make([]byte, 512)...)); err != nil {
			break
		}
	}
	_ = c2.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c2.Read(make([]byte, 16)); err == nil || isTimeout(err) {
		t.Fatalf("fragments over the limit: read %d, %v; want the connection closed", n, err)
	}
	// A truncated call is answered GARBAGE_ARGS; an oversized credential too.
	reply, err := udpCall(t, udpAddr, call(5, ProcGetPort, ProgNFS))
	if err != nil || !bytes.Equal(reply, be(5, 1, 0, 0, 0, acceptGarbageArgs)) {
		t.Fatalf("short GETPORT: % x, %v", reply, err)
	}
	msg := be(6, 0, 2, Program, Version, ProcNull, 1, maxAuthBody+4)
	reply, err = udpCall(t, udpAddr, append(msg, make([]byte, maxAuthBody+4+8)...))
	if err != nil || !bytes.Equal(reply, be(6, 1, 0, 0, 0, acceptGarbageArgs)) {
		t.Fatalf("oversized credential: % x, %v", reply, err)
	}
	// A reply (not a call) gets nothing.
	if reply, err := udpCallWithin(t, udpAddr, be(7, 1, 0, 0, 0, 0), noAnswerWait); err == nil {
		t.Fatalf("a reply message was answered: % x", reply)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func FuzzDecodeCall(f *testing.F) {
	f.Add(call(1, ProcGetPort, ProgNFS, 3, ProtoTCP, 0))
	f.Add(call(2, ProcDump))
	f.Add(append(be(3, 0, 2, Program, Version, ProcNull, 1, 20), make([]byte, 28)...))
	f.Add(be(4, 1, 0, 0, 0, 0))
	f.Add([]byte{0, 0, 0})
	s := New(NFS(nfsPort, selfPort), all, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCall(b)
		if err == nil && len(c.Args) > len(b)-40 {
			t.Fatalf("args of %d bytes from a %d-byte message", len(c.Args), len(b))
		}
		reply, ok := s.Reply(b)
		if ok && (len(reply) < 24 || len(reply) > 24+4*(5*len(NFS(0, 0))+1)) {
			t.Fatalf("reply of %d bytes", len(reply))
		}
		if _, err := ReadRecord(bytes.NewReader(b), MaxRecord); err == nil && len(b) < 4 {
			t.Fatal("a record from fewer than 4 bytes")
		}
	})
}
