package main

import (
	"strings"
	"testing"
	"time"
)

// A backup or restore followed with `wait` may have done most of its work before the command
// first looked: its rate counts only what was done after that look. Counting all of it over the
// command's own few milliseconds printed rates like 38802.4 MB/s for an incremental.
func TestWatchRateCountsOnlyWhatItSaw(t *testing.T) {
	clock := time.Unix(1000, 0)
	var out strings.Builder
	bar := newWatch(&out, "backup bk-1")
	bar.now = func() time.Time { return clock }

	bar.Update(900e6, "(running)") // first look: 900 MB done before it
	clock = clock.Add(2 * time.Second)
	bar.Done(1000e6, "(succeeded)") // 100 MB in the 2 s it watched
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want a line per look, got %q", out.String())
	}
	if strings.Contains(lines[0], "MB/s") {
		t.Errorf("the first look has no rate yet: %q", lines[0])
	}
	if !strings.Contains(lines[1], " 50.0 MB/s") {
		t.Errorf("want 100 MB over 2 s (50.0 MB/s): %q", lines[1])
	}

	// Over at the first look: no rate of the command's own (the summary has the job's).
	out.Reset()
	done := newWatch(&out, "backup bk-2")
	done.now = func() time.Time { return clock }
	done.Done(1000e6, "(succeeded)")
	if strings.Contains(out.String(), "MB/s") {
		t.Errorf("a job over at the first look shows no rate: %q", out.String())
	}

	// A progress bar of the command's own work (a local restore) counts everything.
	out.Reset()
	own := newProgress(&out, "restore disk-2000", 400e6)
	start := clock
	own.now = func() time.Time { return clock }
	own.start = start
	clock = clock.Add(4 * time.Second)
	own.Done(400e6, "")
	if !strings.Contains(out.String(), " 100.0 MB/s") {
		t.Errorf("want 400 MB over 4 s (100.0 MB/s): %q", out.String())
	}
}
