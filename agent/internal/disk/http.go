package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

var (
	// ErrRangeNotSupported means the server answered a Range request with something other than
	// 206 Partial Content (typically 200 with the whole file): it cannot serve this transport.
	ErrRangeNotSupported = errors.New("server does not honour Range requests")
	// ErrBadContentRange means a 206 response described other bytes than requested, or its
	// body was not exactly that long. Those bytes are never returned.
	ErrBadContentRange = errors.New("response does not match the requested range")
	// ErrSizeMismatch means the server's file is not the size the caller expected (a different
	// or still-growing file, or an empty simulator disk).
	ErrSizeMismatch = errors.New("disk size mismatch")
)

// HTTPStatusError is an unexpected HTTP status from the server (401/403 for an expired session,
// 404 for a wrong path, 5xx).
type HTTPStatusError struct {
	// URL is the request URL without credentials.
	URL string
	// StatusCode and Status are from the response.
	StatusCode int
	Status     string
	// Body is the start of the response body, for the server's explanation.
	Body string
}

// Error names the URL and status and quotes the start of the body.
func (e *HTTPStatusError) Error() string {
	s := fmt.Sprintf("GET %s: %s", e.URL, e.Status)
	if e.Body != "" {
		s += fmt.Sprintf(" (%q)", e.Body)
	}
	return s
}

// httpReader reads a remote disk image with one Range GET per ReadAt.
type httpReader struct {
	client *http.Client
	url    string
	shown  string // url without credentials, for errors
	header http.Header
	size   int64
	// ctx is the reader's lifetime, not a call's: Close cancels it to abort reads in flight,
	// because io.ReaderAt has no context parameter.
	ctx    context.Context
	cancel context.CancelFunc
}

var _ Reader = (*httpReader)(nil)

// OpenHTTP opens a disk image served over HTTP(S) with Range support, such as a vSphere
// datastore file (/folder/<path>?dcPath=<dc>&dsName=<ds>). client carries TLS settings and the
// session (cookie jar); header is added to every request (for example a session cookie or
// ticket; it is never logged). OpenHTTP probes the server with a one-byte range request, so a
// server that ignores Range, a wrong URL or an expired session fail here rather than mid-backup.
// size 0 takes the size from the probe's Content-Range; any other size must equal it
// (ErrSizeMismatch otherwise). ctx bounds the probe; Close ends the reader's reads.
func OpenHTTP(ctx context.Context, client *http.Client, rawURL string, size int64, header http.Header) (Reader, error) {
	if client == nil {
		return nil, errors.New("open disk over http: nil http.Client")
	}
	if size < 0 {
		return nil, fmt.Errorf("open disk over http: negative size %d", size)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("open disk over http: parse url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("open disk %s over http: scheme %q is not http or https", u.Redacted(), u.Scheme)
	}
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &httpReader{
		client: client,
		url:    rawURL,
		shown:  u.Redacted(),
		header: header.Clone(),
		ctx:    life,
		cancel: cancel,
	}
	total, err := r.probe(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	switch {
	case total < 0 && size == 0:
		cancel()
		return nil, fmt.Errorf("open disk %s: server does not report the file size (Content-Range total \"*\") and none was given", r.shown)
	case total >= 0 && size != 0 && total != size:
		cancel()
		return nil, fmt.Errorf("open disk %s: server file is %d bytes, expected %d: %w", r.shown, total, size, ErrSizeMismatch)
	case size == 0:
		size = total
	}
	r.size = size
	return r, nil
}

// newRequest builds a GET for bytes first..last (inclusive).
func (r *httpReader) newRequest(ctx context.Context, first, last int64) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return nil, fmt.Errorf("build request for %s: %w", r.shown, err)
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", first, last))
	// Ranges count encoded bytes: with transparent gzip they would not be disk offsets.
	req.Header.Set("Accept-Encoding", "identity")
	return req, nil
}

// probe requests byte 0 and returns the file size from Content-Range (-1 if the server says
// "*"). An empty file answers 416 with "bytes */0".
func (r *httpReader) probe(ctx context.Context) (int64, error) {
	req, err := r.newRequest(ctx, 0, 0)
	if err != nil {
		return 0, err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("open disk %s: %w", r.shown, err)
	}
	defer drainClose(resp.Body)
	cr := resp.Header.Get("Content-Range")
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if err := checkEncoding(resp); err != nil {
			return 0, fmt.Errorf("open disk %s: %w", r.shown, err)
		}
		first, last, total, err := parseContentRange(cr)
		if err != nil || first != 0 || last != 0 {
			return 0, fmt.Errorf("open disk %s: Content-Range %q for bytes 0-0: %w", r.shown, cr, ErrBadContentRange)
		}
		return total, nil
	case http.StatusRequestedRangeNotSatisfiable:
		total, ok := parseUnsatisfiedRange(cr)
		if !ok {
			return 0, fmt.Errorf("open disk %s: 416 with Content-Range %q: %w", r.shown, cr, ErrBadContentRange)
		}
		return total, nil
	case http.StatusOK:
		// An empty file has no byte 0, and Go's file server (vcsim's datastore access) answers
		// 200 with an empty body rather than 416.
		if resp.ContentLength == 0 {
			return 0, nil
		}
		return 0, fmt.Errorf("open disk %s: 200 OK to a Range request: %w", r.shown, ErrRangeNotSupported)
	default:
		return 0, statusError(r.shown, resp)
	}
}

// Size returns the image size.
func (r *httpReader) Size() int64 { return r.size }

// ReadAt issues one Range GET for the bytes inside the image and accepts only a 206 whose
// Content-Range and body length are exactly that range.
func (r *httpReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read disk %s at offset %d: negative offset", r.shown, off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= r.size {
		return 0, io.EOF
	}
	want := p
	if rem := r.size - off; int64(len(p)) > rem {
		want = p[:rem]
	}
	err := r.ctx.Err() // closed
	if err == nil {
		err = r.readRange(want, off)
	}
	if err != nil {
		if cerr := r.ctx.Err(); cerr != nil {
			// Close raced with the response: report the abort, not whatever half-cancelled
			// answer the transport produced.
			err = fmt.Errorf("reader closed: %w", cerr)
		}
		return 0, fmt.Errorf("read disk %s: %d bytes at offset %d: %w", r.shown, len(want), off, err)
	}
	if len(want) < len(p) {
		return len(want), io.EOF
	}
	return len(want), nil
}

func (r *httpReader) readRange(p []byte, off int64) error {
	last := off + int64(len(p)) - 1
	req, err := r.newRequest(r.ctx, off, last)
	if err != nil {
		return err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer drainClose(resp.Body)
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		return fmt.Errorf("200 OK instead of 206: %w", ErrRangeNotSupported)
	default:
		return statusError(r.shown, resp)
	}
	if err := checkEncoding(resp); err != nil {
		return err
	}
	cr := resp.Header.Get("Content-Range")
	first, gotLast, total, err := parseContentRange(cr)
	if err != nil {
		return fmt.Errorf("response Content-Range %q: %w", cr, ErrBadContentRange)
	}
	if first != off || gotLast != last || (total >= 0 && total != r.size) {
		return fmt.Errorf("asked for bytes %d-%d/%d, got Content-Range %q: %w", off, last, r.size, cr, ErrBadContentRange)
	}
	if resp.ContentLength >= 0 && resp.ContentLength != int64(len(p)) {
		return fmt.Errorf("response Content-Length %d for a %d-byte range: %w", resp.ContentLength, len(p), ErrBadContentRange)
	}
	if n, err := io.ReadFull(resp.Body, p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("body ended after %d of %d bytes: %w", n, len(p), ErrBadContentRange)
		}
		return fmt.Errorf("read body after %d of %d bytes: %w", n, len(p), err)
	}
	var extra [1]byte
	if n, _ := resp.Body.Read(extra[:]); n > 0 {
		return fmt.Errorf("body longer than the %d-byte range: %w", len(p), ErrBadContentRange)
	}
	return nil
}

// Close cancels reads in flight and makes later reads fail. The http.Client belongs to the
// caller and stays open.
func (r *httpReader) Close() error {
	r.cancel()
	return nil
}

// checkEncoding rejects compressed bodies: their bytes are not disk bytes.
func checkEncoding(resp *http.Response) error {
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return fmt.Errorf("response Content-Encoding %q on a byte range: %w", ce, ErrBadContentRange)
	}
	return nil
}

// parseContentRange parses "bytes first-last/total"; total is -1 for "*".
func parseContentRange(s string) (first, last, total int64, err error) {
	spec, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, errors.New("not a bytes range")
	}
	rng, size, ok := strings.Cut(spec, "/")
	if !ok {
		return 0, 0, 0, errors.New("no total")
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, errors.New("no range")
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil || first < 0 {
		return 0, 0, 0, errors.New("bad first byte")
	}
	if last, err = strconv.ParseInt(b, 10, 64); err != nil || last < first {
		return 0, 0, 0, errors.New("bad last byte")
	}
	total = -1
	if size != "*" {
		if total, err = strconv.ParseInt(size, 10, 64); err != nil || total <= last {
			return 0, 0, 0, errors.New("bad total")
		}
	}
	return first, last, total, nil
}

// parseUnsatisfiedRange parses the "bytes */total" of a 416 response.
func parseUnsatisfiedRange(s string) (int64, bool) {
	size, ok := strings.CutPrefix(s, "bytes */")
	if !ok {
		return 0, false
	}
	total, err := strconv.ParseInt(size, 10, 64)
	return total, err == nil && total >= 0
}

// statusError describes an unexpected status, quoting the start of the body.
func statusError(shown string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	return &HTTPStatusError{URL: shown, StatusCode: resp.StatusCode, Status: resp.Status, Body: strings.TrimSpace(string(body))}
}

// drainClose reads a little of what is left so the connection can be reused, then closes.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	_ = body.Close()
}
