package console

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sendense/sendense/hub/internal/events"
	"github.com/sendense/sendense/hub/internal/identity"
	"github.com/sendense/sendense/hub/internal/inventory"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/hub/internal/schedule"
	"github.com/sendense/sendense/shared/api"
)

// Agents that have not sent a heartbeat for this long count as offline on the dashboard.
const agentOfflineAfter = 2 * time.Minute

// Certificates expiring within this window are listed on the dashboard.
const certWarning = 14 * 24 * time.Hour

type certInfo struct {
	Name     string
	NotAfter time.Time
}

type repoUse struct {
	api.Repository
	Backups int
	Bytes   int64
}

func (c *Console) dashboard(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := c.d.Now()
	vms, err := c.d.VMs.List(ctx, inventory.Filter{})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	unprot, err := c.d.Policies.Unprotected(ctx)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	overdue, err := c.d.Policies.OverdueVMs(ctx)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	live := 0
	for _, vm := range vms.VMs {
		if vm.CurrentStatus != api.VMGone && !vm.Template {
			live++
		}
	}
	recent, err := c.d.Backups.List(ctx, jobs.ListFilter{Since: now.Add(-24 * time.Hour), Limit: 10000})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	byStatus := map[string]int{}
	for _, b := range recent.Backups {
		byStatus[b.Status]++
	}
	all, err := c.d.Backups.List(ctx, jobs.ListFilter{Status: api.JobSucceeded, Limit: 100000})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var repos []repoUse
	if !identity.Allows(userOf(r).Role, api.RoleAdmin) {
		// The API shows repositories (their paths) to admins only; others see the total.
		u := repoUse{Repository: api.Repository{Name: "all repositories"}}
		for _, b := range all.Backups {
			u.Backups++
			u.Bytes += b.BytesSent
		}
		repos = append(repos, u)
	} else if rs, err := c.d.Repositories.Describe(ctx); err == nil {
		for _, rp := range rs {
			u := repoUse{Repository: rp}
			for _, b := range all.Backups {
				if b.Repository == rp.Name {
					u.Backups++
					u.Bytes += b.BytesSent
				}
			}
			repos = append(repos, u)
		}
	} else {
		c.fail(w, r, err)
		return
	}
	agents, err := c.d.Agents.Agents(ctx)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	online, offline := 0, 0
	var certs []certInfo
	for _, a := range agents {
		if a.Status != api.AgentActive {
			continue
		}
		if now.Sub(a.LastSeenAt) <= agentOfflineAfter {
			online++
		} else {
			offline++
		}
		if a.CertNotAfter.Sub(now) < certWarning {
			certs = append(certs, certInfo{Name: "agent " + a.ID + " (" + a.Name + ")", NotAfter: a.CertNotAfter})
		}
	}
	for name, t := range c.d.Certificates {
		if t.Sub(now) < certWarning {
			certs = append(certs, certInfo{Name: "hub " + name, NotAfter: t})
		}
	}
	sort.Slice(certs, func(i, j int) bool { return certs[i].NotAfter.Before(certs[j].NotAfter) })
	statuses := []string{api.JobQueued, api.JobRunning, api.JobSucceeded, api.JobFailed, api.JobCancelled}
	type count struct {
		Status string
		N      int
	}
	var jobCounts []count
	for _, s := range statuses {
		jobCounts = append(jobCounts, count{s, byStatus[s]})
	}
	c.render(w, r, http.StatusOK, "dashboard", map[string]any{
		"VMs": live, "Protected": live - len(unprot), "Unprotected": len(unprot), "Overdue": len(overdue),
		"Jobs": jobCounts, "Repos": repos, "Online": online, "Offline": offline, "Certs": certs,
	})
}

func (c *Console) vms(w http.ResponseWriter, r *http.Request) {
	q, status := strings.TrimSpace(r.FormValue("q")), r.FormValue("status")
	list, err := c.d.VMs.List(r.Context(), inventory.Filter{Status: status})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var out []api.VMContext
	for _, vm := range list.VMs {
		if q == "" || strings.Contains(strings.ToLower(vm.VMName), strings.ToLower(q)) || vm.ContextID == q {
			out = append(out, vm)
		}
	}
	c.render(w, r, http.StatusOK, "vms", map[string]any{"VMs": out, "Q": q, "Status": status,
		"Statuses": []string{api.VMDiscovered, api.VMProtected, api.VMGone}})
}

func (c *Console) vm(w http.ResponseWriter, r *http.Request) {
	vm, err := c.d.VMs.Show(r.Context(), r.PathValue("id"))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	bs, err := c.d.Backups.List(r.Context(), jobs.ListFilter{VM: vm.ContextID, Limit: 200})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "vm", map[string]any{"VM": vm, "Backups": bs.Backups})
}

type vmChain struct {
	VM      string
	Backups []api.Backup
}

func (c *Console) backups(w http.ResponseWriter, r *http.Request) {
	vm := strings.TrimSpace(r.FormValue("vm"))
	list, err := c.d.Backups.List(r.Context(), jobs.ListFilter{VM: vm, Status: r.FormValue("status"), Limit: 1000})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	// One chain per VM, oldest first, as restore points build on each other.
	idx := map[string]int{}
	var chains []vmChain
	for i := len(list.Backups) - 1; i >= 0; i-- {
		b := list.Backups[i]
		j, ok := idx[b.VMContextID]
		if !ok {
			j = len(chains)
			idx[b.VMContextID] = j
			chains = append(chains, vmChain{VM: b.VMName})
		}
		chains[j].Backups = append(chains[j].Backups, b)
	}
	c.render(w, r, http.StatusOK, "backups", map[string]any{"Chains": chains, "VM": vm, "Status": r.FormValue("status"),
		"Statuses": []string{api.JobQueued, api.JobRunning, api.JobSucceeded, api.JobFailed, api.JobCancelled}})
}

func (c *Console) backup(w http.ResponseWriter, r *http.Request) {
	c.showBackup(w, r, r.PathValue("id"), "")
}

// showBackup renders a backup's page with the result of a verify run just now ("": none). The
// result is never taken from the request: a link must not be able to show a backup as sound.
func (c *Console) showBackup(w http.ResponseWriter, r *http.Request, id, verified string) {
	b, err := c.d.Backups.Get(r.Context(), id)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	// The VM's source and datacenter are the defaults of a restore as a new VM.
	vm, _ := c.d.VMs.Show(r.Context(), b.VMContextID)
	rs, err := c.d.Restores.ListRestores(r.Context(), jobs.RestoreListFilter{BackupID: b.ID, Limit: 20})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "backup", map[string]any{"B": b, "VM": vm, "Verify": verified, "Restores": rs.Restores,
		"Active": b.Status == api.JobQueued || b.Status == api.JobRunning})
}

func (c *Console) startBackup(w http.ResponseWriter, r *http.Request) {
	req := api.StartBackupRequest{VM: r.PostFormValue("vm"), Type: r.PostFormValue("type")}
	if req.Type == "" {
		req.Type = api.BackupAuto
	}
	b, err := c.d.Backups.Start(r.Context(), req)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/jobs#job-"+b.ID, http.StatusSeeOther)
}

func (c *Console) protect(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := c.d.Backups.SetProtected(r.Context(), r.PathValue("id"), on)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		http.Redirect(w, r, "/backups/"+b.ID, http.StatusSeeOther)
	}
}

func (c *Console) deleteBackup(w http.ResponseWriter, r *http.Request) {
	if err := c.d.Backups.Delete(r.Context(), r.PathValue("id")); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/backups", http.StatusSeeOther)
}

func (c *Console) cancelBackup(w http.ResponseWriter, r *http.Request) {
	b, err := c.d.Backups.Cancel(r.Context(), r.PathValue("id"))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/jobs#job-"+b.ID, http.StatusSeeOther)
}

func (c *Console) verifyBackup(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rep, err := c.d.Verify.Run(r.Context(), id)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	result := fmt.Sprintf("sound: %d chunks verified in %s", rep.Chunks, rep.Duration.Round(time.Millisecond))
	if problems, bad := rep.DamagedBackups[id]; bad {
		result = fmt.Sprintf("DAMAGED: %s", strings.Join(problems, "; "))
	}
	for _, repo := range slices.Sorted(maps.Keys(rep.DamagedCopies[id])) {
		result += fmt.Sprintf("; DAMAGED copy in %s (the next copy run copies it again): %s", repo, strings.Join(rep.DamagedCopies[id][repo], "; "))
	}
	for _, repo := range slices.Sorted(maps.Keys(rep.Skipped)) {
		result += fmt.Sprintf("; copies in %s not verified: %s", repo, rep.Skipped[repo])
	}
	c.showBackup(w, r, id, result)
}

// image streams a disk of a restore point as a download. Every chunk is verified as it is read;
// damage cuts the response (the browser reports a failed download, never wrong bytes).
func (c *Console) image(w http.ResponseWriter, r *http.Request) {
	img, d, err := c.d.Images.Open(r.Context(), r.PathValue("id"), r.PathValue("disk"))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(d.Size, 10))
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", d.BackupID+"-"+d.DiskID+".img"))
	if _, err := img.Stream(r.Context(), w, 0, d.Size, 4); err != nil {
		c.d.Log.ErrorContext(r.Context(), "console image download cut", "backup_id", d.BackupID, "disk_id", d.DiskID, "err", err)
		panic(http.ErrAbortHandler) // the client must see a broken download, not a short image
	}
}

// jobRow is one job as the jobs page and its event stream show it.
type jobRow struct {
	ID         string  `json:"id"`
	VM         string  `json:"vm"`
	Type       string  `json:"type"`
	Status     string  `json:"status"`
	Phase      string  `json:"phase"`
	Percent    int     `json:"percent"`
	Read       string  `json:"read"`
	Throughput string  `json:"throughput"`
	ETA        string  `json:"eta"`
	Created    string  `json:"created"`
	Error      string  `json:"error,omitempty"`
	rate       float64 // bytes per second
}

func toJobRow(b api.Backup) jobRow {
	row := jobRow{ID: b.ID, VM: b.VMName, Type: b.Type, Status: b.Status, Phase: b.Phase, Read: humanBytes(b.BytesRead),
		Created: b.CreatedAt.UTC().Format("2006-01-02 15:04:05Z"), Error: b.Error, ETA: "—", Throughput: "—"}
	if row.Type == "" {
		row.Type = b.RequestedType
	}
	switch {
	case b.Status == api.JobSucceeded:
		row.Percent = 100
	case b.BytesTotal > 0:
		// 99 at most until the hub records the job succeeded: the last bytes are not the end.
		row.Percent = min(99, int(100*b.BytesRead/b.BytesTotal))
	}
	if b.Status == api.JobRunning && b.ThroughputBPS > 0 {
		row.Throughput = humanBytes(int64(b.ThroughputBPS)) + "/s"
		if left := b.BytesTotal - b.BytesRead; left > 0 {
			row.ETA = (time.Duration(float64(left)/b.ThroughputBPS) * time.Second).Round(time.Second).String()
		}
	} else if b.DurationSeconds > 0 && b.Status == api.JobSucceeded {
		row.Throughput = humanBytes(int64(float64(b.BytesRead)/b.DurationSeconds)) + "/s"
		row.ETA = "done"
	}
	return row
}

func (c *Console) jobRows(r *http.Request) ([]jobRow, error) {
	list, err := c.d.Backups.List(r.Context(), jobs.ListFilter{Limit: 50})
	if err != nil {
		return nil, err
	}
	rows := make([]jobRow, 0, len(list.Backups))
	for _, b := range list.Backups {
		rows = append(rows, toJobRow(b))
	}
	return rows, nil
}

func (c *Console) jobs(w http.ResponseWriter, r *http.Request) {
	rows, err := c.jobRows(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "jobs", map[string]any{"Jobs": rows})
}

// jobStream pushes the jobs table as server-sent events, once a second while it changes and a
// comment every 15 s otherwise, until the client goes away or its session ends (sign-out,
// expiry, the user removed), which it checks before every look.
func (c *Console) jobStream(w http.ResponseWriter, r *http.Request) {
	secret, _ := r.Context().Value(secretKey).(string)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last []byte
	idle := 0
	for {
		if _, err := c.d.Accounts.Session(r.Context(), secret); err != nil {
			return
		}
		rows, err := c.jobRows(r)
		if err != nil {
			if r.Context().Err() == nil {
				c.d.Log.WarnContext(r.Context(), "console job stream", "err", err)
			}
			return
		}
		b, _ := json.Marshal(rows)
		if string(b) != string(last) {
			last = b
			idle = 0
			if _, err := fmt.Fprintf(w, "event: jobs\ndata: %s\n\n", b); err != nil {
				return
			}
		} else if idle++; idle%15 == 0 {
			if _, err := fmt.Fprint(w, ": idle\n\n"); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

func (c *Console) policies(w http.ResponseWriter, r *http.Request) {
	ps, err := c.d.Policies.List(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "policies", map[string]any{"Policies": ps})
}

// nextRuns is the preview of a schedule: its next n run times, or why it does not parse.
func (c *Console) nextRuns(expr, tz string, n int) ([]string, string) {
	if expr == "" {
		return nil, ""
	}
	s, err := schedule.Parse(expr, tz)
	if err != nil {
		return nil, err.Error()
	}
	var out []string
	t := c.d.Now()
	for range n {
		t = s.Next(t)
		if t.IsZero() {
			break
		}
		out = append(out, t.Format("Mon 2006-01-02 15:04 MST"))
	}
	return out, ""
}

func policyFromForm(r *http.Request) (api.Policy, error) {
	p := api.Policy{
		Name: strings.TrimSpace(r.FormValue("name")), Enabled: r.FormValue("enabled") != "" || r.Method == http.MethodGet,
		VMGlob: strings.TrimSpace(r.FormValue("vm_glob")), Agent: strings.TrimSpace(r.FormValue("agent")),
		Repository: strings.TrimSpace(r.FormValue("repository")), Schedule: strings.TrimSpace(r.FormValue("schedule")),
		Timezone: strings.TrimSpace(r.FormValue("timezone")),
	}
	for _, v := range strings.FieldsFunc(r.FormValue("vms"), func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' }) {
		p.VMs = append(p.VMs, v)
	}
	ints := []struct {
		field string
		dst   *int
	}{
		{"keep_last", &p.Retention.KeepLast}, {"keep_hourly", &p.Retention.KeepHourly}, {"keep_daily", &p.Retention.KeepDaily},
		{"keep_weekly", &p.Retention.KeepWeekly}, {"keep_monthly", &p.Retention.KeepMonthly}, {"keep_yearly", &p.Retention.KeepYearly},
		{"full_every_incrementals", &p.FullEveryIncrementals}, {"full_every_days", &p.FullEveryDays},
	}
	for _, f := range ints {
		v := strings.TrimSpace(r.FormValue(f.field))
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return p, &api.FieldError{Field: f.field, Msg: fmt.Sprintf("%q is not a whole number", v)}
		}
		*f.dst = n
	}
	return p, nil
}

// policyForm shows the form for a new policy, or for the one named by ?edit=; the form's
// Preview button sends it here by GET to show the next runs of the schedule typed so far.
func (c *Console) policyForm(w http.ResponseWriter, r *http.Request) {
	p := api.Policy{Enabled: true, Schedule: "0 3 * * *", Retention: api.Retention{KeepDaily: 7, KeepWeekly: 4}}
	edit := r.FormValue("edit")
	if edit != "" {
		var err error
		if p, err = c.d.Policies.Get(r.Context(), edit); err != nil {
			c.fail(w, r, err)
			return
		}
	}
	if r.FormValue("schedule") != "" {
		var err error
		if p, err = policyFromForm(r); err != nil {
			c.fail(w, r, err)
			return
		}
	}
	runs, schedErr := c.nextRuns(p.Schedule, p.Timezone, 5)
	c.render(w, r, http.StatusOK, "policy", map[string]any{"P": p, "Edit": edit, "Runs": runs, "ScheduleError": schedErr, "VMList": strings.Join(p.VMs, ", ")})
}

func (c *Console) policyPage(w http.ResponseWriter, r *http.Request) {
	p, err := c.d.Policies.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	runs, schedErr := c.nextRuns(p.Schedule, p.Timezone, 5)
	rep, err := c.d.Policies.Prune(r.Context(), policy.PruneOptions{Policy: p.Name, DryRun: true})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "policy", map[string]any{"P": p, "Edit": p.Name, "Show": true, "Runs": runs, "ScheduleError": schedErr,
		"Decisions": rep.Decisions, "VMList": strings.Join(p.VMs, ", ")})
}

func (c *Console) savePolicy(w http.ResponseWriter, r *http.Request) {
	in, err := policyFromForm(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var p api.Policy
	if name := r.PathValue("name"); name != "" {
		p, err = c.d.Policies.Update(r.Context(), name, in)
	} else {
		p, err = c.d.Policies.Create(r.Context(), in)
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/policies/"+urlPathEscape(p.Name), http.StatusSeeOther)
}

func (c *Console) deletePolicy(w http.ResponseWriter, r *http.Request) {
	if err := c.d.Policies.Delete(r.Context(), r.PathValue("name")); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/policies", http.StatusSeeOther)
}

func (c *Console) agentsData(r *http.Request) (map[string]any, error) {
	as, err := c.d.Agents.Agents(r.Context())
	if err != nil {
		return nil, err
	}
	now := c.d.Now()
	type row struct {
		api.Agent
		Online bool
	}
	rows := make([]row, 0, len(as))
	for _, a := range as {
		rows = append(rows, row{a, a.Status == api.AgentActive && now.Sub(a.LastSeenAt) <= agentOfflineAfter})
	}
	return map[string]any{"Agents": rows}, nil
}

func (c *Console) agents(w http.ResponseWriter, r *http.Request) {
	data, err := c.agentsData(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "agents", data)
}

// createJoinToken shows the new token once, in the answer to the POST: it is stored hashed,
// and a reload (which would re-post) asks the browser first.
func (c *Console) createJoinToken(w http.ResponseWriter, r *http.Request) {
	ttl := time.Hour
	if v := strings.TrimSpace(r.PostFormValue("ttl")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			c.fail(w, r, &api.FieldError{Field: "ttl", Msg: fmt.Sprintf("%q is not a duration such as 1h or 30m", v)})
			return
		}
		ttl = d
	}
	token, info, err := c.d.Agents.CreateJoinToken(r.Context(), strings.TrimSpace(r.PostFormValue("name")), ttl)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	data, err := c.agentsData(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	data["Token"], data["TokenInfo"] = token, info
	c.render(w, r, http.StatusCreated, "agents", data)
}

func (c *Console) revokeAgent(w http.ResponseWriter, r *http.Request) {
	if err := c.d.Agents.RevokeAgent(r.Context(), r.PathValue("id")); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/agents", http.StatusSeeOther)
}

func (c *Console) repositories(w http.ResponseWriter, r *http.Request) {
	rs, err := c.d.Repositories.Describe(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "repositories", map[string]any{"Repos": rs})
}

func (c *Console) eventsPage(w http.ResponseWriter, r *http.Request) {
	f := events.Filter{VM: strings.TrimSpace(r.FormValue("vm")), Type: r.FormValue("type"), Limit: 200}
	list, err := c.d.Events.List(r.Context(), f)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	types := slices.Clone(api.EventTypes)
	sort.Strings(types)
	c.render(w, r, http.StatusOK, "events", map[string]any{"Events": list.Events, "VM": f.VM, "Type": f.Type, "Types": types})
}

// startRestore queues a restore of the backup as a new VM or, with in_place, over its VM; the
// restore service validates the request as it does the API's.
func (c *Console) startRestore(w http.ResponseWriter, r *http.Request) {
	req := api.RestoreRequest{BackupID: r.PathValue("id"), PowerOn: r.PostFormValue("power_on") != ""}
	if r.PostFormValue("in_place") != "" {
		req.InPlace, req.Confirm = true, strings.TrimSpace(r.PostFormValue("confirm"))
	} else {
		req.Target = api.RestoreTarget{
			Source: strings.TrimSpace(r.PostFormValue("source")), Datacenter: strings.TrimSpace(r.PostFormValue("datacenter")),
			Datastore: strings.TrimSpace(r.PostFormValue("datastore")), Name: strings.TrimSpace(r.PostFormValue("name")),
			Folder: strings.TrimSpace(r.PostFormValue("folder")), Cluster: strings.TrimSpace(r.PostFormValue("cluster")),
			Host: strings.TrimSpace(r.PostFormValue("host")), ResourcePool: strings.TrimSpace(r.PostFormValue("resource_pool")),
		}
		if r.PostFormValue("thick") != "" {
			req.DiskProvisioning = "thick"
		}
		if r.PostFormValue("keep_macs") != "" {
			req.MACAddresses = "keep"
		}
	}
	if _, err := c.d.Restores.StartRestore(r.Context(), req); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/restores", http.StatusSeeOther)
}

func (c *Console) restores(w http.ResponseWriter, r *http.Request) {
	rs, err := c.d.Restores.ListRestores(r.Context(), jobs.RestoreListFilter{Status: r.FormValue("status"), Limit: 100})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "restores", map[string]any{"Restores": rs.Restores})
}

func (c *Console) cancelRestore(w http.ResponseWriter, r *http.Request) {
	if _, err := c.d.Restores.CancelRestore(r.Context(), r.PathValue("id")); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/restores", http.StatusSeeOther)
}
