package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/shared/api"
)

// restoreJobService is what the API needs for restores as new VMs: operators queue, list and
// cancel them; agents claim, report and complete them, and read the backup's disk images.
type restoreJobService interface {
	StartRestore(ctx context.Context, req api.RestoreRequest) (api.Restore, error)
	GetRestore(ctx context.Context, id string) (api.Restore, error)
	ListRestores(ctx context.Context, f jobs.RestoreListFilter) (api.RestoreList, error)
	CancelRestore(ctx context.Context, id string) (api.Restore, error)

	NextRestore(ctx context.Context, agentID string, busy []string, wait time.Duration) (*api.RestoreJob, error)
	RestoreState(ctx context.Context, agentID, id string) (api.JobState, error)
	RestoreProgress(ctx context.Context, agentID, id string, p api.RestoreProgress) (api.JobState, error)
	CompleteRestore(ctx context.Context, agentID, id string, c api.RestoreCompletion) (api.JobState, error)
	RestoreBackup(ctx context.Context, agentID, id string) (backupID, repo string, err error)
}

func (s *Server) registerRestoreJobs(agent, v1 *gin.RouterGroup) {
	v1.POST(rel(v1, api.PathRestores), s.requireRole(api.RoleOperator), s.startRestore)
	v1.GET(rel(v1, api.PathRestores), s.requireRole(api.RoleViewer), s.listRestores)
	v1.GET(rel(v1, api.PathRestore), s.requireRole(api.RoleViewer), s.getRestore)
	v1.POST(rel(v1, api.PathRestoreCancel), s.requireRole(api.RoleOperator), s.cancelRestore)

	agent.GET(rel(agent, api.PathAgentRestores), s.nextRestore)
	agent.GET(rel(agent, api.PathAgentRestore), s.restoreState)
	agent.POST(rel(agent, api.PathAgentRestoreProg), s.restoreProgress)
	agent.POST(rel(agent, api.PathAgentRestoreDone), s.completeRestore)
	agent.GET(rel(agent, api.PathAgentRestoreImage), s.restoreImage)
	agent.HEAD(rel(agent, api.PathAgentRestoreImage), s.restoreImage)
}

func (s *Server) startRestore(c *gin.Context) {
	var req api.RestoreRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	r, err := s.deps.Restores.StartRestore(c.Request.Context(), req)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusAccepted, r)
}

func (s *Server) listRestores(c *gin.Context) {
	limit, offset, err := pagination(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	f := jobs.RestoreListFilter{Status: c.Query("status"), BackupID: c.Query("backup"), Limit: limit, Offset: offset}
	switch f.Status {
	case "", api.JobQueued, api.JobRunning, api.JobSucceeded, api.JobFailed, api.JobCancelled:
	default:
		s.fail(c, &api.FieldError{Field: "status", Msg: "must be queued, running, succeeded, failed or cancelled"})
		return
	}
	l, err := s.deps.Restores.ListRestores(c.Request.Context(), f)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, l)
}

func (s *Server) getRestore(c *gin.Context) {
	r, err := s.deps.Restores.GetRestore(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, r)
}

func (s *Server) cancelRestore(c *gin.Context) {
	r, err := s.deps.Restores.CancelRestore(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusAccepted, r)
}

// nextRestore long-polls for a restore like nextJob: 200 with the restore, 204 when none came.
func (s *Server) nextRestore(c *gin.Context) { longPoll(s, c, s.deps.Restores.NextRestore) }

func (s *Server) restoreState(c *gin.Context) {
	st, err := s.deps.Restores.RestoreState(c.Request.Context(), agentID(c), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

func (s *Server) restoreProgress(c *gin.Context) {
	var p api.RestoreProgress
	if err := decodeJSON(c, smallBody, &p); err != nil {
		s.fail(c, err)
		return
	}
	st, err := s.deps.Restores.RestoreProgress(c.Request.Context(), agentID(c), c.Param("id"), p)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

func (s *Server) completeRestore(c *gin.Context) {
	var req api.RestoreCompletion
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	st, err := s.deps.Restores.CompleteRestore(c.Request.Context(), agentID(c), c.Param("id"), req)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

// restoreImage serves an agent the disk images of the backup its running restore reads, with
// the operators' image route's Range support and verification.
func (s *Server) restoreImage(c *gin.Context) {
	backupID, repo, err := s.deps.Restores.RestoreBackup(c.Request.Context(), agentID(c), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	if !s.agentImages.acquire(agentID(c)) {
		c.Header("Retry-After", "5")
		s.fail(c, fmt.Errorf("%w: this agent reads %d restore images at once already", errTooManyRequests, MaxAgentImageReads))
		return
	}
	defer s.agentImages.release(agentID(c))
	s.guardStall(c)
	s.serveImage(c, backupID, c.Param("disk"), repo)
}

// MaxAgentImageReads bounds the disk images of its restores one agent reads from the hub at
// once, each holding an index and up to 32 MiB of chunks: an agent writes a restore's disks one
// after the other, so 8 serve 8 restores at a time, and a hostile agent can hold no more. Over
// it an agent gets 429 and retries.
const MaxAgentImageReads = 8
