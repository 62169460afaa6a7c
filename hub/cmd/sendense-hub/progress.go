package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progressBar prints progress on one terminal line (or a line every few seconds when the output
// is not a terminal).
type progressBar struct {
	w      io.Writer
	label  string
	total  int64
	start  time.Time
	tty    bool
	mu     sync.Mutex
	last   time.Time
	closed bool
}

func newProgress(w io.Writer, label string, total int64) *progressBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressBar{w: w, label: label, total: total, start: time.Now(), tty: tty}
}

// Update shows done bytes out of the total (total 0: unknown), with the extra text.
func (p *progressBar) Update(done int64, extra string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	every := 200 * time.Millisecond
	if !p.tty {
		every = 5 * time.Second
	}
	if p.closed || now.Sub(p.last) < every {
		return
	}
	p.last = now
	p.print(done, extra)
}

func (p *progressBar) print(done int64, extra string) {
	secs := time.Since(p.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(done) / secs / 1e6
	}
	line := fmt.Sprintf("%s %s", p.label, humanBytes(done))
	if p.total > 0 {
		pct := 100 * float64(done) / float64(p.total)
		width := 30
		fill := int(pct / 100 * float64(width))
		bar := make([]byte, width)
		for i := range bar {
			bar[i] = ' '
			if i < fill {
				bar[i] = '='
			}
		}
		line = fmt.Sprintf("%s [%s] %5.1f%% %s / %s", p.label, bar, pct, humanBytes(done), humanBytes(p.total))
	}
	line += fmt.Sprintf(" %.1f MB/s", rate)
	if extra != "" {
		line += " " + extra
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

// Done prints the final state and ends the line.
func (p *progressBar) Done(done int64, extra string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.print(done, extra)
	if p.tty {
		fmt.Fprintln(p.w)
	}
	p.closed = true
}
