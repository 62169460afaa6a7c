package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/backup"
	"github.com/sendense/sendense/shared/api"
)

// backupService is what the API needs for backups.
type backupService interface {
	Start(ctx context.Context, req api.StartBackupRequest) (api.Backup, error)
	Get(ctx context.Context, id string) (api.Backup, error)
	List(ctx context.Context, f backup.ListFilter) (api.BackupList, error)
	Cancel(ctx context.Context, id string) (api.Backup, error)
	Delete(ctx context.Context, id string) error
	Chain(ctx context.Context, vm string) (api.Chain, error)

	NextJob(ctx context.Context, agentID string, busy []string, wait time.Duration) (*api.Job, error)
	JobState(ctx context.Context, agentID, id string) (api.JobState, error)
	Progress(ctx context.Context, agentID, id string, p api.JobProgress) (api.JobState, error)
	Complete(ctx context.Context, agentID, id string, c api.JobCompletion) error
	OpenSession(ctx context.Context, agentID, jobID, diskID string, req api.OpenSessionRequest) (api.Session, error)
	Session(ctx context.Context, agentID, id string) (api.Session, error)
	PutChunk(ctx context.Context, agentID, sessionID, digest string, blob []byte) (bool, error)
	RecordSlots(ctx context.Context, agentID, sessionID string, batch api.SlotBatch) (api.SlotBatchResult, error)
	Commit(ctx context.Context, agentID, sessionID string, req api.CommitRequest) (api.BackupDisk, error)
}

func (s *Server) registerBackup(agent, v1 *gin.RouterGroup) {
	v1.POST(rel(v1, api.PathBackups), s.requireRole(api.RoleOperator), s.startBackup)
	v1.GET(rel(v1, api.PathBackups), s.requireRole(api.RoleViewer), s.listBackups)
	v1.GET(rel(v1, api.PathBackup), s.requireRole(api.RoleViewer), s.getBackup)
	v1.DELETE(rel(v1, api.PathBackup), s.requireRole(api.RoleOperator), s.deleteBackup)
	v1.POST(rel(v1, api.PathBackupCancel), s.requireRole(api.RoleOperator), s.cancelBackup)
	// The seed system's chain route shares the /backups/:id prefix; Gin routes the segment to :id.
	v1.GET(rel(v1, api.PathBackupChain), s.requireRole(api.RoleViewer), s.chain)

	agent.GET(rel(agent, api.PathAgentJobs), s.nextJob)
	agent.GET(rel(agent, api.PathAgentJob), s.jobState)
	agent.POST(rel(agent, api.PathAgentJobProg), s.jobProgress)
	agent.POST(rel(agent, api.PathAgentJobDone), s.completeJob)
	agent.POST(rel(agent, api.PathAgentOpenSess), s.openSession)
	agent.GET(rel(agent, api.PathAgentSession), s.getSession)
	agent.PUT(rel(agent, api.PathAgentChunk), s.putChunk)
	agent.POST(rel(agent, api.PathAgentSlots), s.recordSlots)
	agent.POST(rel(agent, api.PathAgentCommitSess), s.commitSession)
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
	f := backup.ListFilter{VM: c.Query("vm"), Status: c.Query("status"), Limit: limit, Offset: offset}
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
func (s *Server) nextJob(c *gin.Context) {
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
			s.fail(c, &api.FieldError{Field: "running", Msg: "at most 64 job ids"})
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
	j, err := s.deps.Backup.NextJob(ctx, agentID(c), busy, wait)
	if err != nil {
		s.fail(c, err)
		return
	}
	if j == nil {
		c.Status(http.StatusNoContent)
		return
	}
	c.JSON(http.StatusOK, j)
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

func (s *Server) openSession(c *gin.Context) {
	var req api.OpenSessionRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	sess, err := s.deps.Backup.OpenSession(c.Request.Context(), agentID(c), c.Param("id"), c.Param("disk"), req)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, sess)
}

func (s *Server) getSession(c *gin.Context) {
	sess, err := s.deps.Backup.Session(c.Request.Context(), agentID(c), c.Param("session"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, sess)
}

// putChunk receives one chunk blob. The body is capped at the largest blob a 64 MiB slot can
// make; the repository then checks it against the session's real chunk size.
func (s *Server) putChunk(c *gin.Context) {
	limit := backup.MaxChunkUpload(64 << 20)
	n := c.Request.ContentLength
	if n > limit {
		s.fail(c, errTooLarge)
		return
	}
	body := http.MaxBytesReader(c.Writer, c.Request.Body, limit)
	var blob []byte
	var err error
	if n >= 0 {
		// Read straight into a pooled buffer of the announced size: chunks are megabytes, and
		// growing a buffer while reading would copy and zero each one several times.
		bp := s.getBuf(int(n))
		defer s.bufs.Put(bp)
		blob = (*bp)[:n]
		_, err = io.ReadFull(body, blob)
	} else {
		blob, err = io.ReadAll(body)
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.fail(c, errTooLarge)
			return
		}
		s.fail(c, &api.FieldError{Field: "body", Msg: "could not read the chunk: " + err.Error()})
		return
	}
	stored, err := s.deps.Backup.PutChunk(c.Request.Context(), agentID(c), c.Param("session"), c.Param("digest"), blob)
	if err != nil {
		s.fail(c, err)
		return
	}
	if stored {
		c.Status(http.StatusCreated)
		return
	}
	c.Status(http.StatusOK)
}

// getBuf returns a pooled buffer of at least n bytes.
func (s *Server) getBuf(n int) *[]byte {
	if bp, ok := s.bufs.Get().(*[]byte); ok && cap(*bp) >= n {
		return bp
	}
	b := make([]byte, n)
	return &b
}

func (s *Server) recordSlots(c *gin.Context) {
	var batch api.SlotBatch
	if err := decodeJSON(c, 4<<20, &batch); err != nil {
		s.fail(c, err)
		return
	}
	res, err := s.deps.Backup.RecordSlots(c.Request.Context(), agentID(c), c.Param("session"), batch)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, res)
}

func (s *Server) commitSession(c *gin.Context) {
	var req api.CommitRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	bd, err := s.deps.Backup.Commit(c.Request.Context(), agentID(c), c.Param("session"), req)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, bd)
}
