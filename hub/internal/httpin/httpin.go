// Package httpin parses what a request brings in before any handler logic sees it: a JSON body
// under a size cap and a Range header. Both see hostile bytes from anonymous clients and from
// agents alike, so both are fuzzed here, in a package small enough that the fuzzer's coverage
// covers these parsers and not the whole API's dependencies.
package httpin

import (
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/sendense/sendense/shared/api"
)

var (
	// ErrTooLarge is returned by DecodeJSON for a body over its limit (413).
	ErrTooLarge = errors.New("request body too large")
	// ErrSlowBody is returned by a request body that did not arrive in time (408); DecodeJSON
	// passes it through unchanged.
	ErrSlowBody = errors.New("request body arrived too slowly")
	// ErrBadRange is returned by ParseRange for a range it refuses (416).
	ErrBadRange = errors.New("range not satisfiable")
)

// DecodeJSON reads r's JSON body of at most limit bytes into dst. A body that declares a
// length over the limit is refused before any of it is read; one that is not declared is cut
// off at the limit. Unknown fields, trailing data and bodies over the limit are refused with
// errors naming the problem: an *api.FieldError, ErrTooLarge or ErrSlowBody, wrapped.
func DecodeJSON(w http.ResponseWriter, r *http.Request, limit int64, dst any) error {
	if r.ContentLength > limit {
		return fmt.Errorf("%w: %d bytes declared, over %d", ErrTooLarge, r.ContentLength, limit)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var mbe *http.MaxBytesError
		var ute *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return fmt.Errorf("%w: over %d bytes", ErrTooLarge, limit)
		case errors.Is(err, ErrSlowBody):
			return err
		case errors.As(err, &ute) && ute.Field == "":
			return &api.FieldError{Field: "body", Msg: fmt.Sprintf("must be a JSON object, not %s", ute.Value)}
		case errors.As(err, &ute):
			return &api.FieldError{Field: ute.Field, Msg: fmt.Sprintf("must be %s, not %s", jsonKind(ute.Type), ute.Value)}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return &api.FieldError{Field: strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`), Msg: "unknown field"}
		case errors.Is(err, io.EOF):
			return &api.FieldError{Field: "body", Msg: "empty; a JSON object is required"}
		default:
			return &api.FieldError{Field: "body", Msg: "not valid JSON: " + err.Error()}
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: over %d bytes", ErrTooLarge, limit)
		}
		if errors.Is(err, ErrSlowBody) {
			return err
		}
		return &api.FieldError{Field: "body", Msg: "trailing data after the JSON object"}
	}
	return nil
}

// ParseRange parses one "bytes=" range of a size-byte representation. It returns ok=false for
// headers it ignores (several ranges, other units): the whole representation is then sent, as
// RFC 9110 allows. A range it accepts is non-empty and lies inside the representation.
func ParseRange(h string, size int64) (off, n int64, ok bool, err error) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, nil
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, fmt.Errorf("%w: %q", ErrBadRange, h)
	}
	switch {
	case a == "": // suffix: the last b bytes
		k, perr := strconv.ParseInt(b, 10, 64)
		if perr != nil || k <= 0 || size == 0 {
			// An empty representation has no last bytes: "bytes 0--1/0" is not a Content-Range.
			return 0, 0, false, fmt.Errorf("%w: %q for a %d-byte image", ErrBadRange, h, size)
		}
		k = min(k, size)
		return size - k, k, true, nil
	default:
		first, perr := strconv.ParseInt(a, 10, 64)
		if perr != nil || first < 0 || first >= size {
			return 0, 0, false, fmt.Errorf("%w: %q for a %d-byte image", ErrBadRange, h, size)
		}
		last := size - 1
		if b != "" {
			l, perr := strconv.ParseInt(b, 10, 64)
			if perr != nil || l < first {
				return 0, 0, false, fmt.Errorf("%w: %q", ErrBadRange, h)
			}
			last = min(l, size-1)
		}
		return first, last - first + 1, true, nil
	}
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// jsonKind names the JSON value a Go type decodes from, for an error message: an operator sends
// JSON, not Go.
func jsonKind(t reflect.Type) string {
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		return "a string" // time.Time and the like
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct, reflect.Pointer:
		return "an object"
	}
	return t.String()
}
