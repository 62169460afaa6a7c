package disk

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sendense/sendense/agent/internal/nbd"
)

// Defaults for NBDKit.
const (
	// DefaultNBDKitStartTimeout bounds the wait for nbdkit to listen. The vddk plugin loads
	// VDDK and initialises it before listening, which takes a few seconds on a slow appliance.
	DefaultNBDKitStartTimeout = time.Minute
	// nbdkitStopTimeout is how long Close waits after SIGTERM before SIGKILL.
	nbdkitStopTimeout = 10 * time.Second
	// maxUnixSocketPath is sun_path (108 bytes on Linux) minus the terminating NUL.
	maxUnixSocketPath = 107
	// stderrTailLines is how many of nbdkit's last stderr lines go into error messages.
	stderrTailLines = 20
)

var (
	// ErrNBDKitNotFound means the nbdkit binary is not installed (apt-get install nbdkit).
	ErrNBDKitNotFound = errors.New("nbdkit not found")
	// ErrNBDKitExited is matched by errors from an NBDKit whose process is gone: it died, or
	// Close stopped it. Start a new one.
	ErrNBDKitExited = errors.New("nbdkit exited")
)

// NBDKitOptions configures StartNBDKit. nbdkit always runs read-only (--readonly): backups never
// write to a source disk.
type NBDKitOptions struct {
	// Plugin is the nbdkit plugin name ("vddk", "file", "curl") or a path to one.
	Plugin string
	// Args are the plugin's parameters, each "key=value", passed in order after the plugin.
	// Only their keys are logged, and only for keys that are not secret.
	Args []string
	// SecretKeys are keys of Args whose values are secret, in addition to the keys that always
	// are: any key containing "password", "passwd", "secret" or "token", and curl's "cookie"
	// and "header" (a session cookie or an Authorization header). Secret parameters are
	// neither logged nor named in logs, and their inline values are masked in nbdkit's stderr.
	// Prefer key=+FILE (a 0600 file nbdkit reads) for them: inline values are visible to local
	// users in the process list, and StartNBDKit warns about it.
	SecretKeys []string
	// SecretFiles are secret parameters given by value: StartNBDKit writes each value to a
	// 0600 file in its private directory and passes key=+FILE after Args, so that the value
	// never shows in the process list. The files go with the process.
	SecretFiles map[string]string
	// Filters are nbdkit filters (--filter=NAME), outermost first, e.g. "retry" or "cacheextents".
	Filters []string
	// Dir holds the unix socket and the pidfile. Empty means a new private temporary
	// directory, removed by Close. The socket path must fit 107 bytes.
	Dir string
	// Log receives nbdkit's lifecycle and its stderr lines; nil discards them.
	Log *slog.Logger
	// StartTimeout bounds the wait until nbdkit accepts connections; zero means
	// DefaultNBDKitStartTimeout. ctx can end the wait sooner.
	StartTimeout time.Duration
	// Binary is the nbdkit executable; empty means "nbdkit" from PATH.
	Binary string
}

// NBDKit is a supervised nbdkit process serving one disk read-only on a private unix socket.
// Readers come from Open; several may be open at once (one connection each).
//
// In production the plugin is vddk with the customer's VMware VDDK; StartNBDKit then runs
// something like:
//
//	nbdkit --readonly --exit-with-parent --foreground \
//	    --unix /run/sendense/nbd-5f1c.../nbdkit-9a3b4c.sock --pidfile .../nbdkit-9a3b4c.pid \
//	    vddk \
//	    libdir=/opt/vmware-vix-disklib-distrib \
//	    server=vcenter.example.com \
//	    user=backup@vsphere.local \
//	    password=+/run/sendense/nbd-5f1c.../vcenter.password \
//	    thumbprint=B2:4F:...:9C \
//	    vm=moref=vm-1234 \
//	    snapshot=snapshot-567 \
//	    file='[datastore1] web01/web01.vmdk' \
//	    transports=nbdssl:nbd
//
// with Options{Plugin: "vddk", Args: [...]}. libdir is where VDDK is unpacked (it holds lib64/).
// server is the vCenter (or ESXi) host name, user and password its credentials; password=+FILE
// reads the password from a 0600 file so it appears neither in the process list nor in logs
// (password is always secret here). thumbprint is the SHA-1 fingerprint of the server's TLS
// certificate, colon-separated, which VDDK checks. vm=moref= names the VM by managed object
// reference and snapshot= the job's snapshot (its moref), so VDDK reads the frozen point in
// time; file= is the disk's backing file name as listed in the snapshot's configuration
// (config.hardware.device of the snapshot, not the VM's current delta disk, which is
// web01-000001.vmdk once the snapshot exists). transports lists the VDDK transport modes to try in order (nbdssl,
// nbd, hotadd, san). Optional: compression=zlib|fastlz|skipz for NBD transports, config=FILE for
// a VDDK configuration file, port= for a non-default HTTPS port. The Debian nbdkit package has no
// vddk plugin (it is in contrib and needs VDDK), so this path is exercised here only through
// the file and curl plugins.
type NBDKit struct {
	cmd     *exec.Cmd
	plugin  string
	socket  string
	pidfile string
	secrets []string // files of SecretFiles
	tempDir string   // removed by Close when StartNBDKit created it
	log     *slog.Logger
	stderr  *stderrLog

	readersMu sync.Mutex
	readers   map[*kitReader]struct{} // open readers from Open, closed by Close

	exited  chan struct{} // closed when the process has been reaped
	waitErr error         // the process's exit error; read only after exited is closed
	ready   atomic.Bool   // start-up finished; an exit after it is news for the log
	closing atomic.Bool

	closeOnce sync.Once
	closeErr  error
}

// StartNBDKit starts nbdkit with opts and returns once it accepts connections on its unix
// socket (nbdkit writes its pidfile only then). nbdkit gets --exit-with-parent, so it does not
// outlive a crashed agent, and its own process group, so a terminal's Ctrl-C reaches the agent
// alone and the agent decides when nbdkit stops. If nbdkit exits during start-up, the error
// quotes the end of its stderr. ctx bounds only the start-up; the process runs until Close.
func StartNBDKit(ctx context.Context, opts NBDKitOptions) (*NBDKit, error) {
	if err := validateNBDKitOptions(opts); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bin := opts.Binary
	if bin == "" {
		bin = "nbdkit"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("start nbdkit: %w: %w (install it with apt-get install nbdkit)", ErrNBDKitNotFound, err)
	}

	k := &NBDKit{plugin: opts.Plugin, log: log, exited: make(chan struct{}), readers: make(map[*kitReader]struct{})}
	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "sendense-nbd-"); err != nil {
			return nil, fmt.Errorf("start nbdkit: create socket directory: %w", err)
		}
		k.tempDir = dir
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	name := "nbdkit-" + hex.EncodeToString(id[:])
	k.socket = filepath.Join(dir, name+".sock")
	k.pidfile = filepath.Join(dir, name+".pid")
	if len(k.socket) > maxUnixSocketPath {
		k.removeFiles()
		return nil, fmt.Errorf("start nbdkit: socket path %s is %d bytes, unix sockets allow %d: use a shorter Dir", k.socket, len(k.socket), maxUnixSocketPath)
	}

	pluginArgs := slices.Clone(opts.Args)
	for _, key := range slices.Sorted(maps.Keys(opts.SecretFiles)) {
		f := filepath.Join(dir, name+"."+key)
		k.secrets = append(k.secrets, f)
		if err := os.WriteFile(f, []byte(opts.SecretFiles[key]), 0o600); err != nil {
			k.removeFiles()
			return nil, fmt.Errorf("start nbdkit: write parameter %s: %w", key, err)
		}
		pluginArgs = append(pluginArgs, key+"=+"+f)
	}
	args := []string{"--readonly", "--exit-with-parent", "--foreground", "--unix", k.socket, "--pidfile", k.pidfile}
	for _, f := range opts.Filters {
		args = append(args, "--filter="+f)
	}
	args = append(args, opts.Plugin)
	args = append(args, pluginArgs...)

	var shownKeys []string
	var secrets []string // inline secret values, masked in stderr
	nSecret, nInline := 0, 0
	for _, a := range pluginArgs {
		key, value, _ := strings.Cut(a, "=")
		if !isSecretKey(key, opts.SecretKeys) {
			shownKeys = append(shownKeys, key)
			continue
		}
		nSecret++
		if !strings.HasPrefix(value, "+") && !strings.HasPrefix(value, "-") {
			nInline++
			if len(value) >= 3 {
				secrets = append(secrets, value)
			}
		}
	}
	log.Info("starting nbdkit", "plugin", opts.Plugin, "filters", opts.Filters, "params", shownKeys,
		"secret_params", nSecret, "socket", k.socket)
	if nInline > 0 {
		log.Warn("secret nbdkit parameters passed inline are visible to local users in the process list; pass them as key=+FILE",
			"plugin", opts.Plugin, "secret_params_inline", nInline)
	}

	k.stderr = &stderrLog{log: log, plugin: opts.Plugin, secrets: secrets}
	k.cmd = exec.Command(path, args...)
	k.cmd.Stdout = k.stderr
	k.cmd.Stderr = k.stderr
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	k.cmd.WaitDelay = 5 * time.Second // bounds copying stderr after exit
	started := time.Now()
	if err := k.cmd.Start(); err != nil {
		k.removeFiles()
		return nil, fmt.Errorf("start nbdkit %s: %w", opts.Plugin, err)
	}
	go k.wait()

	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = DefaultNBDKitStartTimeout
	}
	if err := k.waitReady(ctx, timeout); err != nil {
		_ = k.Close()
		return nil, err
	}
	k.ready.Store(true)
	log.Info("nbdkit ready", "plugin", opts.Plugin, "pid", k.cmd.Process.Pid, "socket", k.socket,
		"duration_seconds", time.Since(started).Seconds())
	return k, nil
}

// validateNBDKitOptions rejects options that nbdkit would misparse: anything starting with
// "-" after the plugin name could be taken for an nbdkit flag.
func validateNBDKitOptions(opts NBDKitOptions) error {
	if opts.Plugin == "" || strings.HasPrefix(opts.Plugin, "-") {
		return fmt.Errorf("start nbdkit: invalid plugin name %q", opts.Plugin)
	}
	for _, f := range opts.Filters {
		if f == "" || strings.HasPrefix(f, "-") {
			return fmt.Errorf("start nbdkit: invalid filter name %q", f)
		}
	}
	for i, a := range opts.Args {
		key, _, ok := strings.Cut(a, "=")
		if !ok || key == "" || strings.HasPrefix(key, "-") {
			// Do not quote the argument: it may be a secret.
			return fmt.Errorf("start nbdkit: plugin argument %d is not key=value", i)
		}
	}
	return nil
}

// isSecretKey reports whether a plugin parameter's value must not be logged.
func isSecretKey(key string, extra []string) bool {
	k := strings.ToLower(key)
	if slices.Contains(extra, key) || k == "cookie" || k == "header" {
		return true
	}
	for _, s := range []string{"password", "passwd", "secret", "token"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// wait reaps the process and logs an exit nobody asked for (StartNBDKit returns start-up
// failures as errors instead).
func (k *NBDKit) wait() {
	err := k.cmd.Wait()
	k.waitErr = err
	if k.ready.Load() && !k.closing.Load() {
		k.log.Error("nbdkit exited unexpectedly", "plugin", k.plugin, "err", err, "stderr", k.stderr.Tail())
	}
	close(k.exited)
}

// waitReady polls for the pidfile nbdkit writes once it listens, and for the socket. It does
// not probe with a connection: nbdkit logs an error for a client that hangs up mid-handshake.
func (k *NBDKit) waitReady(ctx context.Context, timeout time.Duration) error {
	giveUp := time.NewTimer(timeout)
	defer giveUp.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(k.pidfile); err == nil {
			pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
			if err == nil && pid == k.cmd.Process.Pid {
				if fi, err := os.Stat(k.socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
					return nil
				}
			}
		}
		select {
		case <-k.exited:
			return fmt.Errorf("start nbdkit %s: %w during start-up (%v)%s", k.plugin, ErrNBDKitExited, k.waitErr, k.stderr.TailSuffix())
		case <-ctx.Done():
			return fmt.Errorf("start nbdkit %s: %w", k.plugin, ctx.Err())
		case <-giveUp.C:
			return fmt.Errorf("start nbdkit %s: not accepting connections after %s%s", k.plugin, timeout, k.stderr.TailSuffix())
		case <-tick.C:
		}
	}
}

// Socket returns the path of the unix socket nbdkit listens on.
func (k *NBDKit) Socket() string { return k.socket }

// Open connects a new Reader to the disk nbdkit serves. ctx bounds the connection and the
// handshake (for vddk, that includes VDDK opening the disk). After nbdkit exited, Open fails
// with an error matching ErrNBDKitExited.
func (k *NBDKit) Open(ctx context.Context) (Reader, error) {
	select {
	case <-k.exited:
		return nil, fmt.Errorf("open nbdkit %s: %w (%v)%s", k.plugin, ErrNBDKitExited, k.waitErr, k.stderr.TailSuffix())
	default:
	}
	if k.closing.Load() {
		return nil, fmt.Errorf("open nbdkit %s: %w (closed)", k.plugin, ErrNBDKitExited)
	}
	c, err := nbd.Dial(ctx, "unix", k.socket, "")
	if err != nil {
		return nil, fmt.Errorf("open nbdkit %s: %w%s", k.plugin, err, k.stderr.TailSuffix())
	}
	r := &kitReader{Client: c, kit: k}
	k.readersMu.Lock()
	closing := k.closing.Load()
	if !closing {
		k.readers[r] = struct{}{}
	}
	k.readersMu.Unlock()
	if closing {
		_ = c.Close()
		return nil, fmt.Errorf("open nbdkit %s: %w (closed)", k.plugin, ErrNBDKitExited)
	}
	return r, nil
}

// kitReader is an NBD connection to a supervised nbdkit, forgotten by it when closed.
type kitReader struct {
	*nbd.Client
	kit *NBDKit
}

// Close closes the connection.
func (r *kitReader) Close() error {
	r.kit.readersMu.Lock()
	delete(r.kit.readers, r)
	r.kit.readersMu.Unlock()
	return r.Client.Close()
}

// Close disconnects the readers Open returned (their reads fail with nbd.ErrClosed), stops
// nbdkit and any helper processes of its plugin (SIGTERM to its process group; SIGKILL after
// 10 s, which only a client connected by other means can cause), waits for it and removes its
// socket, pidfile and private directory. Close returns an error if nbdkit had already died on
// its own, quoting its stderr. Close is idempotent.
func (k *NBDKit) Close() error {
	k.closeOnce.Do(func() {
		alreadyDead := false
		select {
		case <-k.exited:
			alreadyDead = true
		default:
		}
		k.readersMu.Lock()
		k.closing.Store(true)
		readers := k.readers
		k.readers = nil
		k.readersMu.Unlock()
		// nbdkit finishes serving connected clients before it exits on SIGTERM, so disconnect
		// ours first (NBD_CMD_DISC lets the plugin close cleanly: for vddk that ends the NFC
		// session that would otherwise hold the snapshot's disk until it times out).
		for r := range readers {
			_ = r.Client.Close()
		}
		if alreadyDead {
			k.closeErr = fmt.Errorf("nbdkit %s: %w before Close (%v)%s", k.plugin, ErrNBDKitExited, k.waitErr, k.stderr.TailSuffix())
		} else {
			// Signal the whole process group: plugins such as sh or eval run helper processes
			// that would otherwise keep running (and keep nbdkit's stderr open).
			pgid := k.cmd.Process.Pid
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			select {
			case <-k.exited:
			case <-time.After(nbdkitStopTimeout):
				k.log.Warn("nbdkit ignored SIGTERM; killing it", "plugin", k.plugin, "pid", pgid)
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
				<-k.exited
			}
			k.log.Info("nbdkit stopped", "plugin", k.plugin, "pid", k.cmd.Process.Pid)
		}
		k.removeFiles()
	})
	return k.closeErr
}

func (k *NBDKit) removeFiles() {
	_ = os.Remove(k.socket)
	_ = os.Remove(k.pidfile)
	for _, f := range k.secrets {
		_ = os.Remove(f)
	}
	if k.tempDir != "" {
		_ = os.RemoveAll(k.tempDir)
	}
}

// stderrLog forwards nbdkit's output to the log line by line, masks inline secret values, and
// keeps the last lines for error messages.
type stderrLog struct {
	log     *slog.Logger
	plugin  string
	secrets []string

	mu      sync.Mutex
	partial []byte
	tail    []string
}

// Write splits p into lines; an overlong line is flushed in 64 KiB pieces.
func (w *stderrLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.line(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) >= 64<<10 {
		w.line(string(w.partial))
		w.partial = nil
	}
	return len(p), nil
}

// line handles one complete line; w.mu is held.
func (w *stderrLog) line(s string) {
	s = strings.TrimRight(s, "\r")
	for _, secret := range w.secrets {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	if s == "" {
		return
	}
	level := slog.LevelWarn
	if strings.Contains(s, "debug:") {
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, "nbdkit output", "plugin", w.plugin, "line", s)
	w.tail = append(w.tail, s)
	if len(w.tail) > stderrTailLines {
		w.tail = w.tail[len(w.tail)-stderrTailLines:]
	}
}

// Tail returns the last lines nbdkit printed, joined with " | ".
func (w *stderrLog) Tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	lines := slices.Clone(w.tail)
	if len(w.partial) > 0 {
		p := string(w.partial)
		for _, secret := range w.secrets {
			p = strings.ReplaceAll(p, secret, "[redacted]")
		}
		lines = append(lines, p)
	}
	return strings.Join(lines, " | ")
}

// TailSuffix is Tail formatted for the end of an error message, or "" when nbdkit said nothing.
func (w *stderrLog) TailSuffix() string {
	if t := w.Tail(); t != "" {
		return ": nbdkit said: " + t
	}
	return ""
}
