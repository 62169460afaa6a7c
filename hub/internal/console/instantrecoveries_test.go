package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/instantrecovery"
	wire "github.com/sendense/sendense/shared/api"
)

// sessions is an in-memory instant-recovery service: one running session ir-1 and what it was
// asked to do.
type sessions struct {
	mu       sync.Mutex
	started  []wire.InstantRecoveryRequest
	stopped  []string
	migrated []string
	filter   string
}

func (s *sessions) Start(_ context.Context, req wire.InstantRecoveryRequest) (wire.InstantRecovery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started = append(s.started, req)
	return wire.InstantRecovery{ID: "ir-2", Status: wire.IRStarting}, nil
}
func (s *sessions) List(_ context.Context, f instantrecovery.ListFilter) (wire.InstantRecoveryList, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.filter = f.Status
	return wire.InstantRecoveryList{InstantRecoveries: []wire.InstantRecovery{
		{ID: "ir-1", Status: wire.IRRunning, BackupID: "bk-7", Host: "esx1.lab", Name: "pgtest1-ir", NFSExport: "10.0.0.1:/ir-1",
			OverlayBytes: 256 << 20, OverlayLimitBytes: 1 << 30},
		{ID: "ir-0", Status: wire.IRStopped, BackupID: "bk-6", Host: "esx1.lab", Name: "old-ir"}}}, nil
}
func (s *sessions) Stop(_ context.Context, id string) (wire.InstantRecovery, error) {
	if id != "ir-1" {
		return wire.InstantRecovery{}, fmt.Errorf("instant recovery %s: %w", id, catalog.ErrNotFound)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = append(s.stopped, id)
	return wire.InstantRecovery{ID: id, Status: wire.IRStopping}, nil
}
func (s *sessions) Migrate(_ context.Context, id string, req wire.InstantRecoveryMigrateRequest) (wire.InstantRecovery, error) {
	if req.Datastore == "" {
		return wire.InstantRecovery{}, &wire.FieldError{Field: "datastore", Msg: "must name a datastore"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.migrated = append(s.migrated, id+"→"+req.Datastore)
	return wire.InstantRecovery{ID: id, Status: wire.IRMigrating}, nil
}
func (s *sessions) changes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.started) + len(s.stopped) + len(s.migrated)
}

func TestConsoleInstantRecovery(t *testing.T) {
	for _, dialect := range catalogtest.Dialects {
		t.Run(dialect, func(t *testing.T) { instantRecoveryCases(t, dialect) })
	}
}

func instantRecoveryCases(t *testing.T, dialect string) {
	t.Run("sessions list with status and overlay use; an operator starts, stops and migrates", func(t *testing.T) {
		e := newEnv(t, dialect)
		ir := &sessions{}
		e.console.SetInstantRecoveries(ir)
		cl := e.client(t)
		e.login(t, cl, "olga", password)
		r, page := get(t, cl, e.srv.URL+"/instant-recoveries?status=running")
		for _, want := range []string{"pgtest1-ir", "256.0 MiB of 1.0 GiB (25 %)", "10.0.0.1:/ir-1", `action="/instant-recoveries/ir-1/stop"`,
			`action="/instant-recoveries/ir-1/migrate"`, `<label for="ir-ds-ir-1">Migrate pgtest1-ir to datastore</label>`} {
			if !strings.Contains(page, want) {
				t.Fatalf("sessions page: %d, no %q in\n%s", r.StatusCode, want, page)
			}
		}
		if strings.Contains(page, "/instant-recoveries/ir-0/stop") {
			t.Fatal("a stopped session is offered a stop")
		}
		if ir.filter != "running" {
			t.Fatalf("status filter %q, want running", ir.filter)
		}
		if r, body := get(t, cl, e.srv.URL+"/instant-recoveries?status=sleeping"); r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "status: must be") {
			t.Fatalf("unknown status: %d, want 400 naming the field", r.StatusCode)
		}
		tok := csrfOf(t, page)
		r, _ = post(t, cl, e.srv.URL+"/instant-recoveries", url.Values{"csrf_token": {tok}, "backup_id": {"bk-7"}, "host": {"esx1.lab"}, "name": {"pgtest1-ir2"},
			"network_map": {"VM Network = isolated\r\n\r\nbackend=isolated-2\n"}, "power_on": {"1"}})
		if r.StatusCode != http.StatusSeeOther || len(ir.started) != 1 {
			t.Fatalf("start: %d, %d started", r.StatusCode, len(ir.started))
		}
		got := ir.started[0]
		if got.BackupID != "bk-7" || got.Host != "esx1.lab" || got.Name != "pgtest1-ir2" || !got.PowerOn ||
			len(got.NetworkMap) != 2 || got.NetworkMap["VM Network"] != "isolated" || got.NetworkMap["backend"] != "isolated-2" {
			t.Fatalf("started %+v", got)
		}
		if r, body := post(t, cl, e.srv.URL+"/instant-recoveries", url.Values{"csrf_token": {tok}, "backup_id": {"bk-7"}, "host": {"esx1.lab"}, "name": {"x"},
			"network_map": {"no equals sign"}}); r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "network_map") {
			t.Fatalf("bad network map: %d, want 400 naming network_map", r.StatusCode)
		}
		if r, body := post(t, cl, e.srv.URL+"/instant-recoveries", url.Values{"csrf_token": {tok}, "backup_id": {"bk-7"}, "name": {"x"}}); r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "host") {
			t.Fatalf("no host: %d, want 400 naming host", r.StatusCode)
		}
		if r, _ := post(t, cl, e.srv.URL+"/instant-recoveries/ir-1/migrate", url.Values{"csrf_token": {tok}, "datastore": {"prod-ds"}}); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("migrate: %d", r.StatusCode)
		}
		if r, _ := post(t, cl, e.srv.URL+"/instant-recoveries/ir-1/stop", url.Values{"csrf_token": {tok}}); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("stop: %d", r.StatusCode)
		}
		if r, _ := post(t, cl, e.srv.URL+"/instant-recoveries/ir-9/stop", url.Values{"csrf_token": {tok}}); r.StatusCode != http.StatusNotFound {
			t.Fatalf("stop of an unknown session: %d, want 404", r.StatusCode)
		}
		if len(ir.stopped) != 1 || len(ir.migrated) != 1 || ir.migrated[0] != "ir-1→prod-ds" {
			t.Fatalf("stopped %v, migrated %v", ir.stopped, ir.migrated)
		}
		if ev := auditOf(t, e, "/instant-recoveries/{id}/stop"); len(ev) != 2 || ev[0].Outcome != "404" || ev[1].Outcome != "303" || ev[1].Actor != "console:olga" {
			t.Fatalf("audit of the stops: %+v", ev)
		}
	})
	t.Run("a viewer sees sessions, no actions, and is refused changes; CSRF is needed", func(t *testing.T) {
		e := newEnv(t, dialect)
		ir := &sessions{}
		e.console.SetInstantRecoveries(ir)
		viewer := e.client(t)
		e.login(t, viewer, "vera", password)
		_, page := get(t, viewer, e.srv.URL+"/instant-recoveries")
		if !strings.Contains(page, "pgtest1-ir") || strings.Contains(page, "/instant-recoveries/ir-1/stop") || strings.Contains(page, "/migrate") {
			t.Fatalf("viewer's sessions page:\n%s", page)
		}
		tok := csrfOf(t, page)
		for path, form := range map[string]url.Values{
			"/instant-recoveries":              {"backup_id": {"bk-7"}, "host": {"esx1.lab"}, "name": {"x"}},
			"/instant-recoveries/ir-1/stop":    {},
			"/instant-recoveries/ir-1/migrate": {"datastore": {"prod-ds"}},
		} {
			form.Set("csrf_token", tok)
			if r, body := post(t, viewer, e.srv.URL+path, form); r.StatusCode != http.StatusForbidden || !strings.Contains(body, "operator role is needed") {
				t.Fatalf("viewer's POST %s: %d, want 403 naming the role", path, r.StatusCode)
			}
		}
		op := e.client(t)
		e.login(t, op, "olga", password)
		if r, body := post(t, op, e.srv.URL+"/instant-recoveries/ir-1/stop", url.Values{"csrf_token": {"forged"}}); r.StatusCode != http.StatusForbidden || !strings.Contains(body, "CSRF") {
			t.Fatalf("stop with a forged CSRF token: %d, want 403 naming CSRF", r.StatusCode)
		}
		if ir.changes() != 0 {
			t.Fatal("a session changed on a refused request")
		}
	})
	t.Run("a hub without NFS says instant recovery is not configured", func(t *testing.T) {
		e := newEnv(t, dialect)
		cl := e.client(t)
		e.login(t, cl, "olga", password)
		r, page := get(t, cl, e.srv.URL+"/instant-recoveries")
		if r.StatusCode != http.StatusOK || !strings.Contains(page, "not configured on this hub (set nfs_listen and nfs_address)") {
			t.Fatalf("sessions page without NFS: %d\n%s", r.StatusCode, page)
		}
		if r, body := post(t, cl, e.srv.URL+"/instant-recoveries", url.Values{"csrf_token": {csrfOf(t, page)}, "backup_id": {"bk-7"}, "host": {"h"}, "name": {"n"}}); r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "nfs_listen") {
			t.Fatalf("start without NFS: %d, want 503 naming nfs_listen", r.StatusCode)
		}
	})
}
