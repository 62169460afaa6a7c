package console

import (
	"net/http"
	"strings"

	"github.com/sendense/sendense/hub/internal/restoretest"
	"github.com/sendense/sendense/shared/api"
)

// reportDays is the period of the restore-test report the page shows.
const reportDays = 30

// restoreTests lists restore tests with their results (filtered by VM and result as the API's
// list is), the report of the last 30 days by VM, and for operators the form that starts one.
func (c *Console) restoreTests(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	l, err := c.d.RestoreTests.List(ctx, restoretest.Filter{VM: q.Get("vm"), Result: q.Get("result"), Limit: 200})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	to := c.d.Now()
	rep, err := c.d.RestoreTests.Report(ctx, to.AddDate(0, 0, -reportDays), to)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "restoretests", map[string]any{
		"Tests": l.RestoreTests, "Report": rep, "Days": reportDays, "VM": q.Get("vm"), "Result": q.Get("result"),
		"Checks": api.RestoreTestChecks,
	})
}

// restoreTestPage shows one restore test with its checks and evidence.
func (c *Console) restoreTestPage(w http.ResponseWriter, r *http.Request) {
	t, err := c.d.RestoreTests.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "restoretest", map[string]any{"T": t})
}

// startRestoreTest queues a restore test of a VM's latest (or the named) restore point with the
// checks ticked; the paths check takes one path per line. The test is recorded as started by
// console:USER, the API's tests by their token's name.
func (c *Console) startRestoreTest(w http.ResponseWriter, r *http.Request) {
	req := api.StartRestoreTestRequest{VM: strings.TrimSpace(r.PostFormValue("vm")), BackupID: strings.TrimSpace(r.PostFormValue("backup_id"))}
	req.Checks = r.PostForm["check"]
	for _, line := range strings.Split(r.PostFormValue("paths"), "\n") {
		if p := strings.TrimSpace(line); p != "" {
			req.Paths = append(req.Paths, p)
		}
	}
	t, err := c.d.RestoreTests.Start(r.Context(), req, "console:"+userOf(r).Name)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/restore-tests/"+t.ID, http.StatusSeeOther)
}
