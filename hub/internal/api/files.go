package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/files"
	"github.com/sendense/sendense/shared/api"
)

// fileService browses the files of restore points (files.Service).
type fileService interface {
	OpenIn(ctx context.Context, backupID, diskID, repo string) (*files.Browser, error)
}

func (s *Server) registerFiles(v1 *gin.RouterGroup) {
	v1.GET(rel(v1, api.PathBackupFiles), s.requireRole(api.RoleViewer), s.limitServed(), s.listFiles)
	v1.GET(rel(v1, api.PathBackupFileContent), s.requireRole(api.RoleViewer), s.limitServed(), s.fileContent)
	v1.GET(rel(v1, api.PathBackupFileArchive), s.requireRole(api.RoleViewer), s.limitServed(), s.fileArchive)
}

// browse opens the disk of the request's backup, from the repository the query's repository
// names (a copy's) or its own; false when it answered an error.
func (s *Server) browse(c *gin.Context) (*files.Browser, bool) {
	if s.deps.Files == nil {
		s.fail(c, fmt.Errorf("file-level restore is not configured"))
		return nil, false
	}
	b, err := s.deps.Files.OpenIn(c.Request.Context(), c.Param("id"), c.Param("disk"), c.Query("repository"))
	if err != nil {
		s.fail(c, err)
		return nil, false
	}
	return b, true
}

// listFiles answers a directory of a restore point's disk.
func (s *Server) listFiles(c *gin.Context) {
	b, ok := s.browse(c)
	if !ok {
		return
	}
	l, err := b.List(c.Query("path"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, l)
}

// fileContent serves one file of a restore point with single byte-range support, as
// serveImage serves whole images. Damage before the first byte is answered with an error body;
// damage later aborts the connection, so that a client never takes a partial file for whole.
// Every download, complete or not, is recorded as an audit event.
func (s *Server) fileContent(c *gin.Context) {
	b, ok := s.browse(c)
	if !ok {
		return
	}
	f, err := b.File(c.Query("path"))
	if err != nil {
		s.fail(c, err)
		return
	}
	size := f.Entry.Size
	sum := sha256.Sum256([]byte(b.Disk.IndexDigest + "\x00" + f.Path))
	etag := `"` + hex.EncodeToString(sum[:16]) + `"` // a restore point never changes: nor do its files
	h := c.Writer.Header()
	h.Set("ETag", etag)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", api.Attachment(path.Base(f.Path)))
	h.Set("Last-Modified", f.Entry.Mtime.UTC().Format(http.TimeFormat))
	off, n, partial, ok := span(c, etag, size, false)
	if !ok {
		return
	}
	// The first bytes are read before the status is sent: damage there is an answer, not a
	// broken connection.
	first := make([]byte, min(n, 1<<20))
	if _, err := f.ReadAt(first, off); err != nil && !errors.Is(err, io.EOF) {
		f.Done(0, err)
		s.auditDownload(c, b, f.Path, 0, err)
		s.fail(c, err)
		return
	}
	if !startBody(c, off, n, size, partial) {
		return
	}
	written := int64(0)
	_, err = c.Writer.Write(first)
	if err == nil {
		written = int64(len(first))
		var rest int64
		rest, err = f.Copy(c.Writer, off+written, n-written)
		written += rest
	}
	f.Done(written, err)
	if err == nil {
		s.auditDownload(c, b, f.Path, written, nil)
		return
	}
	s.abortDownload(c, b, f.Path, written, err)
}

// fileArchive streams a directory of a restore point as a tar archive.
func (s *Server) fileArchive(c *gin.Context) {
	b, ok := s.browse(c)
	if !ok {
		return
	}
	a, err := b.Archive(c.Query("path"))
	if err != nil {
		s.fail(c, err)
		return
	}
	h := c.Writer.Header()
	h.Set("Content-Type", "application/x-tar")
	h.Set("Content-Disposition", api.Attachment(a.Name+".tar"))
	c.Status(http.StatusOK)
	n, err := a.Stream(c.Writer)
	if err == nil {
		s.auditDownload(c, b, a.Path, n, nil)
		return
	}
	if !c.Writer.Written() {
		s.auditDownload(c, b, a.Path, n, err)
		s.fail(c, err)
		return
	}
	s.abortDownload(c, b, a.Path, n, err)
}

// abortDownload records a download that failed after its status was sent and closes the
// connection: the client sees a truncated body and a broken connection, never a whole file.
func (s *Server) abortDownload(c *gin.Context, b *files.Browser, p string, written int64, err error) {
	if c.Request.Context().Err() == nil {
		s.deps.Log.ErrorContext(c.Request.Context(), "file download aborted", "backup_id", b.Disk.BackupID, "disk_id", b.Disk.DiskID,
			"path", p, "bytes_written", written, "err", err)
	}
	s.auditDownload(c, b, p, written, err)
	panic(http.ErrAbortHandler)
}

// auditDownload records who downloaded what from which restore point, and how it ended.
func (s *Server) auditDownload(c *gin.Context, b *files.Browser, p string, bytes int64, err error) {
	e := auditEvent(c)
	e.Details["backup_id"], e.Details["disk_id"], e.Details["file"] = b.Disk.BackupID, b.Disk.DiskID, p
	e.Details["bytes"] = strconv.FormatInt(bytes, 10)
	e.Details["result"] = "complete"
	if err != nil {
		e.Details["result"] = "failed"
		code, _ := statusOf(err)
		e.Outcome, e.Details["status"] = strconv.Itoa(code), strconv.Itoa(code)
	}
	s.recordAudit(c, e)
}
