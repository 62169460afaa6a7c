// Package nfstest connects the Go NFS client used by tests to an NFS or portmapper server.
package nfstest

import (
	"errors"
	"strings"
	"syscall"

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
