package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/files/filestest"
	"github.com/sendense/sendense/hub/internal/pki"
	"github.com/sendense/sendense/shared/api"
)

// The operator commands run over the API from a directory with no hub data print exactly what
// they print on the hub host.
func TestRemoteCLIMatchesLocal(t *testing.T) {
	dataDir := t.TempDir()
	local := func(args ...string) (string, error) {
		t.Helper()
		var out bytes.Buffer
		err := run(t.Context(), append(args, "--data-dir", dataDir), &out, io.Discard, noEnv)
		return out.String(), err
	}
	mustLocal := func(args ...string) string {
		t.Helper()
		out, err := local(args...)
		if err != nil {
			t.Fatalf("local %v: %v", args, err)
		}
		return out
	}
	mustLocal("migrate", "up")
	// A 3 MiB disk: random data, a zero slot in the middle, random data, zeros at the end.
	img := make([]byte, 3<<20)
	_, _ = rand.Read(img[:1<<20])
	_, _ = rand.Read(img[(3<<20)/2 : 2<<20])
	backupID := backupDisk(t, dataDir, img)

	addr, _, logs, _ := startHub(t, "--data-dir", dataDir)
	hubURL := "https://" + addr
	caFile := filepath.Join(dataDir, "pki", "ca.crt")
	secrets := t.TempDir()
	tokenFile := func(name, role string) (path, token string) {
		token = strings.TrimSpace(mustLocal("apitoken", "create", "--name", name, "--role", role))
		path = filepath.Join(secrets, name)
		if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path, token
	}
	adminFile, adminToken := tokenFile("laptop", api.RoleAdmin)
	viewerFile, viewerToken := tokenFile("auditor", api.RoleViewer)

	// Every remote command runs from an empty directory with no configuration.
	empty := t.TempDir()
	t.Chdir(empty)
	var remoteOutput bytes.Buffer // everything remote commands printed, to look for the token
	remoteAs := func(tokFile string, args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := run(t.Context(), append(args, "--hub", hubURL, "--token-file", tokFile, "--ca-file", caFile), &out, &errOut, noEnv)
		remoteOutput.Write(out.Bytes())
		remoteOutput.Write(errOut.Bytes())
		if err != nil {
			remoteOutput.WriteString(err.Error())
		}
		return out.String(), err
	}
	remote := func(args ...string) (string, error) { return remoteAs(adminFile, args...) }
	same := func(args ...string) string {
		t.Helper()
		r, err := remote(args...)
		if err != nil {
			t.Fatalf("remote %v: %v", args, err)
		}
		l := mustLocal(args...)
		if r != l {
			t.Fatalf("%v: remote output differs from local\nremote:\n%s\nlocal:\n%s", args, r, l)
		}
		if r == "" {
			t.Fatalf("%v printed nothing", args)
		}
		return r
	}

	for _, args := range [][]string{
		{"vms", "list"}, {"vms", "list", "--json"}, {"vms", "list", "--name", "pgtest1", "--limit", "1"},
		{"vms", "show", "pgtest1"}, {"vms", "show", "pgtest1", "--json"},
		{"sources", "list"}, {"sources", "list", "--json"},
		{"backup", "list"}, {"backup", "list", "--json"}, {"backup", "list", "--vm", "pgtest1", "--status", "succeeded"},
		{"backup", "show", backupID},
		{"agents", "list"}, {"agents", "list", "--json"}, {"agents", "show", "agent-1"},
		{"token", "list"}, {"token", "list", "--json"},
		{"events", "list", "--json", "--type", "vm_added"}, {"events", "list", "--vm", "pgtest1", "--limit", "0"},
		{"backup", "protect", backupID}, {"backup", "protect", backupID},
		{"backup", "unprotect", backupID},
	} {
		same(args...)
	}
	if out := same("vms", "list", "--json"); !strings.Contains(out, `"vm_name": "pgtest1"`) {
		t.Fatalf("vms list --json: %s", out)
	}
	// apitoken list shows when each token was last used: the remote call uses the admin token
	// before listing, so both lists see the same time.
	same("apitoken", "list", "--json")

	// Changes: the same lines, whichever side made them.
	want := regexp.MustCompile(`^(bk-\S+)\n$`)
	lstart := mustLocal("backup", "start", "--vm", "pgtest1")
	rstart, err := remote("backup", "start", "--vm", "pgtest1")
	if err == nil {
		t.Fatalf("a second backup of a VM with one queued was accepted: %s", rstart)
	}
	if !strings.Contains(err.Error(), "hub answered 409") {
		t.Fatalf("second backup: %v", err)
	}
	m := want.FindStringSubmatch(lstart)
	if m == nil {
		t.Fatalf("backup start printed %q", lstart)
	}
	if out, err := remote("backup", "cancel", m[1]); err != nil || out != m[1]+": cancelled (cancel requested)\n" {
		t.Fatalf("remote cancel: %v %q", err, out)
	}
	_, lerr := local("backup", "wait", m[1])
	if out, err := remote("backup", "wait", m[1]); err == nil || lerr == nil || err.Error() != lerr.Error() || !strings.Contains(out, "backup "+m[1]+" of pgtest1 cancelled") {
		t.Fatalf("backup wait of a cancelled backup:\nremote %v %q\nlocal  %v", err, out, lerr)
	}
	if out, err := remote("backup", "rm", m[1]); err != nil || out != "deleted "+m[1]+"\n" {
		t.Fatalf("remote rm: %v %q", err, out)
	}
	rstart, err = remote("backup", "start", "--vm", "pgtest1", "--full")
	if m = want.FindStringSubmatch(rstart); err != nil || m == nil {
		t.Fatalf("remote backup start: %v %q", err, rstart)
	}
	if out := mustLocal("backup", "cancel", m[1]); out != m[1]+": cancelled (cancel requested)\n" {
		t.Fatalf("local cancel: %q", out)
	}
	if out := mustLocal("backup", "rm", m[1]); out != "deleted "+m[1]+"\n" {
		t.Fatalf("local rm: %q", out)
	}
	for _, side := range []func(...string) (string, error){local, remote} {
		tok, err := side("token", "create", "--name", "site-b", "--ttl", "30m")
		if err != nil || !strings.HasPrefix(tok, "SDJ1.") || strings.Count(tok, "\n") != 1 {
			t.Fatalf("token create: %v %q", err, tok)
		}
	}
	var tokens []api.JoinTokenInfo
	if err := json.Unmarshal([]byte(same("token", "list", "--json")), &tokens); err != nil || len(tokens) != 3 {
		t.Fatalf("join tokens: %v %+v", err, tokens)
	}
	if out, err := remote("token", "revoke", tokens[1].ID); err != nil || out != "revoked "+tokens[1].ID+"\n" {
		t.Fatalf("remote token revoke: %v %q", err, out)
	}
	same("token", "list")

	// Policies, repositories, restore tests and their report.
	same("repo", "list")
	if out := same("repo", "list", "--json"); !strings.Contains(out, `"name": "default"`) {
		t.Fatalf("repo list --json: %s", out)
	}
	var pol api.Policy
	out, err := remote("policy", "create", "--name", "nightly", "--schedule", "0 3 * * *", "--vm", "pgtest1", "--keep-last", "3")
	if err != nil || json.Unmarshal([]byte(out), &pol) != nil || pol.Name != "nightly" || pol.Retention.KeepLast != 3 || pol.NextRunAt.IsZero() {
		t.Fatalf("remote policy create: %v %s", err, out)
	}
	mustLocal("policy", "create", "--name", "weekly", "--schedule", "@weekly", "--vm-glob", "pg*")
	same("policy", "list")
	same("policy", "list", "--json")
	same("policy", "show", "nightly")
	if out, err := remote("policy", "rm", "weekly"); err != nil || out != "removed weekly\n" {
		t.Fatalf("remote policy rm: %v %q", err, out)
	}
	same("policy", "list")
	if out := same("prune", "--dry-run"); !strings.Contains(out, "nightly: last 1") || !strings.Contains(out, "dry run: nothing was removed") {
		t.Fatalf("prune --dry-run: %s", out)
	}
	same("prune", "--vm", "pgtest1")
	repoDir := t.TempDir()
	out, err = remote("repo", "create", "second", "--path", repoDir, "--chunk-size", "1MiB")
	if err != nil || !regexp.MustCompile(`^created repository second \(\S+, local\) at `+regexp.QuoteMeta(repoDir)+`, chunk size 1\.0 MiB\n$`).MatchString(out) {
		t.Fatalf("remote repo create: %v %q", err, out)
	}
	if _, err := os.Stat(filepath.Join(repoDir, "repo.json")); err != nil {
		t.Fatalf("the hub did not create the repository: %v", err)
	}
	if _, err := remote("repo", "create", "enc", "--path", t.TempDir(), "--encrypt", "--password-file", adminFile); err == nil || !strings.Contains(err.Error(), "hub-local only") {
		t.Fatalf("remote repo create --encrypt: %v", err)
	}
	if _, err := remote("repo", "create", "rel", "--path", "relative/dir"); err == nil || !strings.Contains(err.Error(), "absolute directory on the hub") {
		t.Fatalf("remote repo create with a relative path: %v", err)
	}
	same("repo", "list")
	var rt api.RestoreTest
	out, err = remote("restore-test", "run", "--vm", "pgtest1", "--json")
	if err != nil || json.Unmarshal([]byte(out), &rt) != nil || !rt.Passed || rt.BackupID != backupID || rt.BytesRead != int64(len(img)) {
		t.Fatalf("remote restore-test run: %v %s", err, out)
	}
	if out, err := remote("restore-test", "run", "--vm", "pgtest1"); err != nil || !strings.Contains(out, "read disk-2000\t3.0 MiB") {
		t.Fatalf("remote restore-test run (table): %v %q", err, out)
	}
	same("restore-test", "list")
	same("restore-test", "list", "--json", "--vm", "pgtest1", "--since", "1h")
	same("restore-test", "show", rt.ID)
	report := func(out string) api.RestoreTestReport {
		t.Helper()
		var r api.RestoreTestReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("report: %v %s", err, out)
		}
		return r
	}
	rout, err := remote("report", "restore-tests", "--json")
	if err != nil {
		t.Fatal(err)
	}
	r, l := report(rout), report(mustLocal("report", "restore-tests", "--json"))
	// The window ends when each side asks, so the two may fall into
	// different minutes: compare its length (30 local calendar days, an
	// hour more or less across a change of daylight saving time) and how
	// far apart the two asked, then the rest field by field.
	for _, w := range []api.RestoreTestReport{r, l} {
		if got := w.To.Sub(w.From); got < 30*24*time.Hour-time.Hour || got > 30*24*time.Hour+time.Hour {
			t.Fatalf("report window %v..%v is %v long, want 30 days", w.From, w.To, got)
		}
	}
	if d := l.GeneratedAt.Sub(r.GeneratedAt); d < 0 || d > 2*time.Minute {
		t.Fatalf("report generated at %v remotely and %v locally", r.GeneratedAt, l.GeneratedAt)
	}
	r.From, r.To, r.GeneratedAt = time.Time{}, time.Time{}, time.Time{}
	l.From, l.To, l.GeneratedAt = time.Time{}, time.Time{}, time.Time{}
	if r.Runs != 2 || !reflect.DeepEqual(r, l) {
		t.Fatalf("report differs:\nremote %+v\nlocal  %+v", r, l)
	}
	same("restore", "list")
	// A refusal reads as on the hub host, after the status.
	for _, args := range [][]string{
		{"restore", "in-place", "--backup", backupID, "--confirm", "pgtest1"},
		{"sources", "move", "vc1", "--agent", "agent-nope"},
	} {
		_, lerr := local(args...)
		_, rerr := remote(args...)
		if lerr == nil || rerr == nil || !strings.HasPrefix(rerr.Error(), "hub answered 4") || !strings.HasSuffix(rerr.Error(), ": "+lerr.Error()) {
			t.Fatalf("%v:\nremote %v\nlocal  %v", args, rerr, lerr)
		}
	}
	if out, err := remote("sources", "move", "vc1", "--agent", "agent-1"); err != nil || !strings.Contains(out, "now belongs to agent agent-1") {
		t.Fatalf("remote sources move: %v %q", err, out)
	}

	// restore downloads the image over the API: the same bytes and line as the local restore.
	rdir, ldir := filepath.Join(empty, "r"), filepath.Join(t.TempDir(), "l")
	rout, err = remote("restore", "--backup", backupID, "--output", rdir)
	if err != nil {
		t.Fatal(err)
	}
	lout := mustLocal("restore", "--backup", backupID, "--output", ldir)
	if strings.ReplaceAll(rout, rdir, "DIR") != strings.ReplaceAll(lout, ldir, "DIR") || !strings.Contains(rout, "3145728 bytes") {
		t.Fatalf("restore lines differ:\nremote %q\nlocal  %q", rout, lout)
	}
	got, err := os.ReadFile(filepath.Join(rdir, "disk-2000.raw"))
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("remote restore: %v, %d bytes, equal %v", err, len(got), bytes.Equal(got, img))
	}
	if fi, err := os.Stat(filepath.Join(rdir, "disk-2000.raw")); err != nil || allocated(fi) >= int64(len(img)) {
		t.Fatalf("remote restore is not sparse: %v", err)
	}
	if _, err := remote("restore", "--backup", backupID, "--disk", "disk-9", "--output", filepath.Join(empty, "x")); err == nil || !strings.Contains(err.Error(), `no disk "disk-9"`) {
		t.Fatalf("restore of a missing disk: %v", err)
	}

	// Errors come back as the API's messages.
	if _, err := remote("vms", "show", "nothing"); err == nil || !strings.Contains(err.Error(), "hub answered 404") {
		t.Fatalf("unknown VM: %v", err)
	}
	if _, err := remote("apitoken", "create", "--name", "x", "--role", "root"); err == nil || !strings.Contains(err.Error(), "hub answered 400: role: must be admin, operator or viewer") {
		t.Fatalf("bad role: %v", err)
	}
	wrong := filepath.Join(secrets, "wrong")
	if err := os.WriteFile(wrong, []byte("sdt_x_nottherightsecret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := remoteAs(wrong, "vms", "list"); err == nil || !strings.Contains(err.Error(), "hub answered 401: api token is invalid") {
		t.Fatalf("wrong token: %v", err)
	}
	if out, err := remoteAs(viewerFile, "vms", "list"); err != nil || out != mustLocal("vms", "list") {
		t.Fatalf("viewer vms list: %v %q", err, out)
	}
	for _, args := range [][]string{{"backup", "protect", backupID}, {"token", "list"}, {"backup", "rm", backupID}, {"prune"}, {"repo", "list"}} {
		_, err := remoteAs(viewerFile, args...)
		if err == nil || !strings.Contains(err.Error(), "hub answered 403") || !strings.Contains(err.Error(), "role is needed") || !strings.Contains(err.Error(), "has viewer") {
			t.Fatalf("viewer %v: %v", args, err)
		}
	}
	if out := mustLocal("backup", "list"); !strings.Contains(out, backupID) {
		t.Fatalf("a refused rm removed the backup:\n%s", out)
	}
	other := t.TempDir()
	if _, err := pki.LoadOrCreate(other, nil); err != nil {
		t.Fatal(err)
	}
	var errOut bytes.Buffer
	err = run(t.Context(), []string{"vms", "list", "--hub", hubURL, "--token-file", adminFile, "--ca-file", filepath.Join(other, "ca.crt")}, io.Discard, &errOut, noEnv)
	if err == nil || !strings.Contains(err.Error(), "the hub's certificate is not trusted") || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("wrong CA: %v", err)
	}
	remoteOutput.WriteString(err.Error())

	// Hub-local commands say so instead of touching a local catalog.
	for _, args := range [][]string{{"repo", "gc"}, {"migrate", "up"}, {"serve"}, {"user", "list"}} {
		if _, err := remote(args...); err == nil || !strings.Contains(err.Error(), "is hub-local only") {
			t.Fatalf("%v with --hub: %v", args, err)
		}
	}
	if out, err := remote("help", "vms"); err != nil || !strings.Contains(out, "sendense-hub vms [command]") {
		t.Fatalf("help with --hub: %v %q", err, out)
	}
	if _, err := remote("vms", "list", "--data-dir", dataDir); err == nil || !strings.Contains(err.Error(), "--data-dir") {
		t.Fatalf("--data-dir with --hub: %v", err)
	}

	// The environment and the client config file name the hub as well as the flags.
	envOf := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	var buf bytes.Buffer
	err = run(t.Context(), []string{"vms", "list"}, &buf, io.Discard, envOf(map[string]string{
		"SENDENSE_HUB": hubURL, "SENDENSE_TOKEN_FILE": adminFile, "SENDENSE_CA_FILE": caFile}))
	if err != nil || buf.String() != mustLocal("vms", "list") {
		t.Fatalf("from the environment: %v %q", err, buf.String())
	}
	cfgDir := filepath.Join(t.TempDir(), "sendense")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "token"), []byte(adminToken), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "ca.crt"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	cc := "hub: " + hubURL + "\ntoken_file: token\nca_file: ca.crt\n"
	if err := os.WriteFile(filepath.Join(cfgDir, "cli.yaml"), []byte(cc), 0o600); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	err = run(t.Context(), []string{"backup", "list", "--json"}, &buf, io.Discard, envOf(map[string]string{"XDG_CONFIG_HOME": filepath.Dir(cfgDir)}))
	if err != nil || buf.String() != mustLocal("backup", "list", "--json") {
		t.Fatalf("from ~/.config/sendense/cli.yaml: %v %q", err, buf.String())
	}
	buf.Reset()
	err = run(t.Context(), []string{"agents", "list", "--client-config", filepath.Join(cfgDir, "cli.yaml")}, &buf, io.Discard, noEnv)
	if err != nil || buf.String() != mustLocal("agents", "list") {
		t.Fatalf("--client-config: %v %q", err, buf.String())
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "bad.yaml"), []byte("hub: x\ntoken: sdt_inline\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(t.Context(), []string{"vms", "list", "--client-config", filepath.Join(cfgDir, "bad.yaml")}, io.Discard, io.Discard, noEnv)
	if err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("unknown client config key: %v", err)
	}

	// Revocations over the API take effect at once.
	if out, err := remote("agents", "revoke", "agent-1"); err != nil || out != "revoked agent-1\n" {
		t.Fatalf("remote agents revoke: %v %q", err, out)
	}
	if out := mustLocal("agents", "show", "agent-1"); !strings.Contains(out, `"status": "revoked"`) {
		t.Fatalf("the agent is not revoked:\n%s", out)
	}
	var apiTokens []api.APITokenInfo
	if err := json.Unmarshal([]byte(mustLocal("apitoken", "list", "--json")), &apiTokens); err != nil {
		t.Fatal(err)
	}
	for _, tk := range apiTokens {
		if tk.Name != "auditor" {
			continue
		}
		if out, err := remote("apitoken", "revoke", tk.ID); err != nil || out != "revoked "+tk.ID+"\n" {
			t.Fatalf("remote apitoken revoke: %v %q", err, out)
		}
	}
	if _, err := remoteAs(viewerFile, "vms", "list"); err == nil || !strings.Contains(err.Error(), "hub answered 401: api token has been revoked") {
		t.Fatalf("a revoked token: %v", err)
	}

	// Nothing was created in the working directory, and no token was printed or logged.
	if ents, err := os.ReadDir(empty); err != nil || len(ents) != 1 || ents[0].Name() != "r" {
		t.Fatalf("remote commands left %v in the working directory (%v)", ents, err)
	}
	for _, tok := range []string{adminToken, viewerToken} {
		_, secret, ok := strings.Cut(tok, ".")
		if !ok || len(secret) < 16 {
			t.Fatalf("token %s... has no secret part", tok[:8])
		}
		if strings.Contains(remoteOutput.String(), secret) || strings.Contains(logs.String(), secret) {
			t.Fatalf("the token %s... appears in the output or the hub's log", tok[:8])
		}
	}
}

// allocated is the space a file takes on disk.
func allocated(fi os.FileInfo) int64 { return fi.Sys().(*syscall.Stat_t).Blocks * 512 }

// Files inside a restore point are listed and downloaded over the API as on the hub host.
func TestRemoteFiles(t *testing.T) {
	dataDir := t.TempDir()
	local := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(t.Context(), append(args, "--data-dir", dataDir), &out, io.Discard, noEnv)
		return out.String(), err
	}
	if _, err := local("migrate", "up"); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(filepath.Join(src, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 3<<20+17)
	_, _ = rand.Read(big)
	if err := os.WriteFile(filepath.Join(src, "etc", "big.bin"), big, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("big.bin", filepath.Join(src, "etc", "link")); err != nil {
		t.Fatal(err)
	}
	id := backupDisk(t, dataDir, filestest.GPTDisk(filestest.MkfsExt4(t, src, 8<<20)))
	addr, _, _, _ := startHub(t, "--data-dir", dataDir)
	tok, err := local("apitoken", "create", "--name", "laptop", "--role", "viewer")
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	remote := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(t.Context(), append(args, "--hub", "https://"+addr, "--token-file", tokFile, "--ca-file", filepath.Join(dataDir, "pki", "ca.crt")), &out, io.Discard, noEnv)
		return out.String(), err
	}
	for _, args := range [][]string{
		{"files", "ls", "--backup", id, "--disk", "disk-2000", "--path", "/p1/etc"},
		{"files", "ls", "--backup", id, "--disk", "disk-2000", "--json"},
		{"files", "get", "--backup", id, "--disk", "disk-2000", "--path", "/p1/etc/big.bin"},
	} {
		r, rerr := remote(args...)
		l, lerr := local(args...)
		if rerr != nil || lerr != nil || r != l || r == "" {
			t.Fatalf("%v: remote %v, local %v, equal %v", args, rerr, lerr, r == l)
		}
	}
	dst := filepath.Join(t.TempDir(), "big.bin")
	if _, err := remote("files", "get", "--backup", id, "--disk", "disk-2000", "--path", "/p1/etc/big.bin", "--output", dst); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("files get --output: %v, %d bytes, equal %v", err, len(got), bytes.Equal(got, big))
	}
	if _, err := remote("files", "get", "--backup", id, "--disk", "disk-2000", "--path", "/p1/etc/nothing", "--output", filepath.Join(t.TempDir(), "x")); err == nil || !strings.Contains(err.Error(), "hub answered 404") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("a missing file: %v", err)
	}
	// The hub audited the remote download with the token's name.
	out, err := local("events", "list", "--type", "audit")
	if err != nil || !strings.Contains(out, "laptop") || !strings.Contains(out, "file=/p1/etc/big.bin") {
		t.Fatalf("audit events: %v\n%s", err, out)
	}
}

// prune shows a backup whose removal failed as such, not as removed.
func TestPruneDecision(t *testing.T) {
	for _, tc := range []struct {
		keep, dryRun, failed bool
		want                 string
	}{
		{true, false, false, "keep"},
		{false, true, false, "remove"},
		{false, false, false, "removed"},
		{false, false, true, "remove failed"},
	} {
		if got := pruneDecision(api.PruneDecision{Keep: tc.keep}, tc.dryRun, tc.failed); got != tc.want {
			t.Errorf("keep %v, dry run %v, failed %v: %q, want %q", tc.keep, tc.dryRun, tc.failed, got, tc.want)
		}
	}
}
