// Package nbd is a small read-only client for the Network Block Device protocol, enough to read
// disks served by nbdkit: fixed newstyle handshake with NBD_OPT_GO, then NBD_CMD_READ requests
// with simple replies, many in flight on one connection.
package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultHandshakeTimeout bounds Dial's handshake when ctx has no deadline. It is generous
// because nbdkit's vddk plugin logs in to vCenter and opens the disk while answering NBD_OPT_GO.
const DefaultHandshakeTimeout = 2 * time.Minute

// closeWriteTimeout bounds sending NBD_CMD_DISC in Close to a server that stopped reading.
const closeWriteTimeout = 2 * time.Second

// Client is one NBD connection to one export, opened read-only in effect (it only sends
// NBD_CMD_READ). ReadAt is safe for concurrent use: every call sends its own requests with
// unique cookies and one goroutine hands each reply to its caller, so many reads are in flight
// at once. Close aborts reads in flight.
type Client struct {
	conn       net.Conn
	br         *bufio.Reader // only the reply goroutine reads after Dial returns
	size       int64
	minBlock   int64
	maxRequest int64

	writeMu  sync.Mutex // serialises request headers on the wire
	discSent bool       // guarded by writeMu: NBD_CMD_DISC is on the wire, send nothing more
	cookies  atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]*request
	err     error // non-nil once the connection is unusable; new requests fail with it

	readerDone chan struct{}
	closeOnce  sync.Once
}

// request is one NBD_CMD_READ waiting for its reply.
type request struct {
	buf  []byte     // filled by the reply goroutine
	done chan error // receives exactly one value, after buf is no longer touched
}

// Dial connects to an NBD server and negotiates the named export ("" is the default export,
// which is what nbdkit serves). network is "unix" (address is a socket path) or "tcp", "tcp4",
// "tcp6" (address is host:port). ctx bounds the connection and the handshake; without a
// deadline the handshake is bounded by DefaultHandshakeTimeout. Errors for a refused export
// match ErrUnknownExport or are an *OptionError naming the NBD_REP_ERR_* reply; a peer that
// does not speak NBD gives an error matching ErrProtocol.
func Dial(ctx context.Context, network, address, exportName string) (*Client, error) {
	switch network {
	case "unix", "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("nbd dial: unsupported network %q (want unix or tcp)", network)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("nbd dial %s %s: %w", network, address, err)
	}
	c, err := handshake(ctx, conn, exportName)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("nbd handshake with %s %s (export %q): %w", network, address, exportName, err)
	}
	return c, nil
}

func handshake(ctx context.Context, conn net.Conn, exportName string) (*Client, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultHandshakeTimeout)
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("set handshake deadline: %w", err)
	}
	// Cancellation without a deadline: expire the deadline so blocked I/O returns.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	br := bufio.NewReaderSize(conn, 64<<10)
	exp, err := negotiate(br, conn, exportName)
	stopped := stop()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("%w: %w", ctxErr, err)
		}
		return nil, err
	}
	if !stopped {
		return nil, ctx.Err()
	}
	if !transmitFlagsValid(exp.flags) {
		return nil, fmt.Errorf("%w: transmission flags %#x lack NBD_FLAG_HAS_FLAGS", ErrProtocol, exp.flags)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("clear handshake deadline: %w", err)
	}
	c := &Client{
		conn:       conn,
		br:         br,
		size:       exp.size,
		minBlock:   int64(exp.minBlock),
		maxRequest: int64(exp.maxRequest),
		pending:    make(map[uint64]*request),
		readerDone: make(chan struct{}),
	}
	go c.receive()
	return c, nil
}

// Size returns the export size in bytes.
func (c *Client) Size() int64 { return c.size }

// ReadAt reads len(p) bytes at offset off, like io.ReaderAt: it returns io.EOF when the read
// reaches the end of the export (with the bytes up to the end in p), and 0, io.EOF at or past
// the end. Reads larger than the server's maximum request (at most DefaultMaxRequest) are split
// and pipelined; unaligned reads on a server with a minimum block size are widened to aligned
// ones. A failed request returns an error naming the NBD errno (errors.As to Errno); a broken
// connection fails every pending and later call with an error matching ErrConnLost, and Close
// fails them with ErrClosed. ReadAt never returns while the connection may still write into p.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("nbd read at offset %d: negative offset", off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= c.size {
		return 0, io.EOF
	}
	want := p
	if rem := c.size - off; int64(len(p)) > rem {
		want = p[:rem]
	}
	if err := c.readFull(want, off); err != nil {
		return 0, fmt.Errorf("nbd read %d bytes at offset %d: %w", len(want), off, err)
	}
	if len(want) < len(p) {
		return len(want), io.EOF
	}
	return len(want), nil
}

// readFull reads exactly len(p) bytes at off, all inside the export.
func (c *Client) readFull(p []byte, off int64) error {
	start := off - off%c.minBlock
	end := off + int64(len(p))
	if r := end % c.minBlock; r != 0 {
		// An export whose size is not a multiple of the block size has an unreachable unaligned
		// tail; asking for it is the best we can do.
		end = min(end+c.minBlock-r, c.size)
	}
	if start == off && end == off+int64(len(p)) {
		return c.readAligned(p, off)
	}
	buf := make([]byte, end-start)
	if err := c.readAligned(buf, start); err != nil {
		return err
	}
	copy(p, buf[off-start:])
	return nil
}

// readAligned sends one request per maxRequest piece, all before waiting for any reply, and
// waits for every piece it sent even after a failure, because the reply goroutine may still be
// writing into p until a piece completes.
func (c *Client) readAligned(p []byte, off int64) error {
	var reqs []*request
	var firstErr error
	for len(p) > 0 {
		n := min(int64(len(p)), c.maxRequest)
		req, err := c.send(p[:n], off)
		if err != nil {
			firstErr = err
			break
		}
		reqs = append(reqs, req)
		p, off = p[n:], off+n
	}
	for _, req := range reqs {
		if err := <-req.done; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// send registers a read and writes its request header. The request is registered before it is
// written so its reply cannot arrive first. A write failure breaks the connection, and the
// reply goroutine then fails the request like every other pending one.
func (c *Client) send(buf []byte, off int64) (*request, error) {
	req := &request{buf: buf, done: make(chan error, 1)}
	cookie := c.cookies.Add(1)

	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.pending[cookie] = req
	c.mu.Unlock()

	var hdr [requestSize]byte
	binary.BigEndian.PutUint32(hdr[0:], magicRequest)
	binary.BigEndian.PutUint16(hdr[4:], 0) // command flags
	binary.BigEndian.PutUint16(hdr[6:], cmdRead)
	binary.BigEndian.PutUint64(hdr[8:], cookie)
	binary.BigEndian.PutUint64(hdr[16:], uint64(off))
	binary.BigEndian.PutUint32(hdr[24:], uint32(len(buf)))
	c.writeMu.Lock()
	var err error
	// If Close won the race after we registered, nothing may follow NBD_CMD_DISC; the reply
	// goroutine fails this request with ErrClosed.
	if !c.discSent {
		_, err = c.conn.Write(hdr[:])
	}
	c.writeMu.Unlock()
	if err != nil {
		c.breakConn(fmt.Errorf("send read request: %w", err))
	}
	return req, nil
}

// receive is the reply goroutine: it reads every reply header, copies the payload straight into
// the waiting caller's buffer and completes the request. When the connection fails it fails all
// pending requests and exits.
func (c *Client) receive() {
	defer close(c.readerDone)
	var hdr [simpleReplySize]byte
	for {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			c.failAll(fmt.Errorf("read reply: %w", err))
			return
		}
		magic := binary.BigEndian.Uint32(hdr[0:])
		errno := binary.BigEndian.Uint32(hdr[4:])
		cookie := binary.BigEndian.Uint64(hdr[8:])
		if magic != magicSimple {
			what := fmt.Sprintf("reply magic %#x", magic)
			if magic == magicStructured {
				what = "structured reply, which was not negotiated"
			}
			c.failAll(fmt.Errorf("%w: %s", ErrProtocol, what))
			return
		}
		c.mu.Lock()
		req := c.pending[cookie]
		delete(c.pending, cookie)
		c.mu.Unlock()
		if req == nil {
			c.failAll(fmt.Errorf("%w: reply for unknown cookie %d", ErrProtocol, cookie))
			return
		}
		if errno != 0 {
			// No payload follows an error in a simple reply.
			req.done <- c.replyError(Errno(errno))
			continue
		}
		if _, err := io.ReadFull(c.br, req.buf); err != nil {
			req.done <- c.failAll(fmt.Errorf("read reply payload: %w", err))
			return
		}
		req.done <- nil
	}
}

// replyError turns an error reply into the error for its caller. While the client is closing
// (servers answer requests in flight with ESHUTDOWN after NBD_CMD_DISC) the caller learns that
// first. An unsolicited ESHUTDOWN means the server is going away: the protocol then requires a
// soft disconnect, and no new request is sent.
func (c *Client) replyError(e Errno) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.err != nil:
		return fmt.Errorf("%w (%w)", c.err, e)
	case e == errnoShutdown:
		c.err = fmt.Errorf("%w: %w", ErrConnLost, e)
		go c.disconnect()
		return c.err
	}
	return e
}

// disconnect sends NBD_CMD_DISC once. The write deadline bounds it for a server that stopped
// reading, and also releases senders blocked on a full socket buffer.
func (c *Client) disconnect() {
	_ = c.conn.SetWriteDeadline(time.Now().Add(closeWriteTimeout))
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.discSent {
		return
	}
	var hdr [requestSize]byte
	binary.BigEndian.PutUint32(hdr[0:], magicRequest)
	binary.BigEndian.PutUint16(hdr[6:], cmdDisc)
	binary.BigEndian.PutUint64(hdr[8:], c.cookies.Add(1))
	_, _ = c.conn.Write(hdr[:])
	c.discSent = true
}

// breakConn marks the connection unusable and closes it; the reply goroutine then fails every
// pending request with the recorded error.
func (c *Client) breakConn(cause error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = fmt.Errorf("%w: %w", ErrConnLost, cause)
	}
	c.mu.Unlock()
	_ = c.conn.Close()
}

// failAll records the connection's terminal error (unless one is recorded already), closes the
// connection and fails every pending request. Only the reply goroutine calls it, so no payload
// is being copied while requests fail. It returns the terminal error.
func (c *Client) failAll(cause error) error {
	c.mu.Lock()
	if c.err == nil {
		c.err = fmt.Errorf("%w: %w", ErrConnLost, cause)
	}
	err := c.err
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	_ = c.conn.Close()
	for _, req := range pending {
		req.done <- err
	}
	return err
}

// Close sends NBD_CMD_DISC, closes the connection and waits for the reply goroutine to exit.
// Reads still waiting for their reply return an error matching ErrClosed; later calls return
// ErrClosed. Close is
// idempotent and safe to call concurrently with ReadAt (it is how a caller aborts a read stuck
// on an unresponsive server). It always returns nil: the connection is released either way.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		alive := c.err == nil
		if alive {
			c.err = ErrClosed
		}
		c.mu.Unlock()
		if alive {
			// A disconnect request lets the server finish cleanly; it is a courtesy, so a server
			// that stopped reading only delays Close by closeWriteTimeout.
			c.disconnect()
		}
		_ = c.conn.Close() // nothing useful to report: the connection is gone either way
		<-c.readerDone
	})
	return nil
}
