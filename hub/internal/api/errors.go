package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"syscall"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/files"
	"github.com/sendense/sendense/hub/internal/httpin"
	"github.com/sendense/sendense/hub/internal/identity"
	"github.com/sendense/sendense/hub/internal/ingest"
	"github.com/sendense/sendense/hub/internal/instantrecovery"
	"github.com/sendense/sendense/hub/internal/inventory"
	"github.com/sendense/sendense/hub/internal/pki"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/shared/api"
)

// StatusOf is the HTTP status the API answers err with: the one mapping of domain errors to
// status codes, also used by the console.
func StatusOf(err error) int {
	code, _ := statusOf(err)
	return code
}

// statusOf is the one place where domain errors become HTTP status codes and error codes.
func statusOf(err error) (int, string) {
	var fe *api.FieldError
	switch {
	case errors.As(err, &fe):
		return http.StatusBadRequest, api.CodeInvalidField
	case errors.Is(err, httpin.ErrTooLarge), errors.Is(err, ingest.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, api.CodeTooLarge
	case errors.Is(err, httpin.ErrSlowBody):
		return http.StatusRequestTimeout, api.CodeInvalid
	case errors.Is(err, errTooManyRequests), errors.Is(err, ingest.ErrBusy), errors.Is(err, ingest.ErrNoUploadMemory),
		errors.Is(err, restore.ErrBusy):
		return http.StatusTooManyRequests, api.CodeTooManyRequests
	case errors.Is(err, identity.ErrInvalidInput), errors.Is(err, pki.ErrBadCSR),
		errors.Is(err, repository.ErrDigestMismatch), errors.Is(err, repository.ErrBadBlob),
		errors.Is(err, repository.ErrZeroChunk), errors.Is(err, repository.ErrMissingChunk),
		errors.Is(err, ingest.ErrBadBody):
		return http.StatusBadRequest, api.CodeInvalid
	case errors.Is(err, identity.ErrNoCertificate), errors.Is(err, identity.ErrAgentUnknown),
		errors.Is(err, identity.ErrAPITokenInvalid), errors.Is(err, identity.ErrAPITokenRevoked),
		errors.Is(err, identity.ErrTokenInvalid), errors.Is(err, errNoBearer):
		return http.StatusUnauthorized, api.CodeUnauthenticated
	case errors.Is(err, identity.ErrAgentRevoked), errors.Is(err, identity.ErrCertSuperseded),
		errors.Is(err, identity.ErrForbiddenRole), errors.Is(err, identity.ErrTokenUsed),
		errors.Is(err, identity.ErrTokenExpired), errors.Is(err, identity.ErrTokenRevoked),
		errors.Is(err, catalog.ErrNotYours):
		return http.StatusForbidden, api.CodeForbidden
	case errors.Is(err, files.ErrBadPath), errors.Is(err, files.ErrNotDir), errors.Is(err, files.ErrNotFile):
		return http.StatusBadRequest, api.CodeInvalid
	case errors.Is(err, files.ErrNotFound):
		return http.StatusNotFound, api.CodeNotFound
	case errors.Is(err, files.ErrDamaged):
		return http.StatusInternalServerError, api.CodeDamaged
	case errors.Is(err, files.ErrUnsupported), errors.Is(err, files.ErrCorrupt), errors.Is(err, files.ErrTooLarge),
		errors.Is(err, instantrecovery.ErrUnsupported):
		return http.StatusUnprocessableEntity, api.CodeUnprocessable
	case errors.Is(err, restore.ErrNotRestorable):
		return http.StatusConflict, api.CodeConflict
	case errors.Is(err, repository.ErrIndexNotFound), errors.Is(err, repository.ErrIndexDamaged),
		errors.Is(err, repository.ErrVMConfigNotFound), errors.Is(err, repository.ErrVMConfigDamaged):
		return http.StatusInternalServerError, api.CodeInternal
	case errors.Is(err, catalog.ErrNotFound):
		return http.StatusNotFound, api.CodeNotFound
	case errors.Is(err, catalog.ErrConflict), errors.Is(err, inventory.ErrAmbiguous), errors.Is(err, ingest.ErrFullRequired), errors.Is(err, catalog.ErrJobActive):
		return http.StatusConflict, api.CodeConflict
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.Is(err, errNoInstantRecovery):
		return http.StatusServiceUnavailable, api.CodeUnavailable
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return http.StatusInsufficientStorage, api.CodeStorageFull
	default:
		return http.StatusInternalServerError, api.CodeInternal
	}
}

// fail answers with the error body for err. Internal errors are logged and reported without
// detail; everything else names the problem.
func (s *Server) fail(c *gin.Context, err error) {
	code, ecode := statusOf(err)
	body := api.Error{Error: err.Error(), Code: ecode}
	var fe *api.FieldError
	if errors.As(err, &fe) {
		body.Field = fe.Field
	}
	switch {
	case ecode == api.CodeDamaged:
		// The error names chunk files of the repository: they stay in the hub's log.
		s.deps.Log.ErrorContext(c.Request.Context(), "request failed: restore point damaged", "route", c.FullPath(), "err", err)
		body.Error = "path " + strconv.Quote(c.Query("path")) + ": a chunk under it is missing or fails its checks (it is quarantined: see the chunk_quarantined events; the next backup of these bytes uploads it again); nothing of it was served"
	case code == http.StatusInternalServerError:
		s.deps.Log.ErrorContext(c.Request.Context(), "request failed", "route", c.FullPath(), "err", err)
		body.Error = "internal error"
	case code == http.StatusInsufficientStorage:
		// The error names the hub's file paths: they stay in the hub's log.
		s.deps.Log.ErrorContext(c.Request.Context(), "request failed: out of space", "route", c.FullPath(), "err", err)
		body.Error = "the hub is out of storage space (no space left on a repository or catalog file system); free space or add capacity, then retry"
	}
	_ = c.Error(err)
	c.AbortWithStatusJSON(code, body)
}

// decodeJSON reads the request's JSON body of at most limit bytes into dst (httpin.DecodeJSON).
func decodeJSON(c *gin.Context, limit int64, dst any) error {
	return httpin.DecodeJSON(c.Writer, c.Request, limit, dst)
}

// nonNil returns s, or an empty slice for nil, so that a list encodes as [] and never as null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
