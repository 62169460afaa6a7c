package backup_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/shared/chunk"
)

const mib = 1 << 20

func twoDiskSpec(vm string) lab.Spec {
	return lab.Spec{VMs: []lab.VMSpec{{
		Name: vm, CBT: true,
		Disks: []lab.DiskSpec{
			{Key: 2000, Size: "96MiB", Fill: lab.FillSparse, Data: "40MiB", Seed: 7},
			{Key: 2001, Size: "30MiB", Fill: lab.FillCompressible, Data: "21MiB", Seed: 8},
		},
	}}}
}

func slotsTouched(extents []lab.Extent, chunkSize int64) int64 {
	var exts []chunk.Extent
	for _, e := range extents {
		exts = append(exts, chunk.Extent{Offset: e.Offset, Length: e.Length})
	}
	return int64(len(chunk.Grid{Capacity: 1 << 62, ChunkSize: chunkSize}.ForExtents(exts)))
}

// Full → write → incremental → write → incremental: every restore point restores exactly the
// bytes the disks had, and an incremental reads and sends only the changed slots.
func TestFullThenIncrementals(t *testing.T) {
	e := newEnv(t, twoDiskSpec("db1"), envOptions{})
	full := e.backup("db1", "")
	if full.Status != "succeeded" || full.Type != "full" {
		t.Fatalf("first backup: %+v\n%s", full, e.logs)
	}
	d0 := diskOf(t, full, "disk-2000")
	if d0.Type != "full" || !strings.Contains(d0.Reason, "no earlier backup") {
		t.Fatalf("full disk: %+v", d0)
	}
	// The agent's last line of the job gives its totals, not what was left uncommitted.
	if m := regexp.MustCompile(`msg="backup finished" job_id=` + full.ID + ` .* bytes_read=(\d+) bytes_sent=(\d+)`).FindStringSubmatch(e.logs.String()); m == nil ||
		m[1] != strconv.FormatInt(full.BytesRead, 10) || m[2] != strconv.FormatInt(full.BytesSent, 10) {
		t.Fatalf("the agent logged %q at the end of a job that read %d and sent %d bytes", m, full.BytesRead, full.BytesSent)
	}
	// CBT "*" lists only allocated areas: a 96 MiB disk with 40 MiB of data reads about 40 MiB.
	if d0.BytesRead > 48*mib || d0.BytesRead < 40*mib {
		t.Fatalf("full read %d bytes of a disk with 40 MiB allocated", d0.BytesRead)
	}
	sums := map[string][32]byte{"disk-2000": e.diskSum("db1", "disk-2000"), "disk-2001": e.diskSum("db1", "disk-2001")}
	for id, want := range sums {
		if e.imageSum(full.ID, id) != want {
			t.Fatalf("full backup of %s does not restore the disk's bytes", id)
		}
	}

	extents, err := e.lab.WritePercent("db1", "disk-2000", 5, 99)
	if err != nil {
		t.Fatal(err)
	}
	inc := e.backup("db1", "")
	i0, i1 := diskOf(t, inc, "disk-2000"), diskOf(t, inc, "disk-2001")
	changed := slotsTouched(extents, 4*mib)
	if inc.Type != "incremental" || i0.Type != "incremental" || i0.ParentBackupID != full.ID {
		t.Fatalf("second backup: %+v %+v", inc, i0)
	}
	if i0.SlotsChanged != changed || i0.BytesRead != changed*4*mib {
		t.Fatalf("incremental read %d slots (%d bytes); the writes touched %d slots", i0.SlotsChanged, i0.BytesRead, changed)
	}
	if i1.BytesRead != 0 || i1.BytesSent != 0 {
		t.Fatalf("unchanged disk read %d and sent %d bytes", i1.BytesRead, i1.BytesSent)
	}
	if i0.BytesSent == 0 || i0.BytesSent > i0.BytesRead+changed*64 {
		t.Fatalf("incremental sent %d bytes for %d read", i0.BytesSent, i0.BytesRead)
	}
	sum2 := e.diskSum("db1", "disk-2000")
	if e.imageSum(inc.ID, "disk-2000") != sum2 || e.imageSum(inc.ID, "disk-2001") != sums["disk-2001"] {
		t.Fatal("incremental does not restore the disks' bytes")
	}

	if err := e.lab.Write("db1", "disk-2001", 3*mib+17, []byte("a few changed bytes")); err != nil {
		t.Fatal(err)
	}
	inc2 := e.backup("db1", "")
	if d := diskOf(t, inc2, "disk-2001"); d.Type != "incremental" || d.SlotsChanged != 1 || d.BytesRead != 4*mib {
		t.Fatalf("third backup of disk-2001: %+v", d)
	}
	if e.imageSum(inc2.ID, "disk-2001") != e.diskSum("db1", "disk-2001") || e.imageSum(inc2.ID, "disk-2000") != sum2 {
		t.Fatal("second incremental does not restore the disks' bytes")
	}
	// Older restore points are untouched by later backups.
	if e.imageSum(full.ID, "disk-2000") != sums["disk-2000"] || e.imageSum(inc.ID, "disk-2000") != sum2 {
		t.Fatal("an older restore point changed")
	}
	if n := snapshotsLeft(t, e); n != 0 {
		t.Fatalf("%d snapshots left behind", n)
	}
}

// Two VMs cloned from one template: the second full sends almost nothing.
func TestCloneIsStoredOnce(t *testing.T) {
	spec := lab.Spec{VMs: []lab.VMSpec{
		{Name: "tmpl", CBT: true, Disks: []lab.DiskSpec{{Key: 2000, Size: "48MiB", Fill: lab.FillRandom, Data: "32MiB", Seed: 3}}},
		{Name: "clone", CBT: true, CloneOf: "tmpl"},
	}}
	e := newEnv(t, spec, envOptions{})
	const slotsRoute, namedRoute = "/api/v1/agent/sessions/:session/slots", "/api/v1/agent/sessions/:session/chunks/:digest"
	first := e.backup("tmpl", "")
	if first.BytesSent < 32*mib {
		t.Fatalf("first full sent only %d bytes", first.BytesSent)
	}
	// A disk without an earlier backup has no chunk the hub would let it skip but its own
	// copies: its first full uploads at once, unnamed, without asking first.
	if asked, named := e.hubRequests(slotsRoute), e.hubRequests(namedRoute); asked != 0 || named != 0 {
		t.Fatalf("the first full of a disk recorded %d groups of slots first and named %d chunks: it asked the hub before uploading", asked, named)
	}
	stored, dup := e.hubMetric(t, "sendense_hub_chunks_received_total"), e.hubMetric(t, "sendense_hub_chunks_duplicate_total")
	second := e.backup("clone", "")
	// The clone's agent must prove it holds the bytes (it never backed this disk up), so it
	// uploads them; the repository already holds every one and stores none again.
	if second.BytesSent < 32*mib {
		t.Fatalf("clone full sent %d bytes: chunks first backed up for another disk were referenced without upload", second.BytesSent)
	}
	received := e.hubMetric(t, "sendense_hub_chunks_received_total") - stored
	if again := e.hubMetric(t, "sendense_hub_chunks_duplicate_total") - dup; received == 0 || again != received {
		t.Fatalf("the clone's %v uploaded chunks: %v were already stored, want all", received, again)
	}
	if e.imageSum(second.ID, "disk-2000") != e.diskSum("clone", "disk-2000") {
		t.Fatal("the clone's backup does not restore its bytes")
	}
	// Its next backup references its own chunks again without uploading them.
	asked := e.hubRequests(slotsRoute)
	third := e.backup("clone", "full")
	if third.BytesSent > third.BytesRead/100 || third.BytesDeduplicated < 32*mib {
		t.Fatalf("the clone's second full sent %d bytes (deduplicated %d), want its own chunks referenced", third.BytesSent, third.BytesDeduplicated)
	}
	if e.hubRequests(slotsRoute) == asked {
		t.Fatal("a full backup of a disk with an earlier backup did not ask the hub which chunks it holds")
	}
}

// A resized disk and a reset change ID each force a full backup, with the reason recorded.
func TestResizeAndCBTResetForceFull(t *testing.T) {
	e := newEnv(t, twoDiskSpec("db2"), envOptions{})
	e.backup("db2", "")
	if err := e.lab.ResizeDisk("db2", "disk-2000", 128*mib); err != nil {
		t.Fatal(err)
	}
	if err := e.lab.ResetCBT("db2", "disk-2001"); err != nil {
		t.Fatal(err)
	}
	e.discover()
	b := e.backup("db2", "")
	d0, d1 := diskOf(t, b, "disk-2000"), diskOf(t, b, "disk-2001")
	if d0.Type != "full" || !strings.Contains(d0.Reason, "resized") || d0.CapacityBytes != 128*mib {
		t.Fatalf("resized disk: %+v", d0)
	}
	if d1.Type != "full" || !strings.Contains(d1.Reason, "UUID changed") {
		t.Fatalf("disk with a reset change ID: %+v", d1)
	}
	if e.imageSum(b.ID, "disk-2000") != e.diskSum("db2", "disk-2000") || e.imageSum(b.ID, "disk-2001") != e.diskSum("db2", "disk-2001") {
		t.Fatal("forced fulls do not restore the disks' bytes")
	}
	if b.Type != "full" {
		t.Fatalf("job type %q, want full", b.Type)
	}
}

// The nbd transport (nbdkit's curl plugin on the lab's datastore HTTPS) and the file transport
// read the same bytes as https.
func TestTransports(t *testing.T) {
	for _, tr := range []string{"nbd", "file"} {
		t.Run(tr, func(t *testing.T) {
			e := newEnv(t, twoDiskSpec("db3"), envOptions{transport: tr})
			b := e.backup("db3", "")
			for _, id := range []string{"disk-2000", "disk-2001"} {
				if e.imageSum(b.ID, id) != e.diskSum("db3", id) {
					t.Fatalf("%s transport: %s does not restore its bytes", tr, id)
				}
			}
		})
	}
}

// CBT off: the agent enables it and the backup is full; a disk without CBT support is read
// whole and still restores; a failing quiesce falls back to a crash-consistent snapshot.
func TestCBTOffUnsupportedAndQuiesce(t *testing.T) {
	spec := lab.Spec{VMs: []lab.VMSpec{{
		Name: "legacy", CBT: false, QuiesceFails: true,
		Disks: []lab.DiskSpec{
			{Key: 2000, Size: "40MiB", Fill: lab.FillSparse, Data: "12MiB"},
			{Key: 2001, Size: "20MiB", Fill: lab.FillRandom, Data: "8MiB", CBTUnsupported: true},
		},
	}}}
	e := newEnv(t, spec, envOptions{})
	b := e.backup("legacy", "")
	if !strings.Contains(b.Notes, "was off") || !strings.Contains(b.Notes, "crash-consistent") {
		t.Fatalf("notes %q do not record CBT enabling and the quiesce fallback", b.Notes)
	}
	d1 := diskOf(t, b, "disk-2001")
	if d1.Type != "full" || !strings.Contains(d1.Reason, "every slot") || d1.BytesRead != 20*mib {
		t.Fatalf("disk without CBT: %+v", d1)
	}
	for _, id := range []string{"disk-2000", "disk-2001"} {
		if e.imageSum(b.ID, id) != e.diskSum("legacy", id) {
			t.Fatalf("%s does not restore its bytes", id)
		}
	}
	// The next backup of the CBT-less disk reads it all again but sends only what changed.
	if err := e.lab.Write("legacy", "disk-2001", 1*mib, []byte("changed")); err != nil {
		t.Fatal(err)
	}
	e.discover()
	b2 := e.backup("legacy", "")
	if d := diskOf(t, b2, "disk-2001"); d.BytesRead != 20*mib || d.BytesSent > 5*mib {
		t.Fatalf("second backup of the CBT-less disk: %+v", d)
	}
	if e.imageSum(b2.ID, "disk-2001") != e.diskSum("legacy", "disk-2001") {
		t.Fatal("second backup does not restore the CBT-less disk")
	}
}

// The backup after the one that enabled CBT is an incremental, also when no discovery has told
// the hub since that CBT is on: vCenter, not the inventory, says whether it is off now.
func TestCBTEnabledByTheLastJobNeedsNoDiscovery(t *testing.T) {
	spec := lab.Spec{VMs: []lab.VMSpec{{
		Name: "legacy", CBT: false,
		Disks: []lab.DiskSpec{{Key: 2000, Size: "40MiB", Fill: lab.FillSparse, Data: "12MiB"}},
	}}}
	e := newEnv(t, spec, envOptions{})
	b := e.backup("legacy", "")
	if !strings.Contains(b.Notes, "was off") || b.Type != "full" {
		t.Fatalf("first backup: %+v", b)
	}
	if err := e.lab.Write("legacy", "disk-2000", 1*mib, []byte("changed")); err != nil {
		t.Fatal(err)
	}
	b2 := e.backup("legacy", "")
	if d := diskOf(t, b2, "disk-2000"); b2.Status != "succeeded" || d.Type != "incremental" || strings.Contains(b2.Notes, "was off") {
		t.Fatalf("backup after CBT was enabled, with the inventory not yet refreshed: %+v, disk %+v\n%s", b2, d, e.logs)
	}
	if e.imageSum(b2.ID, "disk-2000") != e.diskSum("legacy", "disk-2000") {
		t.Fatal("the incremental does not restore the disk")
	}
}
