package lab

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sendense/sendense/shared/atomicfile"
	"github.com/sendense/sendense/shared/httpserve"
)

// Files `sendense-lab serve` keeps in its directory.
const (
	StateFile    = "lab.json" // State, 0600: it holds the password and the control token
	PasswordFile = "password" // the SDK password alone, 0600, for agent configurations
)

// State describes a serving lab; Serve writes it to DIR/lab.json once the lab is ready.
type State struct {
	SDKURL       string   `json:"sdk_url"`
	Username     string   `json:"username"`
	Password     string   `json:"password"`
	PasswordFile string   `json:"password_file"`
	Thumbprint   string   `json:"thumbprint"`
	CAFile       string   `json:"ca_file"`
	Datacenter   string   `json:"datacenter"`
	Datastore    string   `json:"datastore"`
	ControlURL   string   `json:"control_url"`
	ControlToken string   `json:"control_token"`
	PID          int      `json:"pid"`
	VMs          []VMInfo `json:"vms"`
}

// ReadState reads DIR/lab.json.
func ReadState(dir string) (State, error) {
	var s State
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return s, fmt.Errorf("read lab state: %w", err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("parse %s: %w", filepath.Join(dir, StateFile), err)
	}
	return s, nil
}

// ServeOptions tune Serve.
type ServeOptions struct {
	Options // Dir is required
	// Keep leaves the datastore, password and CA files in Dir on exit; lab.json always goes.
	Keep bool
	// Ready, when set, is called once lab.json is written.
	Ready func(State)
}

// Serve runs a lab until ctx ends: it starts the lab in opts.Dir, serves the control API on a
// random loopback port (guarded by a random bearer token), writes DIR/password and DIR/lab.json
// atomically, and on exit closes the lab and removes what it wrote unless opts.Keep.
func Serve(ctx context.Context, spec Spec, opts ServeOptions) (err error) {
	if opts.Dir == "" {
		return errors.New("serve: a lab directory is required")
	}
	l, err := Start(ctx, spec, opts.Options)
	if err != nil {
		return err
	}
	statePath := filepath.Join(l.Dir(), StateFile)
	defer func() {
		_ = os.Remove(statePath)
		err = errors.Join(err, l.Close())
		if !opts.Keep {
			for _, p := range []string{filepath.Join(l.Dir(), PasswordFile), l.CACertFile(), l.dsDir} {
				if rmErr := os.RemoveAll(p); rmErr != nil {
					err = errors.Join(err, fmt.Errorf("remove %s: %w", p, rmErr))
				}
			}
		}
	}()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the control API: %w", err)
	}
	c := &control{lab: l, token: randomToken(24)}
	c.state = State{
		SDKURL:       l.SDKURL(),
		Username:     l.Username(),
		Password:     l.Password(),
		PasswordFile: filepath.Join(l.Dir(), PasswordFile),
		Thumbprint:   l.Thumbprint(),
		CAFile:       l.CACertFile(),
		Datacenter:   l.Datacenter(),
		Datastore:    l.Datastore(),
		ControlURL:   "http://" + ln.Addr().String(),
		ControlToken: c.token,
		PID:          os.Getpid(),
	}
	c.statePath = statePath
	if err := atomicfile.WriteFile(c.state.PasswordFile, []byte(l.Password()+"\n"), 0o600); err != nil {
		_ = ln.Close()
		return fmt.Errorf("write password file: %w", err)
	}
	if err := c.writeState(); err != nil {
		_ = ln.Close()
		return err
	}
	l.log.Info("lab serving", "sdk_url", c.state.SDKURL, "control_url", c.state.ControlURL, "state_file", statePath)
	if opts.Ready != nil {
		opts.Ready(c.stateCopy())
	}
	srv := &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second}
	return httpserve.Serve(ctx, srv, ln, 5*time.Second)
}

// control is the loopback HTTP API `sendense-lab write|resize|reset-cbt` use.
type control struct {
	lab       *Lab
	token     string
	statePath string

	mu    sync.Mutex // guards state and lab.json
	state State
}

func (c *control) stateCopy() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// writeState refreshes the VM list and rewrites lab.json atomically.
func (c *control) writeState() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	vms, err := c.lab.VMs()
	if err != nil {
		return err
	}
	c.state.VMs = vms
	data, err := json.MarshalIndent(c.state, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	if err := atomicfile.WriteFile(c.statePath, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	return nil
}

// WriteRequest asks the control API to change disk bytes: Percent > 0 for WritePercent,
// otherwise Length random bytes at Offset.
type WriteRequest struct {
	VM      string  `json:"vm"`
	Disk    string  `json:"disk"`
	Percent float64 `json:"percent,omitempty"`
	Offset  int64   `json:"offset,omitempty"`
	Length  int64   `json:"length,omitempty"`
	Seed    int64   `json:"seed"`
	// HideFromCBT writes the percent without journaling it for CBT (WritePercentHidden).
	HideFromCBT bool `json:"hide_from_cbt,omitempty"`
}

// WriteResponse lists the extents written, sorted.
type WriteResponse struct {
	Extents []Extent `json:"extents"`
}

// ResizeRequest grows a disk to Size bytes.
type ResizeRequest struct {
	VM   string `json:"vm"`
	Disk string `json:"disk"`
	Size int64  `json:"size"`
}

// DiskRequest names a disk (reset-cbt).
type DiskRequest struct {
	VM   string `json:"vm"`
	Disk string `json:"disk"`
}

// controlError is the JSON body of a failed control request.
type controlError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

var errorCodes = []struct {
	err    error
	code   string
	status int
}{
	{ErrVMNotFound, "vm_not_found", http.StatusNotFound},
	{ErrDiskNotFound, "disk_not_found", http.StatusNotFound},
	{ErrOutOfRange, "out_of_range", http.StatusBadRequest},
	{ErrShrink, "shrink", http.StatusBadRequest},
	{ErrInvalidSpec, "invalid", http.StatusBadRequest},
	{ErrClosed, "closed", http.StatusServiceUnavailable},
}

func (c *control) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	auth := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if subtle.ConstantTimeCompare([]byte(auth), []byte(c.token)) != 1 {
		writeJSON(w, http.StatusUnauthorized, controlError{Error: "missing or wrong control token", Code: "unauthenticated"})
		return
	}
	if r.Method == http.MethodGet && r.URL.Path == "/v1/vms" {
		vms, err := c.lab.VMs()
		if err != nil {
			c.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, vms)
		return
	}
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, controlError{Error: "use POST", Code: "method"})
		return
	}
	var res any = struct{}{}
	var err error
	switch r.URL.Path {
	case "/v1/write":
		var req WriteRequest
		if err = decode(r, &req); err == nil {
			var es []Extent
			es, err = c.write(req)
			res = WriteResponse{Extents: es}
		}
	case "/v1/resize":
		var req ResizeRequest
		if err = decode(r, &req); err == nil {
			if err = c.lab.ResizeDisk(req.VM, req.Disk, req.Size); err == nil {
				err = c.writeState()
			}
		}
	case "/v1/reset-cbt":
		var req DiskRequest
		if err = decode(r, &req); err == nil {
			err = c.lab.ResetCBT(req.VM, req.Disk)
		}
	default:
		writeJSON(w, http.StatusNotFound, controlError{Error: "no such endpoint " + r.URL.Path, Code: "not_found"})
		return
	}
	if err != nil {
		c.fail(w, err)
		return
	}
	c.lab.log.Info("lab control", "path", r.URL.Path)
	writeJSON(w, http.StatusOK, res)
}

func (c *control) write(req WriteRequest) ([]Extent, error) {
	if req.Percent != 0 && req.HideFromCBT {
		return c.lab.WritePercentHidden(req.VM, req.Disk, req.Percent, req.Seed)
	}
	if req.HideFromCBT {
		return nil, fmt.Errorf("%w: hide_from_cbt needs percent", ErrOutOfRange)
	}
	if req.Percent != 0 {
		return c.lab.WritePercent(req.VM, req.Disk, req.Percent, req.Seed)
	}
	if req.Length <= 0 {
		return nil, fmt.Errorf("%w: give percent, or offset and a positive length", ErrOutOfRange)
	}
	if err := c.lab.WriteRandom(req.VM, req.Disk, req.Offset, req.Length, req.Seed); err != nil {
		return nil, err
	}
	return []Extent{{Offset: req.Offset, Length: req.Length}}, nil
}

func (c *control) fail(w http.ResponseWriter, err error) {
	for _, e := range errorCodes {
		if errors.Is(err, e.err) {
			writeJSON(w, e.status, controlError{Error: err.Error(), Code: e.code})
			return
		}
	}
	var syntax *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &syntax) || errors.As(err, &typeErr) || errors.Is(err, errBadBody) {
		writeJSON(w, http.StatusBadRequest, controlError{Error: err.Error(), Code: "bad_request"})
		return
	}
	c.lab.log.Error("lab control", "err", err)
	writeJSON(w, http.StatusInternalServerError, controlError{Error: err.Error(), Code: "internal"})
}

var errBadBody = errors.New("bad request body")

// remoteError is a control API failure: the server's message, wrapping the sentinel its code
// names.
type remoteError struct {
	msg string
	err error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.err }

func decode(r *http.Request, dst any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("%w: %w", errBadBody, err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Control is a client of a serving lab's control API.
type Control struct {
	url, token string
	hc         *http.Client
}

// DialControl reads DIR/lab.json and returns a client of that lab's control API.
func DialControl(dir string) (*Control, error) {
	s, err := ReadState(dir)
	if err != nil {
		return nil, err
	}
	if s.ControlURL == "" || s.ControlToken == "" {
		return nil, fmt.Errorf("%s has no control_url or control_token", filepath.Join(dir, StateFile))
	}
	return &Control{url: s.ControlURL, token: s.ControlToken, hc: &http.Client{Timeout: 10 * time.Minute}}, nil
}

// Write changes disk bytes (and journals them for CBT); it returns the extents written.
func (c *Control) Write(ctx context.Context, req WriteRequest) ([]Extent, error) {
	var res WriteResponse
	if err := c.call(ctx, "/v1/write", req, &res); err != nil {
		return nil, err
	}
	return res.Extents, nil
}

// Resize grows a disk to size bytes (rounded up to a whole MiB).
func (c *Control) Resize(ctx context.Context, vm, disk string, size int64) error {
	return c.call(ctx, "/v1/resize", ResizeRequest{VM: vm, Disk: disk, Size: size}, nil)
}

// ResetCBT gives a disk a new change-tracking UUID.
func (c *Control) ResetCBT(ctx context.Context, vm, disk string) error {
	return c.call(ctx, "/v1/reset-cbt", DiskRequest{VM: vm, Disk: disk}, nil)
}

func (c *Control) call(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("lab control %s: %w", path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("lab control %s: %w", path, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		var e controlError
		_ = json.NewDecoder(io.LimitReader(res.Body, 64<<10)).Decode(&e)
		for _, ec := range errorCodes {
			if ec.code == e.Code {
				return fmt.Errorf("lab control %s: %w", path, &remoteError{msg: e.Error, err: ec.err})
			}
		}
		return fmt.Errorf("lab control %s: %s: %s", path, res.Status, e.Error)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return fmt.Errorf("lab control %s: decode response: %w", path, err)
	}
	return nil
}
