package lab

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// serveLab runs Serve for a test and returns its state; the lab stops with the test, and the
// returned function stops it early and returns Serve's error.
func serveLab(t *testing.T, dir string, spec Spec) (State, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	ready := make(chan State, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, spec, ServeOptions{Options: Options{Dir: dir}, Ready: func(s State) { ready <- s }})
	}()
	stopped := false
	var serveErr error
	stop := func() error {
		if !stopped {
			cancel()
			serveErr = <-done
			stopped = true
		}
		return serveErr
	}
	t.Cleanup(func() { _ = stop() })
	select {
	case st := <-ready:
		return st, stop
	case err := <-done:
		stopped = true
		t.Fatalf("serve: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("lab not ready within a minute")
	}
	return State{}, stop
}

func TestServeControlAPI(t *testing.T) {
	requireHoles(t)
	dir := t.TempDir()
	spec := Spec{VMs: []VMSpec{{Name: "svc", CBT: true, Disks: []DiskSpec{{Size: "256MiB"}, {Size: "8MiB", Fill: FillRandom}}}}}
	st, stop := serveLab(t, dir, spec)
	ctx := t.Context()

	onDisk, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(onDisk, st) || len(st.VMs) != 1 || len(st.VMs[0].Disks) != 2 || st.PID != os.Getpid() {
		t.Fatalf("lab.json %+v, Ready got %+v", onDisk, st)
	}
	for _, f := range []string{StateFile, PasswordFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, fi.Mode().Perm())
		}
	}
	if pw, _ := os.ReadFile(st.PasswordFile); strings.TrimSpace(string(pw)) != st.Password || st.Password == "" {
		t.Error("password file does not hold the password")
	}

	c, err := DialControl(dir)
	if err != nil {
		t.Fatal(err)
	}
	es, err := c.Write(ctx, WriteRequest{VM: "svc", Disk: "disk-2000", Percent: 4, Seed: 3})
	if err != nil {
		t.Fatalf("write percent: %v", err)
	}
	if want := percentExtents(256<<20, 4, 3); !reflect.DeepEqual(es, want) {
		t.Errorf("write percent extents %v, want %v", es, want)
	}
	flat := st.VMs[0].Disks[0].FlatPath
	f, err := os.Open(flat)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, _ := dataExtents(f, 0, 256<<20); !reflect.DeepEqual(got, es) {
		t.Errorf("disk allocated %v after the write, want %v", got, es)
	}
	es, err = c.Write(ctx, WriteRequest{VM: "svc", Disk: "disk-2001", Offset: 4096, Length: 8192, Seed: 1})
	if err != nil || !reflect.DeepEqual(es, []Extent{{Offset: 4096, Length: 8192}}) {
		t.Errorf("write at offset: %v, %v", es, err)
	}
	if err := c.Resize(ctx, "svc", "disk-2001", 16<<20); err != nil {
		t.Fatalf("resize: %v", err)
	}
	if after, _ := ReadState(dir); after.VMs[0].Disks[1].CapacityBytes != 16<<20 {
		t.Errorf("lab.json after resize: %+v", after.VMs[0].Disks[1])
	}
	if err := c.ResetCBT(ctx, "svc", "disk-2000"); err != nil {
		t.Errorf("reset cbt: %v", err)
	}

	errTests := []struct {
		name string
		err  error
		want error
	}{
		{"unknown vm", errOf(c.Write(ctx, WriteRequest{VM: "nope", Disk: "disk-2000", Percent: 1})), ErrVMNotFound},
		{"unknown disk", c.ResetCBT(ctx, "svc", "disk-2999"), ErrDiskNotFound},
		{"outside the disk", errOf(c.Write(ctx, WriteRequest{VM: "svc", Disk: "disk-2001", Offset: 16 << 20, Length: 1})), ErrOutOfRange},
		{"no length", errOf(c.Write(ctx, WriteRequest{VM: "svc", Disk: "disk-2001"})), ErrOutOfRange},
		{"shrink", c.Resize(ctx, "svc", "disk-2001", 1<<20), ErrShrink},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, tt.want) {
				t.Errorf("error %v, want %v", tt.err, tt.want)
			}
		})
	}

	// The token guards the control API.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, st.ControlURL+"/v1/reset-cbt", strings.NewReader(`{"vm":"svc","disk":"disk-2000"}`))
	req.Header.Set("Authorization", "Bearer wrong")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong token: %s, want 401", res.Status)
	}

	if err := stop(); err != nil {
		t.Fatalf("serve returned %v after cancel", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("serve left %v in its directory", names)
	}
}
