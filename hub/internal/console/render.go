package console

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/sendense/sendense/hub/internal/identity"
)

var pageNames = []string{"login", "error", "dashboard", "vms", "vm", "backups", "backup", "jobs", "policies", "policy", "agents", "repositories", "events", "restores", "files", "restoretests", "restoretest", "instantrecoveries"}

func (c *Console) parseTemplates() error {
	funcs := template.FuncMap{
		"bytes": humanBytes,
		"time": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		},
		"pct": func(done, total int64) string {
			if total <= 0 {
				return "0"
			}
			return fmt.Sprintf("%.0f", 100*float64(min(done, total))/float64(total))
		},
	}
	for _, p := range pageNames {
		t, err := template.New(p).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+p+".html")
		if err != nil {
			return fmt.Errorf("parse console page %s: %w", p, err)
		}
		c.pages[p] = t
	}
	return nil
}

// view is what every page's layout sees besides the page's own data.
type view struct {
	Title    string
	User     string
	Role     string
	CSRF     string
	Operator bool // may change backups and policies
	Admin    bool // may manage agents and repositories
	Data     any
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page string, data any) {
	u := userOf(r)
	secret, _ := r.Context().Value(secretKey).(string)
	v := view{Title: page, User: u.Name, Role: u.Role, Data: data,
		Operator: identity.Allows(u.Role, "operator"), Admin: identity.Allows(u.Role, "admin")}
	if secret != "" {
		v.CSRF = csrfFor(secret)
	}
	var buf bytes.Buffer
	if err := c.pages[page].ExecuteTemplate(&buf, "layout", v); err != nil {
		c.d.Log.ErrorContext(r.Context(), "render console page", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (c *Console) errorPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c.render(w, r, status, "error", map[string]any{"Status": status, "StatusText": http.StatusText(status), "Message": msg})
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
