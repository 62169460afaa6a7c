// Package nfstest connects the Go NFS client used by tests to an NFS or portmapper server.
package nfstest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/willscott/go-nfs-client/nfs/rpc"
)

// Dial connects an RPC client over TCP to addr. The client binds a random local port from
// the ephemeral range and, unlike the kernel, does not retry when that port is taken (a busy
// machine running many tests holds many connections), so a taken port is retried here with
// another.
func Dial(addr string) (*rpc.Client, error) {
	for try := 0; ; try++ {
		c, err := rpc.DialTCP("tcp", addr, false)
		if err == nil || try == 20 || !addrInUse(err) {
			return c, err
		}
	}
}

func addrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// HungUp reports whether the server at addr closes a new connection from this host without
// answering a well-formed call (an NFSv3 NULL), which is how the hub refuses a host no session
// names; a server that answers gets an error. Use it rather than a client call: the client
// library panics (a reply channel closed twice) when a server keeps hanging up on its
// reconnections.
func HungUp(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// xid, CALL, RPC 2, NFS, version 3, NULL, null credential and verifier: 40 bytes.
	call := []uint32{0x80000000 | 40, 1, 0, 2, 100003, 3, 0, 0, 0, 0, 0}
	buf := make([]byte, 0, 4*len(call))
	for _, w := range call {
		buf = binary.BigEndian.AppendUint32(buf, w)
	}
	_, _ = c.Write(buf)
	// Closed unanswered, the connection ends in EOF or a reset (our bytes unread).
	if n, err := c.Read(make([]byte, 64)); n != 0 || (err != io.EOF && !errors.Is(err, syscall.ECONNRESET)) {
		return fmt.Errorf("read %d bytes, %v; want the connection closed unanswered", n, err)
	}
	return nil
}
