// Package httpserve runs an http.Server until its context ends, then drains in-flight requests
// within a bound.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// Serve serves srv on ln until ctx is done, then shuts down gracefully: the listener closes at
// once, in-flight requests get up to drain to finish, and connections still open after that are
// closed. It returns nil after a clean drain. When srv.TLSConfig is set, ln is wrapped in TLS.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, drain time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		var err error
		if srv.TLSConfig != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	// Shutdown must not inherit the cancelled context, or it would not wait at all.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serveErr := <-errc; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), serveErr)
	}
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("drain %s within %s: %w", ln.Addr(), drain, err)
	}
	return nil
}

// Pprof mounts Go's profiler under /debug/pprof/ on mux (for the metrics listener, which is
// plain HTTP on loopback by default: never expose it further).
func Pprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}
