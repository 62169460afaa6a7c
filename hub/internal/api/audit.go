package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/shared/api"
)

// audit records every operator request that may change something (any method but GET, HEAD
// and OPTIONS), whether it succeeded or failed, as an event of type audit: who (the API token's
// name and id), from where, what (method, route and path) and the answer's status code. Request
// bodies are never recorded: some carry secrets or ask for them (token creation). Agents'
// routes are not audited: they are the data path, and inventory changes have events of their own.
//
// The event is written after the handler, on the request's goroutine, so that a client that got
// its answer finds the event recorded; a failure to record is logged and counted, and does not
// change the answer already sent.
func (s *Server) audit() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Next()
		if s.deps.Events == nil {
			return
		}
		switch c.Request.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			return
		}
		route := c.FullPath()
		if route == "" || strings.HasPrefix(route, agentBase+"/") || !strings.HasPrefix(route, apiBase+"/") {
			return // unmatched (404/405), an agent's request, or the console's (it audits its own, naming the user)
		}
		s.recordAudit(c, auditEvent(c))
	}
}

// auditPath is the request's path as the audit records it: a client's hold id, which is what
// renews and ends the hold, cut to its first characters (enough to tell holds apart).
func auditPath(c *gin.Context) string {
	p := c.Request.URL.Path
	if h := c.Param("hold"); len(h) > 11 && strings.HasSuffix(p, "/"+h) {
		p = strings.TrimSuffix(p, h) + h[:11] + "…"
	}
	return p
}

// auditEvent is the audit event of the request c has answered: who (the API token's name and
// id, or the agent), from where, what (method, route, path) and the status code.
func auditEvent(c *gin.Context) api.Event {
	status := strconv.Itoa(c.Writer.Status())
	actor := c.GetString(ctxTokenName)
	if actor == "" {
		actor = c.GetString(ctxAgentID) // an enrollment: the agent it created
	}
	e := api.Event{
		Type: api.EventAudit, Actor: actor, AgentID: c.GetString(ctxAgentID),
		SourceAddress: c.ClientIP(), Outcome: status,
		Details: map[string]string{"method": c.Request.Method, "route": c.FullPath(), "path": auditPath(c), "status": status},
	}
	if id := c.GetString(ctxTokenID); id != "" {
		e.Details["api_token_id"] = id
	}
	return e
}

// recordAudit stores e under a context of its own, so that a client that hung up does not
// lose the record; a failure is logged and counted.
func (s *Server) recordAudit(c *gin.Context, e api.Event) {
	if s.deps.Events == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), 5*time.Second)
	defer cancel()
	if err := s.deps.Events.Record(ctx, e); err != nil {
		s.auditFailures.Inc()
		s.deps.Log.ErrorContext(ctx, "record audit event", "method", c.Request.Method, "route", e.Details["route"], "status", e.Outcome, "err", err)
	}
}
