// Package portmap is a minimal ONC RPC portmapper (program 100000 version 2, RFC 1833 and
// RFC 1057): it tells NFSv3 clients such as ESXi's on which port the hub serves MOUNT and NFS.
// It answers NULL, GETPORT and DUMP from a fixed table, refuses SET and UNSET, and speaks
// record marking over TCP and plain datagrams over UDP. Only addresses the Allow function
// accepts get answers; other TCP connections are closed and other datagrams dropped.
package portmap

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Well-known numbers.
const (
	Program = 100000 // the portmapper
	Version = 2

	ProgNFS   = 100003
	ProgMount = 100005

	ProtoTCP = 6
	ProtoUDP = 17

	ProcNull    = 0
	ProcSet     = 1
	ProcUnset   = 2
	ProcGetPort = 3
	ProcDump    = 4
)

// Limits on hostile input.
const (
	// MaxRecord bounds one request: a call header with two 400-byte authentication bodies
	// (the RFC's maximum) and a mapping fits well under it.
	MaxRecord = 2048
	// MaxConns bounds the TCP connections served at once.
	MaxConns = 64
	// ReadTimeout bounds the wait for each request on a TCP connection; an idle connection
	// is closed after it.
	ReadTimeout = 30 * time.Second
	// WriteTimeout bounds sending one reply.
	WriteTimeout = 10 * time.Second
)

const maxAuthBody = 400

// Mapping is one entry of the table: program, version, protocol (ProtoTCP or ProtoUDP), port.
type Mapping struct {
	Prog, Vers, Prot, Port uint32
}

// NFS returns the table of an NFSv3 server that serves MOUNT v3 and NFS v3 on one TCP port,
// with the portmapper's own entries (TCP and UDP on self): clients such as rpcinfo first ask
// the portmapper where the portmapper is.
func NFS(nfsPort, self uint16) []Mapping {
	return []Mapping{
		{Prog: Program, Vers: Version, Prot: ProtoTCP, Port: uint32(self)},
		{Prog: Program, Vers: Version, Prot: ProtoUDP, Port: uint32(self)},
		{Prog: ProgNFS, Vers: 3, Prot: ProtoTCP, Port: uint32(nfsPort)},
		{Prog: ProgMount, Vers: 3, Prot: ProtoTCP, Port: uint32(nfsPort)},
	}
}

// Server answers portmapper calls from a fixed table.
type Server struct {
	table []Mapping
	allow func(netip.Addr) bool
	log   *slog.Logger
	sem   chan struct{}
}

// New returns a server answering from table; allow decides which client addresses are
// answered (it is asked for every request, so it may change over time).
func New(table []Mapping, allow func(netip.Addr) bool, log *slog.Logger) *Server {
	return &Server{table: append([]Mapping(nil), table...), allow: allow, log: log, sem: make(chan struct{}, MaxConns)}
}

// Call is a decoded RPC call message.
type Call struct {
	XID, RPCVers, Prog, Vers, Proc uint32
	// Args are the procedure's arguments, not yet decoded.
	Args []byte
}

// errors of decoding a call.
var (
	ErrShort   = errors.New("message too short")
	ErrNotCall = errors.New("not an RPC call")
	ErrAuth    = errors.New("authentication body too long")
)

// DecodeCall decodes an RPC call message (RFC 5531 section 9): the header up to and including
// the verifier; the rest is Args.
func DecodeCall(b []byte) (Call, error) {
	var c Call
	r := reader{b: b}
	c.XID = r.u32()
	if r.u32() != 0 { // msg_type CALL
		if r.err != nil {
			return c, r.err
		}
		return c, ErrNotCall
	}
	c.RPCVers, c.Prog, c.Vers, c.Proc = r.u32(), r.u32(), r.u32(), r.u32()
	for range 2 { // credentials, verifier
		r.u32() // flavor
		n := r.u32()
		if r.err != nil {
			return c, r.err
		}
		if n > maxAuthBody {
			return c, ErrAuth
		}
		r.skip(int(n+3) &^ 3)
	}
	if r.err != nil {
		return c, r.err
	}
	c.Args = r.b[r.off:]
	return c, nil
}

type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) u32() uint32 {
	if r.err != nil || len(r.b)-r.off < 4 {
		r.err = ErrShort
		return 0
	}
	v := binary.BigEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

func (r *reader) skip(n int) {
	if r.err != nil || n < 0 || len(r.b)-r.off < n {
		r.err = ErrShort
		return
	}
	r.off += n
}

// accept_stat values.
const (
	acceptSuccess      = 0
	acceptProgUnavail  = 1
	acceptProgMismatch = 2
	acceptProcUnavail  = 3
	acceptGarbageArgs  = 4
)

// Reply answers one request; ok is false when the message is not a call and gets no reply.
func (s *Server) Reply(req []byte) (reply []byte, ok bool) {
	c, err := DecodeCall(req)
	if err != nil {
		if errors.Is(err, ErrNotCall) || len(req) < 8 {
			return nil, false
		}
		// A call whose header does not parse: garbage arguments, so the caller stops waiting.
		return accepted(c.XID, acceptGarbageArgs), true
	}
	if c.RPCVers != 2 {
		// MSG_DENIED, RPC_MISMATCH, low 2, high 2.
		return be(c.XID, 1, 1, 0, 2, 2), true
	}
	if c.Prog != Program {
		return accepted(c.XID, acceptProgUnavail), true
	}
	if c.Vers != Version {
		return append(accepted(c.XID, acceptProgMismatch), be(Version, Version)...), true
	}
	switch c.Proc {
	case ProcNull:
		return accepted(c.XID, acceptSuccess), true
	case ProcSet, ProcUnset:
		if len(c.Args) < 16 {
			return accepted(c.XID, acceptGarbageArgs), true
		}
		// The table is the hub's own: nobody registers or removes programs.
		return append(accepted(c.XID, acceptSuccess), be(0)...), true
	case ProcGetPort:
		if len(c.Args) < 16 {
			return accepted(c.XID, acceptGarbageArgs), true
		}
		prog := binary.BigEndian.Uint32(c.Args)
		vers := binary.BigEndian.Uint32(c.Args[4:])
		prot := binary.BigEndian.Uint32(c.Args[8:])
		return append(accepted(c.XID, acceptSuccess), be(s.port(prog, vers, prot))...), true
	case ProcDump:
		out := accepted(c.XID, acceptSuccess)
		for _, m := range s.table {
			out = append(out, be(1, m.Prog, m.Vers, m.Prot, m.Port)...)
		}
		return append(out, be(0)...), true
	default:
		return accepted(c.XID, acceptProcUnavail), true
	}
}

func (s *Server) port(prog, vers, prot uint32) uint32 {
	for _, m := range s.table {
		if m.Prog == prog && m.Vers == vers && m.Prot == prot {
			return m.Port
		}
	}
	return 0
}

// accepted starts a MSG_ACCEPTED reply with a null verifier and the given accept_stat.
func accepted(xid, stat uint32) []byte {
	return be(xid, 1, 0, 0, 0, stat)
}

func be(v ...uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.BigEndian.PutUint32(b[4*i:], x)
	}
	return b
}

func (s *Server) allowed(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && s.allow(ap.Addr().Unmap())
}

// ServeUDP answers datagrams on pc until ctx ends.
func (s *Server) ServeUDP(ctx context.Context, pc net.PacketConn) error {
	go func() {
		<-ctx.Done()
		pc.Close()
	}()
	buf := make([]byte, MaxRecord+1)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("read portmapper datagram: %w", err)
		}
		if n > MaxRecord || !s.allowed(from) {
			continue
		}
		if reply, ok := s.Reply(buf[:n]); ok {
			_ = pc.SetWriteDeadline(time.Now().Add(WriteTimeout))
			if _, err := pc.WriteTo(reply, from); err != nil {
				s.log.Debug("portmapper reply", "to", from.String(), "err", err)
			}
		}
	}
}

// ServeTCP answers record-marked calls on connections accepted from ln until ctx ends.
func (s *Server) ServeTCP(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accept portmapper connection: %w", err)
		}
		if !s.allowed(c.RemoteAddr()) {
			c.Close()
			continue
		}
		select {
		case s.sem <- struct{}{}:
		default:
			c.Close() // too many at once
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-s.sem }()
			s.serveConn(ctx, c)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	for {
		_ = c.SetReadDeadline(time.Now().Add(ReadTimeout))
		req, err := ReadRecord(c, MaxRecord)
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				s.log.Debug("portmapper connection", "client", c.RemoteAddr().String(), "err", err)
			}
			return
		}
		if !s.allowed(c.RemoteAddr()) {
			return
		}
		reply, ok := s.Reply(req)
		if !ok {
			return
		}
		_ = c.SetWriteDeadline(time.Now().Add(WriteTimeout))
		if err := WriteRecord(c, reply); err != nil {
			return
		}
	}
}

// ReadRecord reads one record of RFC 5531 record marking (fragments of a 31-bit length, the
// top bit marking the last) of at most limit bytes in all.
func ReadRecord(r io.Reader, limit int) ([]byte, error) {
	var rec []byte
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if len(rec) > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		h := binary.BigEndian.Uint32(hdr[:])
		n := int(h & 0x7fffffff)
		if len(rec)+n > limit {
			return nil, fmt.Errorf("record over %d bytes", limit)
		}
		start := len(rec)
		rec = append(rec, make([]byte, n)...)
		if _, err := io.ReadFull(r, rec[start:]); err != nil {
			return nil, fmt.Errorf("read record fragment: %w", err)
		}
		if h&0x80000000 != 0 {
			return rec, nil
		}
	}
}

// WriteRecord writes b as one last fragment.
func WriteRecord(w io.Writer, b []byte) error {
	out := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(out, 0x80000000|uint32(len(b)))
	copy(out[4:], b)
	_, err := w.Write(out)
	return err
}
