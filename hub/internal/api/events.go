package api

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/events"
	"github.com/sendense/sendense/shared/api"
)

// eventService records and lists events.
type eventService interface {
	// List returns the events matching f, newest first; an invalid filter is an *api.FieldError.
	List(ctx context.Context, f events.Filter) (api.EventList, error)
	// Record stores one event; a zero At is the current time.
	Record(ctx context.Context, e api.Event) error
}

func (s *Server) registerEvents(v1 *gin.RouterGroup) {
	v1.GET(rel(v1, api.PathEvents), s.requireRole(api.RoleViewer), s.listEvents)
}

func (s *Server) listEvents(c *gin.Context) {
	limit, offset, err := pagination(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	f := events.Filter{VM: c.Query("vm"), Type: c.Query("type"), Limit: limit, Offset: offset}
	if v := c.Query("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			s.fail(c, &api.FieldError{Field: "since", Msg: "must be an RFC 3339 time such as 2026-01-02T15:04:05Z"})
			return
		}
		f.Since = t
	}
	list, err := s.deps.Events.List(c.Request.Context(), f)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, list)
}
