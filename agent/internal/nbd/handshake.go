package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
)

// export is what negotiation learned about the export.
type export struct {
	size       int64
	flags      uint16
	minBlock   uint32 // 1 unless the server advertised a minimum
	maxRequest uint32 // largest single read, a multiple of minBlock
}

// negotiate runs the fixed newstyle handshake on rw up to the transmission phase. It prefers
// NBD_OPT_GO and falls back to NBD_OPT_EXPORT_NAME for servers without fixed newstyle or
// without NBD_OPT_GO.
func negotiate(r io.Reader, w io.Writer, name string) (export, error) {
	if len(name) > maxExportName {
		return export{}, fmt.Errorf("export name is %d bytes, the protocol allows %d", len(name), maxExportName)
	}
	var greet [18]byte
	if _, err := io.ReadFull(r, greet[:16]); err != nil {
		return export{}, fmt.Errorf("read greeting: %w", noEOF(err))
	}
	if m := binary.BigEndian.Uint64(greet[0:8]); m != magicNBD {
		return export{}, fmt.Errorf("%w: greeting starts with %q, not NBDMAGIC", ErrProtocol, printable(greet[0:8]))
	}
	switch m := binary.BigEndian.Uint64(greet[8:16]); m {
	case magicOption:
	case magicOldstyle:
		return export{}, fmt.Errorf("%w: server uses oldstyle negotiation, which this client does not support", ErrProtocol)
	default:
		return export{}, fmt.Errorf("%w: unexpected greeting magic %#x", ErrProtocol, m)
	}
	if _, err := io.ReadFull(r, greet[16:18]); err != nil {
		return export{}, fmt.Errorf("read handshake flags: %w", noEOF(err))
	}
	hflags := binary.BigEndian.Uint16(greet[16:18])
	fixed := hflags&flagFixedNewstyle != 0
	noZeroes := hflags&flagNoZeroes != 0

	var cflags uint32
	if fixed {
		cflags |= clientFlagFixedNewstyle
	}
	if noZeroes {
		cflags |= clientFlagNoZeroes
	}
	if err := binary.Write(w, binary.BigEndian, cflags); err != nil {
		return export{}, fmt.Errorf("send client flags: %w", err)
	}

	if fixed {
		exp, ok, err := optionGo(r, w, name)
		if err != nil || ok {
			return exp, err
		}
		// NBD_REP_ERR_UNSUP: a fixed newstyle server predating NBD_OPT_GO.
	}
	return optionExportName(r, w, name, noZeroes)
}

// sendOption writes one option request.
func sendOption(w io.Writer, opt uint32, data []byte) error {
	msg := make([]byte, 16, 16+len(data))
	binary.BigEndian.PutUint64(msg[0:], magicOption)
	binary.BigEndian.PutUint32(msg[8:], opt)
	binary.BigEndian.PutUint32(msg[12:], uint32(len(data)))
	msg = append(msg, data...)
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("send %s: %w", optionName(opt), err)
	}
	return nil
}

// optionGo sends NBD_OPT_GO asking for block size constraints. ok is false (with a nil error)
// only when the server does not know NBD_OPT_GO.
func optionGo(r io.Reader, w io.Writer, name string) (exp export, ok bool, err error) {
	data := make([]byte, 0, 4+len(name)+4)
	data = binary.BigEndian.AppendUint32(data, uint32(len(name)))
	data = append(data, name...)
	// One information request: NBD_INFO_BLOCK_SIZE. Asking for it promises that we honour the
	// constraints, which lets servers with a minimum block size above 1 accept us.
	data = binary.BigEndian.AppendUint16(data, 1)
	data = binary.BigEndian.AppendUint16(data, infoBlockSize)
	if err := sendOption(w, optGo, data); err != nil {
		return export{}, false, err
	}

	var haveExport bool
	var minBlock, maxBlock uint32
	for {
		var hdr [optReplyHdrSize]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return export{}, false, fmt.Errorf("read reply to NBD_OPT_GO: %w", noEOF(err))
		}
		if m := binary.BigEndian.Uint64(hdr[0:]); m != magicOptReply {
			return export{}, false, fmt.Errorf("%w: option reply magic %#x", ErrProtocol, m)
		}
		if o := binary.BigEndian.Uint32(hdr[8:]); o != optGo {
			return export{}, false, fmt.Errorf("%w: reply to %s while waiting for NBD_OPT_GO", ErrProtocol, optionName(o))
		}
		typ := binary.BigEndian.Uint32(hdr[12:])
		n := binary.BigEndian.Uint32(hdr[16:])
		if n > maxOptReplyLen {
			return export{}, false, fmt.Errorf("%w: %s reply of %d bytes", ErrProtocol, replyName(typ), n)
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return export{}, false, fmt.Errorf("read %s payload: %w", replyName(typ), noEOF(err))
		}

		switch {
		case typ == repAck:
			if !haveExport {
				return export{}, false, fmt.Errorf("%w: NBD_OPT_GO acknowledged without NBD_INFO_EXPORT", ErrProtocol)
			}
			exp.minBlock, exp.maxRequest = requestLimits(minBlock, maxBlock)
			return exp, true, nil
		case typ == repInfo:
			if len(payload) < 2 {
				return export{}, false, fmt.Errorf("%w: NBD_REP_INFO of %d bytes", ErrProtocol, len(payload))
			}
			switch info := binary.BigEndian.Uint16(payload); info {
			case infoExport:
				if len(payload) != 12 {
					return export{}, false, fmt.Errorf("%w: NBD_INFO_EXPORT of %d bytes", ErrProtocol, len(payload))
				}
				size := binary.BigEndian.Uint64(payload[2:])
				if size > math.MaxInt64 {
					return export{}, false, fmt.Errorf("%w: export size %d does not fit int64", ErrProtocol, size)
				}
				exp.size = int64(size)
				exp.flags = binary.BigEndian.Uint16(payload[10:])
				haveExport = true
			case infoBlockSize:
				if len(payload) != 14 {
					return export{}, false, fmt.Errorf("%w: NBD_INFO_BLOCK_SIZE of %d bytes", ErrProtocol, len(payload))
				}
				minBlock = binary.BigEndian.Uint32(payload[2:])
				maxBlock = binary.BigEndian.Uint32(payload[10:])
				if minBlock == 0 || minBlock > maxMinBlock || bits.OnesCount32(minBlock) != 1 {
					return export{}, false, fmt.Errorf("%w: minimum block size %d is not a power of two up to 64 KiB", ErrProtocol, minBlock)
				}
				if maxBlock < minBlock {
					return export{}, false, fmt.Errorf("%w: maximum block size %d below minimum %d", ErrProtocol, maxBlock, minBlock)
				}
			default:
				// NBD_INFO_NAME, NBD_INFO_DESCRIPTION and future types carry nothing we need.
			}
		case typ == repErrUnsup:
			return export{}, false, nil
		case typ&repErrBit != 0:
			return export{}, false, &OptionError{Option: optGo, Reply: typ, Message: printable(payload)}
		default:
			// A reply type from a later protocol revision that we did not ask for: the final
			// reply is still ACK or an error, so skip it.
		}
	}
}

// requestLimits turns advertised block sizes (0 when not advertised) into the alignment and the
// largest read to send.
func requestLimits(minBlock, maxBlock uint32) (align, maxRequest uint32) {
	align = max(minBlock, 1)
	maxRequest = DefaultMaxRequest
	if maxBlock != 0 && maxBlock < maxRequest {
		maxRequest = maxBlock
	}
	maxRequest -= maxRequest % align
	return align, max(maxRequest, align)
}

// optionExportName enters transmission with the old NBD_OPT_EXPORT_NAME, whose only failure
// signal is the server closing the connection.
func optionExportName(r io.Reader, w io.Writer, name string, noZeroes bool) (export, error) {
	if err := sendOption(w, optExportName, []byte(name)); err != nil {
		return export{}, err
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return export{}, fmt.Errorf("%w: server closed the connection after NBD_OPT_EXPORT_NAME %q", ErrUnknownExport, name)
		}
		return export{}, fmt.Errorf("read reply to NBD_OPT_EXPORT_NAME: %w", err)
	}
	size := binary.BigEndian.Uint64(buf[0:])
	if size > math.MaxInt64 {
		return export{}, fmt.Errorf("%w: export size %d does not fit int64", ErrProtocol, size)
	}
	exp := export{size: int64(size), flags: binary.BigEndian.Uint16(buf[8:])}
	exp.minBlock, exp.maxRequest = requestLimits(0, 0)
	return exp, nil
}

// noEOF turns a clean EOF inside a message into io.ErrUnexpectedEOF: during negotiation the
// server hanging up is always unexpected.
func noEOF(err error) error {
	if err == io.EOF {
		return fmt.Errorf("server closed the connection: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// transmitFlagsValid reports whether the transmission flags look like NBD (bit 0 must be set).
func transmitFlagsValid(flags uint16) bool { return flags&transmitHasFlags != 0 }
