package vmdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zlib"
)

// batchGrains is the grains one worker deflates at a time (1 MiB of disk).
const batchGrains = 16

// batch is consecutive grains of the image: read in order by one goroutine, deflated by any
// worker, written in order by the writer.
type batch struct {
	first int64 // first grain
	n     int
	data  []byte
	zero  [batchGrains]bool
	out   [batchGrains]bytes.Buffer
	err   error
	done  chan struct{} // closed when deflated (or err is set)
}

// grainsFrom reads the image from src and writes its non-zero grains, deflated by workers in
// parallel, in disk order; grain tables are flushed as their 32 MiB of disk ends. It returns
// once every goroutine it started has ended.
func (w *writer) grainsFrom(ctx context.Context, src io.Reader, workers int) error {
	inFlight := 2 * workers
	order := make(chan *batch, inFlight) // bounds the batches read ahead of the writer
	work := make(chan *batch, inFlight)
	free := make(chan *batch, inFlight+workers+2)
	stop := make(chan struct{})
	var wg sync.WaitGroup

	wg.Go(func() { // the reader
		defer close(order)
		defer close(work)
		for g := int64(0); g < w.grains; g += batchGrains {
			var b *batch
			select {
			case b = <-free:
			default:
				b = &batch{data: make([]byte, batchGrains*GrainSize)}
			}
			b.first, b.n, b.err, b.done = g, int(min(batchGrains, w.grains-g)), nil, make(chan struct{})
			b.err = ctx.Err()
			if b.err == nil {
				b.err = w.read(src, b)
			}
			if b.err != nil {
				close(b.done)
			}
			select {
			case order <- b:
			case <-stop:
				return
			}
			if b.err != nil {
				return
			}
			select {
			case work <- b:
			case <-stop:
				return
			}
		}
	})
	for range workers {
		wg.Go(func() {
			zw, _ := zlib.NewWriterLevel(io.Discard, w.level) // the level was checked
			for b := range work {
				b.err = deflate(zw, b)
				close(b.done)
			}
		})
	}

	err := w.writeBatches(order, free)
	close(stop)
	for range order { // lets the reader end
	}
	wg.Wait()
	return err
}

// read fills b with its grains, the last grain of the disk padded with zeros.
func (w *writer) read(src io.Reader, b *batch) error {
	off := b.first * GrainSize
	n := min(int64(b.n)*GrainSize, w.capacity-off)
	if _, err := io.ReadFull(src, b.data[:n]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: at byte %d of %d", ErrShortImage, off, w.capacity)
		}
		return fmt.Errorf("read image at byte %d: %w", off, err)
	}
	clear(b.data[n : int64(b.n)*GrainSize]) // readers inflate whole grains
	return nil
}

func deflate(zw *zlib.Writer, b *batch) error {
	for i := range b.n {
		grain := b.data[i*GrainSize : (i+1)*GrainSize]
		b.zero[i] = bytes.Equal(grain, zeroGrain)
		b.out[i].Reset()
		if b.zero[i] {
			continue
		}
		zw.Reset(&b.out[i])
		if _, err := zw.Write(grain); err != nil {
			return fmt.Errorf("compress grain %d: %w", b.first+int64(i), err)
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("compress grain %d: %w", b.first+int64(i), err)
		}
	}
	return nil
}

// writeBatches writes the batches in order as they are deflated, and hands them back to free.
func (w *writer) writeBatches(order <-chan *batch, free chan<- *batch) error {
	for b := range order {
		<-b.done
		if b.err != nil {
			return b.err
		}
		for i := range b.n {
			g := b.first + int64(i)
			if g%gtEntries == 0 && g > 0 {
				if err := w.flushGT(g/gtEntries - 1); err != nil {
					return err
				}
			}
			if b.zero[i] {
				continue
			}
			if err := w.grain(g, b.out[i].Bytes()); err != nil {
				return err
			}
			w.stats.DataGrains++
			w.stats.DataBytes += min(GrainSize, w.capacity-g*GrainSize)
		}
		select {
		case free <- b:
		default:
		}
	}
	return nil
}
