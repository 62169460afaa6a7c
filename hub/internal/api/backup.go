package api

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/shared/api"
)

// backupService is what the API needs for operators' backups and agents' jobs.
type backupService interface {
	Start(ctx context.Context, req api.StartBackupRequest) (api.Backup, error)
	Get(ctx context.Context, id string) (api.Backup, error)
	List(ctx context.Context, f jobs.ListFilter) (api.BackupList, error)
	Cancel(ctx context.Context, id string) (api.Backup, error)
	Delete(ctx context.Context, id string) error
	Chain(ctx context.Context, vm string) (api.Chain, error)
	SetProtected(ctx context.Context, id string, protected bool) (api.Backup, error)

	NextJob(ctx context.Context, agentID string, busy []string, wait time.Duration) (*api.Job, error)
	JobState(ctx context.Context, agentID, id string) (api.JobState, error)
	Progress(ctx context.Context, agentID, id string, p api.JobProgress) (api.JobState, error)
	Complete(ctx context.Context, agentID, id string, c api.JobCompletion) error
	Spec(ctx context.Context, agentID, id string) (*api.Job, error)
	PutVMConfig(ctx context.Context, agentID, id string, cfg api.VMConfig) error
	VMConfig(ctx context.Context, id string) (api.VMConfig, error)
}

func (s *Server) registerBackup(agent, v1 *gin.RouterGroup) {
	v1.POST(rel(v1, api.PathBackups), s.requireRole(api.RoleOperator), s.startBackup)
	v1.GET(rel(v1, api.PathBackups), s.requireRole(api.RoleViewer), s.listBackups)
	v1.GET(rel(v1, api.PathBackup), s.requireRole(api.RoleViewer), s.getBackup)
	v1.DELETE(rel(v1, api.PathBackup), s.requireRole(api.RoleOperator), s.deleteBackup)
	v1.POST(rel(v1, api.PathBackupCancel), s.requireRole(api.RoleOperator), s.cancelBackup)
	// The seed system's chain route shares the /backups/:id prefix; Gin routes the segment to :id.
	v1.GET(rel(v1, api.PathBackupChain), s.requireRole(api.RoleViewer), s.chain)
	v1.POST(rel(v1, api.PathBackupProtect), s.requireRole(api.RoleOperator), s.protect(true))
	v1.POST(rel(v1, api.PathBackupUnprot), s.requireRole(api.RoleOperator), s.protect(false))
	v1.GET(rel(v1, api.PathBackupVM), s.requireRole(api.RoleViewer), s.backupVMConfig)

	agent.GET(rel(agent, api.PathAgentJobs), s.nextJob)
	agent.GET(rel(agent, api.PathAgentJob), s.jobState)
	agent.POST(rel(agent, api.PathAgentJobProg), s.jobProgress)
	agent.POST(rel(agent, api.PathAgentJobDone), s.completeJob)
	agent.PUT(rel(agent, api.PathAgentJobDisks), s.reportJobDisks)
	agent.PUT(rel(agent, api.PathAgentJobVM), s.putJobVMConfig)
}

func (s *Server) startBackup(c *gin.Context) {
	var req api.StartBackupRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	b, err := s.deps.Backup.Start(c.Request.Context(), req)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusAccepted, b)
}

func (s *Server) listBackups(c *gin.Context) {
	limit, offset, err := pagination(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	f := jobs.ListFilter{VM: c.Query("vm"), Status: c.Query("status"), Limit: limit, Offset: offset}
	switch f.Status {
	case "", api.JobQueued, api.JobRunning, api.JobSucceeded, api.JobFailed, api.JobCancelled:
	default:
		s.fail(c, &api.FieldError{Field: "status", Msg: "must be queued, running, succeeded, failed or cancelled"})
		return
	}
	if v := c.Query("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			s.fail(c, &api.FieldError{Field: "since", Msg: "must be an RFC 3339 time like 2026-11-26T00:00:00Z"})
			return
		}
		f.Since = t
	}
	l, err := s.deps.Backup.List(c.Request.Context(), f)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, l)
}

func (s *Server) getBackup(c *gin.Context) {
	b, err := s.deps.Backup.Get(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, b)
}

func (s *Server) deleteBackup(c *gin.Context) {
	if err := s.deps.Backup.Delete(c.Request.Context(), c.Param("id")); err != nil {
		s.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (s *Server) cancelBackup(c *gin.Context) {
	b, err := s.deps.Backup.Cancel(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusAccepted, b)
}

// protect sets or lifts a backup's protection and answers the backup.
func (s *Server) protect(on bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		b, err := s.deps.Backup.SetProtected(c.Request.Context(), c.Param("id"), on)
		if err != nil {
			s.fail(c, err)
			return
		}
		c.JSON(http.StatusOK, b)
	}
}

func (s *Server) chain(c *gin.Context) {
	ch, err := s.deps.Backup.Chain(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, ch)
}

// nextJob long-polls for a job: 200 with the job, or 204 when none came within ?wait (default
// 30s, at most 60s). The poll ends early when the hub shuts down.
func (s *Server) nextJob(c *gin.Context) { longPoll(s, c, s.deps.Backup.NextJob) }

// longPoll answers an agent's long poll for work of one kind: ?wait (default 30s, at most
// MaxJobWait) and ?running (the ids the agent is busy with, at most 64), 200 with the work or
// 204 when none came. A hub shutting down ends the poll at once.
func longPoll[T any](s *Server, c *gin.Context, next func(ctx context.Context, agentID string, busy []string, wait time.Duration) (*T, error)) {
	wait := 30 * time.Second
	if v := c.Query("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > api.MaxJobWait {
			s.fail(c, &api.FieldError{Field: "wait", Msg: "must be a duration between 0s and 60s"})
			return
		}
		wait = d
	}
	var busy []string
	if v := c.Query("running"); v != "" {
		busy = strings.Split(v, ",")
		if len(busy) > 64 {
			s.fail(c, &api.FieldError{Field: "running", Msg: "at most 64 ids"})
			return
		}
	}
	ctx, cancel := context.WithCancel(c.Request.Context())
	defer cancel()
	go func() {
		select {
		case <-s.draining:
			cancel()
		case <-ctx.Done():
		}
	}()
	work, err := next(ctx, agentID(c), busy, wait)
	if err != nil {
		s.fail(c, err)
		return
	}
	if work == nil {
		c.Status(http.StatusNoContent)
		return
	}
	c.JSON(http.StatusOK, work)
}

func (s *Server) jobState(c *gin.Context) {
	st, err := s.deps.Backup.JobState(c.Request.Context(), agentID(c), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

func (s *Server) jobProgress(c *gin.Context) {
	var p api.JobProgress
	if err := decodeJSON(c, smallBody, &p); err != nil {
		s.fail(c, err)
		return
	}
	st, err := s.deps.Backup.Progress(c.Request.Context(), agentID(c), c.Param("id"), p)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

func (s *Server) completeJob(c *gin.Context) {
	var req api.JobCompletion
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	if err := s.deps.Backup.Complete(c.Request.Context(), agentID(c), c.Param("id"), req); err != nil {
		s.fail(c, err)
		return
	}
	st, err := s.deps.Backup.JobState(c.Request.Context(), agentID(c), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

// reportJobDisks takes the VM's disks as the job's snapshot shows them: disks added since
// discovery are recorded, geometry refreshed; the answer is the job with the disks to back up.
func (s *Server) reportJobDisks(c *gin.Context) {
	var r api.JobDisksReport
	if err := decodeJSON(c, 1<<20, &r); err != nil {
		s.fail(c, err)
		return
	}
	if err := r.Validate(); err != nil {
		s.fail(c, err)
		return
	}
	ctx := c.Request.Context()
	spec, err := s.deps.Backup.Spec(ctx, agentID(c), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := s.deps.Inventory.RefreshDisks(ctx, agentID(c), c.ClientIP(), spec.ID, spec.VM.ContextID, r.Disks); err != nil {
		s.fail(c, err)
		return
	}
	if spec, err = s.deps.Backup.Spec(ctx, agentID(c), spec.ID); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, spec)
}

// putJobVMConfig stores the VM configuration the job's snapshot recorded with the backup.
func (s *Server) putJobVMConfig(c *gin.Context) {
	var cfg api.VMConfig
	if err := decodeJSON(c, api.MaxVMConfigBytes, &cfg); err != nil {
		s.fail(c, err)
		return
	}
	if err := cfg.Validate(); err != nil {
		s.fail(c, err)
		return
	}
	if err := s.deps.Backup.PutVMConfig(c.Request.Context(), agentID(c), c.Param("id"), cfg); err != nil {
		s.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// backupVMConfig answers the VM configuration of a restore point, checked against the digest
// the catalog recorded; 404 for a backup taken before configurations were captured.
func (s *Server) backupVMConfig(c *gin.Context) {
	cfg, err := s.deps.Backup.VMConfig(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, cfg)
}
