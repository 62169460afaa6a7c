// Package vsphere is the agent's vSphere client: it logs in to vCenter or ESXi, lists VMs and
// disks, takes job-scoped snapshots, asks Changed Block Tracking which areas changed, and hands
// out datastore HTTP access to snapshot disks. It is the only package of the product that
// imports govmomi; its API speaks shared/api types and its own small structs.
//
// Sessions: Connect verifies the server certificate inside the TLS handshake (pinned
// thumbprint, CA file or system roots) before anything is sent, logs in, and keeps the session
// alive (govmomi session/keepalive, every 5 minutes). A call that fails with NotAuthenticated
// (session expired or terminated by an administrator) logs in again and is repeated once.
//
// Disk data: a snapshot's disks are read from the snapshot's own config.hardware.device. For a
// flatVer2 disk without parent, "[ds] vm/vm.vmdk" is a text descriptor and "vm/vm-flat.vmdk"
// holds the raw bytes (SnapshotDisk.DataFile); that is the file the https transport reads
// through DatastoreHTTP. Delta and sparse disks are readable through VDDK/NBD only.
package vsphere

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/session/keepalive"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Sentinel errors callers branch on. Test them with errors.Is.
var (
	// ErrThumbprintMismatch: the server presented a certificate whose fingerprint is not the
	// configured one. Nothing (in particular no password) was sent to it.
	ErrThumbprintMismatch = errors.New("server certificate thumbprint mismatch")
	// ErrInvalidConfig: the Config is incomplete or malformed.
	ErrInvalidConfig = errors.New("invalid vsphere configuration")
	// ErrDatacenterNotFound: a datacenter named in Config.Datacenters does not exist. Inventory
	// refuses to answer rather than report a partial view that would mark VMs gone.
	ErrDatacenterNotFound = errors.New("datacenter not found")
	// ErrVMNotFound: no VM with the given instance UUID exists (in the configured datacenters).
	ErrVMNotFound = errors.New("vm not found")
	// ErrQuiesceFailed: a quiesced snapshot could not be taken because quiescing failed; the
	// caller may retry without quiescing.
	ErrQuiesceFailed = errors.New("snapshot quiescing failed")
	// ErrCBTUnavailable: changed block tracking cannot answer for this disk (CBT off, method
	// not supported, RDM, ...); the caller must read the whole disk.
	ErrCBTUnavailable = errors.New("changed block tracking unavailable")
	// ErrChangeIDInvalid: the change ID is unknown to the disk (CBT was reset, the ID belongs to
	// another disk or is newer than the snapshot); the caller must force a full backup.
	ErrChangeIDInvalid = errors.New("change id invalid for this disk")
)

// defaultPageSize is the objects per RetrievePropertiesEx answer: large enough that 1,000 VMs
// take four round trips, small enough to bound the server's and our memory per answer.
const defaultPageSize = 250

// defaultStreams is how many parts of a datacenter's VM list discovery reads at once.
const defaultStreams = 4

// keepAliveInterval is how often an idle session is touched. vCenter's default idle session
// timeout is 30 minutes; a long disk read over NBD or HTTPS makes no SOAP call for that long.
const keepAliveInterval = 5 * time.Minute

// Config is one vCenter or ESXi source of an agent.
type Config struct {
	// Name is the agent-local source name, e.g. "vc1".
	Name string
	// URL is the SDK endpoint, e.g. https://vcenter.example.com/sdk. A bare host name gets
	// https:// and /sdk added.
	URL string
	// Username and Password log in. The password is never logged.
	Username string
	Password string
	// Thumbprint is the SHA-256 (64 hex digits) or SHA-1 (40 hex digits) fingerprint of the
	// server certificate, with or without colons, in any case. When set, the certificate must
	// match it (and, when CAFile is also set, chain to that CA as well).
	Thumbprint string
	// CAFile is a PEM bundle of CA certificates the server certificate must chain to; the host
	// name of URL must match the certificate.
	CAFile string
	// Insecure disables certificate verification. For labs only: Connect logs a warning naming
	// the fingerprint it saw.
	Insecure bool
	// Datacenters limits discovery and VM lookups to these datacenters (name or inventory path);
	// empty means all.
	Datacenters []string
}

// Validate reports the first problem of the configuration, wrapping ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if c.Name == "" {
		return bad("name is empty")
	}
	if c.URL == "" {
		return bad("url is empty")
	}
	u, err := soap.ParseURL(c.URL)
	if err != nil {
		return bad("url is malformed") // the parse error would echo the URL, credentials and all
	}
	if pw, _ := u.User.Password(); u.User.Username() != "" || pw != "" { // ParseURL sets an empty User
		return bad("url must not carry credentials; use username and password")
	}
	if u.Scheme != "https" {
		return bad("url %q: scheme must be https", c.URL)
	}
	if u.Hostname() == "" {
		return bad("url %q has no host", c.URL)
	}
	if c.Username == "" {
		return bad("username is empty")
	}
	if c.Password == "" {
		return bad("password is empty")
	}
	if c.Thumbprint != "" {
		if _, err := parseThumbprint(c.Thumbprint); err != nil {
			return bad("thumbprint: %v", err)
		}
	}
	if c.Insecure && (c.Thumbprint != "" || c.CAFile != "") {
		return bad("insecure excludes thumbprint and ca_file")
	}
	return nil
}

// sdkURL returns the parsed endpoint without credentials.
func (c Config) sdkURL() *url.URL {
	u, _ := soap.ParseURL(c.URL) // Validate checked it
	u.User = nil
	return u
}

// Client is a logged-in session to one vCenter or ESXi. It is safe for concurrent use. The
// session is kept alive while idle and re-established transparently when the server drops it.
type Client struct {
	cfg   Config
	log   *slog.Logger
	vc    *vim25.Client
	sess  *sessionRoundTripper
	ka    *keepalive.HandlerSOAP
	now   func() time.Time
	about types.AboutInfo
	// pageSize bounds the objects of one property-collector answer; the rest follows through
	// continuation tokens.
	pageSize int32
	// streams bounds the concurrent property retrievals of one datacenter's VMs.
	streams int
	closeMu sync.Mutex
	closed  bool

	httpOnce   sync.Once
	httpClient *http.Client // datastore access, see DatastoreHTTP

	verifiedSHA1 *atomic.Pointer[string]
}

// VerifiedThumbprintSHA1 is the SHA-1 thumbprint, in VDDK's colon form, of the certificate the
// server presented in the last handshake that verified it (against the pin, the CA file or the
// system roots); "" when none did (insecure). VDDK takes only SHA-1 thumbprints, and a pin in
// SHA-256 cannot be converted: this is the certificate that pin accepted.
func (c *Client) VerifiedThumbprintSHA1() string {
	if p := c.verifiedSHA1.Load(); p != nil {
		return *p
	}
	return ""
}

// Connect verifies the server's certificate (thumbprint, CA file or system roots), logs in and
// starts the keep-alive. The password is sent only after the TLS handshake has verified the
// server. log may be nil.
func Connect(ctx context.Context, cfg Config, log *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("source", cfg.Name)
	u := cfg.sdkURL()

	var seen atomic.Pointer[string] // SHA-1 of the certificate of the last verified handshake
	tlsConf, err := newTLSConfig(cfg, u.Hostname(), log, func(der []byte) {
		fp := FingerprintSHA1(der)
		seen.Store(&fp)
	})
	if err != nil {
		return nil, err
	}

	sc := soap.NewClient(u, cfg.Insecure)
	t := sc.DefaultTransport()
	t.TLSClientConfig = tlsConf
	// soap.Client's own TLS dialer falls back to its thumbprint table and ignores the context;
	// the standard transport dial honours ctx and our VerifyConnection does the pinning.
	t.DialTLSContext = nil
	t.MaxIdleConnsPerHost = 8

	// The service versions document and the service content are public: the password is not
	// involved, and the first request fails in the TLS handshake when the server is not the one
	// configured.
	if err := negotiateVersion(ctx, sc); err != nil {
		return nil, fmt.Errorf("connect %s: %w", u.Host, withCertificateHint(err))
	}
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", u.Host, err)
	}

	c := &Client{cfg: cfg, log: log, vc: vc, now: time.Now, about: vc.ServiceContent.About, pageSize: defaultPageSize, streams: defaultStreams,
		verifiedSHA1: &seen}
	c.sess = &sessionRoundTripper{
		rt:        sc,
		manager:   *vc.ServiceContent.SessionManager,
		collector: vc.ServiceContent.PropertyCollector,
		username:  cfg.Username,
		password:  cfg.Password,
		log:       log,
	}
	c.ka = keepalive.NewHandlerSOAP(c.sess, keepAliveInterval, c.keepAlive)
	vc.RoundTripper = c.ka

	if err := c.sess.login(ctx); err != nil {
		sc.CloseIdleConnections()
		return nil, fmt.Errorf("connect %s: %w", u.Host, err)
	}
	c.ka.Start()
	log.Info("connected to vsphere", "url", u.String(), "api_type", c.about.ApiType,
		"api_version", c.about.ApiVersion, "user", cfg.Username)
	return c, nil
}

// keepAlive touches the session and logs in again if it was lost. It never returns an error:
// govmomi's keep-alive handler stops for good on the first error, and a network blip must not
// end keep-alives for the life of the agent.
func (c *Client) keepAlive() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.sess.ensure(ctx); err != nil {
		c.log.Warn("vsphere session keep-alive", "err", err)
	}
	return nil
}

// Close stops the keep-alive and logs out. Closing twice is harmless.
func (c *Client) Close(ctx context.Context) error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.ka.Stop()
	err := c.sess.logout(ctx)
	c.vc.CloseIdleConnections()
	if c.httpClient != nil {
		c.httpClient.CloseIdleConnections()
	}
	if err != nil {
		return fmt.Errorf("logout from %s: %w", c.cfg.Name, err)
	}
	c.log.Info("disconnected from vsphere")
	return nil
}

// wantDatacenter reports whether a datacenter (name and inventory path "/F0/DC0") is selected
// by the configuration.
func (c *Client) wantDatacenter(name, path string) bool {
	if len(c.cfg.Datacenters) == 0 {
		return true
	}
	for _, want := range c.cfg.Datacenters {
		if want == name || strings.Trim(want, "/") == strings.Trim(path, "/") {
			return true
		}
	}
	return false
}
