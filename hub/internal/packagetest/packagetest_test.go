package packagetest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// The packages are built as if from a commit four after tag v1.2.3 in a modified tree: package.sh
// must give them a version that dpkg and rpm sort after 1.2.3, and the binaries must report the
// git description itself.
const (
	testVersion    = "v1.2.3-4-gabcdef0-dirty"
	testCommit     = "abcdef012345"
	wantPkgVersion = "1.2.3+git4.abcdef0.dirty"
)

// component is one of the two packages.
type component struct {
	name    string // package, binary and unit name
	short   string // prefix of its maintainer scripts in packaging/nfpm/scripts/
	user    string // service user and its group
	config  string // file name in packaging/config/ and /etc/sendense/
	dataDir string
	// timeoutStop is the unit's TimeoutStopSec in seconds.
	timeoutStop    int
	privateDevices bool
	// capabilities is the unit's one set of capabilities, bounding and ambient.
	capabilities string
	// maxExposure bounds `systemd-analyze security` (tenths of its 0-10 scale: 20 = 2.0).
	maxExposure int
	execStart   string
}

var components = []component{
	{
		name: "sendense-hub", short: "hub", user: "sendense", config: "hub.yaml", dataDir: "/var/lib/sendense",
		timeoutStop: 90, privateDevices: true, capabilities: "CAP_NET_BIND_SERVICE", maxExposure: 20,
		execStart: "/usr/bin/sendense-hub serve --config /etc/sendense/hub.yaml --data-dir /var/lib/sendense",
	},
	{
		name: "sendense-agent", short: "agent", user: "sendense-agent", config: "agent.yaml", dataDir: "/var/lib/sendense-agent",
		timeoutStop: 900, privateDevices: false, maxExposure: 35,
		execStart: "/usr/bin/sendense-agent run --config /etc/sendense/agent.yaml",
	},
}

var hub, agent = components[0], components[1]

func (c component) unit() string       { return c.name + ".service" }
func (c component) binary() string     { return "/usr/bin/" + c.name }
func (c component) configPath() string { return "/etc/sendense/" + c.config }

// entry is a packaged or installed file as ls shows it: permissions, owner, group.
type entry struct{ perms, owner, group string }

// wantFiles is everything the package must hold, with unit files under unitDir. Anything else
// it holds may only be a standard parent directory (drwxr-xr-x root root).
func (c component) wantFiles(unitDir string) map[string]entry {
	return map[string]entry{
		c.binary():               {"-rwxr-xr-x", "root", "root"},
		unitDir + "/" + c.unit(): {"-rw-r--r--", "root", "root"},
		"/etc/sendense":          {"drwxr-xr-x", "root", "root"},
		c.configPath():           {"-rw-r-----", "root", c.user},
		c.dataDir:                {"drwxr-x---", c.user, c.user},
	}
}

// checkEntries compares what a package holds (or an installation has) with want.
func checkEntries(t *testing.T, got, want map[string]entry) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("%s is missing", p)
			continue
		}
		if g != w {
			t.Errorf("%s is %s %s:%s, want %s %s:%s", p, g.perms, g.owner, g.group, w.perms, w.owner, w.group)
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok && g != (entry{"drwxr-xr-x", "root", "root"}) {
			t.Errorf("unexpected %s (%s %s:%s) in the package", p, g.perms, g.owner, g.group)
		}
	}
}

func needCommand(t *testing.T, name, howto string) {
	t.Helper()
	_, err := exec.LookPath(name)
	testenv.Require(t, err == nil, "%s is not installed: %s", name, howto)
}

// repoRoot is the directory holding go.work and scripts/package.sh above the test.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts", "package.sh")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
				return dir
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no repository root (go.work and scripts/package.sh) above the test directory")
		}
		dir = parent
	}
}

// output runs cmd and returns its standard output; a failure fails the test with both outputs.
func output(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd.Args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func command(t *testing.T, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(t.Context(), name, args...)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func debArch() string {
	if runtime.GOARCH == "386" {
		return "i386"
	}
	return runtime.GOARCH
}

func rpmArch() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "386":
		return "i386"
	}
	return runtime.GOARCH
}

func TestPackageVersion(t *testing.T) {
	needCommand(t, "bash", "apt-get install bash")
	needCommand(t, "git", "apt-get install git")
	root := repoRoot(t)
	git := func(args ...string) string {
		cmd := command(t, "git", args...)
		cmd.Dir = root
		return strings.TrimSpace(output(t, cmd))
	}
	head := git("rev-parse", "--short", "HEAD")
	count := git("rev-list", "--count", "HEAD")
	tests := []struct {
		name, version, want string
	}{
		{"release tag", "v1.2.3", "1.2.3"},
		{"release without v", "1.2.3", "1.2.3"},
		{"after a tag", "v1.2.3-4-gabcdef0", "1.2.3+git4.abcdef0"},
		{"after a tag, modified", testVersion, wantPkgVersion},
		{"release candidate", "v1.3.0-rc.1", "1.3.0-rc.1"},
		{"release candidate, after", "v1.3.0-rc.1-2-g0123abc", "1.3.0-rc.1+git2.0123abc"},
		{"untagged commit", head, "0.0.0+git" + count + "." + head},
		{"untagged commit, modified", head + "-dirty", "0.0.0+git" + count + "." + head + ".dirty"},
		{"no git", "dev", "0.0.0+dev"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := command(t, filepath.Join(root, "scripts", "package.sh"), "--print-version")
			cmd.Env = append(os.Environ(), "VERSION="+tt.version)
			if got := strings.TrimSpace(output(t, cmd)); got != tt.want {
				t.Errorf("VERSION=%s: package version %q, want %q", tt.version, got, tt.want)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		cmd := command(t, filepath.Join(root, "scripts", "package.sh"), "--print-version")
		cmd.Env = append(os.Environ(), "VERSION=1.2 beta")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "dpkg would refuse") {
			t.Fatalf("VERSION with a space: err %v, output %q; want a refusal", err, out)
		}
	})
}

// built is the outcome of scripts/package.sh: the package files and their extracted contents.
type built struct {
	dir  string
	deb  map[string]string // component name → .deb path
	rpm  map[string]string // component name → .rpm path
	tree map[string]string // component name → directory its .deb was extracted into
}

func buildPackages(t *testing.T, root string) built {
	t.Helper()
	b := built{dir: t.TempDir(), deb: map[string]string{}, rpm: map[string]string{}, tree: map[string]string{}}
	cmd := command(t, filepath.Join(root, "scripts", "package.sh"), "--out", b.dir)
	cmd.Env = append(os.Environ(), "VERSION="+testVersion, "COMMIT="+testCommit)
	output(t, cmd)
	for _, c := range components {
		for ext, pattern := range map[string]string{"deb": c.name + "_*.deb", "rpm": c.name + "-[0-9]*.rpm"} {
			m, err := filepath.Glob(filepath.Join(b.dir, pattern))
			if err != nil || len(m) != 1 {
				t.Fatalf("%s in %s: found %v (%v), want exactly one", pattern, b.dir, m, err)
			}
			if ext == "deb" {
				b.deb[c.name] = m[0]
			} else {
				b.rpm[c.name] = m[0]
			}
		}
		b.tree[c.name] = t.TempDir()
		output(t, command(t, "dpkg-deb", "-x", b.deb[c.name], b.tree[c.name]))
	}
	return b
}

// TestPackages builds the packages once and checks them from every side.
func TestPackages(t *testing.T) {
	needCommand(t, "go", "install Go 1.26 from https://go.dev/dl/")
	needCommand(t, "make", "apt-get install make")
	needCommand(t, "bash", "apt-get install bash")
	needCommand(t, "dpkg-deb", "apt-get install dpkg")
	root := repoRoot(t)
	b := buildPackages(t, root)

	t.Run("deb", func(t *testing.T) {
		for _, c := range components {
			t.Run(c.name, func(t *testing.T) { checkDeb(t, root, c, b.deb[c.name], b.tree[c.name]) })
		}
	})
	t.Run("rpm", func(t *testing.T) {
		needCommand(t, "rpm", "apt-get install rpm (scripts/package.sh does when run as root)")
		for _, c := range components {
			t.Run(c.name, func(t *testing.T) { checkRPM(t, root, c, b.rpm[c.name]) })
		}
	})
	t.Run("units", func(t *testing.T) { checkUnits(t, b) })
	t.Run("configs", func(t *testing.T) { checkConfigs(t, root, b) })
	t.Run("hub serves with the packaged config", func(t *testing.T) {
		tree := b.tree[hub.name]
		dataDir := filepath.Join(t.TempDir(), "data")
		cmd := command(t, filepath.Join(tree, hub.binary()), "serve", "--config", filepath.Join(tree, hub.configPath()),
			"--data-dir", dataDir, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--log-format", "json")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		serveAndCheck(t, cmd, func(int) string { return dataDir })
	})
	t.Run("agent accepts the packaged config", func(t *testing.T) {
		tree := b.tree[agent.name]
		cmd := command(t, filepath.Join(tree, agent.binary()), "status", "--config", filepath.Join(tree, agent.configPath()),
			"--state-dir", t.TempDir())
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		checkNotEnrolled(t, cmd)
	})
	t.Run("install deb", func(t *testing.T) { installDeb(t, b) })
	t.Run("install rpm", func(t *testing.T) { installRPM(t, b) })
}

// debListing parses `dpkg-deb -c`: permissions, owner/group, size, date, time, ./path.
func debListing(t *testing.T, deb string) map[string]entry {
	t.Helper()
	got := map[string]entry{}
	for _, line := range strings.Split(strings.TrimSpace(output(t, command(t, "dpkg-deb", "-c", deb))), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb -c line %q", line)
		}
		owner, group, ok := strings.Cut(f[1], "/")
		if !ok {
			t.Fatalf("dpkg-deb -c line %q", line)
		}
		p := strings.TrimSuffix(strings.TrimPrefix(strings.Join(f[5:], " "), "."), "/")
		if p != "" {
			got[p] = entry{f[0], owner, group}
		}
	}
	return got
}

var debScripts = map[string]string{"preinst": "preinstall", "postinst": "postinstall", "prerm": "preremove", "postrm": "postremove"}

func checkDeb(t *testing.T, root string, c component, deb, tree string) {
	fields := output(t, command(t, "dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Pre-Depends"))
	want := fmt.Sprintf("Package: %s\nVersion: %s-1\nArchitecture: %s\nPre-Depends: adduser\n", c.name, wantPkgVersion, debArch())
	if fields != want {
		t.Errorf("control fields:\n%s\nwant:\n%s", fields, want)
	}
	checkEntries(t, debListing(t, deb), c.wantFiles("/lib/systemd/system"))
	if got := output(t, command(t, "dpkg-deb", "-I", deb, "conffiles")); got != c.configPath()+"\n" {
		t.Errorf("conffiles %q, want only %s", got, c.configPath())
	}

	ctrl := t.TempDir()
	output(t, command(t, "dpkg-deb", "-e", deb, ctrl))
	for step, src := range debScripts {
		p := filepath.Join(ctrl, step)
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("no %s: %v", step, err)
			continue
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %v, want 0755", step, fi.Mode().Perm())
		}
		if got, want := readFile(t, p), readFile(t, filepath.Join(root, "packaging", "nfpm", "scripts", c.short+"-"+src+".sh")); got != want {
			t.Errorf("%s is not packaging/nfpm/scripts/%s-%s.sh", step, c.short, src)
		}
		for _, sh := range []string{"sh", "bash"} {
			if out, err := command(t, sh, "-n", p).CombinedOutput(); err != nil {
				t.Errorf("%s -n %s: %v\n%s", sh, step, err, out)
			}
		}
	}
	if pre := readFile(t, filepath.Join(ctrl, "preinst")); !strings.Contains(pre, "adduser --system --group") || !strings.Contains(pre, "useradd --system") {
		t.Errorf("preinst creates no system user with adduser (deb) and useradd (rpm):\n%s", pre)
	}

	// The packaged files are the ones in the tree, and the binary carries the version.
	for packaged, src := range map[string]string{
		c.configPath():                    filepath.Join(root, "packaging", "config", c.config),
		"/lib/systemd/system/" + c.unit(): filepath.Join(root, "packaging", "systemd", c.unit()),
	} {
		if readFile(t, filepath.Join(tree, packaged)) != readFile(t, src) {
			t.Errorf("packaged %s differs from %s", packaged, src)
		}
	}
	if v := output(t, command(t, filepath.Join(tree, c.binary()), "version")); !strings.HasPrefix(v, c.name+" "+testVersion+" ") {
		t.Errorf("%s version printed %q, want %s %s (built with the Makefile's LDFLAGS)", c.name, v, c.name, testVersion)
	}
}

func checkRPM(t *testing.T, root string, c component, rpm string) {
	info := output(t, command(t, "rpm", "-qp", "--queryformat", "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{LICENSE}\n", rpm))
	if want := strings.Join([]string{c.name, wantPkgVersion, "1", rpmArch(), "Apache-2.0"}, "|") + "\n"; info != want {
		t.Errorf("rpm header %q, want %q", info, want)
	}
	got, flags := map[string]entry{}, map[string]string{}
	list := output(t, command(t, "rpm", "-qp", "--queryformat",
		"[%{FILEMODES:perms}|%{FILEUSERNAME}|%{FILEGROUPNAME}|%{FILEFLAGS:fflags}|%{FILENAMES}\n]", rpm))
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 5 {
			t.Fatalf("rpm file line %q", line)
		}
		got[f[4]] = entry{f[0], f[1], f[2]}
		flags[f[4]] = f[3]
	}
	checkEntries(t, got, c.wantFiles("/usr/lib/systemd/system"))
	for p, fl := range flags {
		want := ""
		if p == c.configPath() {
			want = "cn" // %config(noreplace)
		}
		if fl != want {
			t.Errorf("%s has rpm file flags %q, want %q", p, fl, want)
		}
	}
	for tag, src := range map[string]string{"PREIN": "preinstall", "POSTIN": "postinstall", "PREUN": "preremove", "POSTUN": "postremove"} {
		got := output(t, command(t, "rpm", "-qp", "--queryformat", "%{"+tag+"}", rpm))
		want := readFile(t, filepath.Join(root, "packaging", "nfpm", "scripts", c.short+"-"+src+".sh"))
		if strings.TrimSpace(got) != strings.TrimSpace(want) {
			t.Errorf("rpm %s scriptlet is not packaging/nfpm/scripts/%s-%s.sh:\n%s", tag, c.short, src, got)
		}
	}
}

// unitDirectives reads the key=value lines of a unit file (comments and sections dropped).
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	d := map[string][]string{}
	for _, line := range strings.Split(readFile(t, path), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not key=value", path, line)
		}
		d[k] = append(d[k], v)
	}
	return d
}

func checkUnits(t *testing.T, b built) {
	for _, c := range components {
		t.Run(c.name+" directives", func(t *testing.T) {
			d := unitDirectives(t, filepath.Join(b.tree[c.name], "lib/systemd/system", c.unit()))
			want := map[string]string{
				"Type": "exec", "User": c.user, "Group": c.user, "ExecStart": c.execStart,
				"Restart": "on-failure", "RestartSec": "5s", "TimeoutStopSec": strconv.Itoa(c.timeoutStop),
				"StateDirectory": filepath.Base(c.dataDir), "StateDirectoryMode": "0750",
				"ConfigurationDirectory": "sendense", "ReadWritePaths": c.dataDir, "UMask": "0027",
				"NoNewPrivileges": "yes", "CapabilityBoundingSet": c.capabilities, "AmbientCapabilities": c.capabilities, "ProtectSystem": "strict",
				"ProtectHome": "yes", "PrivateTmp": "yes", "ProtectKernelTunables": "yes",
				"ProtectControlGroups": "yes", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
				"LockPersonality": "yes", "RestrictRealtime": "yes", "SystemCallArchitectures": "native",
			}
			if c.privateDevices {
				want["PrivateDevices"] = "yes"
			} else if v, ok := d["PrivateDevices"]; ok {
				t.Errorf("PrivateDevices=%v: the agent's file transport may read hot-added block devices", v)
			}
			for k, w := range want {
				if got := d[k]; len(got) != 1 || got[0] != w {
					t.Errorf("%s=%q, want exactly %s=%s", k, got, k, w)
				}
			}
		})
	}
	t.Run("stop timeout covers the hub's drain", func(t *testing.T) {
		cfg, err := config.Load(filepath.Join(b.tree[hub.name], hub.configPath()), func(string) string { return "" }, nil)
		if err != nil {
			t.Fatal(err)
		}
		// After draining for shutdown_timeout the hub still closes the catalog and repositories.
		if stop := time.Duration(hub.timeoutStop) * time.Second; stop < 2*cfg.ShutdownTimeout {
			t.Errorf("TimeoutStopSec %v leaves too little beyond shutdown_timeout %v", stop, cfg.ShutdownTimeout)
		}
	})

	needCommand(t, "systemd-analyze", "apt-get install systemd (scripts/package.sh does when run as root)")
	// A root with both packages and the system's own units, which the services' default
	// dependencies (sysinit.target, ...) name; verify also checks ExecStart is executable there.
	r := t.TempDir()
	for _, c := range components {
		output(t, command(t, "dpkg-deb", "-x", b.deb[c.name], r))
	}
	_, err := os.Stat("/lib/systemd/system/sysinit.target")
	testenv.Require(t, err == nil, "no /lib/systemd/system/sysinit.target for systemd-analyze verify: apt-get install systemd")
	output(t, command(t, "cp", "-an", "/lib/systemd/system/.", filepath.Join(r, "lib/systemd/system")))
	t.Run("verify", func(t *testing.T) {
		out, err := command(t, "systemd-analyze", "verify", "--root="+r, hub.unit(), agent.unit()).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})
	for _, c := range components {
		t.Run(c.name+" exposure", func(t *testing.T) {
			out, err := command(t, "systemd-analyze", "security", "--offline=yes", "--threshold="+strconv.Itoa(c.maxExposure),
				filepath.Join(r, "lib/systemd/system", c.unit())).CombinedOutput()
			if err != nil {
				t.Errorf("systemd-analyze security rates %s above %.1f: %v\n%s", c.unit(), float64(c.maxExposure)/10, err, out)
			}
		})
	}
}

// yamlKeys is the set of top-level keys of a YAML file.
func yamlKeys(t *testing.T, path string) []string {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(readFile(t, path)), &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// structYAMLKeys reads the yaml tags of the fields of struct typeName declared in a Go file; it
// reads the source because the agent's config package is internal to the agent module.
func structYAMLKeys(t *testing.T, file, typeName string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != typeName {
			return true
		}
		st, ok := ts.Type.(*ast.StructType)
		if !ok {
			return false
		}
		for _, fld := range st.Fields.List {
			if fld.Tag == nil {
				continue
			}
			tag, err := strconv.Unquote(fld.Tag.Value)
			if err != nil {
				t.Fatalf("%s: tag %s: %v", file, fld.Tag.Value, err)
			}
			if name, _, _ := strings.Cut(reflect.StructTag(tag).Get("yaml"), ","); name != "" && name != "-" {
				keys = append(keys, name)
			}
		}
		return false
	})
	if keys == nil {
		t.Fatalf("%s: no struct %s with yaml tags", file, typeName)
	}
	slices.Sort(keys)
	return keys
}

func checkConfigs(t *testing.T, root string, b built) {
	hubYAML := filepath.Join(b.tree[hub.name], hub.configPath())
	t.Run("hub: every key, with its default", func(t *testing.T) {
		var want []string
		typ := reflect.TypeFor[config.Config]()
		for i := range typ.NumField() {
			if name, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
				want = append(want, name)
			}
		}
		slices.Sort(want)
		if got := yamlKeys(t, hubYAML); !slices.Equal(got, want) {
			t.Errorf("hub.yaml keys %v, want every key of config.Config %v", got, want)
		}
		cfg, err := config.Load(hubYAML, func(string) string { return "" }, nil)
		if err != nil {
			t.Fatalf("the packaged hub.yaml is refused: %v", err)
		}
		def := config.Default()
		def.DataDir = "/var/lib/sendense" // the one deliberate difference: where the package puts it
		if len(cfg.TLSNames) == 0 {
			cfg.TLSNames = nil // `tls_names: []` is the default, empty
		}
		if !reflect.DeepEqual(*cfg, def) {
			t.Errorf("hub.yaml gives\n%+v\nwant the defaults\n%+v", *cfg, def)
		}
		if cfg.Listen != ":8082" || cfg.MetricsListen != "127.0.0.1:9082" {
			t.Errorf("listen %q, metrics_listen %q; want :8082 and 127.0.0.1:9082", cfg.Listen, cfg.MetricsListen)
		}
	})
	t.Run("agent: every key", func(t *testing.T) {
		want := structYAMLKeys(t, filepath.Join(root, "agent", "internal", "config", "config.go"), "Config")
		if got := yamlKeys(t, filepath.Join(b.tree[agent.name], agent.configPath())); !slices.Equal(got, want) {
			t.Errorf("agent.yaml keys %v, want every key of the agent's config.Config %v", got, want)
		}
	})
}

// process is a started command: exited is closed once it has exited, with err from Wait.
type process struct {
	exited chan struct{}
	err    error
}

// waitLogged waits for the JSON log lines with the given messages and returns their addr fields.
func waitLogged(t *testing.T, logs *testenv.LogBuffer, p *process, msgs ...string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		found := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && slices.Contains(msgs, line.Msg) {
				found[line.Msg] = line.Addr
			}
		}
		if len(found) == len(msgs) {
			return found
		}
		select {
		case <-p.exited:
			t.Fatalf("hub exited before listening: %v\n%s", p.err, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("hub did not log %q within 60s:\n%s", msgs, logs.String())
	return nil
}

// serveAndCheck starts the hub command (serve --log-format json on 127.0.0.1:0), checks health
// over TLS 1.3 with the CA the hub made in dataDir(pid) and its metrics, then stops it with
// SIGTERM and expects a clean exit.
func serveAndCheck(t *testing.T, cmd *exec.Cmd, dataDir func(pid int) string) {
	t.Helper()
	logs := &testenv.LogBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	addr := waitLogged(t, logs, p, "hub listening", "metrics listening")

	pem, err := os.ReadFile(filepath.Join(dataDir(cmd.Process.Pid), "pki", "ca.crt"))
	if err != nil {
		t.Fatalf("hub CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("hub CA: no certificate")
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13},
	}}
	resp, err := client.Get("https://" + addr["hub listening"] + api.PathHealth)
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	var h api.Health
	err = json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || h.Status != "ok" || h.Version != testVersion {
		t.Errorf("health: status %d, %+v, decode error %v; want 200, ok, version %s", resp.StatusCode, h, err, testVersion)
	}
	resp, err = (&http.Client{Timeout: 30 * time.Second}).Get("http://" + addr["metrics listening"] + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !strings.Contains(string(body), "sendense_hub_build_info{") || !strings.Contains(string(body), testVersion) {
		t.Errorf("metrics (err %v) have no sendense_hub_build_info with version %s", err, testVersion)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		if p.err != nil {
			t.Fatalf("hub exit after SIGTERM: %v\n%s", p.err, logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("hub did not stop within 60s of SIGTERM:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `"msg":"hub stopped"`) {
		t.Errorf("no clean stop logged:\n%s", logs.String())
	}
}

// checkNotEnrolled runs `sendense-agent status`: it must get past the configuration and fail
// only because the agent has no identity yet.
func checkNotEnrolled(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("status: %v, want a non-zero exit\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "sendense-agent: not enrolled") || strings.Contains(string(out), "config:") {
		t.Errorf("status printed %q, want the not-enrolled message and no configuration error", out)
	}
}

// sandbox is a throwaway root: an overlay of / whose changes go to a tmpfs, mounted in a private
// mount namespace held by one process; commands run chrooted into it through nsenter. dpkg, rpm
// and the maintainer scripts change only the overlay, never the machine.
type sandbox struct {
	pid  string // the process holding the namespace
	root string // the overlay root; a path in the sandbox's mount namespace only
}

// sandboxScript mounts the sandbox and then holds the namespace until its stdin closes.
const sandboxScript = `set -e
dir=$1 packages=$2
mount -t tmpfs -o mode=0755 sendense-sandbox "$dir"
mkdir "$dir/upper" "$dir/work" "$dir/root"
mount -t overlay sendense-sandbox -o "lowerdir=/,upperdir=$dir/upper,workdir=$dir/work" "$dir/root"
mount --bind /dev "$dir/root/dev"
mount -t proc proc "$dir/root/proc"
mkdir "$dir/root/sendense-packages"
mount --bind "$packages" "$dir/root/sendense-packages"
echo ready
read -r _ || true
`

// newSandbox makes a sandbox in which the directory packages is /sendense-packages; it lasts
// until t ends.
func newSandbox(t *testing.T, packages string) *sandbox {
	t.Helper()
	testenv.Require(t, os.Geteuid() == 0, "installing the packages needs root (dpkg and rpm run in a private mount namespace and change nothing on the machine): run the test as root")
	needCommand(t, "unshare", "apt-get install util-linux")
	needCommand(t, "nsenter", "apt-get install util-linux")
	needCommand(t, "setpriv", "apt-get install util-linux")
	needCommand(t, "chroot", "apt-get install coreutils")
	dir := t.TempDir()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", sandboxScript, "sh", dir, packages)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &testenv.LogBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		stdin.Close()
		_ = cmd.Wait()
		testenv.Require(t, false, "cannot mount an overlay of / in a private mount namespace (needs overlayfs and CAP_SYS_ADMIN): %s", stderr.String())
	}
	t.Cleanup(func() {
		stdin.Close() // the holder exits, and the namespace and its mounts go with it
		if err := cmd.Wait(); err != nil {
			t.Errorf("sandbox holder: %v\n%s", err, stderr.String())
		}
	})
	return &sandbox{pid: strconv.Itoa(cmd.Process.Pid), root: filepath.Join(dir, "root")}
}

// cmd runs a command chrooted into the sandbox with a service-like environment.
func (s *sandbox) cmd(t *testing.T, args ...string) *exec.Cmd {
	cmd := command(t, "nsenter", append([]string{"--target", s.pid, "--mount", "--", "chroot", s.root}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C"}
	return cmd
}

func (s *sandbox) run(t *testing.T, args ...string) string {
	t.Helper()
	return output(t, s.cmd(t, args...))
}

// asUser runs a command the way the unit does: as the service user, without privileges.
func (s *sandbox) asUser(t *testing.T, user string, args ...string) *exec.Cmd {
	return s.cmd(t, append([]string{"setpriv", "--reuid=" + user, "--regid=" + user, "--init-groups",
		"--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--"}, args...)...)
}

func (s *sandbox) exists(t *testing.T, path string) bool {
	return s.cmd(t, "test", "-e", path).Run() == nil
}

func (s *sandbox) stat(t *testing.T, paths []string) map[string]entry {
	t.Helper()
	got := map[string]entry{}
	out := s.run(t, append([]string{"stat", "-c", "%n|%A|%U|%G"}, paths...)...)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 4 {
			t.Fatalf("stat line %q", line)
		}
		got[f[0]] = entry{f[1], f[2], f[3]}
	}
	return got
}

// checkInstalled compares the installed files and service users with what the packages promise
// and returns the users' passwd lines.
func (s *sandbox) checkInstalled(t *testing.T, unitDir string) map[string]string {
	t.Helper()
	users := map[string]string{}
	for _, c := range components {
		want := c.wantFiles(unitDir)
		checkEntries(t, s.stat(t, slices.Sorted(maps.Keys(want))), want)
		pw := strings.TrimSpace(s.run(t, "getent", "passwd", c.user))
		gr := strings.TrimSpace(s.run(t, "getent", "group", c.user))
		f, g := strings.Split(pw, ":"), strings.Split(gr, ":")
		if len(f) != 7 || len(g) != 4 {
			t.Fatalf("passwd %q, group %q", pw, gr)
		}
		uid, _ := strconv.Atoi(f[2])
		if uid <= 0 || uid >= 1000 || f[3] != g[2] || f[5] != c.dataDir || !strings.HasSuffix(f[6], "/nologin") {
			t.Errorf("user %q: want a system user (uid 1-999) in group %s, home %s, shell nologin", pw, c.user, c.dataDir)
		}
		users[c.user] = pw
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		out, err := s.cmd(t, "systemd-analyze", "verify", hub.unit(), agent.unit()).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify of the installed units: %v\n%s", err, out)
		}
	}
	return users
}

// checkServices runs the installed binaries as their service users with the installed
// configuration: the hub serves (only its addresses moved to free ports), the agent is not enrolled.
func (s *sandbox) checkServices(t *testing.T) {
	t.Run("hub serves as its user", func(t *testing.T) {
		cmd := s.asUser(t, hub.user, hub.binary(), "serve", "--config", hub.configPath(),
			"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--log-format", "json")
		// nsenter, chroot and setpriv exec one another: the pid is the hub's, its root the sandbox's.
		serveAndCheck(t, cmd, func(pid int) string { return fmt.Sprintf("/proc/%d/root%s", pid, hub.dataDir) })
		got := s.stat(t, []string{hub.dataDir + "/catalog.db", hub.dataDir + "/pki/ca.key"})
		if e := got[hub.dataDir+"/catalog.db"]; e.owner != hub.user {
			t.Errorf("catalog.db owned by %s, want %s", e.owner, hub.user)
		}
		if e := got[hub.dataDir+"/pki/ca.key"]; e.perms != "-rw-------" || e.owner != hub.user {
			t.Errorf("pki/ca.key is %s %s, want -rw------- %s", e.perms, e.owner, hub.user)
		}
	})
	t.Run("agent runs as its user", func(t *testing.T) {
		checkNotEnrolled(t, s.asUser(t, agent.user, agent.binary(), "status", "--config", agent.configPath()))
	})
}

func installDeb(t *testing.T, b built) {
	needCommand(t, "dpkg", "apt-get install dpkg")
	s := newSandbox(t, b.dir)
	debs := []string{"/sendense-packages/" + filepath.Base(b.deb[hub.name]), "/sendense-packages/" + filepath.Base(b.deb[agent.name])}
	names := []string{hub.name, agent.name}

	s.run(t, append([]string{"dpkg", "-i"}, debs...)...)
	status := s.run(t, append([]string{"dpkg-query", "-W", "-f", "${Package} ${Version} ${Status}\n"}, names...)...)
	for _, n := range names {
		if want := fmt.Sprintf("%s %s-1 install ok installed", n, wantPkgVersion); !strings.Contains(status, want+"\n") {
			t.Errorf("dpkg-query:\n%s\nwant the line %q", status, want)
		}
	}
	users := s.checkInstalled(t, "/lib/systemd/system")
	for _, c := range components {
		if got := s.run(t, "cat", "/var/lib/dpkg/info/"+c.name+".conffiles"); got != c.configPath()+"\n" {
			t.Errorf("%s conffiles %q, want %s", c.name, got, c.configPath())
		}
	}
	s.checkServices(t)

	t.Run("upgrade keeps the user and an edited config", func(t *testing.T) {
		const edit = "# edited by the operator\n"
		s.run(t, "sh", "-c", "printf '"+edit+"' >> "+hub.configPath())
		s.run(t, append([]string{"dpkg", "-i"}, debs...)...) // preinst upgrade, postinst configure <old version>
		if got := s.checkInstalled(t, "/lib/systemd/system"); !reflect.DeepEqual(got, users) {
			t.Errorf("users after the upgrade %v, before %v", got, users)
		}
		if !strings.HasSuffix(s.run(t, "cat", hub.configPath()), edit) {
			t.Error("the upgrade replaced the operator's hub.yaml")
		}
	})
	t.Run("remove and purge keep the data and the users", func(t *testing.T) {
		s.run(t, append([]string{"dpkg", "-r"}, names...)...)
		for _, c := range components {
			if s.exists(t, c.binary()) || s.exists(t, "/lib/systemd/system/"+c.unit()) {
				t.Errorf("%s: binary or unit left after dpkg -r", c.name)
			}
			if !s.exists(t, c.configPath()) {
				t.Errorf("dpkg -r removed %s (a conffile stays until purge)", c.configPath())
			}
		}
		s.run(t, append([]string{"dpkg", "--purge"}, names...)...)
		for _, c := range components {
			if s.exists(t, c.configPath()) {
				t.Errorf("%s left after purge", c.configPath())
			}
			s.run(t, "getent", "passwd", c.user)
		}
		if !s.exists(t, hub.dataDir+"/catalog.db") {
			t.Error("purge deleted the hub's catalog")
		}
	})
}

func installRPM(t *testing.T, b built) {
	needCommand(t, "rpm", "apt-get install rpm (scripts/package.sh does when run as root)")
	s := newSandbox(t, b.dir)
	rpms := []string{"/sendense-packages/" + filepath.Base(b.rpm[hub.name]), "/sendense-packages/" + filepath.Base(b.rpm[agent.name])}
	names := []string{hub.name, agent.name}

	s.run(t, append([]string{"rpm", "-i"}, rpms...)...)
	q := s.run(t, append([]string{"rpm", "-q", "--queryformat", "%{NAME} %{VERSION}-%{RELEASE}\n"}, names...)...)
	if want := fmt.Sprintf("%s %s-1\n%s %s-1\n", hub.name, wantPkgVersion, agent.name, wantPkgVersion); q != want {
		t.Errorf("rpm -q:\n%s\nwant:\n%s", q, want)
	}
	users := s.checkInstalled(t, "/usr/lib/systemd/system")
	if out := s.run(t, append([]string{"rpm", "-V"}, names...)...); out != "" {
		t.Errorf("rpm -V finds installed files unlike the packages:\n%s", out)
	}
	t.Run("upgrade keeps the users", func(t *testing.T) {
		s.run(t, append([]string{"rpm", "-U", "--replacepkgs"}, rpms...)...)
		if got := s.checkInstalled(t, "/usr/lib/systemd/system"); !reflect.DeepEqual(got, users) {
			t.Errorf("users after the upgrade %v, before %v", got, users)
		}
	})
	t.Run("erase keeps the users", func(t *testing.T) {
		s.run(t, append([]string{"rpm", "-e"}, names...)...)
		for _, c := range components {
			if s.exists(t, c.binary()) || s.exists(t, "/usr/lib/systemd/system/"+c.unit()) {
				t.Errorf("%s: binary or unit left after rpm -e", c.name)
			}
			s.run(t, "getent", "passwd", c.user)
		}
	})
}
