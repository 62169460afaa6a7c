package nbd

import (
	"bytes"
	"context"
	"io"
	"math/bits"
	"net"
	"sync"
	"testing"
	"time"
)

// scriptConn is the client's end of a connection to a server that sends a fixed script of bytes
// and then hangs up: reads return the script and then io.EOF, writes are accepted and
// discarded until Close. Unlike a real socket or net.Pipe it never blocks, so a fuzz input runs
// the same way every time and in microseconds; a client that waited for more would see EOF.
type scriptConn struct {
	mu     sync.Mutex
	script []byte
	closed bool
}

func (c *scriptConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	if len(c.script) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.script)
	c.script = c.script[n:]
	return n, nil
}

func (c *scriptConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return len(p), nil
}

func (c *scriptConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

func (c *scriptConn) LocalAddr() net.Addr              { return scriptAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return scriptAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

var _ net.Conn = (*scriptConn)(nil)

type scriptAddr struct{}

func (scriptAddr) Network() string { return "script" }
func (scriptAddr) String() string  { return "script" }

// simpleReply is a transmission-phase reply header for cookie.
func simpleReply(errno uint32, cookie uint64) []byte {
	return cat(be32(magicSimple), be32(errno), be64(cookie))
}

// FuzzServerBytes plays arbitrary bytes as the server's side of a connection: the handshake,
// then the replies to two reads (4 KiB at offset 0, then 2 bytes at the last byte of the
// export, unaligned). Whatever the server sends, the client must not panic or hang, must
// negotiate only sane limits, must fail or fill the reads completely, and must close cleanly.
func FuzzServerBytes(f *testing.F) {
	ack := optReply(optGo, repAck, nil)
	data := bytes.Repeat([]byte("sendense"), 512)
	// NBD_OPT_GO, a 4 KiB export, no block size constraints: one request for each read.
	f.Add(cat(greeting(), infoExportReply(4096), ack,
		simpleReply(0, 1), data, simpleReply(0, 2), data[:1]))
	// Minimum block 512, maximum 1024: the first read is four requests, answered out of order;
	// the second is widened to the last aligned block.
	blockSize := optReply(optGo, repInfo, cat(be16(infoBlockSize), be32(512), be32(512), be32(1024)))
	f.Add(cat(greeting(), blockSize, infoExportReply(4096), ack,
		simpleReply(0, 4), data[:1024], simpleReply(0, 2), data[:1024], simpleReply(0, 3), data[:1024], simpleReply(0, 1), data[:1024],
		simpleReply(0, 5), data[:512]))
	// A server predating NBD_OPT_GO: NBD_OPT_EXPORT_NAME, then EIO and ESHUTDOWN replies.
	f.Add(cat(greeting(), optReply(optGo, repErrUnsup, nil), be64(4096), be16(transmitHasFlags),
		simpleReply(5, 1), simpleReply(errnoShutdown, 2)))
	// Not fixed newstyle, zeroes after the export reply.
	f.Add(cat(be64(magicNBD), be64(magicOption), be16(0), be64(1), be16(transmitHasFlags), make([]byte, 124), simpleReply(0, 1), []byte{7}))
	// Protocol violations after a good handshake.
	f.Add(cat(greeting(), infoExportReply(4096), ack, be32(magicStructured), be32(0), be64(1)))
	f.Add(cat(greeting(), infoExportReply(4096), ack, simpleReply(0, 99)))
	f.Add(cat(greeting(), infoExportReply(1<<63), ack))
	f.Add(cat(greeting(), optReply(optGo, repErrUnknown, []byte("no such export\x00\xff"))))
	f.Add(cat(greeting(), optReply(optGo, repInfo, []byte{0}), ack))
	f.Add(cat(greeting(), infoExportReply(0), ack))
	f.Add(cat(greeting(), infoExportReply(4096), be64(magicOptReply), be32(optGo), be32(repInfo), be32(1<<30)))
	f.Add(cat(be64(magicNBD), be64(magicOldstyle)))
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, script []byte) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			talk(t, script)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("client hung on a server that had hung up")
		}
	})
}

// talk runs one client against script and checks what it makes of it.
func talk(t *testing.T, script []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn := &scriptConn{script: script}
	c, err := handshake(ctx, conn, "")
	if err != nil {
		if c != nil {
			t.Error("handshake returned a client and an error")
		}
		return
	}
	if c.size < 0 || c.minBlock < 1 || c.minBlock > maxMinBlock || bits.OnesCount64(uint64(c.minBlock)) != 1 ||
		c.maxRequest < c.minBlock || c.maxRequest > DefaultMaxRequest || c.maxRequest%c.minBlock != 0 {
		t.Errorf("negotiated size %d, minimum block %d, maximum request %d", c.size, c.minBlock, c.maxRequest)
	}
	for _, r := range []struct{ off, n int64 }{{0, 4096}, {c.size - 1, 2}} {
		if r.off < 0 {
			continue
		}
		p := make([]byte, r.n)
		n, err := c.ReadAt(p, r.off)
		want := min(r.n, max(c.size-r.off, 0))
		switch {
		case n < 0 || int64(n) > r.n:
			t.Errorf("ReadAt(%d bytes at %d) = %d", r.n, r.off, n)
		case err == nil && int64(n) != r.n, err == io.EOF && int64(n) != want:
			t.Errorf("ReadAt(%d bytes at %d) of a %d-byte export = %d, %v", r.n, r.off, c.size, n, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := c.ReadAt(make([]byte, 1), 0); err == nil && c.size > 0 {
		t.Error("ReadAt after Close succeeded")
	}
}
