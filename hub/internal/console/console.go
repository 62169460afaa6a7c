// Package console is the hub's web console: server-rendered pages over the same domain services
// the API uses, signed in with local users (accounts), with CSRF tokens on every change and the
// API's role rules on every action.
package console

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sendense/sendense/hub/internal/accounts"
	"github.com/sendense/sendense/hub/internal/events"
	"github.com/sendense/sendense/hub/internal/files"
	"github.com/sendense/sendense/hub/internal/identity"
	"github.com/sendense/sendense/hub/internal/instantrecovery"
	"github.com/sendense/sendense/hub/internal/inventory"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/hub/internal/restoretest"
	"github.com/sendense/sendense/hub/internal/stall"
	"github.com/sendense/sendense/hub/internal/verify"
	"github.com/sendense/sendense/shared/api"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Cookie names. The session cookie is the credential; the login cookie carries the sign-in
// form's CSRF token (double submit) before any session exists.
const (
	SessionCookie = "sendense_session"
	LoginCookie   = "sendense_login_csrf"
	// CSRFField is the form field (and X-CSRF-Token header) every change must carry.
	CSRFField = "csrf_token"
)

// ContentSecurityPolicy allows nothing but the hub itself: no inline script or style, no
// framing, forms post only here.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Consumer-side views of the domain services; cmd wires the very services the API uses.
type (
	accountService interface {
		SignIn(ctx context.Context, name, password string) (string, accounts.User, error)
		Session(ctx context.Context, secret string) (accounts.User, error)
		SignOut(ctx context.Context, secret string) error
		Lifetime() time.Duration
	}
	vmService interface {
		List(ctx context.Context, f inventory.Filter) (api.VMList, error)
		Show(ctx context.Context, idOrName string) (api.VMContext, error)
	}
	backupService interface {
		Start(ctx context.Context, req api.StartBackupRequest) (api.Backup, error)
		Get(ctx context.Context, id string) (api.Backup, error)
		List(ctx context.Context, f jobs.ListFilter) (api.BackupList, error)
		Cancel(ctx context.Context, id string) (api.Backup, error)
		Delete(ctx context.Context, id string) error
		SetProtected(ctx context.Context, id string, protected bool) (api.Backup, error)
	}
	restoreService interface {
		StartRestore(ctx context.Context, req api.RestoreRequest) (api.Restore, error)
		ListRestores(ctx context.Context, f jobs.RestoreListFilter) (api.RestoreList, error)
		CancelRestore(ctx context.Context, id string) (api.Restore, error)
	}
	imageService interface {
		Open(ctx context.Context, backupID, diskID string) (*restore.Image, restore.Disk, error)
		// Serve admits one read of a backup for a client, within the hub's bound shared with
		// the API, and holds the backup against deletion until release.
		Serve(ctx context.Context, backupID string) (release func(), err error)
	}
	policyService interface {
		Create(ctx context.Context, in api.Policy) (api.Policy, error)
		Update(ctx context.Context, nameOrID string, in api.Policy) (api.Policy, error)
		Get(ctx context.Context, nameOrID string) (api.Policy, error)
		List(ctx context.Context) ([]api.Policy, error)
		Delete(ctx context.Context, nameOrID string) error
		Unprotected(ctx context.Context) ([]api.VMContext, error)
		OverdueVMs(ctx context.Context) ([]string, error)
		Prune(ctx context.Context, o policy.PruneOptions) (policy.PruneReport, error)
	}
	agentService interface {
		Agents(ctx context.Context) ([]api.Agent, error)
		RevokeAgent(ctx context.Context, id string) error
		CreateJoinToken(ctx context.Context, name string, ttl time.Duration) (string, api.JoinTokenInfo, error)
	}
	repositoryService interface {
		Describe(ctx context.Context) ([]api.Repository, error)
	}
	eventService interface {
		List(ctx context.Context, f events.Filter) (api.EventList, error)
		Record(ctx context.Context, e api.Event) error
	}
	verifyService interface {
		Run(ctx context.Context, backupID string) (*verify.Report, error)
	}
	fileService interface {
		Open(ctx context.Context, backupID, diskID string) (*files.Browser, error)
	}
	instantRecoveryService interface {
		Start(ctx context.Context, req api.InstantRecoveryRequest) (api.InstantRecovery, error)
		List(ctx context.Context, f instantrecovery.ListFilter) (api.InstantRecoveryList, error)
		Stop(ctx context.Context, id string) (api.InstantRecovery, error)
		Migrate(ctx context.Context, id string, req api.InstantRecoveryMigrateRequest) (api.InstantRecovery, error)
	}
	restoreTestService interface {
		Start(ctx context.Context, req api.StartRestoreTestRequest, actor string) (api.RestoreTest, error)
		Get(ctx context.Context, id string) (api.RestoreTest, error)
		List(ctx context.Context, f restoretest.Filter) (api.RestoreTestList, error)
		Report(ctx context.Context, from, to time.Time) (api.RestoreTestReport, error)
	}
)

// Deps are what the console serves. Every field is required.
type Deps struct {
	Log          *slog.Logger
	Accounts     accountService
	VMs          vmService
	Backups      backupService
	Images       imageService
	Restores     restoreService
	Policies     policyService
	Agents       agentService
	Repositories repositoryService
	Events       eventService
	Verify       verifyService
	Files        fileService
	RestoreTests restoreTestService
	// InstantRecoveries is nil on a hub without an NFS listener: its page says so.
	InstantRecoveries instantRecoveryService
	// Status maps a domain error to its HTTP status, the API's one mapping (api.StatusOf).
	Status func(error) int
	// Certificates are the hub's own certificates' expiry times by name (ca, server).
	Certificates map[string]time.Time
	// Now is the clock (time.Now when nil); LoginLimit bounds failed sign-ins (defaults when zero).
	Now        func() time.Time
	LoginLimit LoginLimit
	// ReadStall is how long one write of a restore-point read may wait for the browser to take
	// bytes before the connection is closed (2 minutes when zero), as in the API.
	ReadStall time.Duration
}

// Console is the console's http.Handler.
type Console struct {
	d       Deps
	mux     *http.ServeMux
	pages   map[string]*template.Template
	limiter *loginLimiter
}

// New builds the console with every page registered.
func New(d Deps) (*Console, error) {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.ReadStall <= 0 {
		d.ReadStall = 2 * time.Minute
	}
	c := &Console{d: d, mux: http.NewServeMux(), pages: map[string]*template.Template{}, limiter: newLoginLimiter(d.LoginLimit, d.Now)}
	if err := c.parseTemplates(); err != nil {
		return nil, err
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("console assets: %w", err)
	}
	c.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	c.mux.HandleFunc("GET /login", c.loginForm)
	c.mux.HandleFunc("POST /login", c.login)
	c.route("POST /logout", api.RoleViewer, c.logout)
	c.route("GET /{$}", api.RoleViewer, c.dashboard)
	c.route("GET /vms", api.RoleViewer, c.vms)
	c.route("GET /vms/{id}", api.RoleViewer, c.vm)
	c.route("GET /backups", api.RoleViewer, c.backups)
	c.route("GET /backups/{id}", api.RoleViewer, c.backup)
	c.route("POST /backups", api.RoleOperator, c.startBackup)
	c.route("POST /backups/{id}/protect", api.RoleOperator, c.protect(true))
	c.route("POST /backups/{id}/unprotect", api.RoleOperator, c.protect(false))
	c.route("POST /backups/{id}/delete", api.RoleOperator, c.deleteBackup)
	c.route("POST /backups/{id}/cancel", api.RoleOperator, c.cancelBackup)
	// Verify reads every chunk of the backup: admin only, as the API's verify.
	c.route("POST /backups/{id}/verify", api.RoleAdmin, c.verifyBackup)
	c.route("GET /backups/{id}/disks/{disk}/image", api.RoleViewer, c.served(c.image))
	c.route("POST /backups/{id}/restore", api.RoleOperator, c.startRestore)
	c.route("GET /backups/{id}/disks/{disk}/files", api.RoleViewer, c.served(c.filesPage))
	c.route("GET /backups/{id}/disks/{disk}/file", api.RoleViewer, c.served(c.fileDownload))
	c.route("GET /backups/{id}/disks/{disk}/archive", api.RoleViewer, c.served(c.archiveDownload))
	c.route("GET /restores", api.RoleViewer, c.restores)
	c.route("POST /restores/{id}/cancel", api.RoleOperator, c.cancelRestore)
	c.route("GET /restore-tests", api.RoleViewer, c.restoreTests)
	c.route("GET /restore-tests/{id}", api.RoleViewer, c.restoreTestPage)
	c.route("POST /restore-tests", api.RoleOperator, c.startRestoreTest)
	c.route("GET /instant-recoveries", api.RoleViewer, c.instantRecoveries)
	c.route("POST /instant-recoveries", api.RoleOperator, c.startInstantRecovery)
	c.route("POST /instant-recoveries/{id}/stop", api.RoleOperator, c.stopInstantRecovery)
	c.route("POST /instant-recoveries/{id}/migrate", api.RoleOperator, c.migrateInstantRecovery)
	c.route("GET /jobs", api.RoleViewer, c.jobs)
	c.route("GET /jobs/stream", api.RoleViewer, c.jobStream)
	c.route("GET /policies", api.RoleViewer, c.policies)
	c.route("GET /policies/new", api.RoleViewer, c.policyForm)
	c.route("GET /policies/{name}", api.RoleViewer, c.policyPage)
	c.route("POST /policies", api.RoleOperator, c.savePolicy)
	c.route("POST /policies/{name}", api.RoleOperator, c.savePolicy)
	c.route("POST /policies/{name}/delete", api.RoleOperator, c.deletePolicy)
	c.route("GET /agents", api.RoleViewer, c.agents)
	c.route("POST /agents/tokens", api.RoleAdmin, c.createJoinToken)
	c.route("POST /agents/{id}/revoke", api.RoleAdmin, c.revokeAgent)
	c.route("GET /repositories", api.RoleAdmin, c.repositories)
	c.route("GET /events", api.RoleViewer, c.eventsPage)
	return c, nil
}

// SetInstantRecoveries gives the console the instant-recovery service of a hub that serves NFS,
// made after the console; call it before serving.
func (c *Console) SetInstantRecoveries(s instantRecoveryService) { c.d.InstantRecoveries = s }

// ServeHTTP serves the console with its security headers.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	if !strings.HasPrefix(r.URL.Path, "/static/") {
		h.Set("Cache-Control", "no-store")
	}
	c.mux.ServeHTTP(w, r)
}

// HasSession reports whether the request carries the cookie of a live session: the API's
// limits count such requests as credentialed. Any other cookie counts for nothing, or anyone
// could escape the limits on anonymous requests by sending one.
func (c *Console) HasSession(r *http.Request) bool {
	ck, err := r.Cookie(SessionCookie)
	if err != nil || ck.Value == "" {
		return false
	}
	_, err = c.d.Accounts.Session(r.Context(), ck.Value)
	return err == nil
}

// Paths lists the first path segments the console serves, for the router in front of it.
func Paths() []string {
	return []string{"/", "/login", "/logout", "/static", "/vms", "/backups", "/jobs", "/restores", "/restore-tests", "/instant-recoveries", "/policies", "/agents", "/repositories", "/events"}
}

type ctxKey int

const (
	userKey ctxKey = iota
	secretKey
)

// route registers a handler that needs a signed-in user of at least role need; a change
// (anything but GET) must also carry the session's CSRF token, checked before the role so that
// a forged request learns nothing, and is recorded as an audit event like the API's.
// served admits h, a read of the backup its path names, within the hub's bound on those served
// at once (restore.MaxServed, shared with the API): over it, after a short wait, the page says
// so (429). The backup is held against deletion while h runs.
func (c *Console) served(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		release, err := c.d.Images.Serve(r.Context(), r.PathValue("id"))
		if err != nil {
			if errors.Is(err, restore.ErrBusy) {
				w.Header().Set("Retry-After", "5")
			}
			c.fail(w, r, err)
			return
		}
		defer release()
		h(stall.New(w, c.d.ReadStall), r)
	}
}

func (c *Console) route(pattern, need string, h http.HandlerFunc) {
	change := !strings.HasPrefix(pattern, "GET ")
	c.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie(SessionCookie)
		var u accounts.User
		if err == nil {
			u, err = c.d.Accounts.Session(r.Context(), ck.Value)
		}
		if err != nil {
			if !errors.Is(err, http.ErrNoCookie) && !errors.Is(err, accounts.ErrNoSession) {
				c.fail(w, r, err)
				return
			}
			if change || r.URL.Path == "/jobs/stream" {
				c.errorPage(w, r, http.StatusUnauthorized, "not signed in: sign in at /login")
				return
			}
			http.Redirect(w, r, "/login?next="+urlQueryEscape(r.URL.Path), http.StatusSeeOther)
			return
		}
		ctx := context.WithValue(context.WithValue(r.Context(), userKey, u), secretKey, ck.Value)
		r = r.WithContext(ctx)
		if change {
			rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			defer c.audit(r, u, pattern, rec)
			w = rec
			if !c.validCSRF(r, ck.Value) {
				c.errorPage(w, r, http.StatusForbidden, "missing or wrong CSRF token: reload the page and try again")
				return
			}
		}
		if !identity.Allows(u.Role, need) {
			c.errorPage(w, r, http.StatusForbidden, fmt.Sprintf("forbidden: %s role is needed, user %s has %s", need, u.Name, u.Role))
			return
		}
		h(w, r)
	})
}

// csrfFor derives the CSRF token of a session from its secret: unguessable without the
// (HttpOnly) cookie, the same on every hub instance, and nothing to store.
func csrfFor(secret string) string {
	sum := sha256.Sum256([]byte("sendense console csrf\x00" + secret))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func (c *Console) validCSRF(r *http.Request, secret string) bool {
	got := r.Header.Get("X-CSRF-Token")
	if got == "" {
		r.Body = http.MaxBytesReader(nil, r.Body, 1<<20)
		got = r.PostFormValue(CSRFField)
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(csrfFor(secret))) == 1
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// audit records a console change as the API records an operator request: an audit event naming
// the user (console:NAME), the address, the route and the answer's status. Bodies are never
// recorded: some carry passwords or produce join tokens.
func (c *Console) audit(r *http.Request, u accounts.User, pattern string, rec *statusRecorder) {
	_, route, _ := strings.Cut(pattern, " ")
	c.record(r, u.Name, u.Role, route, rec.status)
}

// record stores one audit event of the console; a failure is logged and changes no answer.
func (c *Console) record(r *http.Request, user, role, route string, code int) {
	c.recordDetails(r, user, role, route, code, nil)
}

// recordDetails records an audit event with extra details (a download's file and bytes).
func (c *Console) recordDetails(r *http.Request, user, role, route string, code int, extra map[string]string) {
	status := strconv.Itoa(code)
	e := api.Event{
		Type: api.EventAudit, Actor: "console:" + user, SourceAddress: clientIP(r), Outcome: status,
		Details: map[string]string{"method": r.Method, "route": route, "path": r.URL.Path, "status": status, "console_user": user},
	}
	for k, v := range extra {
		e.Details[k] = v
	}
	if role != "" {
		e.Details["role"] = role
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if err := c.d.Events.Record(ctx, e); err != nil {
		c.d.Log.ErrorContext(ctx, "record console audit event", "route", route, "status", status, "err", err)
	}
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func userOf(r *http.Request) accounts.User {
	u, _ := r.Context().Value(userKey).(accounts.User)
	return u
}

// fail answers a domain error with the API's status for it.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	if c.d.Status != nil {
		code = c.d.Status(err)
	}
	msg := err.Error()
	if code >= 500 {
		c.d.Log.ErrorContext(r.Context(), "console request failed", "path", r.URL.Path, "err", err)
		msg = "internal error (the hub's log has the details)"
	}
	c.errorPage(w, r, code, msg)
}
