// Package machinelimit measures what this machine allows a backup of a disk image: the
// single-core throughput of each stage a chunk goes through (reading it, SHA-256 on the agent and
// again on the hub, zstd on the compressible part, TLS on loopback) and the best time all of
// them could take together, spread perfectly over the cores. A benchmark quotes its measured
// throughput against that limit.
package machinelimit

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Stage is one stage's measured single-core throughput and the bytes a backup puts through it.
type Stage struct {
	Name  string
	Rate  float64 // bytes per second on one core
	Bytes int64   // bytes of the image this stage processes in a backup
}

// Seconds is the CPU time the stage costs a backup.
func (s Stage) Seconds() float64 {
	if s.Rate <= 0 {
		return 0
	}
	return float64(s.Bytes) / s.Rate
}

// Limit is the result: the stages and the best backup time over cores.
type Limit struct {
	Stages []Stage
	Cores  int
	// ImageBytes is the image's size, holes included; Seconds the CPU time of all stages divided
	// by the cores; Rate ImageBytes/Seconds.
	ImageBytes int64
	Seconds    float64
	Rate       float64
}

// Combine spreads the stages' CPU time over cores: the fastest a backup of imageBytes can be.
func Combine(stages []Stage, cores int, imageBytes int64) Limit {
	if cores < 1 {
		cores = 1
	}
	var cpu float64
	for _, s := range stages {
		cpu += s.Seconds()
	}
	l := Limit{Stages: stages, Cores: cores, ImageBytes: imageBytes, Seconds: cpu / float64(cores)}
	if l.Seconds > 0 {
		l.Rate = float64(imageBytes) / l.Seconds
	}
	return l
}

// Image describes the bench image: its file, its size, the bytes that are data (not holes) and
// the range of it that is compressible.
type Image struct {
	Path               string
	Size, Data         int64
	CompressibleOffset int64
	CompressibleLength int64
	SampleBytes        int64 // how much of each kind to measure with (default 256 MiB)
	ChunkSize          int
}

// Measure measures each stage's rate per CPU second and combines them over cores.
// Stages: read the data part of the file, SHA-256 (agent), zstd at the fastest level on the
// compressible part, TLS 1.3 send and receive on loopback (counted once: both ends are on this
// machine and the measurement runs both), SHA-256 again (hub) and zstd decoding of the
// compressible part (the hub checks every blob).
func Measure(ctx context.Context, img Image, cores int) (Limit, error) {
	if img.SampleBytes == 0 {
		img.SampleBytes = 256 << 20
	}
	if img.ChunkSize == 0 {
		img.ChunkSize = 4 << 20
	}
	f, err := os.Open(img.Path)
	if err != nil {
		return Limit{}, fmt.Errorf("open image: %w", err)
	}
	defer f.Close()

	buf := make([]byte, img.ChunkSize)
	readRate, err := rate(ctx, func() (int, error) { return io.ReadFull(f, buf) }, img.SampleBytes)
	if err != nil {
		return Limit{}, fmt.Errorf("read %s: %w", img.Path, err)
	}
	if _, err := f.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return Limit{}, fmt.Errorf("read %s: %w", img.Path, err)
	}
	shaRate, err := rate(ctx, func() (int, error) { s := sha256.Sum256(buf); _ = s; return len(buf), nil }, img.SampleBytes)
	if err != nil {
		return Limit{}, err
	}

	comp := make([]byte, img.ChunkSize)
	if _, err := f.ReadAt(comp, img.CompressibleOffset); err != nil && !errors.Is(err, io.EOF) {
		return Limit{}, fmt.Errorf("read the compressible part of %s: %w", img.Path, err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return Limit{}, err
	}
	defer enc.Close()
	var packed []byte
	zRate, err := rate(ctx, func() (int, error) { packed = enc.EncodeAll(comp, packed[:0]); return len(comp), nil }, img.SampleBytes/4)
	if err != nil {
		return Limit{}, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return Limit{}, err
	}
	defer dec.Close()
	out := make([]byte, 0, len(comp))
	dRate, err := rate(ctx, func() (int, error) {
		o, err := dec.DecodeAll(packed, out[:0])
		return len(o), err
	}, img.SampleBytes/2)
	if err != nil {
		return Limit{}, err
	}
	tlsRate, err := tlsLoopback(ctx, buf, img.SampleBytes)
	if err != nil {
		return Limit{}, fmt.Errorf("tls on loopback: %w", err)
	}
	stages := []Stage{
		{Name: "read", Rate: readRate, Bytes: img.Data},
		{Name: "sha256 (agent)", Rate: shaRate, Bytes: img.Data},
		{Name: "zstd fastest (compressible part)", Rate: zRate, Bytes: img.CompressibleLength},
		{Name: "tls 1.3 send+receive (loopback)", Rate: tlsRate, Bytes: img.Data},
		{Name: "sha256 (hub)", Rate: shaRate, Bytes: img.Data},
		{Name: "zstd decode (hub check)", Rate: dRate, Bytes: img.CompressibleLength},
	}
	return Combine(stages, cores, img.Size), nil
}

// cpuTime is the CPU time this process has used so far, user and system. Rates are measured
// against it rather than the wall clock, so that other load on the machine does not lower them.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rate runs step until it has processed n bytes, at least once, and returns bytes per CPU second.
func rate(ctx context.Context, step func() (int, error), n int64) (float64, error) {
	start := cpuTime()
	var done int64
	for done < n {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		k, err := step()
		done += int64(k)
		if err != nil || k == 0 {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || k == 0 {
				break
			}
			return 0, err
		}
	}
	el := (cpuTime() - start).Seconds()
	if done == 0 || el <= 0 {
		return 0, errors.New("nothing measured")
	}
	return float64(done) / el, nil
}

// tlsLoopback sends n bytes over a TLS 1.3 connection on loopback (AES-GCM, the suite a hub and
// an agent negotiate on machines with AES instructions) and returns bytes per CPU second of both
// ends together (encryption, decryption and the kernel's loopback TCP).
func tlsLoopback(ctx context.Context, chunk []byte, n int64) (float64, error) {
	cert, err := selfSigned()
	if err != nil {
		return 0, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	got := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(io.Discard, c)
		got <- err
	}()
	var d tls.Dialer
	d.Config = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13} //nolint:gosec // a throughput probe of our own listener
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	start := cpuTime()
	var sent int64
	for sent < n {
		k, err := c.Write(chunk)
		sent += int64(k)
		if err != nil {
			_ = c.Close()
			return 0, err
		}
	}
	if err := c.Close(); err != nil {
		return 0, err
	}
	if err := <-got; err != nil {
		return 0, err
	}
	el := (cpuTime() - start).Seconds()
	if el <= 0 {
		return 0, errors.New("nothing measured")
	}
	return float64(sent) / el, nil
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "machinelimit"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
