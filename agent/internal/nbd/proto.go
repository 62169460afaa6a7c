package nbd

import (
	"errors"
	"fmt"
)

// Wire constants of the NBD protocol (doc/proto.md of the NetworkBlockDevice project). All
// integers on the wire are big-endian.
const (
	magicNBD        = 0x4e42444d41474943 // "NBDMAGIC", first 8 bytes of every greeting
	magicOption     = 0x49484156454f5054 // "IHAVEOPT": newstyle greeting and option requests
	magicOldstyle   = 0x00420281861253   // oldstyle greeting (not supported)
	magicOptReply   = 0x3e889045565a9    // option replies during fixed newstyle negotiation
	magicRequest    = 0x25609513         // transmission requests
	magicSimple     = 0x67446698         // simple replies
	magicStructured = 0x668e33ef         // structured replies (never negotiated here)

	// Handshake flags sent by the server.
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	// Client flags answering them.
	clientFlagFixedNewstyle = 1 << 0
	clientFlagNoZeroes      = 1 << 1

	// Options.
	optExportName = 1
	optGo         = 7

	// Option reply types; errors have bit 31 set.
	repAck              = 1
	repInfo             = 3
	repErrBit           = 1 << 31
	repErrUnsup         = repErrBit + 1
	repErrPolicy        = repErrBit + 2
	repErrInvalid       = repErrBit + 3
	repErrPlatform      = repErrBit + 4
	repErrTLSReqd       = repErrBit + 5
	repErrUnknown       = repErrBit + 6
	repErrShutdown      = repErrBit + 7
	repErrBlockSizeReqd = repErrBit + 8
	repErrTooBig        = repErrBit + 9
	repErrExtHeaderReqd = repErrBit + 10

	// Information types inside NBD_REP_INFO.
	infoExport    = 0
	infoBlockSize = 3

	// Transmission flags.
	transmitHasFlags = 1 << 0

	// Commands.
	cmdRead = 0
	cmdDisc = 2

	// errnoShutdown is ESHUTDOWN: the server is going away.
	errnoShutdown = 108

	// Sizes of fixed-length messages.
	requestSize     = 28
	simpleReplySize = 16
	optReplyHdrSize = 20
)

// Limits enforced against a misbehaving server.
const (
	// maxExportName is the protocol's limit on strings.
	maxExportName = 4096
	// maxOptReplyLen bounds the payload of one option reply; real replies are at most a few KiB
	// (a 4 KiB description string is the largest), so anything bigger is garbage.
	maxOptReplyLen = 64 << 10
	// maxMinBlock is the largest minimum block size the protocol allows (64 KiB).
	maxMinBlock = 64 << 10
)

// DefaultMaxRequest is the largest read sent in one NBD request (32 MiB) unless the server
// advertises a smaller maximum; every server must accept this much (proto.md, "Block size
// constraints"). Bigger ReadAt calls are split.
const DefaultMaxRequest = 32 << 20

var (
	// ErrClosed is returned by calls on a Client after Close, and by reads that were in flight
	// when Close was called.
	ErrClosed = errors.New("nbd: client closed")
	// ErrConnLost is wrapped by every error caused by a broken connection (server died, socket
	// reset, protocol violation in the transmission phase). The client is unusable afterwards;
	// reconnect with Dial.
	ErrConnLost = errors.New("nbd: connection lost")
	// ErrProtocol is wrapped by errors caused by a peer that does not speak NBD as this client
	// expects (bad magic numbers, malformed replies).
	ErrProtocol = errors.New("nbd: protocol violation")
	// ErrUnknownExport is matched (errors.Is) by the error Dial returns when the server does not
	// know the requested export name.
	ErrUnknownExport = errors.New("nbd: unknown export")
)

// OptionError is a negotiation option that the server answered with an NBD_REP_ERR_* reply.
type OptionError struct {
	// Option is the NBD_OPT_* code that was refused.
	Option uint32
	// Reply is the NBD_REP_ERR_* code.
	Reply uint32
	// Message is the server's human-readable explanation, possibly empty.
	Message string
}

// Error names the option and the reply, e.g. "server refused NBD_OPT_GO: NBD_REP_ERR_UNKNOWN".
func (e *OptionError) Error() string {
	s := fmt.Sprintf("server refused %s: %s", optionName(e.Option), replyName(e.Reply))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is makes errors.Is(err, ErrUnknownExport) true for NBD_REP_ERR_UNKNOWN.
func (e *OptionError) Is(target error) bool {
	return target == ErrUnknownExport && e.Reply == repErrUnknown
}

// Errno is the error number of a failed NBD request as sent by the server. The protocol
// defines the values EPERM 1, EIO 5, ENOMEM 12, EINVAL 22, ENOSPC 28, EOVERFLOW 75,
// ENOTSUP 95 and ESHUTDOWN 108; others are passed through.
type Errno uint32

// Error names the errno, e.g. "server error EIO (5): input/output error".
func (e Errno) Error() string {
	name, text := "errno", "unknown error"
	switch e {
	case 1:
		name, text = "EPERM", "operation not permitted"
	case 5:
		name, text = "EIO", "input/output error"
	case 12:
		name, text = "ENOMEM", "cannot allocate memory"
	case 22:
		name, text = "EINVAL", "invalid argument"
	case 28:
		name, text = "ENOSPC", "no space left on device"
	case 75:
		name, text = "EOVERFLOW", "value too large"
	case 95:
		name, text = "ENOTSUP", "operation not supported"
	case 108:
		name, text = "ESHUTDOWN", "server is shutting down"
	}
	return fmt.Sprintf("server error %s (%d): %s", name, uint32(e), text)
}

func optionName(o uint32) string {
	switch o {
	case optExportName:
		return "NBD_OPT_EXPORT_NAME"
	case optGo:
		return "NBD_OPT_GO"
	}
	return fmt.Sprintf("NBD_OPT_%d", o)
}

func replyName(r uint32) string {
	switch r {
	case repAck:
		return "NBD_REP_ACK"
	case repInfo:
		return "NBD_REP_INFO"
	case repErrUnsup:
		return "NBD_REP_ERR_UNSUP"
	case repErrPolicy:
		return "NBD_REP_ERR_POLICY"
	case repErrInvalid:
		return "NBD_REP_ERR_INVALID"
	case repErrPlatform:
		return "NBD_REP_ERR_PLATFORM"
	case repErrTLSReqd:
		return "NBD_REP_ERR_TLS_REQD (TLS is not supported by this client)"
	case repErrUnknown:
		return "NBD_REP_ERR_UNKNOWN"
	case repErrShutdown:
		return "NBD_REP_ERR_SHUTDOWN"
	case repErrBlockSizeReqd:
		return "NBD_REP_ERR_BLOCK_SIZE_REQD"
	case repErrTooBig:
		return "NBD_REP_ERR_TOO_BIG"
	case repErrExtHeaderReqd:
		return "NBD_REP_ERR_EXT_HEADER_REQD"
	}
	if r&repErrBit != 0 {
		return fmt.Sprintf("NBD_REP_ERR_%d", r&^repErrBit)
	}
	return fmt.Sprintf("NBD_REP_%d", r)
}

// printable renders bytes received from a peer for an error message without letting control
// characters or huge strings through.
func printable(b []byte) string {
	const limit = 200
	out := make([]rune, 0, min(len(b), limit))
	for _, r := range string(b) {
		if len(out) == limit {
			return string(out) + "..."
		}
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			r = '.'
		}
		out = append(out, r)
	}
	return string(out)
}
