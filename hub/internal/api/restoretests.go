package api

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/restoretest"
	"github.com/sendense/sendense/shared/api"
)

// restoreTestService starts and lists restore tests; Start queues a test for the hub's runner.
type restoreTestService interface {
	Start(ctx context.Context, req api.StartRestoreTestRequest, actor string) (api.RestoreTest, error)
	Get(ctx context.Context, id string) (api.RestoreTest, error)
	List(ctx context.Context, f restoretest.Filter) (api.RestoreTestList, error)
	Report(ctx context.Context, from, to time.Time) (api.RestoreTestReport, error)
}

func (s *Server) registerRestoreTests(v1 *gin.RouterGroup) {
	v1.POST(rel(v1, api.PathRestoreTests), s.requireRole(api.RoleOperator), s.startRestoreTest)
	v1.GET(rel(v1, api.PathRestoreTests), s.requireRole(api.RoleViewer), s.listRestoreTests)
	v1.GET(rel(v1, api.PathRestoreTest), s.requireRole(api.RoleViewer), s.getRestoreTest)
	v1.GET(rel(v1, api.PathReportRestoreTests), s.requireRole(api.RoleViewer), s.restoreTestReport)
}

func (s *Server) startRestoreTest(c *gin.Context) {
	var req api.StartRestoreTestRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	actor := c.GetString(ctxTokenName)
	if actor == "" {
		actor = "api"
	}
	t, err := s.deps.RestoreTests.Start(c.Request.Context(), req, actor)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusAccepted, t)
}

func (s *Server) listRestoreTests(c *gin.Context) {
	limit, offset, err := pagination(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	f := restoretest.Filter{VM: c.Query("vm"), Result: c.Query("result"), Limit: limit, Offset: offset}
	if v := c.Query("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			s.fail(c, &api.FieldError{Field: "since", Msg: "must be an RFC 3339 time like 2026-11-26T00:00:00Z"})
			return
		}
		f.Since = t
	}
	l, err := s.deps.RestoreTests.List(c.Request.Context(), f)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, l)
}

func (s *Server) getRestoreTest(c *gin.Context) {
	t, err := s.deps.RestoreTests.Get(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, t)
}

// restoreTestReport answers the restore tests of a period by VM, as `report restore-tests`
// prints them.
func (s *Server) restoreTestReport(c *gin.Context) {
	to := time.Now()
	if v := c.Query("to"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			s.fail(c, &api.FieldError{Field: "to", Msg: "must be an RFC 3339 time like 2026-11-26T00:00:00Z"})
			return
		}
		to = t
	}
	from := to.AddDate(0, 0, -30)
	if v := c.Query("from"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			s.fail(c, &api.FieldError{Field: "from", Msg: "must be an RFC 3339 time like 2026-11-26T00:00:00Z"})
			return
		}
		from = t
	}
	if from.After(to) {
		s.fail(c, &api.FieldError{Field: "from", Msg: "must not be after to"})
		return
	}
	rep, err := s.deps.RestoreTests.Report(c.Request.Context(), from, to)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, rep)
}
