package vsphere

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"reflect"
	"sync"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// sessionRoundTripper logs in, and when a call fails with NotAuthenticated (the session expired
// or was terminated on the server) it logs in again and repeats the call once. govmomi v0.55.0
// has keep-alive (session/keepalive) but no re-login, so this fills the gap.
//
// Calls that refer to session-scoped objects (container views, property filters) cannot be
// repeated in a new session; the operations of this package create those objects per call, so
// the first call of the operation is the one that fails and is repeated.
type sessionRoundTripper struct {
	rt        soap.RoundTripper            // the soap.Client
	manager   types.ManagedObjectReference // SessionManager
	collector types.ManagedObjectReference // PropertyCollector
	username  string
	password  string
	log       *slog.Logger

	mu     sync.Mutex
	gen    uint64 // incremented by every successful login
	key    string // current session key
	closed bool
}

// RoundTrip implements soap.RoundTripper.
func (s *sessionRoundTripper) RoundTrip(ctx context.Context, req, res soap.HasFault) error {
	switch req.(type) {
	case *methods.LoginBody, *methods.LogoutBody:
		return s.rt.RoundTrip(ctx, req, res)
	}
	gen := s.generation()
	err := s.rt.RoundTrip(ctx, req, res)
	if err == nil || !isNotAuthenticated(err) {
		return err
	}
	if lerr := s.relogin(ctx, gen); lerr != nil {
		return fmt.Errorf("%w (session lost; log in again: %w)", err, lerr)
	}
	resetBody(res)
	return s.rt.RoundTrip(ctx, req, res)
}

// resetBody zeroes a response body so a repeated call does not see the first call's fault.
func resetBody(res soap.HasFault) {
	v := reflect.ValueOf(res)
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		v.Elem().Set(reflect.Zero(v.Elem().Type()))
	}
}

func (s *sessionRoundTripper) generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// sessionKey returns the key of the current session ("" before login).
func (s *sessionRoundTripper) sessionKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.key
}

// login logs in unconditionally.
func (s *sessionRoundTripper) login(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loginLocked(ctx)
}

func (s *sessionRoundTripper) loginLocked(ctx context.Context) error {
	if s.closed {
		return errors.New("client closed")
	}
	res, err := methods.Login(ctx, s.rt, &types.Login{This: s.manager, UserName: s.username, Password: s.password})
	if err != nil {
		if fault.Is(err, &types.InvalidLogin{}) {
			return fmt.Errorf("log in as %s: invalid user name or password: %w", s.username, err)
		}
		return fmt.Errorf("log in as %s: %w", s.username, err)
	}
	s.gen++
	s.key = res.Returnval.Key
	return nil
}

// relogin logs in again unless another caller already did since generation gen was observed.
func (s *sessionRoundTripper) relogin(ctx context.Context, gen uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen {
		return nil // someone else logged in meanwhile
	}
	if err := s.loginLocked(ctx); err != nil {
		return err
	}
	s.log.Info("vsphere session lost; logged in again")
	return nil
}

// ensure checks that the session is alive (touching it, which resets the server's idle timer)
// and logs in again when it is not.
func (s *sessionRoundTripper) ensure(ctx context.Context) error {
	gen := s.generation()
	var sm mo.SessionManager
	err := mo.RetrieveProperties(ctx, s.rt, s.collector, s.manager, &sm)
	if err != nil && !isNotAuthenticated(err) {
		return fmt.Errorf("check session: %w", err)
	}
	if err == nil && sm.CurrentSession != nil {
		return nil
	}
	return s.relogin(ctx, gen)
}

// logout ends the session; a session already gone is not an error.
func (s *sessionRoundTripper) logout(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	_, err := methods.Logout(ctx, s.rt, &types.Logout{This: s.manager})
	if err != nil && !isNotAuthenticated(err) {
		return err
	}
	return nil
}

// isNotAuthenticated reports whether err is the fault of a call made without a valid session.
func isNotAuthenticated(err error) bool {
	return err != nil && fault.Is(err, &types.NotAuthenticated{})
}

// negotiateVersion sets the client's vim25 API version to the newest the server announces in
// /sdk/vimServiceVersions.xml. When the document is missing (some proxies), the client
// default stays. A transport error (TLS verification above all) is returned.
func negotiateVersion(ctx context.Context, sc *soap.Client) error {
	u := sc.URL()
	u.Path = path.Join(u.Path, "vimServiceVersions.xml") // /sdk/vimServiceVersions.xml
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("service versions request: %w", err)
	}
	return sc.Do(ctx, req, func(res *http.Response) error {
		if res.StatusCode != http.StatusOK {
			return nil
		}
		var doc struct {
			Namespaces []struct {
				Name    string `xml:"name"`
				Version string `xml:"version"`
			} `xml:"namespace"`
		}
		if xml.NewDecoder(res.Body).Decode(&doc) != nil {
			return nil
		}
		for _, ns := range doc.Namespaces {
			if ns.Name == "urn:vim25" && ns.Version != "" {
				sc.Version = ns.Version
				sc.Namespace = ns.Name
			}
		}
		return nil
	})
}

// collector returns the client's property collector.
func (c *Client) collector() *property.Collector { return property.DefaultCollector(c.vc) }
