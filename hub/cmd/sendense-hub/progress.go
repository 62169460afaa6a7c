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
	now    func() time.Time // the clock (tests set their own)
	// watch: the rate counts the bytes done since the first look (base, at start).
	watch bool
	seen  bool
	base  int64
}

func newProgress(w io.Writer, label string, total int64) *progressBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressBar{w: w, label: label, total: total, start: time.Now(), tty: tty, now: time.Now}
}

// newWatch is newProgress for following a job the hub runs, which may have done most of its
// work before the command looked (or be over already): its rate counts only the bytes done
// since the first look, and a job that is over at the first look shows no rate of its own.
func newWatch(w io.Writer, label string) *progressBar {
	p := newProgress(w, label, 0)
	p.watch = true
	return p
}

// look records the first look of a watch.
func (p *progressBar) look(done int64) {
	if p.watch && !p.seen {
		p.seen, p.base, p.start = true, done, p.now()
	}
}

// Update shows done bytes out of the total (total 0: unknown), with the extra text.
func (p *progressBar) Update(done int64, extra string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.look(done)
	now := p.now()
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
	secs := p.now().Sub(p.start).Seconds()
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
	if secs > 0 && (!p.watch || done > p.base) {
		line += fmt.Sprintf(" %.1f MB/s", float64(done-p.base)/secs/1e6)
	}
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
	p.look(done)
	p.print(done, extra)
	if p.tty {
		fmt.Fprintln(p.w)
	}
	p.closed = true
}
