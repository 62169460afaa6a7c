package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/httpin"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/shared/api"
)

// restoreService opens restore points.
type restoreService interface {
	// OpenIn opens a disk of a backup read from the repository named repo, the backup's own
	// or one holding a copy of it (empty: its own).
	OpenIn(ctx context.Context, backupID, diskID, repo string) (*restore.Image, restore.Disk, error)
	// Serve admits one read of a backup for a client, within the hub's bound, and holds the
	// backup against deletion until release.
	Serve(ctx context.Context, backupID string) (release func(), err error)
	// HoldFor, RenewHold and EndHold are a client's hold of a backup it reads in several
	// requests, renewed by the client; holder (its API token) is the only one who renews or
	// ends it.
	HoldFor(ctx context.Context, backupID, holder string) (api.BackupHold, error)
	RenewHold(ctx context.Context, backupID, id, holder string) (api.BackupHold, error)
	EndHold(ctx context.Context, backupID, id, holder string) error
}

func (s *Server) registerRestore(v1 *gin.RouterGroup) {
	v1.GET(rel(v1, api.PathBackupImage), s.requireRole(api.RoleViewer), s.limitServed(), s.diskImage)
	v1.HEAD("/backups/:id/disks/:disk/image", s.requireRole(api.RoleViewer), s.limitServed(), s.diskImage)
	// Whoever may read a restore point may hold it while reading, as each download does.
	v1.POST(rel(v1, api.PathBackupHolds), s.requireRole(api.RoleViewer), s.holdBackup)
	v1.PUT(rel(v1, api.PathBackupHold), s.requireRole(api.RoleViewer), s.renewHold)
	v1.DELETE(rel(v1, api.PathBackupHold), s.requireRole(api.RoleViewer), s.endHold)
}

// maxHoldID bounds a hold id in a path; the hub's ids are far shorter.
const maxHoldID = 64

// holdBackup begins a hold of a restore point (201 with the hold): 404 for an unknown backup,
// 409 for one that is not a restore point.
func (s *Server) holdBackup(c *gin.Context) {
	h, err := s.deps.Restore.HoldFor(c.Request.Context(), c.Param("id"), holder(c))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, h)
}

// renewHold extends a hold (200 with its new expiry): 404 once it expired or ended.
func (s *Server) renewHold(c *gin.Context) {
	id, ok := s.holdID(c)
	if !ok {
		return
	}
	h, err := s.deps.Restore.RenewHold(c.Request.Context(), c.Param("id"), id, holder(c))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, h)
}

// endHold ends a hold (204): 404 for one unknown or of another backup.
func (s *Server) endHold(c *gin.Context) {
	id, ok := s.holdID(c)
	if !ok {
		return
	}
	if err := s.deps.Restore.EndHold(c.Request.Context(), c.Param("id"), id, holder(c)); err != nil {
		s.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// holder is who takes, renews and ends a hold: the request's API token, so that a hold's id
// alone (a 409 never shows it, the audit shows its start) lets no other client end it.
func holder(c *gin.Context) string { return c.GetString(ctxTokenID) }

// holdID is the path's hold id, or false after answering 400 for one no hold could have.
func (s *Server) holdID(c *gin.Context) (string, bool) {
	id := c.Param("hold")
	if id == "" || len(id) > maxHoldID {
		s.fail(c, &api.FieldError{Field: "hold", Msg: fmt.Sprintf("must be a hold id of 1 to %d characters", maxHoldID)})
		return "", false
	}
	return id, true
}

// limitServed admits a read of restore points (an image download, a file-level restore) within
// the hub's bound on those served at once (restore.MaxServed): over it, after a short wait, the
// request is answered 429 with Retry-After and the client retries. However many requests a
// viewer sends, the hub holds a bounded amount of memory for them, and a client that stops
// reading gives its place back (Limits.ReadStall). The backup the path names is held against
// deletion, pruning and moves while the request runs (restore.Service.Hold).
func (s *Server) limitServed() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.deps.Restore == nil {
			c.Next()
			return
		}
		s.guardStall(c)
		release, err := s.deps.Restore.Serve(c.Request.Context(), c.Param("id"))
		if err != nil {
			if errors.Is(err, restore.ErrBusy) {
				c.Header("Retry-After", "5")
			}
			s.fail(c, err)
			return
		}
		defer release()
		c.Next()
	}
}

// diskImage streams the raw image of one disk of a restore point, with single byte-range
// support for random access. Every chunk is verified as it is read; damage aborts the response
// (the client sees a truncated body and a broken connection, never wrong bytes with a 200).
// The query's repository reads it from a copy in that repository.
func (s *Server) diskImage(c *gin.Context) {
	s.serveImage(c, c.Param("id"), c.Param("disk"), c.Query("repository"))
}

// serveImage answers the image of one disk of a backup (diskImage) read from the repository
// named repo (empty: the backup's own).
func (s *Server) serveImage(c *gin.Context, backupID, diskID, repo string) {
	img, d, err := s.deps.Restore.OpenIn(c.Request.Context(), backupID, diskID, repo)
	if err != nil {
		s.fail(c, err)
		return
	}
	size := img.Size()
	etag := `"` + d.IndexDigest + `"`
	h := c.Writer.Header()
	h.Set("ETag", etag)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-%s.raw"`, d.BackupID, d.DiskID))
	off, n, partial, ok := span(c, etag, size, true)
	if !ok || !startBody(c, off, n, size, partial) {
		return
	}
	written, err := img.Stream(c.Request.Context(), c.Writer, off, n, 4)
	if err != nil {
		if c.Request.Context().Err() == nil {
			s.deps.Log.ErrorContext(c.Request.Context(), "restore stream aborted", "backup_id", d.BackupID, "disk_id", d.DiskID,
				"offset", off, "bytes_written", written, "err", err)
		}
		panic(http.ErrAbortHandler) // closes the connection: the client cannot mistake this for a complete image
	}
}

// span answers the conditional and Range headers of a download of size bytes whose ETag is
// etag: it returns the bytes to send (the whole, or the one range asked for, then partial), or
// ok=false when it has answered already (304 Not Modified, or 416 with a JSON body).
// emptyRanges says whether a Range on an empty representation is parsed (and refused) rather
// than ignored.
func span(c *gin.Context, etag string, size int64, emptyRanges bool) (off, n int64, partial, ok bool) {
	h := c.Writer.Header()
	if inm := c.GetHeader("If-None-Match"); inm != "" && (inm == etag || inm == "*") {
		c.Status(http.StatusNotModified)
		return 0, 0, false, false
	}
	rh := c.GetHeader("Range")
	if rh == "" || (size == 0 && !emptyRanges) || (c.GetHeader("If-Range") != "" && c.GetHeader("If-Range") != etag) {
		return 0, size, false, true
	}
	o, l, ranged, err := httpin.ParseRange(rh, size)
	if err != nil {
		h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		c.AbortWithStatusJSON(http.StatusRequestedRangeNotSatisfiable, api.Error{Error: err.Error(), Code: api.CodeInvalid, Field: "Range"})
		return 0, 0, false, false
	}
	if !ranged {
		return 0, size, false, true
	}
	return o, l, true, true
}

// startBody sends the status and length headers of n bytes at off of a size-byte
// representation (206 with Content-Range for a range), and reports whether a body follows (not
// for HEAD).
func startBody(c *gin.Context, off, n, size int64, partial bool) bool {
	h := c.Writer.Header()
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	status := http.StatusOK
	if partial {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, size))
		status = http.StatusPartialContent
	}
	c.Status(status)
	return c.Request.Method != http.MethodHead
}
