package testenv

import (
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
)

// ClosedPort is a TCP port on an IPv4 address that is bound but not listening: connections to
// it are refused, and no other process can take the port while the test holds it, as one could
// between closing a listener and using its port. Listen turns the same socket into a listener.
type ClosedPort struct {
	Port int

	mu sync.Mutex
	fd int // -1 once Listen took it or the test's cleanup closed it
}

// NewClosedPort binds a TCP socket to ip (IPv4) on a free port without listening on it. The
// test's cleanup closes it unless Listen took it.
func NewClosedPort(t testing.TB, ip string) *ClosedPort {
	t.Helper()
	addr := net.ParseIP(ip).To4()
	if addr == nil {
		t.Fatalf("closed port: %q is not an IPv4 address", ip)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("closed port: socket: %v", err)
	}
	sa := &syscall.SockaddrInet4{}
	copy(sa.Addr[:], addr)
	if err := syscall.Bind(fd, sa); err != nil {
		_ = syscall.Close(fd)
		t.Fatalf("closed port: bind %s: %v", ip, err)
	}
	got, err := syscall.Getsockname(fd)
	if err != nil {
		_ = syscall.Close(fd)
		t.Fatalf("closed port: getsockname: %v", err)
	}
	p := &ClosedPort{Port: got.(*syscall.SockaddrInet4).Port, fd: fd}
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.fd >= 0 {
			_ = syscall.Close(p.fd)
			p.fd = -1
		}
	})
	return p
}

// Listen starts listening on the port; the caller closes the listener.
func (p *ClosedPort) Listen() (net.Listener, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return nil, fmt.Errorf("port %d: already listening or released", p.Port)
	}
	if err := syscall.Listen(p.fd, syscall.SOMAXCONN); err != nil {
		return nil, fmt.Errorf("listen on port %d: %w", p.Port, err)
	}
	f := os.NewFile(uintptr(p.fd), fmt.Sprintf("tcp port %d", p.Port))
	p.fd = -1
	defer f.Close()
	ln, err := net.FileListener(f) // a duplicate of the socket: f's close leaves it open
	if err != nil {
		return nil, fmt.Errorf("listen on port %d: %w", p.Port, err)
	}
	return ln, nil
}
