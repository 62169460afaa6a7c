package chaostest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// Fault kinds: what a trial does to the system at a random moment of a backup.
const (
	faultAgentKill = "agent_kill"      // kill -9 the agent; start it again
	faultHubKill   = "hub_kill"        // kill -9 the hub; start it again on the same address and data
	faultConnCut   = "conn_cut"        // sever every agent–hub connection, or refuse them for seconds
	faultMariaDB   = "mariadb_restart" // stop the catalog's MariaDB (SIGKILL or SIGTERM); start it again
	faultFSFull    = "fs_full"         // shrink the repository's tmpfs to what it holds plus a little; grow it back
)

var faultKinds = []string{faultAgentKill, faultHubKill, faultConnCut, faultMariaDB, faultFSFull}

const (
	trialsPerWorld = 10 // a world (lab, hub, agent) serves this many trials, then a fresh one starts
	slotSize       = 4 * mib
)

// tally is what a run counts; the summary line prints it.
type tally struct {
	seed          int64
	trials        int
	faults        map[string]int
	outcomes      map[string]int // final status of the backups the faults hit
	afterEnd      int            // faults that came after their backup had ended (the random moment was late)
	retries       int            // backups started once the fault was lifted
	retriesFailed int
	restored      int // restore points restored and compared when they first appeared
	reverified    int // restore points restored and compared again when their world closed
	lost          int // backups once called succeeded that no longer are
	corrupt       int // restore points whose bytes differ from the disk's when backed up
	snapshotsLeft int
	stuck         int // jobs not in a final status long after the fault was lifted
	tempsLeft     int
	checkFailures int // `repo check` runs that did not report the repository consistent
}

func (s *tally) summary() string {
	var faults, outcomes []string
	for _, k := range faultKinds {
		faults = append(faults, fmt.Sprintf("%s=%d", k, s.faults[k]))
	}
	keys := make([]string, 0, len(s.outcomes))
	for k := range s.outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		outcomes = append(outcomes, fmt.Sprintf("%s=%d", k, s.outcomes[k]))
	}
	return fmt.Sprintf("chaos summary: seed=%d trials=%d faults[%s] faulted_backups[%s] faults_after_the_end=%d retries=%d retries_failed=%d "+
		"restore_points_checked=%d reverified=%d lost=%d corrupt=%d snapshots_left=%d stuck_jobs=%d temp_files_left=%d repo_check_failures=%d",
		s.seed, s.trials, strings.Join(faults, " "), strings.Join(outcomes, " "), s.afterEnd, s.retries, s.retriesFailed,
		s.restored, s.reverified, s.lost, s.corrupt, s.snapshotsLeft, s.stuck, s.tempsLeft, s.checkFailures)
}

func (s *tally) clean() bool {
	return s.retriesFailed == 0 && s.lost == 0 && s.corrupt == 0 && s.snapshotsLeft == 0 && s.stuck == 0 && s.tempsLeft == 0 && s.checkFailures == 0
}

// TestChaos runs CHAOS_TRIALS randomized trials (default 6: one of each fault, then random ones).
// A trial changes the lab VM's disks, starts a backup, injects its fault at a random moment
// (after a random number of chunks reached the hub, or after a random delay), lifts the fault
// (restarts what was killed), and requires that the backup ended (succeeded, or failed with a
// reason), that a backup started then succeeds, and then the invariants: every backup the
// catalog calls succeeded restores byte-identical to the disk it was taken of, and no backup
// once called succeeded is lost; no job stays queued or running; no snapshot is left in the lab;
// `sendense-hub repo check` finds the catalog and repositories consistent; no temporary file is
// left. CHAOS_SEED replays a run's choices (timings differ); CHAOS_FAULTS=hub_kill,fs_full
// limits the faults drawn.
func TestChaos(t *testing.T) {
	n := envInt(t, "CHAOS_TRIALS", 6)
	if n == 0 {
		t.Skip("CHAOS_TRIALS=0")
	}
	seed := time.Now().UnixNano()
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q is not an integer", v)
		}
		seed = s
	}
	t.Logf("chaos: %d trials, seed %d (CHAOS_SEED=%d replays the choices)", n, seed, seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5e4d))
	kinds := slices.Clone(faultKinds)
	if v := os.Getenv("CHAOS_FAULTS"); v != "" {
		kinds = strings.Split(v, ",")
		for _, k := range kinds {
			if !slices.Contains(faultKinds, k) {
				t.Fatalf("CHAOS_FAULTS: unknown fault %q (known: %s)", k, strings.Join(faultKinds, ","))
			}
		}
	}
	if os.Getuid() != 0 {
		// Mounting the repository's small tmpfs needs root (the test machines run tests as root).
		if testenv.Strict() {
			testenv.Skip(t, "the fs_full trials mount a tmpfs and need root")
		}
		t.Log("not root: no fs_full trials (they mount a tmpfs)")
		kinds = slices.DeleteFunc(kinds, func(k string) bool { return k == faultFSFull })
	}
	st := &tally{seed: seed, faults: map[string]int{}, outcomes: map[string]int{}}
	defer func() { t.Log(st.summary()) }()

	var db *mariaDB
	worlds := map[string]*world{}
	retire := func(w *world) {
		w.reverify(st)
		w.close()
		delete(worlds, w.catalog)
	}
	for i := range n {
		kind := kinds[rng.IntN(len(kinds))]
		if i < len(kinds) {
			kind = kinds[i]
		}
		catalog := "sqlite"
		if kind == faultMariaDB || rng.IntN(3) == 0 {
			catalog = "mysql"
		}
		w := worlds[catalog]
		if w != nil && (w.broken || w.trials >= trialsPerWorld) {
			retire(w)
			w = nil
		}
		if w == nil {
			if catalog == "mysql" && db == nil {
				db = startMariaDB(t)
			}
			var wdb *mariaDB
			if catalog == "mysql" {
				wdb = db
			}
			w = newWorld(t, catalog, wdb, rng.Int64N(1<<40)+1)
			worlds[catalog] = w
		}
		st.trials++
		st.faults[kind]++
		start := time.Now()
		problems := w.trial(kind, rng, st)
		t.Logf("trial %d/%d: %s on %s in %.1fs: %s", i+1, n, kind, catalog, time.Since(start).Seconds(), w.last)
		if len(problems) > 0 {
			w.broken = true
			t.Errorf("trial %d (%s, %s catalog, seed %d):\n  %s\nagent log (tail):\n%s\nhub log (tail):\n%s",
				i+1, kind, catalog, seed, strings.Join(problems, "\n  "), tail(w.alogs.String(), 40), tail(w.hub.Logs(), 40))
		}
	}
	for _, w := range worlds {
		retire(w)
	}
	if !st.clean() {
		t.Errorf("the fault suite found problems: %s", st.summary())
	}
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// trial runs one trial on the world and returns what went wrong.
func (w *world) trial(kind string, rng *rand.Rand, st *tally) (problems []string) {
	w.trials++
	// New data on both disks; the backups of this trial must restore exactly these bytes.
	touched := 0
	for _, d := range w.disks {
		extents, err := w.lab.WritePercent(chaosVM, d.DiskID, 1+rng.Float64()*29, rng.Int64N(1<<40)+1)
		if err != nil {
			w.t.Fatalf("write to the lab disk: %v", err)
		}
		slots := map[int64]bool{}
		for _, e := range extents {
			for s := e.Offset / slotSize; s <= (e.End()-1)/slotSize; s++ {
				slots[s] = true
			}
		}
		touched += len(slots)
	}
	sums := w.diskSums()
	typ, chunks := api.BackupAuto, touched
	if rng.IntN(6) == 0 {
		typ = api.BackupFull
	}
	if typ == api.BackupFull || len(w.succeeded) == 0 {
		chunks = 0
		for _, d := range w.disks {
			chunks += int((d.CapacityBytes + slotSize - 1) / slotSize)
		}
	}
	b := w.startBackup(typ, sums)

	// The random moment: after a random number of the backup's chunks reached the hub (0: while
	// the snapshot is taken; all: while the disks are committed), or after a random delay.
	if rng.IntN(5) == 0 {
		time.Sleep(time.Duration(rng.Int64N(int64(3 * time.Second))))
	} else {
		base := w.hubMetric("sendense_hub_chunks_received_total")
		target := base + float64(rng.IntN(chunks+1))
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			if w.hubMetric("sendense_hub_chunks_received_total") >= target {
				break
			}
			if cur, ok := w.get(b.ID); ok && final(cur.Status) {
				break
			}
			time.Sleep(5 * time.Millisecond) // paces the polling; the fault follows what it shows
		}
	}
	if cur, ok := w.get(b.ID); ok && final(cur.Status) {
		st.afterEnd++
	}
	if p := w.inject(kind, rng, b.ID); p != "" {
		problems = append(problems, p)
	}

	fb, ok := w.waitFinal(b.ID, jobDeadline)
	switch {
	case !ok:
		problems = append(problems, fmt.Sprintf("the backup hit by the fault is still %s %s after the fault was lifted", fb.Status, jobDeadline))
	case fb.Status == api.JobFailed && fb.Error == "":
		problems = append(problems, "the backup hit by the fault failed without saying why")
	case fb.Status == api.JobFailed && kind == faultFSFull && !strings.Contains(fb.Error, "out of storage space"):
		problems = append(problems, "the backup that filled the repository failed without saying the hub is out of space: "+fb.Error)
	}
	st.outcomes[fb.Status]++
	w.last = fmt.Sprintf("the faulted backup %s (%s, %d chunks to send) %s in %.1fs", b.ID, typ, chunks, fb.Status, fb.FinishedAt.Sub(fb.CreatedAt).Seconds())
	if fb.Error != "" {
		w.last += ": " + fb.Error
	}

	// Once the fault is lifted, a new backup succeeds.
	st.retries++
	rb := w.startBackup(api.BackupAuto, sums)
	rb, ok = w.waitFinal(rb.ID, jobDeadline)
	if !ok || rb.Status != api.JobSucceeded {
		st.retriesFailed++
		problems = append(problems, fmt.Sprintf("the backup started after the fault was lifted ended %q: %s", rb.Status, rb.Error))
	}
	return append(problems, w.check(st)...)
}

// inject applies the fault and lifts it again; it returns a problem with lifting it, if any.
func (w *world) inject(kind string, rng *rand.Rand, backupID string) string {
	pause := func(max time.Duration) { time.Sleep(time.Duration(rng.Int64N(int64(max)))) }
	switch kind {
	case faultAgentKill:
		w.agent.kill()
		pause(1500 * time.Millisecond)
		w.startAgent()
	case faultHubKill:
		w.hub.Kill()
		pause(2 * time.Second)
		w.hub.Restart()
	case faultConnCut:
		if rng.IntN(2) == 0 {
			for range 1 + rng.IntN(3) {
				w.proxy.cut()
				pause(700 * time.Millisecond)
			}
		} else {
			w.proxy.setDown(true)
			time.Sleep(time.Second)
			pause(5 * time.Second)
			w.proxy.setDown(false)
		}
	case faultMariaDB:
		sig := syscall.SIGTERM
		if rng.IntN(2) == 0 {
			sig = syscall.SIGKILL
		}
		w.db.restart(sig, time.Duration(rng.Int64N(int64(2*time.Second))))
	case faultFSFull:
		// Room for at most a chunk or so more: the backup's writes fail with ENOSPC.
		var err error
		for range 10 {
			var used int64
			if used, err = w.repoUsed(); err != nil {
				break
			}
			size := (used + rng.Int64N(6*mib) + 4095) / 4096 * 4096
			if err = w.remountRepo(max(size, 4096)); err == nil {
				break
			}
		}
		if err != nil {
			return "fill the repository: " + err.Error()
		}
		// The fault holds until the backup ends (or a minute passes), then space comes back.
		w.waitFinal(backupID, time.Minute)
		if err := w.remountRepo(repoFSSize); err != nil {
			w.t.Fatalf("give the repository its space back: %v", err)
		}
	default:
		w.t.Fatalf("unknown fault %q", kind)
	}
	return ""
}

// check verifies the invariants after a trial and returns what is violated.
func (w *world) check(st *tally) (problems []string) {
	// No job stuck: every backup reaches a final status.
	var all []api.Backup
	deadline := time.Now().Add(jobDeadline)
	for {
		l, ok := w.list()
		active := 0
		for _, b := range l {
			if !final(b.Status) {
				active++
			}
		}
		if ok && active == 0 {
			all = l
			break
		}
		if time.Now().After(deadline) {
			st.stuck += active
			problems = append(problems, fmt.Sprintf("%d jobs still queued or running (reachable: %v)", active, ok))
			all = l
			break
		}
		time.Sleep(200 * time.Millisecond) // paces the polling
	}
	// Nothing once called succeeded is lost; every new restore point restores byte-identical.
	byID := map[string]api.Backup{}
	for _, b := range all {
		byID[b.ID] = b
	}
	for id := range w.succeeded {
		if b, ok := byID[id]; !ok || b.Status != api.JobSucceeded {
			st.lost++
			problems = append(problems, fmt.Sprintf("backup %s was succeeded and is now %q", id, b.Status))
		}
	}
	for _, b := range all {
		if b.Status != api.JobSucceeded || w.restored[b.ID] {
			continue
		}
		w.succeeded[b.ID] = true
		w.restored[b.ID] = true
		st.restored++
		if d := w.restore(b.ID); d != "" {
			st.corrupt++
			problems = append(problems, fmt.Sprintf("restore point %s: %s", b.ID, d))
		}
	}
	// No snapshot left: the agent removes its snapshot when a job ends, its reaper what a crash left.
	var snaps int
	var err error
	deadline = time.Now().Add(snapshotDeadline)
	for {
		snaps, err = w.snapshots()
		if err == nil && snaps == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // paces the polling
	}
	if err != nil || snaps > 0 {
		st.snapshotsLeft += snaps
		problems = append(problems, fmt.Sprintf("%d snapshots left in the lab (%v)", snaps, err))
	}
	// The catalog and the repositories agree.
	if out, err := w.hub.TryCLI("repo", "check"); err != nil || !strings.Contains(out, "consistent") {
		st.checkFailures++
		problems = append(problems, fmt.Sprintf("repo check: %v\n%s", err, out))
	}
	if left := w.tempFiles(); len(left) > 0 {
		st.tempsLeft += len(left)
		problems = append(problems, fmt.Sprintf("temporary files left: %s", strings.Join(left, ", ")))
	}
	return problems
}

// reverify restores every restore point of the world again before it closes: later faults
// must not have damaged earlier backups.
func (w *world) reverify(st *tally) {
	l, ok := w.list()
	if !ok {
		w.t.Errorf("%s world: the hub does not list backups at the end", w.catalog)
		return
	}
	for _, b := range l {
		if b.Status != api.JobSucceeded {
			continue
		}
		st.reverified++
		if d := w.restore(b.ID); d != "" {
			st.corrupt++
			w.t.Errorf("%s world: restore point %s at the end: %s", w.catalog, b.ID, d)
		}
	}
}
