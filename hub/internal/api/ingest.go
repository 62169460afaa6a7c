package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/ingest"
	"github.com/sendense/sendense/shared/api"
)

// ingestService is what the API needs for agents' upload sessions.
type ingestService interface {
	OpenSession(ctx context.Context, agentID, jobID, diskID string, req api.OpenSessionRequest) (api.Session, error)
	Session(ctx context.Context, agentID, id string) (api.Session, error)
	PutChunk(ctx context.Context, agentID, sessionID, digest string, slots []int64, body io.Reader, size int64) (api.ChunkStored, error)
	RecordSlots(ctx context.Context, agentID, sessionID string, batch api.SlotBatch) (api.SlotBatchResult, error)
	Commit(ctx context.Context, agentID, sessionID string, req api.CommitRequest) (api.BackupDisk, error)
	Check(ctx context.Context, agentID, sessionID string, req api.CheckRequest) (api.CheckResult, error)
}

func (s *Server) registerIngest(agent *gin.RouterGroup) {
	agent.POST(rel(agent, api.PathAgentOpenSess), s.openSession)
	agent.GET(rel(agent, api.PathAgentSession), s.getSession)
	agent.PUT(rel(agent, api.PathAgentChunk), s.putChunk)
	agent.POST(rel(agent, api.PathAgentChunks), s.postChunk)
	agent.POST(rel(agent, api.PathAgentSlots), s.recordSlots)
	agent.POST(rel(agent, api.PathAgentCommitSess), s.commitSession)
	agent.POST(rel(agent, api.PathAgentCheckSess), s.checkSession)
}

func (s *Server) openSession(c *gin.Context) {
	var req api.OpenSessionRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	sess, err := s.deps.Ingest.OpenSession(c.Request.Context(), agentID(c), c.Param("id"), c.Param("disk"), req)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, sess)
}

func (s *Server) getSession(c *gin.Context) {
	sess, err := s.deps.Ingest.Session(c.Request.Context(), agentID(c), c.Param("session"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, sess)
}

// putChunk receives one chunk blob the agent names and records the slots named by
// ?slots=3,4,9. The service checks the session before it reads the body, and caps the body at
// the session's chunk size. 201: stored, 200: the hub held it already.
func (s *Server) putChunk(c *gin.Context) {
	if res, ok := s.receiveChunk(c, c.Param("digest")); ok {
		c.Status(chunkStatus(res))
	}
}

// postChunk is putChunk for a blob the hub names: it answers the name (api.ChunkStored).
func (s *Server) postChunk(c *gin.Context) {
	if res, ok := s.receiveChunk(c, ""); ok {
		c.JSON(chunkStatus(res), res)
	}
}

// receiveChunk hands an upload to the service; on failure it has answered.
func (s *Server) receiveChunk(c *gin.Context, digest string) (api.ChunkStored, bool) {
	slots, err := parseSlots(c.Query("slots"))
	if err != nil {
		s.fail(c, err)
		return api.ChunkStored{}, false
	}
	res, err := s.deps.Ingest.PutChunk(c.Request.Context(), agentID(c), c.Param("session"), digest, slots, c.Request.Body, c.Request.ContentLength)
	switch {
	case errors.Is(err, ingest.ErrBusy):
		c.Header("Retry-After", "1") // the agent's client backs off and retries
	case errors.Is(err, ingest.ErrNoUploadMemory):
		// The body was not read: the connection closes after the answer (net/http would
		// drain at most 256 KiB of it), and the agent retries on a new one.
		c.Header("Retry-After", "2")
		c.Header("Connection", "close")
	}
	if err != nil {
		s.fail(c, err)
		return api.ChunkStored{}, false
	}
	return res, true
}

func chunkStatus(res api.ChunkStored) int {
	if res.Stored {
		return http.StatusCreated
	}
	return http.StatusOK
}

// parseSlots reads a comma-separated list of slot numbers; empty is none.
func parseSlots(v string) ([]int64, error) {
	if v == "" {
		return nil, nil
	}
	parts := strings.Split(v, ",")
	if len(parts) > api.MaxSlotBatch {
		return nil, &api.FieldError{Field: "slots", Msg: "at most " + strconv.Itoa(api.MaxSlotBatch) + " slots per upload"}
	}
	out := make([]int64, len(parts))
	for i, p := range parts {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n < 0 {
			return nil, &api.FieldError{Field: "slots", Msg: "must be a comma-separated list of slot numbers"}
		}
		out[i] = n
	}
	return out, nil
}

func (s *Server) recordSlots(c *gin.Context) {
	var batch api.SlotBatch
	if err := decodeJSON(c, 4<<20, &batch); err != nil {
		s.fail(c, err)
		return
	}
	res, err := s.deps.Ingest.RecordSlots(c.Request.Context(), agentID(c), c.Param("session"), batch)
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
	bd, err := s.deps.Ingest.Commit(c.Request.Context(), agentID(c), c.Param("session"), req)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, bd)
}

func (s *Server) checkSession(c *gin.Context) {
	var req api.CheckRequest
	if err := decodeJSON(c, 4<<20, &req); err != nil {
		s.fail(c, err)
		return
	}
	res, err := s.deps.Ingest.Check(c.Request.Context(), agentID(c), c.Param("session"), req)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, res)
}
