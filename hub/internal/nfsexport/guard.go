package nfsexport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// The NFS library (go-nfs v0.0.4 and the XDR decoders under it) allocates whatever length a
// request claims — an RPC credential, a file handle, a name, a path, WRITE data — before it
// reads the bytes: a 44-byte request could make the hub allocate 4 GiB. guardConn stands
// between the client and the library and hands it one whole record at a time, checked first:
// every length the library would allocate from must fit the record and a bound, or the
// connection is closed. What it reads mirrors what the library reads, in the library's order;
// re-check it when the library is upgraded.
const (
	// maxIO bounds the data of a WRITE and the count of a READ (clamped: a short read is
	// legal), and is what FSINFO advertises. ESXi and Linux clients send at most 1 MiB.
	maxIO = 1 << 20
	// maxRecord bounds one RPC record: a WRITE of maxIO and its headers.
	maxRecord = maxIO + 64<<10
	// Credentials and verifiers are at most 400 bytes (RFC 5531); NFSv3 handles at most 64
	// (RFC 1813), names at most 255 here, MOUNT paths at most 1024 (MNTPATHLEN).
	maxAuth, maxHandle, maxName, maxPath = 400, 64, 255, 1024

	// What FSINFO advertises instead of the library's 1 GiB reads and writes: a client that
	// took 1 GiB at its word would have its connection closed on its first WRITE past maxIO.
	advertisedMax, advertisedPref = maxIO, maxIO

	idleTimeout = 10 * time.Minute // between records (ESXi sends a heartbeat every few seconds)
	bodyTimeout = 30 * time.Second // for the rest of a record once its mark has arrived
	sendTimeout = time.Minute      // for each reply written
)

// errBadRecord refuses a record the guard will not hand to the library.
var errBadRecord = errors.New("nfs: record refused")

// RPC programs and NFSv3/MOUNT procedures the guard reads the arguments of.
const (
	progNFS   = 100003
	progMount = 100005
)

// guardConn is a client connection as the library sees it: reads return whole records that
// passed checkCall, writes have deadlines and FSINFO replies advertise what the guard accepts,
// and any failure closes the connection and runs onClose (which ends the library's serving of
// it).
type guardConn struct {
	net.Conn
	onClose func()
	once    sync.Once
	pending []byte       // the rest of the current record, handed out by Read
	buf     bytes.Buffer // the record being read; it grows only as its bytes arrive

	mu     sync.Mutex // fsinfo, shared by the library's reading and writing goroutines
	fsinfo []uint32   // xids of FSINFO calls handed to the library and not yet answered

	// The reply stream as written so far (only the library's writer goroutine writes).
	outLeft int    // bytes of the current reply record not yet written
	outMark []byte // the part of a record mark that ended the last write
}

// maxFSInfoPending bounds the FSINFO calls remembered; a reply to one past it keeps the
// library's figures, which the guard still enforces.
const maxFSInfoPending = 16

func (g *guardConn) Close() error {
	var err error
	g.once.Do(func() {
		err = g.Conn.Close()
		g.onClose()
	})
	return err
}

func (g *guardConn) Read(p []byte) (int, error) {
	if len(g.pending) == 0 {
		if err := g.next(); err != nil {
			_ = g.Close()
			return 0, err
		}
	}
	n := copy(p, g.pending)
	g.pending = g.pending[n:]
	return n, nil
}

func (g *guardConn) Write(p []byte) (int, error) {
	_ = g.Conn.SetWriteDeadline(time.Now().Add(sendTimeout))
	n, err := g.Conn.Write(g.rewrite(p)) // the same length as p
	if err != nil {
		_ = g.Close()
	}
	return n, err
}

// rewrite follows the reply records through p and returns p, or a copy of it in which each
// whole reply to a remembered FSINFO call advertises advertisedMax and advertisedPref.
func (g *guardConn) rewrite(p []byte) []byte {
	out, copied := p, false
	for i := 0; i < len(p); {
		if g.outLeft > 0 {
			k := min(g.outLeft, len(p)-i)
			g.outLeft -= k
			i += k
			continue
		}
		need := 4 - len(g.outMark)
		if len(p)-i < need {
			g.outMark = append(g.outMark, p[i:]...)
			break
		}
		whole := need == 4 // the mark and so perhaps the record are in p
		mark := binary.BigEndian.Uint32(append(g.outMark, p[i:i+need]...))
		g.outMark = g.outMark[:0]
		i += need
		n := int(mark & 0x7fffffff)
		if whole && n <= len(p)-i && g.answersFSInfo(p[i:i+n]) {
			if !copied {
				out, copied = bytes.Clone(p), true
			}
			advertise(out[i : i+n])
		}
		g.outLeft = n
	}
	return out
}

// noteFSInfo remembers the xid of an FSINFO call handed to the library.
func (g *guardConn) noteFSInfo(xid uint32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.fsinfo) < maxFSInfoPending {
		g.fsinfo = append(g.fsinfo, xid)
	}
}

// answersFSInfo reports whether rec, a reply record, answers a remembered FSINFO call, and
// forgets the call.
func (g *guardConn) answersFSInfo(rec []byte) bool {
	if len(rec) < 4 {
		return false
	}
	xid := binary.BigEndian.Uint32(rec)
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, x := range g.fsinfo {
		if x == xid {
			g.fsinfo = append(g.fsinfo[:k], g.fsinfo[k+1:]...)
			return true
		}
	}
	return false
}

// advertise lowers the transfer sizes of a successful FSINFO reply in place (RFC 1813
// FSINFO3resok after the RPC reply header); any other reply is left as it is.
func advertise(rec []byte) {
	r := &xdrReader{b: rec, ok: true}
	r.u32()                           // xid
	if r.u32() != 1 || r.u32() != 0 { // a REPLY, accepted
		return
	}
	r.u32()                                                // verifier flavor
	if !r.field(maxAuth) || r.u32() != 0 || r.u32() != 0 { // SUCCESS, NFS3_OK
		return
	}
	if r.u32() == 1 { // post_op_attr follows: a fattr3
		r.skip(84)
	}
	// rtmax rtpref rtmult wtmax wtpref wtmult dtpref, maxfilesize, time_delta, properties
	if !r.ok || len(r.b) != 48 {
		return
	}
	for _, f := range []struct {
		off  int
		size uint32
	}{{0, advertisedMax}, {4, advertisedPref}, {12, advertisedMax}, {16, advertisedPref}} {
		if binary.BigEndian.Uint32(r.b[f.off:]) > f.size {
			binary.BigEndian.PutUint32(r.b[f.off:], f.size)
		}
	}
	// Neither hard nor symbolic links are made here (FSF3_LINK, FSF3_SYMLINK).
	binary.BigEndian.PutUint32(r.b[44:], binary.BigEndian.Uint32(r.b[44:])&^3)
}

// next reads the next record whole and hands it on as one last fragment: its fragments
// joined (clients send a call as one fragment as a rule, but RFC 5531 lets them cut it
// anywhere), at most maxRecord bytes in all, its arguments checked (checkCall).
func (g *guardConn) next() error {
	var mark [4]byte
	_ = g.Conn.SetReadDeadline(time.Now().Add(idleTimeout))
	g.buf.Reset()
	g.buf.Write(mark[:]) // the record's own mark, written once its length is known
	for first := true; ; first = false {
		if _, err := io.ReadFull(g.Conn, mark[:]); err != nil {
			return err
		}
		if first {
			_ = g.Conn.SetReadDeadline(time.Now().Add(bodyTimeout))
		}
		h := binary.BigEndian.Uint32(mark[:])
		n, last := int64(h&0x7fffffff), h&0x80000000 != 0
		// An empty fragment that is not the last carries nothing: only a client stalling
		// sends one.
		if (n == 0 && !last) || int64(g.buf.Len()-4)+n > maxRecord {
			return errBadRecord
		}
		if _, err := io.CopyN(&g.buf, g.Conn, n); err != nil {
			return err
		}
		if last {
			break
		}
	}
	rec := g.buf.Bytes()
	if len(rec)-4 < 40 || !checkCall(rec[4:]) {
		return errBadRecord
	}
	binary.BigEndian.PutUint32(rec, 0x80000000|uint32(len(rec)-4))
	if prog, proc := binary.BigEndian.Uint32(rec[16:]), binary.BigEndian.Uint32(rec[24:]); prog == progNFS && proc == 19 {
		g.noteFSInfo(binary.BigEndian.Uint32(rec[4:]))
	}
	g.pending = rec
	return nil
}

// xdrReader reads XDR words of a record; past its end ok turns false.
type xdrReader struct {
	b  []byte
	ok bool
}

func (r *xdrReader) u32() uint32 {
	if !r.ok || len(r.b) < 4 {
		r.ok = false
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *xdrReader) skip(n int) {
	if !r.ok || len(r.b) < n {
		r.ok = false
		return
	}
	r.b = r.b[n:]
}

// field passes over a counted field of at most limit bytes; false when it claims more, or more
// than the record holds. A record that ends before the count is left to the library, which
// fails on its end without allocating.
func (r *xdrReader) field(limit uint32) bool {
	n := r.u32()
	if !r.ok {
		return true
	}
	padded := (uint64(n) + 3) &^ 3
	if n > limit || padded > uint64(len(r.b)) {
		return false
	}
	r.b = r.b[padded:]
	return true
}

// sattr3 passes over a sattr3 as the library reads it (RFC 1813): mode, uid and gid each a word
// when set, size two, and each time two when set by the client.
func (r *xdrReader) sattr3() {
	for range 3 {
		if r.u32() != 0 {
			r.u32()
		}
	}
	if r.u32() != 0 {
		r.skip(8)
	}
	for range 2 {
		if r.u32() == 2 {
			r.skip(8)
		}
	}
}

// checkCall reports whether an RPC call may reach the library: its credential and verifier,
// and the counted fields of the arguments the library reads, are within bounds. It clamps a
// READ's count to maxIO in place.
func checkCall(b []byte) bool {
	r := &xdrReader{b: b, ok: true}
	r.u32()                           // xid
	if r.u32() != 0 || r.u32() != 2 { // a CALL of RPC version 2
		return false
	}
	prog, _, proc := r.u32(), r.u32(), r.u32()
	r.u32() // credential flavor
	if !r.field(maxAuth) {
		return false
	}
	r.u32() // verifier flavor
	if !r.field(maxAuth) || !r.ok {
		return false
	}
	switch prog {
	case progMount:
		if proc == 1 || proc == 3 { // MNT, UMNT: a path
			return r.field(maxPath)
		}
		return true
	case progNFS:
	default:
		return true // no handler: the library answers without reading arguments
	}
	switch proc {
	case 0: // NULL
		return true
	case 1, 2, 4, 5, 16, 17, 18, 19, 20, 21: // a handle first, then fixed-size fields
		return r.field(maxHandle)
	case 3, 8, 9, 11, 12, 13: // LOOKUP, CREATE, MKDIR, MKNOD, REMOVE, RMDIR: handle, name
		return r.field(maxHandle) && r.field(maxName)
	case 14: // RENAME: two handles and names
		return r.field(maxHandle) && r.field(maxName) && r.field(maxHandle) && r.field(maxName)
	case 6: // READ: handle, offset, count
		if !r.field(maxHandle) {
			return false
		}
		r.skip(8)
		if r.ok && len(r.b) >= 4 && binary.BigEndian.Uint32(r.b) > maxIO {
			binary.BigEndian.PutUint32(r.b, maxIO)
		}
		return true
	case 7: // WRITE: handle, offset, count, stable, data
		if !r.field(maxHandle) {
			return false
		}
		r.skip(16)
		return r.field(maxIO)
	case 10, 15: // SYMLINK, LINK (read by the library as SYMLINK): handle, name, sattr3, target
		if !r.field(maxHandle) || !r.field(maxName) {
			return false
		}
		r.sattr3()
		return r.field(maxPath) // the session's file system refuses both
	}
	return true // no such procedure: the library answers PROC_UNAVAIL
}
