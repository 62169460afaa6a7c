package api

import "testing"

func TestPath(t *testing.T) {
	for _, tc := range []struct {
		route  string
		params []string
		want   string
	}{
		{PathBackups, nil, "/api/v1/backups"},
		{PathAgentOpenSess, []string{"bk-1", "disk-2000"}, "/api/v1/agent/jobs/bk-1/disks/disk-2000/session"},
		{PathAgentChunk, []string{"us-1", "ab/c d"}, "/api/v1/agent/sessions/us-1/chunks/ab%2Fc%20d"},
	} {
		if got := Path(tc.route, tc.params...); got != tc.want {
			t.Errorf("Path(%q, %q) = %q, want %q", tc.route, tc.params, got, tc.want)
		}
	}
	for _, bad := range [][]string{nil, {"a", "b", "c"}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Path with %d parameters for 2 braces did not panic", len(bad))
				}
			}()
			Path(PathAgentOpenSess, bad...)
		}()
	}
}
