package vsphere

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DatastoreHTTP returns the /folder URL of a datastore file and an http.Client that reaches it:
// the verified TLS configuration of the SDK connection and the session cookie
// (vmware_soap_session) in its jar. Path is datastore-relative ("vm/vm-flat.vmdk", see
// SnapshotDisk.DataFile for which file holds a disk's raw bytes); dcPath is the datacenter's
// inventory path (SnapshotDisk.DatacenterPath; "ha-datacenter" on ESXi).
//
// The client follows session changes: after a re-login its jar carries the new cookie, and a
// GET or HEAD answered 401 (the session expired while only disk reads were running) logs in
// again and is repeated once. It is shared by all callers and safe for concurrent use; the
// caller sets per-request deadlines through the request context.
//
// Real ESXi refuses /folder reads of a running VM's base disk while it is locked; the https
// transport is meant for powered-off VMs and the simulator, NBD/VDDK for running VMs.
func (c *Client) DatastoreHTTP(ctx context.Context, dcPath, datastore, path string) (string, *http.Client, error) {
	if datastore == "" || path == "" {
		return "", nil, fmt.Errorf("datastore url: datastore %q and path %q must not be empty", datastore, path)
	}
	// The cookie handed out must belong to a live session: check (and renew) it now rather
	// than on the first 401.
	if err := c.sess.ensure(ctx); err != nil {
		return "", nil, fmt.Errorf("datastore url for [%s] %s: %w", datastore, path, err)
	}
	base := c.vc.URL()
	u := url.URL{
		Scheme: base.Scheme,
		Host:   base.Host,
		Path:   "/folder/" + strings.TrimPrefix(path, "/"),
	}
	q := url.Values{"dsName": {datastore}}
	if dcPath != "" {
		q.Set("dcPath", strings.TrimPrefix(dcPath, "/"))
	}
	u.RawQuery = q.Encode()
	return u.String(), c.datastoreClient(), nil
}

// datastoreClient builds (once) the shared http.Client for datastore access.
func (c *Client) datastoreClient() *http.Client {
	c.httpOnce.Do(func() {
		t := c.vc.DefaultTransport().Clone()
		t.MaxIdleConnsPerHost = 16 // parallel range reads of several disks
		t.ResponseHeaderTimeout = 2 * time.Minute
		c.httpClient = &http.Client{
			Transport: &reauthTransport{next: t, c: c},
			Jar:       c.vc.Jar,
		}
	})
	return c.httpClient
}

// reauthTransport repeats an idempotent, body-less request once, with a fresh session cookie,
// when the server answers 401 because the session expired.
type reauthTransport struct {
	next http.RoundTripper
	c    *Client
}

func (t *reauthTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	gen := t.c.sess.generation()
	res, err := t.next.RoundTrip(req)
	repeatable := (req.Method == http.MethodGet || req.Method == http.MethodHead) && (req.Body == nil || req.Body == http.NoBody)
	if err != nil || res.StatusCode != http.StatusUnauthorized || !repeatable {
		return res, err
	}
	// Drain a little so the connection can be reused, then log in again.
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	_ = res.Body.Close()
	if err := t.c.sess.relogin(req.Context(), gen); err != nil {
		return nil, fmt.Errorf("datastore request %s: session expired; log in again: %w", req.URL.Path, err)
	}
	retry := req.Clone(req.Context())
	retry.Header.Del("Cookie")
	for _, ck := range t.c.vc.Jar.Cookies(req.URL) {
		retry.AddCookie(ck)
	}
	return t.next.RoundTrip(retry)
}
