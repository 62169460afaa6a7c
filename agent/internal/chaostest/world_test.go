package chaostest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/config"
	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/agent/internal/sources"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// Deadlines of a trial. They bound waits for observed conditions on a loaded two-core machine;
// nothing asserts how fast anything is.
const (
	jobDeadline      = 3 * time.Minute // a job reaches a final status once the fault is lifted
	snapshotDeadline = 2 * time.Minute // the agent removes its snapshot after the job ends
	chaosRepo        = "chaos"
	chaosVM          = "chaos1"
	repoFSSize       = 1 << 30 // the repository's tmpfs when no fault holds it
)

// world is one lab vCenter, one hub (with SQLite or a private MariaDB as its catalog), a loopback
// proxy between them and an enrolled sendense-agent process, reused by several trials. Every
// backup goes into the repository "chaos", a small tmpfs of its own when the test runs as root.
type world struct {
	t       *testing.T
	catalog string // sqlite or mysql
	db      *mariaDB
	lab     *lab.Lab
	hub     *hubtest.Hub
	proxy   *proxy
	repoDir string
	mounted bool
	op      *http.Client
	token   string
	bin     string
	cfg     string
	state   string
	agent   *agentProc
	alogs   *testenv.LogBuffer // every run of the agent
	srcs    *sources.Set       // the test's own view of the lab, to count snapshots
	disks   []lab.DiskInfo

	want      map[string]map[string][32]byte // backup id → disk id → SHA-256 of the disk when queued
	succeeded map[string]bool                // backups the catalog has called succeeded
	restored  map[string]bool                // succeeded backups already restored and compared
	trials    int
	last      string // what the last trial's faulted backup did, for the log
	broken    bool   // a trial failed: the next trial starts a fresh world
}

func newWorld(t *testing.T, catalog string, db *mariaDB, seed int64) *world {
	t.Helper()
	return newWorldWith(t, catalog, db, seed, lab.Options{})
}

// newWorldWith is newWorld with the lab's options.
func newWorldWith(t *testing.T, catalog string, db *mariaDB, seed int64, labOpts lab.Options) *world {
	t.Helper()
	w := &world{t: t, catalog: catalog, db: db, bin: agentBinary(t), alogs: &testenv.LogBuffer{},
		want: map[string]map[string][32]byte{}, succeeded: map[string]bool{}, restored: map[string]bool{}}
	spec := lab.Spec{VMs: []lab.VMSpec{{Name: chaosVM, CBT: true, Disks: []lab.DiskSpec{
		{Key: 2000, Size: "40MiB", Fill: lab.FillRandom, Seed: seed},
		{Key: 2001, Size: "24MiB", Fill: lab.FillCompressible, Seed: seed + 1},
	}}}}
	l, err := lab.Start(t.Context(), spec, labOpts)
	if err != nil {
		t.Fatalf("start lab: %v", err)
	}
	w.lab = l
	t.Cleanup(func() { _ = l.Close() })
	info, err := l.VM(chaosVM)
	if err != nil {
		t.Fatal(err)
	}
	w.disks = info.Disks

	var hubArgs []string
	if db != nil {
		hubArgs = append(hubArgs, "--db", db.createDatabase())
	}
	w.hub = hubtest.Start(t, hubArgs...)
	w.proxy = newProxy(t, w.hub.Addr)
	t.Cleanup(w.proxy.close)
	w.op = operatorClient(t, w.hub)
	w.token = w.hub.APIToken("operator")

	w.repoDir = filepath.Join(t.TempDir(), "repo")
	if err := os.MkdirAll(w.repoDir, 0o750); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0750", repoFSSize), "tmpfs", w.repoDir).CombinedOutput(); err != nil {
			t.Fatalf("mount a tmpfs for the repository: %v: %s", err, out)
		}
		w.mounted = true
		t.Cleanup(w.unmount)
	}
	w.hub.CLI("repo", "create", chaosRepo, "--path", w.repoDir)

	dir := t.TempDir()
	w.state = filepath.Join(dir, "agent")
	if out, err := exec.Command(w.bin, "enroll", "--token", w.hub.JoinToken(), "--state-dir", w.state).CombinedOutput(); err != nil {
		t.Fatalf("enroll the agent: %v\n%s", err, out)
	}
	pw := filepath.Join(dir, "vc.password")
	if err := os.WriteFile(pw, []byte(l.Password()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := config.Source{Name: "lab", URL: l.SDKURL(), Username: l.Username(), PasswordFile: pw, CAFile: l.CACertFile()}
	w.cfg = filepath.Join(dir, "agent.yaml")
	conf := fmt.Sprintf("state_dir: %s\nhub_url: %s\ndiscovery_interval: 1h\nheartbeat_interval: 2s\nmetrics_listen: \"\"\nlog_format: text\nlog_level: debug\n"+
		"sources:\n  - name: lab\n    url: %s\n    username: %s\n    password_file: %s\n    ca_file: %s\n",
		w.state, w.proxy.URL(), src.URL, src.Username, src.PasswordFile, src.CAFile)
	if err := os.WriteFile(w.cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	w.srcs = sources.New([]config.Source{src}, t.TempDir(), slog.New(slog.DiscardHandler))
	t.Cleanup(func() { w.srcs.Close(context.Background()) })
	w.startAgent()
	testenv.WaitFor(t, 2*time.Minute, "the agent to report the lab's VM", func() bool {
		var l api.VMList
		if w.api(http.MethodGet, api.PathVMs+"?limit=1000", nil, &l) != http.StatusOK {
			return false
		}
		for _, vm := range l.VMs {
			if vm.VMName == chaosVM {
				return true
			}
		}
		time.Sleep(100 * time.Millisecond) // paces the polling
		return false
	})
	return w
}

func (w *world) startAgent() {
	w.agent = startAgent(w.t, w.bin, w.alogs, "run", "--config", w.cfg)
}

func (w *world) unmount() {
	if !w.mounted {
		return
	}
	// The hub may still hold files open in the repository when a test fails: lazily.
	if out, err := exec.Command("umount", "-l", w.repoDir).CombinedOutput(); err != nil {
		w.t.Logf("umount %s: %v: %s", w.repoDir, err, out)
	}
	w.mounted = false
}

// close stops everything the world runs and frees its disk and memory early (the test's cleanup
// would do it at the very end of a long run).
func (w *world) close() {
	w.agent.kill()
	w.hub.Stop()
	w.proxy.close()
	_ = w.lab.Close()
	w.srcs.Close(context.Background())
	w.unmount()
	_ = os.RemoveAll(w.hub.DataDir)
}

// api calls the operator API; it returns 0 when the hub cannot be reached (a fault may hold).
func (w *world) api(method, path string, in, out any) int {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(w.t.Context(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, w.hub.URL+path, body)
	req.Header.Set("Authorization", "Bearer "+w.token)
	resp, err := w.op.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			w.t.Errorf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

// diskSums hashes the lab VM's disks as they are now.
func (w *world) diskSums() map[string][32]byte {
	w.t.Helper()
	out := map[string][32]byte{}
	for _, d := range w.disks {
		s, err := fileSum(d.FlatPath, d.CapacityBytes)
		if err != nil {
			w.t.Fatal(err)
		}
		out[d.DiskID] = s
	}
	return out
}

// startBackup queues a backup of the lab VM into the chaos repository; sums are the disks'
// contents, which stay as they are until the backup has ended.
func (w *world) startBackup(typ string, sums map[string][32]byte) api.Backup {
	w.t.Helper()
	var b api.Backup
	if code := w.api(http.MethodPost, api.PathBackups, api.StartBackupRequest{VM: chaosVM, Type: typ, Repository: chaosRepo}, &b); code != http.StatusAccepted {
		w.t.Fatalf("start a backup: status %d", code)
	}
	w.want[b.ID] = sums
	return b
}

func (w *world) get(id string) (api.Backup, bool) {
	var b api.Backup
	return b, w.api(http.MethodGet, api.PathBackups+"/"+id, nil, &b) == http.StatusOK
}

func final(status string) bool {
	return status == api.JobSucceeded || status == api.JobFailed || status == api.JobCancelled
}

// waitFinal waits up to d for a backup to reach a final status; ok is false when it did not.
func (w *world) waitFinal(id string, d time.Duration) (b api.Backup, ok bool) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if got, found := w.get(id); found {
			b = got
			if final(b.Status) {
				return b, true
			}
		}
		time.Sleep(100 * time.Millisecond) // paces the polling
	}
	return b, false
}

// list returns every backup the catalog holds.
func (w *world) list() ([]api.Backup, bool) {
	var l api.BackupList
	if w.api(http.MethodGet, api.PathBackups+"?limit=1000", nil, &l) != http.StatusOK {
		return nil, false
	}
	return l.Backups, true
}

// hubMetric reads one unlabelled series from the hub's /metrics (-1 when unreachable).
func (w *world) hubMetric(name string) float64 {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(w.hub.Metrics)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

func (w *world) snapshots() (int, error) {
	conn, err := w.srcs.Get("lab")
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(w.t.Context(), time.Minute)
	defer cancel()
	s, err := conn.Snapshots(ctx, api.SnapshotPrefix)
	return len(s), err
}

// restore restores every disk of a backup with the CLI and compares each with the bytes the disk
// held when the backup was queued. It returns a description of what differs ("" when nothing).
func (w *world) restore(id string) string {
	want, ok := w.want[id]
	if !ok {
		return "a backup the test never started"
	}
	out := filepath.Join(w.t.TempDir(), "restore-"+id)
	defer os.RemoveAll(out)
	if res, err := w.hub.TryCLI("restore", "--backup", id, "--output", out); err != nil {
		return fmt.Sprintf("restore failed: %v %s", err, res)
	}
	var diffs []string
	for _, d := range w.disks {
		got, err := fileSum(filepath.Join(out, d.DiskID+".raw"), d.CapacityBytes)
		switch {
		case err != nil:
			diffs = append(diffs, fmt.Sprintf("%s: %v", d.DiskID, err))
		case got != want[d.DiskID]:
			diffs = append(diffs, fmt.Sprintf("%s: restored bytes differ from the disk's", d.DiskID))
		}
	}
	return strings.Join(diffs, "; ")
}

// tempFiles lists the temporary files left in the repositories and the hub's and the agent's
// state: temp files of a repository's writers (tmp/<instance>/ holds only its lock file while
// the hub is idle) and the ".name.tmp-*" files of atomic writes.
func (w *world) tempFiles() []string {
	var left []string
	for _, root := range []string{w.repoDir, w.hub.DataDir, w.state} {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			rel, _ := filepath.Rel(root, p)
			parts := strings.Split(rel, string(filepath.Separator))
			inTmp := false
			for i, part := range parts[:len(parts)-1] {
				if part == "tmp" && (i == 0 || parts[i-1] == "default" || parts[i-1] == chaosRepo) {
					inTmp = true
				}
			}
			switch {
			case inTmp && d.Name() != "lock":
				left = append(left, p)
			case strings.Contains(d.Name(), ".tmp-"):
				left = append(left, p)
			}
			return nil
		})
	}
	return left
}

// remountRepo sets the size of the repository's tmpfs.
func (w *world) remountRepo(size int64) error {
	out, err := exec.Command("mount", "-o", fmt.Sprintf("remount,size=%d", size), w.repoDir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("remount %s with size %d: %v: %s", w.repoDir, size, err, out)
	}
	return nil
}

// repoUsed is the bytes used on the repository's file system.
func (w *world) repoUsed() (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(w.repoDir, &st); err != nil {
		return 0, err
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize, nil
}
