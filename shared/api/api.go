// Package api is the wire protocol between agents, operators and the hub: routes, request and
// response bodies, and the error body. It uses the standard library only.
package api

// Error is the JSON body of every non-2xx response of the hub API.
type Error struct {
	// Error is a human-readable message naming the problem.
	Error string `json:"error"`
	// Code is a stable machine-readable identifier, e.g. "invalid_field", "not_found".
	Code string `json:"code"`
	// Field names the offending request field when the problem is one field.
	Field string `json:"field,omitempty"`
}

// Error codes carried in Error.Code.
const (
	CodeInvalid         = "invalid_request"
	CodeInvalidField    = "invalid_field"
	CodeNotFound        = "not_found"
	CodeConflict        = "conflict"
	CodeUnauthenticated = "unauthenticated"
	CodeForbidden       = "forbidden"
	CodeTooLarge        = "too_large"
	CodeTooManyRequests = "too_many_requests"
	CodeUnavailable     = "unavailable"
	CodeStorageFull     = "storage_full" // 507: a file system the hub writes (a repository, the catalog) is full
	CodeInternal        = "internal"
	CodeDamaged         = "damaged"       // 500: a chunk the answer needs is missing or fails its checks (quarantined)
	CodeUnprocessable   = "unprocessable" // 422: the restore point's filesystem cannot be read (unsupported, damaged)
)

// Page is the pagination envelope of list responses.
type Page struct {
	Limit  int `json:"limit"`
	Offset int `json:"offset"`
	Total  int `json:"total"`
}

// FieldError is a validation failure of one request field. The hub answers it with 400 and an
// Error body whose Field names the field.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }
