// Package stall bounds how long a response may wait for its client: each write gets a deadline,
// so that a handler whose client stops reading returns with an error instead of holding what it
// holds (a place among the reads served at once, buffers) for ever.
package stall

import (
	"net/http"
	"time"
)

// Writer is an http.ResponseWriter each of whose writes must be taken by the client within its
// limit, or the connection is closed.
type Writer struct {
	http.ResponseWriter
	rc    *http.ResponseController
	limit time.Duration
}

// New wraps w with a limit per write.
func New(w http.ResponseWriter, limit time.Duration) *Writer {
	return &Writer{ResponseWriter: w, rc: http.NewResponseController(w), limit: limit}
}

func (w *Writer) Write(p []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.limit))
	return w.ResponseWriter.Write(p)
}

// Unwrap gives http.ResponseController the writer underneath.
func (w *Writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }
