package console_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/accounts"
	"github.com/sendense/sendense/hub/internal/api"
	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/console"
	"github.com/sendense/sendense/hub/internal/events"
	"github.com/sendense/sendense/hub/internal/files"
	"github.com/sendense/sendense/hub/internal/inventory"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/hub/internal/verify"
	wire "github.com/sendense/sendense/shared/api"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// policies is an in-memory policy service that records what it was asked to change.
type policies struct {
	mu      sync.Mutex
	created []wire.Policy
}

func (p *policies) Create(_ context.Context, in wire.Policy) (wire.Policy, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.created = append(p.created, in)
	return in, nil
}
func (p *policies) Update(_ context.Context, _ string, in wire.Policy) (wire.Policy, error) {
	return in, nil
}
func (p *policies) Get(context.Context, string) (wire.Policy, error) {
	return wire.Policy{}, catalog.ErrNotFound
}
func (p *policies) List(context.Context) ([]wire.Policy, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]wire.Policy(nil), p.created...), nil
}
func (p *policies) Delete(context.Context, string) error                  { return nil }
func (p *policies) Unprotected(context.Context) ([]wire.VMContext, error) { return nil, nil }
func (p *policies) OverdueVMs(context.Context) ([]string, error)          { return nil, nil }
func (p *policies) Prune(context.Context, policy.PruneOptions) (policy.PruneReport, error) {
	return policy.PruneReport{}, nil
}
func (p *policies) count() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.created) }

// empty answers every read with nothing: these tests are about signing in, not the pages.
type empty struct{}

func (empty) List(context.Context, inventory.Filter) (wire.VMList, error) { return wire.VMList{}, nil }
func (empty) Show(context.Context, string) (wire.VMContext, error) {
	return wire.VMContext{}, catalog.ErrNotFound
}

type noBackups struct{}

func (noBackups) Start(context.Context, wire.StartBackupRequest) (wire.Backup, error) {
	return wire.Backup{}, catalog.ErrNotFound
}
func (noBackups) Get(context.Context, string) (wire.Backup, error) {
	return wire.Backup{}, catalog.ErrNotFound
}
func (noBackups) List(context.Context, jobs.ListFilter) (wire.BackupList, error) {
	return wire.BackupList{}, nil
}
func (noBackups) Cancel(context.Context, string) (wire.Backup, error) {
	return wire.Backup{}, catalog.ErrNotFound
}
func (noBackups) Delete(context.Context, string) error { return catalog.ErrNotFound }
func (noBackups) SetProtected(context.Context, string, bool) (wire.Backup, error) {
	return wire.Backup{}, catalog.ErrNotFound
}
func (n noBackups) OpenIn(ctx context.Context, backupID, diskID, _ string) (*restore.Image, restore.Disk, error) {
	return n.Open(ctx, backupID, diskID)
}

func (noBackups) Serve(context.Context, string) (func(), error) { return func() {}, nil }

func (noBackups) Open(context.Context, string, string) (*restore.Image, restore.Disk, error) {
	return nil, restore.Disk{}, catalog.ErrNotFound
}
func (noBackups) Run(context.Context, string) (*verify.Report, error) {
	return nil, catalog.ErrNotFound
}
func (noBackups) StartRestore(context.Context, wire.RestoreRequest) (wire.Restore, error) {
	return wire.Restore{}, catalog.ErrNotFound
}
func (noBackups) ListRestores(context.Context, jobs.RestoreListFilter) (wire.RestoreList, error) {
	return wire.RestoreList{}, nil
}
func (noBackups) CancelRestore(context.Context, string) (wire.Restore, error) {
	return wire.Restore{}, catalog.ErrNotFound
}
func (noBackups) Agents(context.Context) ([]wire.Agent, error) { return nil, nil }
func (noBackups) RevokeAgent(context.Context, string) error    { return catalog.ErrNotFound }
func (noBackups) CreateJoinToken(context.Context, string, time.Duration) (string, wire.JoinTokenInfo, error) {
	return "", wire.JoinTokenInfo{}, catalog.ErrNotFound
}
func (noBackups) Describe(context.Context) ([]wire.Repository, error) { return nil, nil }

type env struct {
	console *console.Console
	srv     *httptest.Server
	clk     *clock
	pol     *policies
	evs     *events.Service
	acct    *accounts.Service
}

const password = "correct horse battery"

// newEnv serves a console over a fresh, migrated catalog of the dialect.
func newEnv(t *testing.T, dialect string) *env {
	t.Helper()
	return newEnvWith(t, dialect, noBackups{}, &restoreTests{})
}

// newEnvWith is newEnv with the restore points files are browsed in and the restore tests.
func newEnvWith(t *testing.T, dialect string, images interface {
	Open(context.Context, string, string) (*restore.Image, restore.Disk, error)
	OpenIn(context.Context, string, string, string) (*restore.Image, restore.Disk, error)
}, rt *restoreTests) *env {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	cat := catalogtest.Open(t, dialect)
	if _, err := cat.MigrateUp(t.Context(), log); err != nil {
		t.Fatalf("migrate up: %v", err)
	}
	clk := &clock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	acct := accounts.New(cat, log, accounts.Options{Now: clk.Now, BcryptCost: 4, SessionLifetime: time.Hour})
	for _, u := range []struct{ name, role string }{{"olga", wire.RoleOperator}, {"vera", wire.RoleViewer}, {"mallory", wire.RoleViewer}, {"ada", wire.RoleAdmin}} {
		if _, err := acct.Add(t.Context(), u.name, u.role, password); err != nil {
			t.Fatal(err)
		}
	}
	pol := &policies{}
	evs := events.New(cat, log)
	c, err := console.New(console.Deps{Log: log, Accounts: acct, VMs: empty{}, Backups: noBackups{}, Images: noBackups{}, Restores: noBackups{}, Policies: pol,
		Agents: noBackups{}, Repositories: repos{}, Events: evs, Verify: noBackups{}, Status: api.StatusOf, Now: clk.Now,
		Files: files.NewService(images, nil), RestoreTests: rt,
		LoginLimit: console.LoginLimit{Failures: 3, Window: 10 * time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(c)
	t.Cleanup(srv.Close)
	return &env{console: c, srv: srv, clk: clk, pol: pol, evs: evs, acct: acct}
}

// client is a browser-like client: a cookie jar, no automatic redirects.
func (e *env) client(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	cl := e.srv.Client()
	return &http.Client{Transport: cl.Transport, Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var csrfRE = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

func get(t *testing.T, cl *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := cl.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func post(t *testing.T, cl *http.Client, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := cl.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF field in page:\n%s", page)
	}
	return m[1]
}

// login signs in as the browser would: fetch the form, post it with its CSRF token.
func (e *env) login(t *testing.T, cl *http.Client, user, pw string) *http.Response {
	t.Helper()
	_, page := get(t, cl, e.srv.URL+"/login")
	resp, _ := post(t, cl, e.srv.URL+"/login", url.Values{"csrf_token": {csrfOf(t, page)}, "username": {user}, "password": {pw}, "next": {"/policies"}})
	return resp
}

func sessionCookie(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == console.SessionCookie {
			return c
		}
	}
	return nil
}

func TestConsoleAuth(t *testing.T) {
	for _, dialect := range catalogtest.Dialects {
		t.Run(dialect, func(t *testing.T) { authCases(t, dialect) })
	}
}

func authCases(t *testing.T, dialect string) {
	{
		t.Run("sign in sets a strict session cookie and shows the dashboard", func(t *testing.T) {
			e := newEnv(t, dialect)
			cl := e.client(t)
			resp := e.login(t, cl, "olga", password)
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/policies" {
				t.Fatalf("sign-in: %d to %q, want 303 to /policies", resp.StatusCode, resp.Header.Get("Location"))
			}
			c := sessionCookie(resp)
			if c == nil || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge != 3600 {
				t.Fatalf("session cookie %+v: want Secure, HttpOnly, SameSite=Strict, Path=/, Max-Age=3600", c)
			}
			r, page := get(t, cl, e.srv.URL+"/")
			if r.StatusCode != http.StatusOK || !strings.Contains(page, "<h1>Dashboard</h1>") || !strings.Contains(page, "olga (operator)") {
				t.Fatalf("dashboard: %d\n%s", r.StatusCode, page)
			}
			if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
				t.Fatalf("Content-Security-Policy %q", csp)
			}
		})
		t.Run("wrong password and unknown user are refused alike", func(t *testing.T) {
			e := newEnv(t, dialect)
			for _, u := range []string{"olga", "nobody"} {
				cl := e.client(t)
				_, page := get(t, cl, e.srv.URL+"/login")
				resp, body := post(t, cl, e.srv.URL+"/login", url.Values{"csrf_token": {csrfOf(t, page)}, "username": {u}, "password": {"not the password"}})
				if resp.StatusCode != http.StatusUnauthorized || sessionCookie(resp) != nil || !strings.Contains(body, "wrong user name or password") {
					t.Fatalf("%s with a wrong password: %d, cookie %v", u, resp.StatusCode, sessionCookie(resp))
				}
				if r, _ := get(t, cl, e.srv.URL+"/"); r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/login") {
					t.Fatalf("dashboard after a refused sign-in: %d %q, want a redirect to /login", r.StatusCode, r.Header.Get("Location"))
				}
			}
			evs, err := e.evs.List(t.Context(), events.Filter{Type: wire.EventAudit})
			if err != nil {
				t.Fatal(err)
			}
			if len(evs.Events) != 2 || evs.Events[0].Actor != "console:(unknown user)" || evs.Events[1].Actor != "console:olga" ||
				evs.Events[0].Outcome != "401" || evs.Events[1].Outcome != "401" {
				t.Fatalf("audit events %+v: want both refused sign-ins", evs.Events)
			}
		})
		t.Run("failed sign-ins are limited per user and per address", func(t *testing.T) {
			e := newEnv(t, dialect)
			cl := e.client(t)
			for range 3 {
				if resp := e.login(t, cl, "olga", "not the password"); resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("failed sign-in: %d, want 401", resp.StatusCode)
				}
			}
			// The right password does not get through while the user is blocked.
			resp := e.login(t, cl, "olga", password)
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || sessionCookie(resp) != nil {
				t.Fatalf("sign-in while blocked: %d Retry-After %q, want 429 with Retry-After and no session", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
			// The address is blocked as well: another user from it is refused.
			if resp := e.login(t, cl, "vera", password); resp.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("another user from the blocked address: %d, want 429", resp.StatusCode)
			}
			e.clk.Add(10*time.Minute + time.Second)
			if resp := e.login(t, cl, "olga", password); resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("sign-in after the window: %d, want 303", resp.StatusCode)
			}
		})
		t.Run("concurrent failed sign-ins are counted before their passwords are checked", func(t *testing.T) {
			e := newEnv(t, dialect)
			cl := e.client(t)
			_, page := get(t, cl, e.srv.URL+"/login")
			form := url.Values{"csrf_token": {csrfOf(t, page)}, "username": {"olga"}, "password": {"not the password"}}
			// Every request carries the first sign-in cookie, as a script would: through the jar,
			// a refusal's fresh cookie would reach the requests sent after it and fail their
			// CSRF check instead.
			u, _ := url.Parse(e.srv.URL + "/login")
			var loginCookie *http.Cookie
			for _, ck := range cl.Jar.Cookies(u) {
				if ck.Name == console.LoginCookie {
					loginCookie = ck
				}
			}
			if loginCookie == nil {
				t.Fatal("the sign-in page set no sign-in cookie")
			}
			noJar := &http.Client{Transport: cl.Transport, CheckRedirect: cl.CheckRedirect}
			codes := make(chan int, 20)
			var wg sync.WaitGroup
			for range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, u.String(), strings.NewReader(form.Encode()))
					if err != nil {
						codes <- 0
						return
					}
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
					req.AddCookie(&http.Cookie{Name: console.LoginCookie, Value: loginCookie.Value})
					resp, err := noJar.Do(req)
					if err != nil {
						codes <- 0
						return
					}
					resp.Body.Close()
					codes <- resp.StatusCode
				}()
			}
			wg.Wait()
			close(codes)
			n := map[int]int{}
			for c := range codes {
				n[c]++
			}
			if n[http.StatusUnauthorized] != 3 || n[http.StatusTooManyRequests] != 17 {
				t.Fatalf("20 concurrent wrong passwords: %v, want 3 checked (401) and 17 refused (429)", n)
			}
			evs, err := e.evs.List(t.Context(), events.Filter{Type: wire.EventAudit})
			if err != nil {
				t.Fatal(err)
			}
			if len(evs.Events) != 3 {
				t.Fatalf("%d audit events, want the 3 refused sign-ins (refusals while blocked are not recorded)", len(evs.Events))
			}
		})
		t.Run("a name no user has is neither recorded nor tracked", func(t *testing.T) {
			e := newEnv(t, dialect)
			for _, name := range []string{"Sup3r-Secret-Passw0rd", strings.Repeat("x", 60<<10), "<b>x</b>"} {
				cl := e.client(t)
				if resp := e.login(t, cl, name, "whatever it is"); resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("unknown name of %d bytes: %d, want 401", len(name), resp.StatusCode)
				}
			}
			evs, err := e.evs.List(t.Context(), events.Filter{Type: wire.EventAudit})
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs.Events {
				if ev.Actor != "console:(unknown user)" || ev.Details["console_user"] != "(unknown user)" {
					t.Fatalf("audit event of an unknown name: %+v", ev)
				}
			}
			// The address's failures count: a real user from it is now blocked too.
			if resp := e.login(t, e.client(t), "olga", password); resp.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("sign-in after 3 unknown names from the address: %d, want 429", resp.StatusCode)
			}
		})
		t.Run("only a live session's cookie counts as credentials", func(t *testing.T) {
			e := newEnv(t, dialect)
			resp := e.login(t, e.client(t), "olga", password)
			live := sessionCookie(resp)
			for _, tc := range []struct {
				cookie *http.Cookie
				want   bool
			}{
				{nil, false},
				{&http.Cookie{Name: console.SessionCookie, Value: "bogus"}, false},
				{live, true},
			} {
				req := httptest.NewRequest(http.MethodPost, "/api/v1/enroll", nil)
				if tc.cookie != nil {
					req.AddCookie(tc.cookie)
				}
				if got := e.console.HasSession(req); got != tc.want {
					t.Errorf("HasSession with cookie %v = %v, want %v", tc.cookie, got, tc.want)
				}
			}
		})
		t.Run("a redirect after sign-in stays on the site", func(t *testing.T) {
			e := newEnv(t, dialect)
			for _, next := range []string{"/%09/evil.example/vms", "//evil.example", "/\\evil.example", "https://evil.example", "/%0d%0a/x"} {
				_, page := get(t, e.client(t), e.srv.URL+"/login?next="+next)
				if !strings.Contains(page, `name="next" value="/"`) {
					t.Errorf("next=%s: the form does not fall back to /", next)
				}
			}
			if _, page := get(t, e.client(t), e.srv.URL+"/login?next=/vms"); !strings.Contains(page, `name="next" value="/vms"`) {
				t.Error("next=/vms is not kept")
			}
		})
		t.Run("the jobs stream ends with its session", func(t *testing.T) {
			e := newEnv(t, dialect)
			cl := e.client(t)
			e.login(t, cl, "olga", password)
			_, page := get(t, cl, e.srv.URL+"/policies")
			resp, err := cl.Get(e.srv.URL + "/jobs/stream")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			first := make([]byte, 64)
			if _, err := resp.Body.Read(first); err != nil {
				t.Fatalf("first event: %v", err)
			}
			if r, _ := post(t, cl, e.srv.URL+"/logout", url.Values{"csrf_token": {csrfOf(t, page)}}); r.StatusCode != http.StatusSeeOther {
				t.Fatalf("sign-out: %d", r.StatusCode)
			}
			ended := make(chan error, 1)
			go func() { _, err := io.Copy(io.Discard, resp.Body); ended <- err }()
			select {
			case err := <-ended:
				if err != nil {
					t.Fatalf("the stream ended with %v, want its end", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the jobs stream still runs 20 s after sign-out")
			}
		})
		t.Run("an expired session is signed out", func(t *testing.T) {
			e := newEnv(t, dialect)
			cl := e.client(t)
			e.login(t, cl, "olga", password)
			_, page := get(t, cl, e.srv.URL+"/policies")
			token := csrfOf(t, page)
			e.clk.Add(time.Hour)
			if r, _ := get(t, cl, e.srv.URL+"/policies"); r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/login") {
				t.Fatalf("page with an expired session: %d %q, want a redirect to /login", r.StatusCode, r.Header.Get("Location"))
			}
			if r, _ := post(t, cl, e.srv.URL+"/policies", url.Values{"csrf_token": {token}, "name": {"p"}, "schedule": {"@daily"}}); r.StatusCode != http.StatusUnauthorized {
				t.Fatalf("change with an expired session: %d, want 401", r.StatusCode)
			}
			if e.pol.count() != 0 {
				t.Fatal("a policy was created with an expired session")
			}
		})
		t.Run("changes need the session's CSRF token", func(t *testing.T) {
			e := newEnv(t, dialect)
			cl := e.client(t)
			e.login(t, cl, "olga", password)
			_, page := get(t, cl, e.srv.URL+"/policies")
			token := csrfOf(t, page)
			other := e.client(t)
			e.login(t, other, "mallory", password)
			_, otherPage := get(t, other, e.srv.URL+"/policies")
			form := url.Values{"name": {"nightly"}, "schedule": {"0 3 * * *"}}
			for name, tok := range map[string]string{"missing": "", "wrong": token[:len(token)-2] + "xx", "another session's": csrfOf(t, otherPage)} {
				f := url.Values{"csrf_token": {tok}}
				for k, v := range form {
					f[k] = v
				}
				if r, body := post(t, cl, e.srv.URL+"/policies", f); r.StatusCode != http.StatusForbidden || !strings.Contains(body, "CSRF") {
					t.Fatalf("%s CSRF token: %d, want 403 naming CSRF", name, r.StatusCode)
				}
			}
			if e.pol.count() != 0 {
				t.Fatal("a policy was created without a valid CSRF token")
			}
			form.Set("csrf_token", token)
			if r, _ := post(t, cl, e.srv.URL+"/policies", form); r.StatusCode != http.StatusSeeOther || e.pol.count() != 1 {
				t.Fatalf("with the CSRF token: %d and %d policies, want 303 and 1", r.StatusCode, e.pol.count())
			}
			// Sign-in itself is protected: its form's token must match the login cookie.
			fresh := e.client(t)
			if r, _ := post(t, fresh, e.srv.URL+"/login", url.Values{"username": {"olga"}, "password": {password}}); r.StatusCode != http.StatusForbidden || sessionCookie(r) != nil {
				t.Fatalf("sign-in without CSRF token: %d, want 403 and no session", r.StatusCode)
			}
		})
		t.Run("a viewer is refused changes on the server", func(t *testing.T) {
			e := newEnv(t, dialect)
			cl := e.client(t)
			e.login(t, cl, "vera", password)
			_, page := get(t, cl, e.srv.URL+"/policies")
			if strings.Contains(page, `id="new-policy"`) {
				t.Fatal("the viewer is offered the new-policy button")
			}
			r, body := post(t, cl, e.srv.URL+"/policies", url.Values{"csrf_token": {csrfOf(t, page)}, "name": {"p"}, "schedule": {"@daily"}})
			if r.StatusCode != http.StatusForbidden || !strings.Contains(body, "operator role is needed") || e.pol.count() != 0 {
				t.Fatalf("viewer's change: %d, %d policies; want 403 naming the role and none", r.StatusCode, e.pol.count())
			}
			evs, err := e.evs.List(t.Context(), events.Filter{Type: wire.EventAudit})
			if err != nil {
				t.Fatal(err)
			}
			// Newest first: the refused change, then the sign-in.
			if len(evs.Events) != 2 || evs.Events[0].Actor != "console:vera" || evs.Events[0].Outcome != "403" ||
				evs.Events[1].Details["route"] != "/login" || evs.Events[1].Outcome != "303" {
				t.Fatalf("audit events %+v: want the viewer's sign-in and refused change", evs.Events)
			}
		})
		t.Run("sign-out ends the session on the server", func(t *testing.T) {
			e := newEnv(t, dialect)
			cl := e.client(t)
			resp := e.login(t, cl, "olga", password)
			stolen := sessionCookie(resp)
			_, page := get(t, cl, e.srv.URL+"/policies")
			if r, _ := post(t, cl, e.srv.URL+"/logout", url.Values{"csrf_token": {csrfOf(t, page)}}); r.StatusCode != http.StatusSeeOther {
				t.Fatalf("sign-out: %d", r.StatusCode)
			}
			// A copy of the cookie taken before sign-out no longer works.
			req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/policies", nil)
			req.AddCookie(stolen)
			r, err := e.client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode != http.StatusSeeOther {
				t.Fatalf("old session cookie after sign-out: %d, want a redirect to /login", r.StatusCode)
			}
		})
	}
}
