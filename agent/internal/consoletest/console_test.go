// Package consoletest drives the hub's web console in a real headless Chromium against a real
// hub, an enrolled agent and the lab's simulated vCenter.
package consoletest

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/shared/testenv"
)

func TestMain(m *testing.M) { os.Exit(hubtest.Main(m)) }

// EnvScreenshots names the directory the test writes its page screenshots to (default: a
// temporary directory of the test).
const EnvScreenshots = "SENDENSE_CONSOLE_SCREENSHOTS"

const password = "console test password"

func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testenv.Skip(t, "chromium not found: apt-get install chromium (scripts/deps.sh installs it)")
	return ""
}

// spkiPin is the base64 SHA-256 of the hub's server key, for Chromium's
// --ignore-certificate-errors-spki-list: the browser trusts that one key, nothing else.
func spkiPin(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) // only to read the key to pin
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// hostsFile is /etc/hosts of the filesystem the test writes onto the lab disk.
const hostsFile = "127.0.0.1 localhost\n10.1.2.3 web1.lab web1\n"

// writeFilesystem makes the lab disk hold an ext4 filesystem on the whole disk (no partition
// table: the file browser's "disk" volume) with /etc/hosts and /etc/app/app.conf, written through
// the lab as a guest would write it, so that the next backup reads it.
func writeFilesystem(t *testing.T, l *lab.Lab, vm, diskID string, size int64) {
	t.Helper()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mkfs.ext4"); serr != nil {
			testenv.Skip(t, "mkfs.ext4 not found (Debian: apt install e2fsprogs)")
		}
		mkfs = "/usr/sbin/mkfs.ext4"
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(filepath.Join(src, "etc", "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	for p, b := range map[string]string{"etc/hosts": hostsFile, "etc/app/app.conf": "listen = 0.0.0.0:8080\n"} {
		if err := os.WriteFile(filepath.Join(src, p), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "fs.img")
	cmd := exec.Command(mkfs, "-q", "-F", "-b", "4096", "-d", src, img, fmt.Sprintf("%dk", size>>10))
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1700000000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Write(vm, diskID, 0, b); err != nil {
		t.Fatalf("write the filesystem onto %s of %s: %v", diskID, vm, err)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// protected asks the hub's catalog, not the console, whether a backup is protected.
func protected(t *testing.T, hub *hubtest.Hub, id string) bool {
	t.Helper()
	var l struct {
		Backups []struct {
			ID        string `json:"id"`
			Protected bool   `json:"protected"`
		} `json:"backups"`
	}
	if err := json.Unmarshal([]byte(hub.CLI("backup", "list", "--json")), &l); err != nil {
		t.Fatal(err)
	}
	for _, b := range l.Backups {
		if b.ID == id {
			return b.Protected
		}
	}
	t.Fatalf("backup %s is not in the catalog", id)
	return false
}

type browserT struct {
	t    *testing.T
	ctx  context.Context
	base string
	shot string
	n    int
}

// do runs steps with a bound on each group, failing the test with the page it was on.
func (b *browserT) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		loc, _ := chromedp.Run(b.ctx, chromedp.Location())
		b.t.Fatalf("%s (at %s): %v", what, loc, err)
	}
}

// get runs one action that returns a value.
func get[T any](b *browserT, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		loc, _ := chromedp.Run(b.ctx, chromedp.Location())
		b.t.Fatalf("%s (at %s): %v", what, loc, err)
	}
	return v
}

func (b *browserT) open(path string, waitFor string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path), chromedp.WaitVisible(chromedp.CSS(waitFor)))
}

func (b *browserT) text(sel string) string {
	b.t.Helper()
	return strings.TrimSpace(get(b, "read "+sel, chromedp.Text(chromedp.CSS(sel))))
}

// unlabeled names the page's controls that have no label (a <label>, aria-label or, for a
// button or link, text): every control must be usable with a screen reader and the keyboard.
const unlabeled = `Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea, button, a[href]'))
	.filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
	.map(el => el.outerHTML.slice(0, 80))`

func (b *browserT) screenshot(name string) {
	b.t.Helper()
	if bad := get(b, "find unlabeled controls", chromedp.Evaluate[[]string](unlabeled)); len(bad) > 0 {
		b.t.Errorf("page %s: controls without a label: %q", name, bad)
	}
	png := get(b, "screenshot "+name, chromedp.FullScreenshot(100))
	b.n++
	p := filepath.Join(b.shot, fmt.Sprintf("%02d-%s.png", b.n, name))
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", p)
}

func (b *browserT) signIn(user string) {
	b.t.Helper()
	b.open("/", "#username") // signed out: the console sends the browser to the sign-in form
	b.do("sign in as "+user,
		chromedp.SendKeys(chromedp.CSS("#username"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#vms-protected")))
}

func (b *browserT) signOut() {
	b.t.Helper()
	b.do("sign out", chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#username")))
	b.open("/", "#username")
}

// The console end to end, in a real browser: sign in, the lab's VM, a backup watched to 100 %
// without reloading, protect, a policy and its next runs, a join token, a disk image download
// compared with the lab disk, a viewer without change buttons and refused by the server, sign out.
func TestConsoleInBrowser(t *testing.T) {
	chrome := chromium(t)
	shots := os.Getenv(EnvScreenshots)
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	// The hub serves instant recovery over NFS; the lab mounts its exports from the hub's folder.
	var hub *hubtest.Hub
	lo := lab.Options{NASDir: func(_, remotePath string) (string, error) {
		return filepath.Join(hub.DataDir, "instant-recovery", strings.TrimPrefix(remotePath, "/"), "export"), nil
	}}
	l, err := lab.Start(t.Context(), lab.Spec{VMs: []lab.VMSpec{{Name: "web1", CBT: true, Disks: []lab.DiskSpec{{Size: "64MiB", Fill: lab.FillSparse, Data: "24MiB"}}}}}, lo)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	labVM, err := l.VM("web1")
	if err != nil {
		t.Fatal(err)
	}
	writeFilesystem(t, l, "web1", labVM.Disks[0].DiskID, labVM.Disks[0].CapacityBytes)
	hub = hubtest.Start(t, "--nfs-listen", "127.0.0.1:0", "--nfs-address", "127.0.0.1")
	// The hub lets the addresses of the host's name mount the export.
	if err := l.RenameHost(t.Context(), l.Hosts()[0], "localhost"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "console-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hub.CLI("user", "add", "ada", "--role", "admin", "--password-file", pwFile)
	hub.CLI("user", "add", "vic", "--role", "viewer", "--password-file", pwFile)

	state := filepath.Join(dir, "agent")
	agentBin := filepath.Join(dir, "sendense-agent")
	run(t, "go", "build", "-o", agentBin, "github.com/sendense/sendense/agent/cmd/sendense-agent")
	run(t, agentBin, "enroll", "--token", hub.JoinToken(), "--state-dir", state)
	labPW := filepath.Join(dir, "lab-password")
	if err := os.WriteFile(labPW, []byte(l.Password()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "agent.yaml")
	conf := fmt.Sprintf("state_dir: %s\nmetrics_listen: \"\"\nlog_format: json\nheartbeat_interval: 1s\nsources:\n  - name: lab\n    url: %s\n    username: %s\n    password_file: %s\n    ca_file: %s\n",
		state, l.SDKURL(), l.Username(), labPW, l.CACertFile())
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.LogBuffer{}
	agent := exec.Command(agentBin, "run", "--config", cfg)
	agent.Stderr = logs
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = agent.Process.Kill(); _ = agent.Wait() }()
	testenv.WaitFor(t, 2*time.Minute, "the agent to report the lab's VM", func() bool {
		time.Sleep(200 * time.Millisecond) // the CLI is a process: ask it at most five times a second
		return strings.Contains(hub.CLI("vms", "list"), "web1")
	})

	downloads := filepath.Join(dir, "downloads")
	if err := os.MkdirAll(downloads, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.Flag("ignore-certificate-errors-spki-list", spkiPin(t, hub.Addr)),
		chromedp.WindowSize(1280, 900),
		chromedp.NoSandbox, // test containers run as root, where Chromium's sandbox cannot start
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	// The first run starts the browser, which lives as long as that call's context: no timeout.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b := &browserT{t: t, ctx: bctx, base: hub.URL, shot: shots}

	// Sign in as an admin: the dashboard.
	b.open("/", "#username")
	b.screenshot("login")
	b.signIn("ada")
	if got := b.text("#agents-online"); got != "1" {
		t.Errorf("dashboard: %s agents online, want 1", got)
	}

	// The lab's VM, its page, and a backup started from it.
	b.open("/vms", "a.vm-link")
	if got := b.text("a.vm-link"); got != "web1" {
		t.Fatalf("VM list shows %q, want web1", got)
	}
	b.screenshot("vms")
	b.do("open the VM", chromedp.Click(chromedp.CSS("a.vm-link")), chromedp.WaitVisible(chromedp.CSS("#start-backup")))
	b.screenshot("vm")
	b.do("start a backup", chromedp.Click(chromedp.CSS("#start-backup")), chromedp.WaitVisible(chromedp.CSS("#jobs tbody tr")))
	// A marker that a reload would lose: the progress must arrive without one.
	get(b, "mark the page", chromedp.Evaluate[bool](`window.sendenseNoReload = true`))
	jobID := strings.TrimPrefix(get(b, "read the job id", chromedp.AttributeValue(chromedp.CSS("#jobs tbody tr"), "id")).Value, "job-")
	seen := map[string]bool{}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		pct := b.text("#job-" + jobID + " .pct")
		seen[pct] = true
		if pct == "100 %" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s progress stuck at %q (seen %v)\nagent:\n%s", jobID, pct, seen, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !get(b, "check the page was not reloaded", chromedp.Evaluate[bool](`window.sendenseNoReload === true`)) {
		t.Fatal("the jobs page was reloaded: progress must be pushed by the server")
	}
	if st := b.text("#job-" + jobID + " .status"); st != "succeeded" {
		t.Fatalf("job %s: status %q at 100 %%", jobID, st)
	}
	t.Logf("progress values seen on the jobs page: %v", seen)
	b.screenshot("jobs")

	// Protect the backup.
	b.open("/backups/"+jobID, "#protect")
	b.do("protect", chromedp.Click(chromedp.CSS("#protect")), chromedp.WaitVisible(chromedp.CSS("#unprotect")))
	if got := b.text("#backup-protected"); got != "true" {
		t.Fatalf("backup protected: %q after Protect", got)
	}
	if !protected(t, hub, jobID) {
		t.Fatalf("the catalog does not call %s protected", jobID)
	}
	b.screenshot("backup")

	// Download the disk image and compare it with the lab's disk.
	vm, err := l.VM("web1")
	if err != nil {
		t.Fatal(err)
	}
	disk := vm.Disks[0]
	if _, err := chromedp.CallBrowser(bctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: downloads, EventsEnabled: new(true)}); err != nil {
		t.Fatal(err)
	}
	dlctx, cancelDL := context.WithTimeout(bctx, 2*time.Minute)
	defer cancelDL()
	progress := chromedp.BrowserEvents(dlctx, browser.DownloadProgress) // subscribed before the click: no event is lost
	b.do("download the disk image", chromedp.Click(chromedp.CSS("#download-"+disk.DiskID)))
	guid := ""
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("the disk image download did not complete: %v", err)
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			guid = ev.GUID
			break
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatalf("the disk image download was cancelled after %.0f bytes", ev.ReceivedBytes)
		}
	}
	img := filepath.Join(downloads, guid)
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != disk.CapacityBytes {
		t.Fatalf("downloaded image: %d bytes, want %d", fi.Size(), disk.CapacityBytes)
	}
	if err := lab.CompareFiles(disk.FlatPath, img, disk.CapacityBytes); err != nil {
		t.Fatalf("downloaded image differs from the lab disk: %v", err)
	}

	// Browse the backed-up disk's filesystem from the backup's page and fetch /etc/hosts.
	b.open("/backups/"+jobID, "#files-"+disk.DiskID)
	b.do("browse the disk", chromedp.Click(chromedp.CSS("#files-"+disk.DiskID)), chromedp.WaitVisible(chromedp.CSS("#files")))
	b.screenshot("files-volumes")
	b.do("open the volume", chromedp.Click(chromedp.CSS(`#files a[href$="path=%2fdisk"]`)), chromedp.WaitVisible(chromedp.CSS(`#files a[href$="path=%2fdisk%2fetc"]`)))
	b.do("open /etc", chromedp.Click(chromedp.CSS(`#files a[href$="path=%2fdisk%2fetc"]`)), chromedp.WaitVisible(chromedp.CSS(`#files a[href$="file?path=%2fdisk%2fetc%2fhosts"]`)))
	b.screenshot("files")
	hosts := get(b, "download /etc/hosts", chromedp.Evaluate[string](`fetch(document.querySelector('#files a[href$="file?path=%2fdisk%2fetc%2fhosts"]').href).then(r => r.ok ? r.text() : 'HTTP ' + r.status)`, chromedp.EvalAwaitPromise))
	if hosts != hostsFile {
		t.Fatalf("/etc/hosts from the restore point: %q, want %q", hosts, hostsFile)
	}
	if ev := hub.CLI("events", "list", "--type", "audit"); !strings.Contains(ev, "/disk/etc/hosts") {
		t.Fatalf("the file download is not audited:\n%s", ev)
	}

	// A restore test of the VM with the read and paths checks, watched until it passes.
	b.open("/restore-tests", "#restore-test-start")
	b.do("start a restore test",
		chromedp.SendKeys(chromedp.CSS("#rt-vm"), "web1"),
		chromedp.Click(chromedp.CSS(`input[name=check][value=paths]`)),
		chromedp.SendKeys(chromedp.CSS("#rt-paths"), "/disk/etc/hosts\n/disk/etc/app"),
		chromedp.Click(chromedp.CSS("#restore-test-run")),
		chromedp.WaitVisible(chromedp.CSS("#test-status")))
	testURL := get(b, "read the test's address", chromedp.Location())
	deadline = time.Now().Add(2 * time.Minute)
	for {
		res := b.text("#test-result")
		if res == "passed" {
			break
		}
		if res == "failed" || time.Now().After(deadline) {
			t.Fatalf("restore test %s: %q, status %q", testURL, res, b.text("#test-status"))
		}
		time.Sleep(500 * time.Millisecond)
		b.do("reload the test", chromedp.Navigate(testURL), chromedp.WaitVisible(chromedp.CSS("#test-result")))
	}
	checks := get(b, "read the evidence", chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#test-checks tbody tr')).map(tr => tr.textContent)`))
	if len(checks) != 3 || !strings.Contains(strings.Join(checks, "|"), "/disk/etc/hosts") {
		t.Fatalf("restore test evidence: %q, want a read check and two paths", checks)
	}
	b.screenshot("restore-test")
	b.open("/restore-tests", "#report")
	b.screenshot("restore-tests")

	// Restore the backup as a new VM in the lab, from the backup's page.
	b.open("/backups/"+jobID, "#restore-new")
	if got := get(b, "read the prefilled source", chromedp.Value(chromedp.CSS("#r-source"))); got != "lab" {
		t.Errorf("restore form: source %q, want the VM's source lab", got)
	}
	b.do("restore as a new VM",
		chromedp.SendKeys(chromedp.CSS("#r-name"), "web1-restored"),
		chromedp.SendKeys(chromedp.CSS("#r-datastore"), l.Datastore()),
		chromedp.Click(chromedp.CSS("#restore-new-vm")),
		chromedp.WaitVisible(chromedp.CSS("#restores-title")))
	deadline = time.Now().Add(2 * time.Minute)
	for {
		b.open("/restores", "#restores-title")
		st := b.text("table tbody tr td:nth-child(6)")
		if st == "succeeded" {
			break
		}
		if st == "failed" || st == "cancelled" || time.Now().After(deadline) {
			t.Fatalf("restore as a new VM: %q\nagent:\n%s", st, logs.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The hub's record of the restore: the new VM's reference in the lab and every byte written.
	var rl struct {
		Restores []struct {
			Target       struct{ Name string }
			VMRef        string `json:"vm_ref"`
			Status       string
			BytesWritten int64 `json:"bytes_written"`
		}
	}
	if err := json.Unmarshal([]byte(hub.CLI("restore", "list", "--json")), &rl); err != nil {
		t.Fatal(err)
	}
	if len(rl.Restores) != 1 || rl.Restores[0].Target.Name != "web1-restored" || rl.Restores[0].VMRef == "" || rl.Restores[0].BytesWritten != vm.Disks[0].CapacityBytes {
		t.Fatalf("restores in the catalog: %+v, want web1-restored with a VM reference and %d bytes written", rl.Restores, vm.Disks[0].CapacityBytes)
	}
	b.screenshot("restores")

	// A policy and the preview of its next runs, in a zone that is not UTC
	// and has no daylight saving time, so the zone's name never changes.
	b.open("/policies/new", "#policy-form")
	b.do("fill the policy",
		chromedp.SetValue(chromedp.CSS("#name"), "nightly"),
		chromedp.SetValue(chromedp.CSS("#schedule"), "30 2 * * *"),
		chromedp.SetValue(chromedp.CSS("#timezone"), "Asia/Tokyo"),
		chromedp.Click(chromedp.CSS("#save-policy")),
		chromedp.WaitVisible(chromedp.CSS("#retention")))
	runs := get(b, "read the next runs", chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#next-runs li')).map(li => li.textContent)`))
	if len(runs) != 5 {
		t.Fatalf("next runs: %q, want five", runs)
	}
	for _, r := range runs {
		if !strings.Contains(r, " 02:30 JST") {
			t.Fatalf("next run %q is not at 02:30 Tokyo time", r)
		}
	}
	if !strings.Contains(hub.CLI("policy", "list"), "nightly") {
		t.Fatal("the policy is not in the catalog")
	}
	b.screenshot("policy")

	// A join token, shown once, with a copy button.
	b.open("/agents", "#create-token")
	b.do("create a join token",
		chromedp.SendKeys(chromedp.CSS("#token-name"), "site-b"),
		chromedp.Click(chromedp.CSS("#create-token")),
		chromedp.WaitVisible(chromedp.CSS("#join-token")))
	token := get(b, "read the token", chromedp.Value(chromedp.CSS("#join-token")))
	if !strings.HasPrefix(token, "SDJ1.") {
		t.Fatalf("join token %q", token)
	}
	if !strings.Contains(hub.CLI("token", "list"), "site-b") {
		t.Fatal("the join token is not in the catalog")
	}
	b.do("copy button present", chromedp.WaitVisible(chromedp.CSS("#copy-token")))
	b.screenshot("agents")
	b.open("/", "#vms-protected")
	if got := b.text("#vms-protected"); got != "1" {
		t.Errorf("dashboard after the policy: %s VMs protected, want 1", got)
	}
	b.screenshot("dashboard")
	b.open("/repositories", "h1")
	b.screenshot("repositories")
	b.open("/events", "h1")
	b.screenshot("events")
	b.open("/backups", "h1")
	b.screenshot("backups")
	b.do("phone width", chromedp.EmulateViewport(390, 844))
	b.open("/", "#vms-protected")
	b.screenshot("dashboard-phone")
	// The new pages at phone width: wide tables scroll inside themselves, the page does not.
	for _, p := range []struct{ path, wait, name string }{
		{"/backups/" + jobID + "/disks/" + disk.DiskID + "/files?path=/disk/etc", "#files", "files-phone"},
		{"/restore-tests", "#restore-tests", "restore-tests-phone"},
		{"/backups/" + jobID, "#instant-recovery", "backup-phone"},
	} {
		b.open(p.path, p.wait)
		if w := get(b, "measure "+p.name, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 390 {
			t.Errorf("%s at phone width: the page is %d px wide, want at most 390", p.path, w)
		}
		b.screenshot(p.name)
	}
	b.do("desktop width", chromedp.EmulateViewport(1280, 900))

	// Instant recovery from the backup's page: the VM boots from the hub's export, then moves to
	// the lab's datastore.
	b.open("/backups/"+jobID, "#instant-recovery")
	b.do("start instant recovery",
		chromedp.SendKeys(chromedp.CSS("#ir-host"), "localhost"),
		chromedp.SendKeys(chromedp.CSS("#ir-name"), "web1-instant"),
		chromedp.Click(chromedp.CSS(`#instant-recovery input[name=power_on]`)),
		chromedp.Click(chromedp.CSS("#instant-recovery-start")),
		chromedp.WaitVisible(chromedp.CSS("#instant-recoveries")))
	irStatus := func(want string) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			b.open("/instant-recoveries", "#instant-recoveries")
			st := b.text("#instant-recoveries tbody tr td:nth-child(5)")
			if strings.HasPrefix(st, want) {
				return
			}
			if strings.HasPrefix(st, "failed") || time.Now().After(deadline) {
				t.Fatalf("instant recovery: %q, want %s\nagent:\n%s", st, want, logs.String())
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	irStatus("running")
	if vm, ok := l.FindVMByName("web1-instant"); !ok || vm.PowerState != "poweredOn" {
		t.Fatalf("the instant-recovery VM in the lab: %+v (found %v)", vm, ok)
	}
	b.screenshot("instant-recoveries")
	b.do("migrate", chromedp.SendKeys(chromedp.CSS(`#instant-recoveries input[name=datastore]`), l.Datastore()),
		chromedp.Click(chromedp.CSS(`#instant-recoveries form[action$="/migrate"] button`)),
		// The answer is the list again, without the running session's migrate form.
		chromedp.WaitNotPresent(chromedp.CSS(`#instant-recoveries form[action$="/migrate"]`)))
	irStatus("migrated")
	if vm, ok := l.FindVMByName("web1-instant"); !ok || vm.VMPathName != "["+l.Datastore()+"] web1-instant/web1-instant.vmx" {
		t.Fatalf("the migrated VM in the lab: %+v (found %v)", vm, ok)
	}
	if nas := l.NASDatastores(); len(nas) != 0 {
		t.Fatalf("the export is still mounted after the migration: %+v", nas)
	}
	b.signOut()

	// A viewer sees no change buttons, and the server refuses the change when it posts anyway.
	b.signIn("vic")
	b.open("/backups/"+jobID, "#backup-protected")
	buttons := get(b, "count change buttons", chromedp.Evaluate[int](`document.querySelectorAll('#protect, #unprotect, #delete, #verify').length`))
	b.open("/vms", "a.vm-link")
	b.do("open the VM", chromedp.Click(chromedp.CSS("a.vm-link")), chromedp.WaitVisible(chromedp.CSS("#vm-status")))
	startButtons := get(b, "count start buttons", chromedp.Evaluate[int](`document.querySelectorAll('#start-backup').length`))
	if buttons != 0 || startButtons != 0 {
		t.Fatalf("the viewer sees %d backup and %d start buttons", buttons, startButtons)
	}
	status := get(b, "post as the viewer", chromedp.Evaluate[int](fmt.Sprintf(`fetch('/backups/%s/unprotect', {method: 'POST', redirect: 'manual',
		body: new URLSearchParams({csrf_token: document.querySelector('main').dataset.csrf})}).then(r => r.status)`, jobID), chromedp.EvalAwaitPromise))
	if status != 403 {
		t.Fatalf("the viewer's unprotect: status %d, want 403", status)
	}
	if !protected(t, hub, jobID) {
		t.Fatalf("the viewer's refused request unprotected %s", jobID)
	}
	if ev := hub.CLI("events", "list", "--type", "audit"); !strings.Contains(ev, "console:vic") || !strings.Contains(ev, "403") {
		t.Fatalf("no audit event for the viewer's refused request:\n%s", ev)
	}
	b.signOut()
}
