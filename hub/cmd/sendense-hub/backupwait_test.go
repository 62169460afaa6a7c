package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/api"
)

// runningFor reports a backup running for its first n looks, then succeeded.
type runningFor struct {
	n, looks int
}

func (b *runningFor) Backup(_ context.Context, id string) (api.Backup, error) {
	b.looks++
	st := api.JobRunning
	if b.looks > b.n {
		st = api.JobSucceeded
	}
	return api.Backup{ID: id, Status: st}, nil
}

// backup wait looks often while a backup is young (the pause table below), so a one-second
// incremental is not reported a tenth of a second late, and it looks until the backup ends.
func TestBackupWaitLooksOftenAtFirst(t *testing.T) {
	b := &runningFor{n: 5}
	if err := waitBackup(t.Context(), &env{stdout: io.Discard, stderr: io.Discard}, b, "bk-1"); err != nil {
		t.Fatal(err)
	}
	if b.looks != 6 {
		t.Fatalf("%d looks; want 6", b.looks)
	}
	for _, tc := range []struct {
		elapsed, want time.Duration
	}{{0, 20 * time.Millisecond}, {4 * time.Second, 20 * time.Millisecond}, {5 * time.Second, 100 * time.Millisecond}, {time.Hour, 100 * time.Millisecond}} {
		if got := waitPoll(tc.elapsed); got != tc.want {
			t.Errorf("waitPoll(%v) = %v, want %v", tc.elapsed, got, tc.want)
		}
	}
}
