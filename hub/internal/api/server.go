// Package api is the hub's HTTP API: routing, authentication, request validation and the mapping
// of domain errors to HTTP status codes. It is the only user of Gin.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/version"
)

func init() { gin.SetMode(gin.ReleaseMode) }

// catalogProbe is what the health check needs from the catalog.
type catalogProbe interface {
	Ping(ctx context.Context) error
	Driver() string
}

// repositoryProbe reports whether the default repository accepts durable writes.
type repositoryProbe interface {
	CheckWritable(ctx context.Context) error
}

// Deps are the hub components the API serves.
type Deps struct {
	Log        *slog.Logger
	Registry   prometheus.Registerer
	Catalog    catalogProbe
	Repository repositoryProbe
	Identity   identityService
	Inventory  inventoryService
	Backup     backupService
	Ingest     ingestService
	Restore    restoreService
	// Files browses the files of restore points (nil: the routes answer 500).
	Files fileService
	// Restores queues restores as new VMs and hands them to agents (nil: the routes answer 500).
	Restores restoreJobService
	// Repositories lists and creates repositories.
	Repositories repositoryService
	// Verify verifies backups on an admin's request (nil: the route answers 500).
	Verify   verifyService
	Policies policyService
	// RestoreTests starts and lists restore tests (nil: the routes answer 500).
	RestoreTests restoreTestService
	// InstantRecoveries runs instant-recovery sessions (nil: the routes answer 500).
	InstantRecoveries instantRecoveryService
	Events            eventService
	Started           time.Time
	// Limits bound slow and anonymous clients; zero fields select the defaults.
	Limits Limits
	// Console is the web console, served beside the API on the paths ConsolePaths lists (nil:
	// no console).
	Console      consoleHandler
	ConsolePaths []string
}

// consoleHandler serves the web console. It is mounted as a plain http.Handler: its pages are
// rendered with html/template in its own package, and Gin stays here, where it routes the
// console's paths to it beside the API's.
type consoleHandler interface {
	http.Handler
	// HasSession reports whether a request carries a console session cookie: such requests
	// count as credentialed for the limits on anonymous clients, as bearer tokens do.
	HasSession(r *http.Request) bool
}

// Server is the hub's HTTP API.
type Server struct {
	deps    Deps
	engine  *gin.Engine
	metrics *httpMetrics
	auth    *authMetrics
	limits  Limits
	anon    *keyedSemaphore // requests without credentials in flight, per client address
	// agentImages counts the restore images each agent reads at once (MaxAgentImageReads).
	agentImages *keyedSemaphore

	draining      chan struct{} // closed when the server starts shutting down: long polls return
	drainOnce     sync.Once
	auditFailures prometheus.Counter
}

// New builds the router with every route registered.
func New(d Deps) *Server {
	if d.Started.IsZero() {
		d.Started = time.Now()
	}
	limits := d.Limits.withDefaults()
	s := &Server{deps: d, engine: gin.New(), metrics: newHTTPMetrics(d.Registry), auth: newAuthMetrics(d.Registry), limits: limits,
		anon: newKeyedSemaphore(limits.UnauthenticatedPerAddress), agentImages: newKeyedSemaphore(MaxAgentImageReads), draining: make(chan struct{})}
	s.auditFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_audit_failures_total", Help: "Operator requests whose audit event could not be recorded."})
	if d.Registry != nil {
		d.Registry.MustRegister(s.auditFailures)
	}
	// The hub is reached directly (agents over mutual TLS cannot pass a proxy), so the client
	// address is the connection's: X-Forwarded-For from a client is never believed.
	_ = s.engine.SetTrustedProxies(nil)
	s.engine.ContextWithFallback = true
	s.engine.HandleMethodNotAllowed = true
	// The hub terminates TLS itself (client certificates), so no proxy in front of it could be
	// trusted: the client must not choose, with X-Forwarded-For, the address that its limits and
	// the access log are keyed by.
	s.engine.ForwardedByClientIP = false
	// audit wraps recovery so that a request whose handler panicked is recorded with its 500.
	// Body deadlines come before everything that may refuse a request, so that a body left
	// unread is bounded as well.
	s.engine.Use(s.audit(), s.recovery(), s.logRequests(), s.metrics.middleware(), s.bodyDeadlines(), s.limitUnauthenticated())
	s.engine.NoRoute(func(c *gin.Context) {
		c.AbortWithStatusJSON(http.StatusNotFound, api.Error{Error: "no route " + c.Request.Method + " " + c.Request.URL.Path, Code: api.CodeNotFound})
	})
	s.engine.NoMethod(func(c *gin.Context) {
		c.AbortWithStatusJSON(http.StatusMethodNotAllowed, api.Error{Error: "method " + c.Request.Method + " not allowed on " + c.Request.URL.Path, Code: api.CodeInvalid})
	})
	s.engine.GET(api.PathHealth, s.health)
	agent := s.engine.Group(agentBase, s.requireAgent())
	v1 := s.engine.Group(apiBase)
	s.registerIdentity(agent, v1)
	s.registerInventory(agent, v1)
	s.registerBackup(agent, v1)
	s.registerIngest(agent)
	s.registerRestore(v1)
	s.registerFiles(v1)
	s.registerRestoreJobs(agent, v1)
	s.registerRepositories(v1)
	s.registerPolicies(v1)
	s.registerRestoreTests(v1)
	s.registerInstantRecoveries(agent, v1)
	s.registerEvents(v1)
	s.registerOpenAPI()
	s.registerConsole()
	return s
}

// Route groups: every route lies under apiBase; those under agentBase require an agent's client
// certificate.
const (
	apiBase   = "/api/v1"
	agentBase = "/api/v1/agent"
)

// rel turns a route of shared/api into Gin's form relative to the group g: the route must lie
// under the group ("/api/v1/agent/jobs/{id}" in the agent group → "/jobs/:id").
func rel(g *gin.RouterGroup, route string) string {
	p, ok := strings.CutPrefix(route, g.BasePath())
	if !ok {
		panic("route " + route + " is outside the group " + g.BasePath())
	}
	return ginPath(p)
}

// ginPath writes {param} segments as Gin's :param.
func ginPath(route string) string {
	segs := strings.Split(route, "/")
	for i, seg := range segs {
		if len(seg) > 2 && seg[0] == '{' && seg[len(seg)-1] == '}' {
			segs[i] = ":" + seg[1:len(seg)-1]
		}
	}
	return strings.Join(segs, "/")
}

// Drain ends waiting long polls; register it with http.Server.RegisterOnShutdown so that a
// graceful shutdown does not wait for them.
func (s *Server) Drain() { s.drainOnce.Do(func() { close(s.draining) }) }

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.engine }

// Endpoints lists the registered API routes, read from the router.
func (s *Server) Endpoints() []api.Endpoint {
	routes := s.engine.Routes()
	out := make([]api.Endpoint, 0, len(routes))
	for _, r := range routes {
		if !strings.HasPrefix(r.Path, apiBase+"/") {
			continue // the console's pages are not API endpoints
		}
		out = append(out, api.Endpoint{Method: r.Method, Path: r.Path})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].Method < out[j].Method
	})
	return out
}

func (s *Server) health(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 5*time.Second)
	defer cancel()
	h := api.Health{
		Status:        "ok",
		Version:       version.Get().Version,
		UptimeSeconds: time.Since(s.deps.Started).Seconds(),
		Catalog:       api.Check{OK: true},
		Repository:    api.Check{OK: true},
		SystemInfo: api.SystemInfo{
			GoVersion:    version.Get().GoVersion,
			APIEndpoints: s.Endpoints(),
		},
	}
	if s.deps.Catalog != nil {
		h.SystemInfo.CatalogDriver = s.deps.Catalog.Driver()
		if err := s.deps.Catalog.Ping(ctx); err != nil {
			h.Catalog = api.Check{OK: false, Detail: "catalog does not answer"}
			s.deps.Log.WarnContext(ctx, "health: catalog ping failed", "err", err)
		}
	}
	if s.deps.Repository != nil {
		if err := s.deps.Repository.CheckWritable(ctx); err != nil {
			h.Repository = api.Check{OK: false, Detail: "default repository is not writable"}
			s.deps.Log.WarnContext(ctx, "health: repository not writable", "err", err)
		}
	}
	code := http.StatusOK
	if !h.Catalog.OK || !h.Repository.OK {
		h.Status = "degraded"
		code = http.StatusServiceUnavailable
	}
	c.JSON(code, h)
}

// registerConsole routes every path of the console (a first segment and everything below it)
// to its handler; the API's own paths all lie under /api/ and never overlap them.
func (s *Server) registerConsole() {
	if s.deps.Console == nil {
		return
	}
	h := gin.WrapH(s.deps.Console)
	for _, p := range s.deps.ConsolePaths {
		if strings.HasPrefix(p, "/api") {
			panic("console path " + p + " overlaps the API")
		}
		if p == "/" {
			s.engine.GET("/", h)
			continue
		}
		s.engine.Any(p, h)
		s.engine.Any(p+"/*rest", h)
	}
}
