package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
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

// attempt starts a sign-in attempt under keys. When one of them already has Failures failures
// within the window it returns how long it stays blocked, and counts nothing. Otherwise it
// counts the attempt as a failure of every key at once — so that concurrent attempts cannot all
// pass before any has failed — and returns undo, which takes that count back (a sign-in that
// succeeded, or one that failed for another reason than its credentials).
func (l *loginLimiter) attempt(keys ...string) (wait time.Duration, undo func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, k := range keys {
		if ts := l.prune(k, now); len(ts) >= l.limit.Failures {
			wait = max(wait, ts[0].Add(l.limit.Window).Sub(now))
		}
	}
	if wait > 0 {
		return wait, func() {}
	}
	if len(l.fails) > maxTracked {
		for k := range l.fails {
			l.prune(k, now)
		}
	}
	for _, k := range keys {
		l.fails[k] = append(l.fails[k], now)
	}
	return 0, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, k := range keys {
			ts := l.fails[k]
			if i := slices.Index(ts, now); i >= 0 {
				l.fails[k] = slices.Delete(ts, i, i+1)
			}
			if len(l.fails[k]) == 0 {
				delete(l.fails, k)
			}
		}
	}
}

// maxTracked bounds the limiter's memory: past it, every key is pruned before one is added, so
// only failures within the window (at most Failures per key) are kept.
const maxTracked = 100_000

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

// unknownUser stands for a sign-in's user name in records when no user has it.
const unknownUser = "(unknown user)"

// safeNext keeps a post-login redirect on this site: a local absolute path only, without
// backslashes or control characters (a browser drops a tab or a line break, which can turn
// "/<tab>/host" into "//host").
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsRune(next, '\\') ||
		strings.IndexFunc(next, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
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
	// A name no user can have counts against the address only: the limiter then tracks user
	// names of at most 64 characters.
	keys := []string{"addr:" + clientIP(r)}
	validName := accounts.ValidName(name) == nil
	userKey := "user:" + name
	if validName {
		keys = append(keys, userKey)
	}
	wait, undo := c.limiter.attempt(keys...)
	if wait > 0 {
		// Not recorded: anyone can send these, as fast as they like.
		secs := int(wait.Round(time.Second) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
		c.showLogin(w, r, http.StatusTooManyRequests, fmt.Sprintf("too many failed sign-ins for this user or from this address: try again in %d s", max(secs, 1)))
		return
	}
	var secret string
	var u accounts.User
	err = accounts.ErrUnknownUser
	if validName {
		secret, u, err = c.d.Accounts.SignIn(r.Context(), name, password)
	}
	if errors.Is(err, accounts.ErrBadCredentials) {
		// An unknown name is often a password typed in the wrong field: it is neither recorded
		// nor logged.
		who := name
		if errors.Is(err, accounts.ErrUnknownUser) {
			who = unknownUser
		}
		c.record(r, who, "", "/login", http.StatusUnauthorized)
		c.d.Log.WarnContext(r.Context(), "console sign-in refused", "user", who, "remote_addr", clientIP(r))
		c.showLogin(w, r, http.StatusUnauthorized, "wrong user name or password")
		return
	}
	undo()
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
