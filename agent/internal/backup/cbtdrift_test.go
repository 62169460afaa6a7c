package backup_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/sendense/sendense/shared/api"
)

// CBT that lies: writes the lab keeps out of QueryChangedDiskAreas are caught by the sample of
// unchanged slots, the disk is read in full, and the backup restores exactly the disk's bytes;
// the drift is on the backup, its disk and in an event. A later incremental with honest CBT finds
// no drift.
func TestCBTDriftCaught(t *testing.T) {
	e := newEnv(t, twoDiskSpec("db1"), envOptions{})
	full := e.backup("db1", "")
	if full.Status != "succeeded" || full.CBTDrift {
		t.Fatalf("full: %+v", full)
	}
	hidden, err := e.lab.WritePercentHidden("db1", "disk-2000", 3, 41)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.lab.WritePercent("db1", "disk-2000", 2, 42); err != nil {
		t.Fatal(err)
	}
	all := 1.0
	inc := e.run(api.StartBackupRequest{VM: "db1", CBTSample: &all})
	d0, d1 := diskOf(t, inc, "disk-2000"), diskOf(t, inc, "disk-2001")
	if inc.Status != "succeeded" || inc.Type != "incremental" || !inc.CBTDrift || !d0.CBTDrift || d1.CBTDrift {
		t.Fatalf("incremental after hidden writes: drift %v, disks %+v %+v\n%s", inc.CBTDrift, d0, d1, e.logs)
	}
	if d0.SlotsChanged != d0.SlotsTotal {
		t.Fatalf("drifted disk: %d of %d slots read, want all", d0.SlotsChanged, d0.SlotsTotal)
	}
	for _, id := range []string{"disk-2000", "disk-2001"} {
		if e.imageSum(inc.ID, id) != e.diskSum("db1", id) {
			t.Fatalf("the drifted backup of %s does not restore the disk's bytes", id)
		}
	}
	var evs api.EventList
	if code := e.api(http.MethodGet, api.PathEvents+"?type="+api.EventCBTDrift, nil, &evs); code != http.StatusOK || len(evs.Events) != 1 {
		t.Fatalf("cbt_drift events: %d %+v", code, evs)
	}
	ev := evs.Events[0].Details
	n, _ := strconv.Atoi(ev["drift_count"])
	if ev["backup_id"] != inc.ID || ev["disk_id"] != "disk-2000" || n != int(slotsTouched(hidden, 4*mib)) || ev["slots"] == "" {
		t.Fatalf("event details %v; the hidden writes touched %d slots", ev, slotsTouched(hidden, 4*mib))
	}
	for _, s := range strings.Split(ev["slots"], ",") {
		slot, _ := strconv.ParseInt(s, 10, 64)
		off := slot * 4 * mib
		hit := false
		for _, x := range hidden {
			hit = hit || (x.Offset < off+4*mib && off < x.Offset+x.Length)
		}
		if !hit {
			t.Fatalf("event names slot %d, which no hidden write touched (%v)", slot, hidden)
		}
	}

	if _, err := e.lab.WritePercent("db1", "disk-2000", 2, 43); err != nil {
		t.Fatal(err)
	}
	inc2 := e.run(api.StartBackupRequest{VM: "db1", CBTSample: &all})
	if inc2.Status != "succeeded" || inc2.Type != "incremental" || inc2.CBTDrift || diskOf(t, inc2, "disk-2000").CBTDrift {
		t.Fatalf("incremental with honest CBT: %+v", inc2)
	}
	if e.imageSum(inc2.ID, "disk-2000") != e.diskSum("db1", "disk-2000") {
		t.Fatal("the next incremental does not restore the disk's bytes")
	}
}

// A sample outside 0..1 is refused and names the field.
func TestCBTSampleValidated(t *testing.T) {
	e := newEnv(t, twoDiskSpec("db1"), envOptions{})
	for _, f := range []float64{-0.1, 1.5} {
		if code := e.api(http.MethodPost, api.PathBackups, api.StartBackupRequest{VM: "db1", CBTSample: &f}, nil); code != http.StatusBadRequest {
			t.Fatalf("cbt_sample %v: %d, want 400", f, code)
		}
	}
}
