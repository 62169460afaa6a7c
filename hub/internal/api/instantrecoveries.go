package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/instantrecovery"
	"github.com/sendense/sendense/shared/api"
)

// instantRecoveryService is what the API needs for instant recovery: operators start, list,
// show and stop sessions; agents claim and report their actions.
type instantRecoveryService interface {
	Start(ctx context.Context, req api.InstantRecoveryRequest) (api.InstantRecovery, error)
	Get(ctx context.Context, id string) (api.InstantRecovery, error)
	List(ctx context.Context, f instantrecovery.ListFilter) (api.InstantRecoveryList, error)
	Stop(ctx context.Context, id string) (api.InstantRecovery, error)
	Migrate(ctx context.Context, id string, req api.InstantRecoveryMigrateRequest) (api.InstantRecovery, error)

	Next(ctx context.Context, agentID string, busy []string, wait time.Duration) (*api.InstantRecoveryJob, error)
	Complete(ctx context.Context, agentID, id string, rep api.InstantRecoveryReport) (api.InstantRecovery, error)
	State(ctx context.Context, agentID, id string) (api.JobState, error)
}

// errNoInstantRecovery answers the routes of a hub without an NFS listener.
var errNoInstantRecovery = errors.New("instant recovery is not configured on this hub (set nfs_listen and nfs_address)")

func (s *Server) registerInstantRecoveries(agent, v1 *gin.RouterGroup) {
	v1.POST(rel(v1, api.PathInstantRecoveries), s.requireRole(api.RoleOperator), s.startInstantRecovery)
	v1.GET(rel(v1, api.PathInstantRecoveries), s.requireRole(api.RoleViewer), s.listInstantRecoveries)
	v1.GET(rel(v1, api.PathInstantRecovery), s.requireRole(api.RoleViewer), s.getInstantRecovery)
	v1.DELETE(rel(v1, api.PathInstantRecovery), s.requireRole(api.RoleOperator), s.stopInstantRecovery)
	v1.POST(rel(v1, api.PathInstantRecoveryMigrate), s.requireRole(api.RoleOperator), s.migrateInstantRecovery)

	agent.GET(rel(agent, api.PathAgentInstantRecoveries), s.nextInstantRecovery)
	agent.GET(rel(agent, api.PathAgentInstantRecovery), s.instantRecoveryState)
	agent.POST(rel(agent, api.PathAgentInstantRecoveryDone), s.completeInstantRecovery)
}

// instantRecoveries returns the service, or answers 500 and false when there is none.
func (s *Server) instantRecoveries(c *gin.Context) (instantRecoveryService, bool) {
	if s.deps.InstantRecoveries == nil {
		s.fail(c, errNoInstantRecovery)
		return nil, false
	}
	return s.deps.InstantRecoveries, true
}

func (s *Server) startInstantRecovery(c *gin.Context) {
	svc, ok := s.instantRecoveries(c)
	if !ok {
		return
	}
	var req api.InstantRecoveryRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	r, err := svc.Start(c.Request.Context(), req)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusAccepted, r)
}

func (s *Server) listInstantRecoveries(c *gin.Context) {
	svc, ok := s.instantRecoveries(c)
	if !ok {
		return
	}
	limit, offset, err := pagination(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	f := instantrecovery.ListFilter{Status: c.Query("status"), Limit: limit, Offset: offset}
	switch f.Status {
	case "", api.IRStarting, api.IRRunning, api.IRStopping, api.IRStopped, api.IRFailed, api.IRMigrating, api.IRMigrated:
	default:
		s.fail(c, &api.FieldError{Field: "status", Msg: "must be starting, running, stopping, stopped, failed, migrating or migrated"})
		return
	}
	l, err := svc.List(c.Request.Context(), f)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, l)
}

func (s *Server) getInstantRecovery(c *gin.Context) {
	svc, ok := s.instantRecoveries(c)
	if !ok {
		return
	}
	r, err := svc.Get(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, r)
}

func (s *Server) stopInstantRecovery(c *gin.Context) {
	svc, ok := s.instantRecoveries(c)
	if !ok {
		return
	}
	r, err := svc.Stop(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusAccepted, r)
}

func (s *Server) migrateInstantRecovery(c *gin.Context) {
	svc, ok := s.instantRecoveries(c)
	if !ok {
		return
	}
	var req api.InstantRecoveryMigrateRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	r, err := svc.Migrate(c.Request.Context(), c.Param("id"), req)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusAccepted, r)
}

// nextInstantRecovery long-polls for an action like nextJob: 200 with it, 204 when none came.
// nextInstantRecovery hands out the agent's next instant-recovery action. A hub without instant
// recovery never has one: it answers the long poll as having no work, so that every agent of a
// hub without NFS does not report an error each minute.
func (s *Server) nextInstantRecovery(c *gin.Context) {
	if s.deps.InstantRecoveries == nil {
		longPoll(s, c, noInstantRecoveryWork)
		return
	}
	longPoll(s, c, s.deps.InstantRecoveries.Next)
}

// noInstantRecoveryWork waits out the long poll of a hub without instant recovery.
func noInstantRecoveryWork(ctx context.Context, _ string, _ []string, wait time.Duration) (*api.InstantRecoveryJob, error) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, nil
}

func (s *Server) completeInstantRecovery(c *gin.Context) {
	svc, ok := s.instantRecoveries(c)
	if !ok {
		return
	}
	var rep api.InstantRecoveryReport
	if err := decodeJSON(c, smallBody, &rep); err != nil {
		s.fail(c, err)
		return
	}
	r, err := svc.Complete(c.Request.Context(), agentID(c), c.Param("id"), rep)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, r)
}

func (s *Server) instantRecoveryState(c *gin.Context) {
	svc, ok := s.instantRecoveries(c)
	if !ok {
		return
	}
	st, err := svc.State(c.Request.Context(), agentID(c), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}
