package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// fakeServer accepts connections on loopback TCP and hands each to serve. It stands in for
// servers that nbdkit cannot imitate: ones that speak garbage or break the protocol.
func fakeServer(t *testing.T, serve func(conn net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { _ = ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			serve(conn)
			_ = conn.Close()
		}
	}()
	return ln.Addr().String()
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// greeting is a fixed newstyle greeting with NO_ZEROES.
func greeting() []byte {
	return cat(be64(magicNBD), be64(magicOption), be16(flagFixedNewstyle|flagNoZeroes))
}

// readOption reads one option and returns its code and data.
func readOption(r io.Reader) (uint32, []byte, error) {
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	data := make([]byte, binary.BigEndian.Uint32(hdr[12:]))
	_, err := io.ReadFull(r, data)
	return binary.BigEndian.Uint32(hdr[8:]), data, err
}

// awaitOption sends the greeting and reads the client flags and the first option.
func awaitOption(c net.Conn) {
	_, _ = c.Write(greeting())
	var cflags [4]byte
	if _, err := io.ReadFull(c, cflags[:]); err != nil {
		return
	}
	_, _, _ = readOption(c)
}

func optReply(opt, typ uint32, data []byte) []byte {
	return cat(be64(magicOptReply), be32(opt), be32(typ), be32(uint32(len(data))), data)
}

func infoExportReply(size uint64) []byte {
	return optReply(optGo, repInfo, cat(be16(infoExport), be64(size), be16(transmitHasFlags|1<<1)))
}

// goServer answers the handshake with NBD_OPT_GO for a 1 MiB export, then runs transmit.
func goServer(transmit func(conn net.Conn)) func(net.Conn) {
	return func(conn net.Conn) {
		_, _ = conn.Write(greeting())
		var cflags [4]byte
		if _, err := io.ReadFull(conn, cflags[:]); err != nil {
			return
		}
		if opt, _, err := readOption(conn); err != nil || opt != optGo {
			return
		}
		_, _ = conn.Write(cat(infoExportReply(1<<20), optReply(optGo, repAck, nil)))
		transmit(conn)
	}
}

func TestDialRejectsBadServers(t *testing.T) {
	tests := []struct {
		name  string
		serve func(net.Conn)
		want  error
	}{
		{"HTTP server", func(c net.Conn) {
			_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
		}, ErrProtocol},
		{"random junk", func(c net.Conn) {
			_, _ = c.Write(bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 64))
		}, ErrProtocol},
		{"oldstyle server", func(c net.Conn) {
			_, _ = c.Write(cat(be64(magicNBD), be64(magicOldstyle), be64(1<<20), be32(1), make([]byte, 124)))
		}, ErrProtocol},
		{"hangs up at once", func(net.Conn) {}, io.ErrUnexpectedEOF},
		{"wrong option reply magic", func(c net.Conn) {
			awaitOption(c)
			_, _ = c.Write(bytes.Repeat([]byte{'x'}, 64))
		}, ErrProtocol},
		{"huge option reply", func(c net.Conn) {
			awaitOption(c)
			_, _ = c.Write(cat(be64(magicOptReply), be32(optGo), be32(repInfo), be32(1<<30)))
		}, ErrProtocol},
		{"ACK without export info", func(c net.Conn) {
			awaitOption(c)
			_, _ = c.Write(optReply(optGo, repAck, nil))
		}, ErrProtocol},
		{"policy refusal", func(c net.Conn) {
			awaitOption(c)
			_, _ = c.Write(optReply(optGo, repErrPolicy, []byte("not for you")))
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeServer(t, tc.serve)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			c, err := Dial(ctx, "tcp", addr, "")
			if err == nil {
				_ = c.Close()
				t.Fatal("Dial succeeded against a bad server")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.want == nil {
				var oe *OptionError
				if !errors.As(err, &oe) || oe.Reply != repErrPolicy || !strings.Contains(err.Error(), "NBD_REP_ERR_POLICY: not for you") {
					t.Fatalf("err = %v, want an OptionError naming NBD_REP_ERR_POLICY and the message", err)
				}
			}
		})
	}
}

func TestDialHonoursContext(t *testing.T) {
	silent := fakeServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		_, err := Dial(ctx, "tcp", silent, "")
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err = %v, want a deadline error", err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(300*time.Millisecond, cancel)
		_, err := Dial(ctx, "tcp", silent, "")
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
	t.Run("bad network", func(t *testing.T) {
		if _, err := Dial(t.Context(), "udp", silent, ""); err == nil {
			t.Fatal("Dial over udp succeeded")
		}
	})
}

func TestFallbackToExportName(t *testing.T) {
	// A fixed newstyle server that predates NBD_OPT_GO answers NBD_REP_ERR_UNSUP; the client
	// must then use NBD_OPT_EXPORT_NAME (reply without the 124 zero bytes: NO_ZEROES agreed).
	var gotName []byte
	addr := fakeServer(t, func(c net.Conn) {
		_, _ = c.Write(greeting())
		var cflags [4]byte
		if _, err := io.ReadFull(c, cflags[:]); err != nil {
			return
		}
		opt, _, err := readOption(c)
		if err != nil || opt != optGo {
			return
		}
		_, _ = c.Write(optReply(optGo, repErrUnsup, nil))
		opt, data, err := readOption(c)
		if err != nil || opt != optExportName {
			return
		}
		gotName = data
		_, _ = c.Write(cat(be64(12345), be16(transmitHasFlags)))
		_, _ = io.Copy(io.Discard, c)
	})
	c, err := Dial(t.Context(), "tcp", addr, "disk-2000")
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	if c.Size() != 12345 {
		t.Errorf("Size() = %d, want 12345", c.Size())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if string(gotName) != "disk-2000" {
		t.Errorf("server saw export name %q, want disk-2000", gotName)
	}
}

func TestTransmissionProtocolViolations(t *testing.T) {
	tests := []struct {
		name  string
		reply func(cookie uint64) []byte
	}{
		{"structured reply", func(cookie uint64) []byte {
			return cat(be32(magicStructured), be16(1), be16(1), be64(cookie), be32(0))
		}},
		{"unknown cookie", func(cookie uint64) []byte {
			return cat(be32(magicSimple), be32(0), be64(cookie+1000))
		}},
		{"junk", func(uint64) []byte { return bytes.Repeat([]byte{7}, 16) }},
		{"short payload then hang-up", func(cookie uint64) []byte {
			return cat(be32(magicSimple), be32(0), be64(cookie), []byte("short"))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeServer(t, goServer(func(c net.Conn) {
				var req [requestSize]byte
				if _, err := io.ReadFull(c, req[:]); err != nil {
					return
				}
				_, _ = c.Write(tc.reply(binary.BigEndian.Uint64(req[8:])))
			}))
			c, err := Dial(t.Context(), "tcp", addr, "")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			done := make(chan error, 1)
			go func() {
				_, err := c.ReadAt(make([]byte, 4096), 0)
				done <- err
			}()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("ReadAt hangs on a broken reply")
			}
			if !errors.Is(err, ErrConnLost) {
				t.Fatalf("err = %v, want ErrConnLost", err)
			}
			if tc.name != "short payload then hang-up" && !errors.Is(err, ErrProtocol) {
				t.Errorf("err = %v, want it to match ErrProtocol too", err)
			}
		})
	}
}

func TestRequestLimits(t *testing.T) {
	tests := []struct {
		min, max         uint32
		wantAlign, wantN uint32
	}{
		{0, 0, 1, DefaultMaxRequest},
		{1, 0xffffffff, 1, DefaultMaxRequest},
		{512, 1 << 20, 512, 1 << 20},
		{4096, 10000, 4096, 8192},
		{4096, 4096, 4096, 4096},
		{65536, 64 << 20, 65536, DefaultMaxRequest},
	}
	for _, tc := range tests {
		align, n := requestLimits(tc.min, tc.max)
		if align != tc.wantAlign || n != tc.wantN {
			t.Errorf("requestLimits(%d, %d) = %d, %d; want %d, %d", tc.min, tc.max, align, n, tc.wantAlign, tc.wantN)
		}
	}
}

func TestServerShutdownReply(t *testing.T) {
	// A server going away answers ESHUTDOWN; the client must stop sending requests and
	// disconnect softly (NBD_CMD_DISC), which the server sees.
	gotDisc := make(chan bool, 1)
	addr := fakeServer(t, goServer(func(c net.Conn) {
		var req [requestSize]byte
		if _, err := io.ReadFull(c, req[:]); err != nil {
			gotDisc <- false
			return
		}
		_, _ = c.Write(cat(be32(magicSimple), be32(errnoShutdown), req[8:16]))
		for {
			if _, err := io.ReadFull(c, req[:]); err != nil {
				gotDisc <- false
				return
			}
			if binary.BigEndian.Uint16(req[6:]) == cmdDisc {
				gotDisc <- true
				return // hang up, as the protocol asks
			}
		}
	}))
	c, err := Dial(t.Context(), "tcp", addr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.ReadAt(make([]byte, 512), 0)
	var errno Errno
	if !errors.Is(err, ErrConnLost) || !errors.As(err, &errno) || errno != errnoShutdown {
		t.Fatalf("err = %v, want ErrConnLost with Errno ESHUTDOWN", err)
	}
	select {
	case ok := <-gotDisc:
		if !ok {
			t.Fatal("the server never received NBD_CMD_DISC")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no NBD_CMD_DISC after ESHUTDOWN")
	}
	if _, err := c.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrConnLost) {
		t.Fatalf("ReadAt after ESHUTDOWN: err = %v, want ErrConnLost", err)
	}
}
