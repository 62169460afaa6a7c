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
