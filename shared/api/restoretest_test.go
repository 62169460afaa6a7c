package api

import (
	"errors"
	"strings"
	"testing"
)

func TestSplitTestPath(t *testing.T) {
	for _, c := range []struct {
		in, disk, path string
	}{
		{"/p1/etc/hosts", "", "/p1/etc/hosts"},
		{"disk-2000:/p1/etc/hosts", "disk-2000", "/p1/etc/hosts"},
		{"disk-31000:/p2", "disk-31000", "/p2"},
		{"/p1/odd:name/Ünïcödé 🙂", "", "/p1/odd:name/Ünïcödé 🙂"},
	} {
		d, p, err := SplitTestPath(c.in)
		if err != nil || d != c.disk || p != c.path {
			t.Errorf("SplitTestPath(%q) = %q, %q, %v; want %q, %q", c.in, d, p, err, c.disk, c.path)
		}
	}
	for _, bad := range []string{
		"", "/", "p1/etc/hosts", "etc/hosts", "disk-2000", "disk-2000:", "disk-2000:p1/etc", "disk-02000:/p1", "disk-0:/p1",
		"disk-x:/p1", "disk-99999999999:/p1", "Disk-2000:/p1", "c:/p1", "/p1//etc", "/p1/etc/", "/p1/./etc", "/p1/../p2",
		"/p1/a\x00b", "/p1/a\nb", "/p1/\u202eevil", "/p1/\xff", "/p1/" + strings.Repeat("x", MaxRestoreTestPathLen),
	} {
		if d, p, err := SplitTestPath(bad); err == nil {
			t.Errorf("SplitTestPath(%q) accepted: %q, %q", bad, d, p)
		}
	}
}

func TestValidatePaths(t *testing.T) {
	many := make([]string, MaxRestoreTestPaths+1)
	for i := range many {
		many[i] = "/p1/f" + strings.Repeat("x", i)
	}
	paths := []string{CheckRead, CheckPaths}
	for _, c := range []struct {
		name   string
		checks []string
		paths  []string
		field  string // "" when valid
	}{
		{"read alone", []string{CheckRead}, nil, ""},
		{"paths", paths, []string{"/p1/etc/hosts", "disk-2001:/p1/data"}, ""},
		{"the paths check without paths", paths, nil, "paths"},
		{"paths without the check", []string{CheckRead}, []string{"/p1/etc/hosts"}, "paths"},
		{"too many", paths, many, "paths"},
		{"a bad one", paths, []string{"/p1/etc/hosts", "etc/fstab"}, "paths[1]"},
		{"twice", paths, []string{"/p1/etc/hosts", "/p1/etc/hosts"}, "paths[1]"},
	} {
		err := ValidatePaths("paths", c.checks, c.paths)
		var fe *FieldError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field):
			t.Errorf("%s: %v, want a FieldError naming %s", c.name, err, c.field)
		}
	}
}

func TestBootWaitValidate(t *testing.T) {
	for _, c := range []struct {
		w     InstantRecoveryBootWait
		field string
	}{
		{InstantRecoveryBootWait{TimeoutSeconds: 600}, ""},
		{InstantRecoveryBootWait{TCPPort: 22, TimeoutSeconds: 60}, ""},
		{InstantRecoveryBootWait{TCPPort: 65536, TimeoutSeconds: 60}, "tcp_port"},
		{InstantRecoveryBootWait{TCPPort: -1, TimeoutSeconds: 60}, "tcp_port"},
		{InstantRecoveryBootWait{}, "timeout_seconds"},
		{InstantRecoveryBootWait{TimeoutSeconds: 86401}, "timeout_seconds"},
	} {
		err := c.w.Validate()
		var fe *FieldError
		if c.field == "" && err != nil || c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field) {
			t.Errorf("%+v: %v, want field %q", c.w, err, c.field)
		}
	}
}

func TestNormalizeBoot(t *testing.T) {
	boot := []string{CheckRead, CheckBoot}
	for _, c := range []struct {
		name    string
		checks  []string
		in      RestoreTestBoot
		field   string // "" when valid
		timeout string // normalized, when valid
	}{
		{"defaults", boot, RestoreTestBoot{Host: "esx1", Network: "isolated"}, "", "10m0s"},
		{"a port and a timeout", boot, RestoreTestBoot{Host: "esx1", Network: "isolated", TCPPort: 22, BootTimeout: "90s"}, "", "1m30s"},
		{"the longest wait", boot, RestoreTestBoot{Host: "esx1", Network: "n", BootTimeout: "1h"}, "", "1h0m0s"},
		{"no host", boot, RestoreTestBoot{Network: "isolated"}, "host", ""},
		{"no network", boot, RestoreTestBoot{Host: "esx1"}, "network", ""},
		{"a control character", boot, RestoreTestBoot{Host: "esx\n1", Network: "n"}, "host", ""},
		{"port 0 is unset", boot, RestoreTestBoot{Host: "esx1", Network: "n", TCPPort: 0}, "", "10m0s"},
		{"port too big", boot, RestoreTestBoot{Host: "esx1", Network: "n", TCPPort: 65536}, "tcp_port", ""},
		{"negative port", boot, RestoreTestBoot{Host: "esx1", Network: "n", TCPPort: -1}, "tcp_port", ""},
		{"zero timeout", boot, RestoreTestBoot{Host: "esx1", Network: "n", BootTimeout: "0s"}, "boot_timeout", ""},
		{"negative timeout", boot, RestoreTestBoot{Host: "esx1", Network: "n", BootTimeout: "-5m"}, "boot_timeout", ""},
		{"over an hour", boot, RestoreTestBoot{Host: "esx1", Network: "n", BootTimeout: "61m"}, "boot_timeout", ""},
		{"not a duration", boot, RestoreTestBoot{Host: "esx1", Network: "n", BootTimeout: "10"}, "boot_timeout", ""},
		{"part of a second", boot, RestoreTestBoot{Host: "esx1", Network: "n", BootTimeout: "1500ms"}, "boot_timeout", ""},
		{"nothing without boot", []string{CheckRead}, RestoreTestBoot{}, "", ""},
		{"host without boot", []string{CheckRead}, RestoreTestBoot{Host: "esx1"}, "host", ""},
		{"network without boot", []string{CheckRead}, RestoreTestBoot{Network: "n"}, "network", ""},
		{"port without boot", []string{CheckPaths}, RestoreTestBoot{TCPPort: 22}, "tcp_port", ""},
		{"timeout without boot", nil, RestoreTestBoot{BootTimeout: "5m"}, "boot_timeout", ""},
	} {
		b := c.in
		err := b.NormalizeBoot(c.checks)
		var fe *FieldError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.field == "" && b.BootTimeout != c.timeout:
			t.Errorf("%s: boot_timeout %q, want %q", c.name, b.BootTimeout, c.timeout)
		case c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field):
			t.Errorf("%s: %v, want a FieldError naming %s", c.name, err, c.field)
		}
	}
}
