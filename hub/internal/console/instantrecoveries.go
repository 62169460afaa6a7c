package console

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/sendense/sendense/hub/internal/instantrecovery"
	"github.com/sendense/sendense/shared/api"
)

// noInstantRecovery is the answer of a hub without an NFS listener, as the API's.
const noInstantRecovery = "instant recovery is not configured on this hub (set nfs_listen and nfs_address)"

var irStatuses = []string{api.IRStarting, api.IRRunning, api.IRStopping, api.IRStopped, api.IRFailed, api.IRMigrating, api.IRMigrated}

// irRow is a session with its overlay use as a share of its limit.
type irRow struct {
	api.InstantRecovery
	Active  bool // running or starting: may be stopped
	Running bool // may be migrated
}

// instantRecoveries lists the sessions (filtered by status as the API's list is) with their
// overlay use, and for operators their stop and migrate actions.
func (c *Console) instantRecoveries(w http.ResponseWriter, r *http.Request) {
	if c.d.InstantRecoveries == nil {
		c.render(w, r, http.StatusOK, "instantrecoveries", map[string]any{"Unavailable": noInstantRecovery, "Statuses": irStatuses})
		return
	}
	status := r.URL.Query().Get("status")
	if status != "" && !slices.Contains(irStatuses, status) {
		c.errorPage(w, r, http.StatusBadRequest, "status: must be starting, running, stopping, stopped, failed, migrating or migrated")
		return
	}
	l, err := c.d.InstantRecoveries.List(r.Context(), instantrecovery.ListFilter{Status: status, Limit: 200})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	rows := make([]irRow, 0, len(l.InstantRecoveries))
	for _, s := range l.InstantRecoveries {
		rows = append(rows, irRow{InstantRecovery: s, Active: s.Status == api.IRStarting || s.Status == api.IRRunning, Running: s.Status == api.IRRunning})
	}
	c.render(w, r, http.StatusOK, "instantrecoveries", map[string]any{"Sessions": rows, "Status": status, "Statuses": irStatuses})
}

// startInstantRecovery boots the backup's VM from the hub over NFS: host, name, a network map
// of old=new lines and power-on, as the CLI's flags.
func (c *Console) startInstantRecovery(w http.ResponseWriter, r *http.Request) {
	if c.d.InstantRecoveries == nil {
		c.errorPage(w, r, http.StatusServiceUnavailable, noInstantRecovery)
		return
	}
	req := api.InstantRecoveryRequest{BackupID: strings.TrimSpace(r.PostFormValue("backup_id")), Host: strings.TrimSpace(r.PostFormValue("host")),
		Name: strings.TrimSpace(r.PostFormValue("name")), Source: strings.TrimSpace(r.PostFormValue("source")), PowerOn: r.PostFormValue("power_on") != ""}
	for _, line := range strings.Split(r.PostFormValue("network_map"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		from, to, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(from) == "" || strings.TrimSpace(to) == "" {
			c.errorPage(w, r, http.StatusBadRequest, "network_map: each line must be old=new, got "+strconv.Quote(line))
			return
		}
		if req.NetworkMap == nil {
			req.NetworkMap = map[string]string{}
		}
		req.NetworkMap[strings.TrimSpace(from)] = strings.TrimSpace(to)
	}
	if err := req.Normalize(); err != nil {
		c.fail(w, r, err)
		return
	}
	if _, err := c.d.InstantRecoveries.Start(r.Context(), req); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/instant-recoveries", http.StatusSeeOther)
}

func (c *Console) stopInstantRecovery(w http.ResponseWriter, r *http.Request) {
	if c.d.InstantRecoveries == nil {
		c.errorPage(w, r, http.StatusServiceUnavailable, noInstantRecovery)
		return
	}
	if _, err := c.d.InstantRecoveries.Stop(r.Context(), r.PathValue("id")); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/instant-recoveries", http.StatusSeeOther)
}

// migrateInstantRecovery moves a running session's VM to a production datastore.
func (c *Console) migrateInstantRecovery(w http.ResponseWriter, r *http.Request) {
	if c.d.InstantRecoveries == nil {
		c.errorPage(w, r, http.StatusServiceUnavailable, noInstantRecovery)
		return
	}
	req := api.InstantRecoveryMigrateRequest{Datastore: strings.TrimSpace(r.PostFormValue("datastore"))}
	if _, err := c.d.InstantRecoveries.Migrate(r.Context(), r.PathValue("id"), req); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/instant-recoveries", http.StatusSeeOther)
}
