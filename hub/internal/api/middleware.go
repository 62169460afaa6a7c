package api

import (
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sendense/sendense/shared/api"
)

// logRequests logs one line per request. The query string is left out: it may carry filters
// with names an operator considers private, and never needs to be in an access log.
func (s *Server) logRequests() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "(unmatched)"
		}
		level := slog.LevelInfo
		if c.Writer.Status() >= 500 {
			level = slog.LevelError
		}
		attrs := []slog.Attr{
			slog.String("method", c.Request.Method),
			slog.String("route", route),
			slog.Int("status", c.Writer.Status()),
			slog.Float64("duration_seconds", time.Since(start).Seconds()),
			slog.String("remote_addr", c.ClientIP()),
			slog.Int("response_bytes", c.Writer.Size()),
		}
		if id, ok := c.Get(ctxAgentID); ok {
			attrs = append(attrs, slog.Any("agent_id", id))
		}
		if id, ok := c.Get(ctxTokenID); ok {
			attrs = append(attrs, slog.Any("api_token_id", id))
		}
		if len(c.Errors) > 0 {
			attrs = append(attrs, slog.String("err", c.Errors.String()))
		}
		s.deps.Log.LogAttrs(c.Request.Context(), level, "http request", attrs...)
	}
}

// Keys under which authentication stores the caller in the gin context.
const (
	ctxAgentID   = "agent_id"
	ctxTokenID   = "api_token_id"
	ctxTokenName = "api_token_name"
	ctxRole      = "role"
)

// recovery turns a panic into a logged 500 with the standard error body. A panic with
// http.ErrAbortHandler (a download that found damage after its status was sent) goes on to
// net/http, which closes the connection without ending the response: gin's own recovery
// swallows it as a broken pipe and lets a chunked response end cleanly, as if complete.
func (s *Server) recovery() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			rec := recover()
			if rec == nil {
				return
			}
			if rec == http.ErrAbortHandler {
				panic(rec)
			}
			s.deps.Log.ErrorContext(c.Request.Context(), "panic in handler", "route", c.FullPath(), "err", fmt.Sprint(rec))
			c.AbortWithStatusJSON(http.StatusInternalServerError, api.Error{Error: "internal error", Code: api.CodeInternal})
		}()
		c.Next()
	}
}

type httpMetrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	slowClients *prometheus.CounterVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sendense_hub_http_requests_total",
			Help: "HTTP requests served, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sendense_hub_http_request_duration_seconds",
			Help:    "HTTP request latency by route pattern and method.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "method"}),
		slowClients: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sendense_hub_http_slow_clients_total",
			Help: "Requests whose body arrived too slowly, cut with their connection, by reason (body_timeout, upload_min_rate).",
		}, []string{"reason"}),
	}
	m.slowClients.WithLabelValues(cutBodyTimeout)
	m.slowClients.WithLabelValues(cutUploadMinRate)
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.slowClients)
	}
	return m
}

func (m *httpMetrics) middleware() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		// The route pattern, never the raw path, keeps the label set bounded.
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		m.requests.WithLabelValues(route, c.Request.Method, strconv.Itoa(c.Writer.Status())).Inc()
		m.duration.WithLabelValues(route, c.Request.Method).Observe(time.Since(start).Seconds())
	}
}
