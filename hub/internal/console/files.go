package console

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"path"
	"strconv"
	"strings"

	"github.com/sendense/sendense/hub/internal/files"
	"github.com/sendense/sendense/shared/api"
)

// crumb is one step of the path shown above a listing.
type crumb struct {
	Name string
	Path string
}

// fileRow is one entry of a listing with the path it opens.
type fileRow struct {
	Name   string
	Type   string
	Size   int64
	Mtime  string
	Mode   string
	Target string
	Path   string
}

// filesPage lists a directory of a restore point's disk: at / its volumes (p1, p2, … or disk),
// below them the filesystem, with a download of each file and of each directory as tar.
func (c *Console) filesPage(w http.ResponseWriter, r *http.Request) {
	b, err := c.d.Files.Open(r.Context(), r.PathValue("id"), r.PathValue("disk"))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	l, err := b.List(r.URL.Query().Get("path"))
	if err != nil {
		c.failFile(w, r, err)
		return
	}
	crumbs := []crumb{{Name: "/", Path: "/"}}
	if names, err := files.SplitPath(l.Path); err == nil {
		for i, n := range names {
			crumbs = append(crumbs, crumb{Name: n, Path: "/" + strings.Join(names[:i+1], "/")})
		}
	}
	rows := make([]fileRow, 0, len(l.Entries))
	for _, e := range l.Entries {
		row := fileRow{Name: e.Name, Type: e.Type, Size: e.Size, Mode: fmt.Sprintf("%04o", e.Mode), Target: e.Target,
			Path: path.Join(l.Path, e.Name)}
		if !e.Mtime.IsZero() {
			row.Mtime = e.Mtime.UTC().Format("2006-01-02 15:04:05Z")
		}
		rows = append(rows, row)
	}
	c.render(w, r, http.StatusOK, "files", map[string]any{
		"BackupID": b.Disk.BackupID, "DiskID": b.Disk.DiskID, "Path": l.Path, "Crumbs": crumbs, "Entries": rows,
		"Top": l.Path == "/",
	})
}

// fileDownload serves one file of a restore point. Its first bytes are read before the status
// is sent, so damage there is an error page; damage later cuts the download. Every download,
// complete or not, is recorded as an audit event as the API records it.
func (c *Console) fileDownload(w http.ResponseWriter, r *http.Request) {
	b, err := c.d.Files.Open(r.Context(), r.PathValue("id"), r.PathValue("disk"))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	f, err := b.File(r.URL.Query().Get("path"))
	if err != nil {
		c.failFile(w, r, err)
		return
	}
	size := f.Entry.Size
	first := make([]byte, min(size, 1<<20))
	if _, err := f.ReadAt(first, 0); err != nil && !errors.Is(err, io.EOF) {
		f.Done(0, err)
		c.auditDownload(r, b, f.Path, 0, err)
		c.failFile(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	h.Set("Content-Disposition", api.Attachment(path.Base(f.Path)))
	w.WriteHeader(http.StatusOK)
	written := int64(0)
	_, err = w.Write(first)
	if err == nil {
		written = int64(len(first))
		var rest int64
		rest, err = f.Copy(w, written, size-written)
		written += rest
	}
	f.Done(written, err)
	c.auditDownload(r, b, f.Path, written, err)
	if err != nil {
		c.d.Log.ErrorContext(r.Context(), "console file download cut", "backup_id", b.Disk.BackupID, "disk_id", b.Disk.DiskID,
			"path", f.Path, "bytes_written", written, "err", err)
		panic(http.ErrAbortHandler) // the browser must see a failed download, not a short file
	}
}

// archiveDownload streams a directory of a restore point as a tar archive, audited as a file is.
func (c *Console) archiveDownload(w http.ResponseWriter, r *http.Request) {
	b, err := c.d.Files.Open(r.Context(), r.PathValue("id"), r.PathValue("disk"))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	a, err := b.Archive(r.URL.Query().Get("path"))
	if err != nil {
		c.failFile(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-tar")
	h.Set("Content-Disposition", api.Attachment(a.Name+".tar"))
	rec := &writeTracker{ResponseWriter: w}
	n, err := a.Stream(rec)
	c.auditDownload(r, b, a.Path, n, err)
	if err == nil {
		return
	}
	if !rec.wrote {
		c.failFile(w, r, err)
		return
	}
	c.d.Log.ErrorContext(r.Context(), "console archive download cut", "backup_id", b.Disk.BackupID, "disk_id", b.Disk.DiskID,
		"path", a.Path, "bytes_written", n, "err", err)
	panic(http.ErrAbortHandler)
}

// failFile answers an error of a restore point's files: damage is named as the API names it
// (the error itself names chunk files of the repository and stays in the hub's log).
func (c *Console) failFile(w http.ResponseWriter, r *http.Request, err error) {
	if !errors.Is(err, files.ErrDamaged) {
		c.fail(w, r, err)
		return
	}
	c.d.Log.ErrorContext(r.Context(), "console request failed: restore point damaged", "path", r.URL.Path, "err", err)
	c.errorPage(w, r, http.StatusInternalServerError, "path "+strconv.Quote(r.URL.Query().Get("path"))+
		": a chunk under it is missing or fails its checks (it is quarantined: see the chunk_quarantined events; the next backup of these bytes uploads it again); nothing of it was served")
}

// writeTracker notes whether anything (and so the status) was sent.
type writeTracker struct {
	http.ResponseWriter
	wrote bool
}

func (t *writeTracker) Write(p []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(p)
}

// auditDownload records who downloaded what from which restore point and how it ended, with
// the details the API's download events carry.
func (c *Console) auditDownload(r *http.Request, b *files.Browser, p string, n int64, err error) {
	u := userOf(r)
	code := http.StatusOK
	result := "complete"
	if err != nil {
		result = "failed"
		code = http.StatusInternalServerError
		if c.d.Status != nil {
			code = c.d.Status(err)
		}
	}
	route := strings.TrimPrefix(r.Pattern, "GET ")
	c.recordDetails(r, u.Name, u.Role, route, code, map[string]string{
		"backup_id": b.Disk.BackupID, "disk_id": b.Disk.DiskID, "file": p, "bytes": strconv.FormatInt(n, 10), "result": result,
	})
}
