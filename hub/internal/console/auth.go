package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sendense/sendense/hub/internal/accounts"
)

// LoginLimit bounds failed sign-ins: at most Failures within Window per client address and per
// user name; further attempts are refused with 429 until the window has passed the oldest.
type LoginLimit struct {
	Failures int           // default 5
	Window   time.Duration // default 15 minutes
}

type loginLimiter struct {
	limit LoginLimit
	now   func() time.Time
	mu    sync.Mutex
	fails map[string][]time.Time // "addr:…" and "user:…" → recent failures, oldest first
}

func newLoginLimiter(l LoginLimit, now func() time.Time) *loginLimiter {
	if l.Failures <= 0 {
		l.Failures = 5
	}
	if l.Window <= 0 {
		l.Window = 15 * time.Minute
	}
	return &loginLimiter{limit: l, now: now, fails: map[string][]time.Time{}}
}

// blocked returns how long the first blocked key stays blocked (0: not blocked).
func (l *loginLimiter) blocked(keys ...string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var wait time.Duration
	for _, k := range keys {
		ts := l.prune(k, now)
		if len(ts) >= l.limit.Failures {
			wait = max(wait, ts[0].Add(l.limit.Window).Sub(now))
		}
	}
	return wait
}

// maxTracked bounds the limiter's memory: past it, every key is pruned before one is added, so
// only failures within the window (at most Failures per key) are kept.
const maxTracked = 100_000

func (l *loginLimiter) fail(keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if len(l.fails) > maxTracked {
		for k := range l.fails {
			l.prune(k, now)
		}
	}
	for _, k := range keys {
		l.fails[k] = append(l.prune(k, now), now)
	}
}

func (l *loginLimiter) reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.fails, key)
}

// prune drops failures older than the window; the caller holds mu.
func (l *loginLimiter) prune(k string, now time.Time) []time.Time {
	ts := l.fails[k]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= l.limit.Window {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(l.fails, k)
		return nil
	}
	l.fails[k] = ts
	return ts
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b)
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

func urlPathEscape(s string) string { return url.PathEscape(s) }

// safeNext keeps a post-login redirect on this site: a local absolute path only.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/"
	}
	return next
}

func (c *Console) loginForm(w http.ResponseWriter, r *http.Request) {
	c.showLogin(w, r, http.StatusOK, "")
}

func (c *Console) showLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	token := randomToken()
	http.SetCookie(w, &http.Cookie{Name: LoginCookie, Value: token, Path: "/login", MaxAge: 3600, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	c.render(w, r, status, "login", map[string]any{"CSRF": token, "Next": safeNext(r.FormValue("next")), "Error": msg})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		c.errorPage(w, r, http.StatusBadRequest, "unreadable sign-in form: "+err.Error())
		return
	}
	ck, err := r.Cookie(LoginCookie)
	got := r.PostFormValue(CSRFField)
	if err != nil || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(ck.Value)) != 1 {
		c.errorPage(w, r, http.StatusForbidden, "missing or wrong CSRF token: reload the sign-in page and try again")
		return
	}
	name, password := strings.TrimSpace(r.PostFormValue("username")), r.PostFormValue("password")
	if name == "" || password == "" {
		c.showLogin(w, r, http.StatusBadRequest, "username and password are required")
		return
	}
	addrKey, userKey := "addr:"+clientIP(r), "user:"+name
	if wait := c.limiter.blocked(addrKey, userKey); wait > 0 {
		secs := int(wait.Round(time.Second) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
		c.record(r, name, "", "/login", http.StatusTooManyRequests)
		c.showLogin(w, r, http.StatusTooManyRequests, fmt.Sprintf("too many failed sign-ins for this user or from this address: try again in %d s", max(secs, 1)))
		return
	}
	secret, u, err := c.d.Accounts.SignIn(r.Context(), name, password)
	if errors.Is(err, accounts.ErrBadCredentials) {
		c.limiter.fail(addrKey, userKey)
		c.record(r, name, "", "/login", http.StatusUnauthorized)
		c.d.Log.WarnContext(r.Context(), "console sign-in refused", "user", name, "remote_addr", clientIP(r))
		c.showLogin(w, r, http.StatusUnauthorized, "wrong user name or password")
		return
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.limiter.reset(userKey)
	c.record(r, u.Name, u.Role, "/login", http.StatusSeeOther)
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: secret, Path: "/", MaxAge: int(c.d.Accounts.Lifetime() / time.Second),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.SetCookie(w, &http.Cookie{Name: LoginCookie, Value: "", Path: "/login", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	c.d.Log.InfoContext(r.Context(), "console sign-in", "user", u.Name, "role", u.Role, "remote_addr", clientIP(r))
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	secret, _ := r.Context().Value(secretKey).(string)
	if err := c.d.Accounts.SignOut(r.Context(), secret); err != nil {
		c.fail(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
