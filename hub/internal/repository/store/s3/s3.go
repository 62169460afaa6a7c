// Package s3 is the blob store of a repository in an S3-compatible bucket (AWS S3, Ceph RGW,
// SeaweedFS, MinIO, Wasabi): each object of the store is the bucket object named by the store's
// prefix and its key. It is the only user of minio-go.
//
// # What it guarantees, and how
//
// S3 gives atomic, strongly consistent single-object PUT, GET, HEAD, DELETE and server-side copy,
// a listing in byte order of the keys, and — on servers that support conditional writes —
// PUT with If-None-Match: * (create only if absent) and PUT with If-Match (replace only the
// version read). It has no rename, no conditional delete that clients can rely on, and no locks.
// The store builds the rest of the store.Store contract from those, as follows.
//
//   - Put, Get, Stat, List and Remove map onto single requests. A PUT is durable and atomic when
//     the server acknowledges it (the server's durability: SeaweedFS writes to its volume
//     servers, AWS to several zones). Get reads the size from the response headers and refuses
//     an object over the limit before reading its body.
//   - Touch is a server-side copy of the object onto itself with replaced metadata, which sets
//     its Last-Modified to the server's now without sending the data.
//   - RemoveIfOlder and Rename remove an object that another process may be touching or putting
//     at that moment. Each first takes the key's removal marker, tmp/removing/<sha256 of key>,
//     with a create-only PUT (If-None-Match: *; a second remover of the key gets 412 and stands
//     back), then reads the object, then deletes it, then drops the marker. Touch and Put do the
//     opposite: they write the object, then look for the marker. With strongly consistent
//     requests one of the two always sees the other (if the remover's read missed the touch,
//     the touch completed after the marker was written, and its look for the marker finds it
//     — or the whole removal ended before that look, and the object is gone).
//     A Touch or Put that finds a marker waits until it is gone. A Put then checks that its
//     object is still there, whether it met a marker or not, and puts it again if not (the
//     conformance suite's race caught a removal that fit between a PUT and its look). A Touch always checks afterwards that
//     the object is there with a time no earlier than the Touch (else ErrNotFound, and its
//     caller puts the object again): a server may carry out the copy as a read and a later
//     update, which answers 200 and changes nothing when the object was removed in between —
//     SeaweedFS does, and the conformance suite's race caught it. A Touch also waits out a
//     removal in progress before it copies. So a Touch that returns nil is never undone by a
//     removal, and an object put at or after the cutoff is never lost to one. The price is
//     requests: a Touch costs a copy and three HEADs, a Put a PUT and two HEADs, a removal four.
//   - A remover deletes only within removeWindow (30 s) of starting to take its marker, with a
//     request timeout of removeWindow, so whatever it does lands within 2×removeWindow; a
//     waiter that has seen one marker for markerExpiry (90 s) treats it as left by a crashed
//     process and goes on. A remover that finds a marker older than markerExpiry removes it.
//     A removal whose delete failed without a definite answer (a timeout, a lost connection, a
//     server error) does not drop its marker but leaves it to expire: a server may still carry
//     out a request after the client gave up on it, and a Touch that went on at once could be
//     undone.
//   - Rename copies the object under from to to with If-None-Match: * (ErrExists when to holds
//     one, and nothing is moved), then deletes from, all under from's marker: concurrent
//     Renames of one key take turns and the later ones find nothing (ErrNotFound). A crash
//     between the copy and the delete leaves the object under both keys.
//   - Lock is a lease object locks/<name> created with If-None-Match: * and renewed every
//     leaseDuration/3 (20 s) by a conditional PUT (If-Match: the ETag of the last renewal), so
//     that a holder that lost its lease notices. A lease not renewed for leaseDuration (60 s)
//     by the server's clock, plus a margin for clock differences, may be taken over, again by a
//     conditional PUT; a process that dies therefore releases its locks after about a minute,
//     not at once as a local store's flock does. A holder cut off from the store for longer
//     than leaseDuration loses its lock without knowing until its next renewal (logged).
//   - A conditional request that is retried after a lost response can meet its own first
//     attempt (412); markers and leases carry a random token, and a 412 is checked against it.
//
// Times are the server's Last-Modified, which HEAD reports in whole seconds: RemoveIfOlder
// compares it with the cutoff rounded down to the second, so that an object touched at the
// cutoff is never removed. Clocks of the server and of the hubs may differ by a few seconds,
// which garbage collection's grace period (hours) absorbs.
//
// Requests are retried by minio-go with exponential backoff and jitter (200 ms unit, 1 s cap per
// wait, maxRetries attempts) on throttling (503 SlowDown, 429) and 5xx answers and on
// connection errors; every single-object request has opTimeout. Parallelism is the caller's: the
// store is safe for concurrent use and keeps up to maxConns connections to the server. Objects
// larger than minio-go's part size (16 MiB and more) are uploaded in parts, which the server
// makes visible at once when the upload completes. Credentials are never logged or put in
// errors.
//
// The keys tmp/… and locks/… are the store's own and refused as object keys, as in store/local.
package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/sendense/sendense/hub/internal/repository/store"
)

var (
	_ store.Store = (*Store)(nil)
	_ store.Hider = (*Store)(nil)
)

// Tunables; see the package comment for how they relate.
const (
	opTimeout     = 2 * time.Minute
	removeWindow  = 30 * time.Second
	markerExpiry  = 3 * removeWindow
	markerPoll    = 50 * time.Millisecond
	leaseDuration = 60 * time.Second
	clockMargin   = 10 * time.Second
	maxRetries    = 8
	maxConns      = 64
	// removeParallel is how many RemoveIfOlder calls RemovalParallelism suggests at once: each
	// costs four round trips (marker PUT, HEAD, DELETE, marker DELETE) and is latency-bound.
	removeParallel = 16
	// probeStale is the age past which a clock probe is a dead process's: a live check removes
	// its probe within three requests.
	probeStale = 3*opTimeout + clockMargin
)

// touchMetaKey is the user metadata that Touch replaces: S3 refuses a copy of an object onto
// itself that changes nothing.
const touchMetaKey = "X-Amz-Meta-Sendense-Touched"

// Config names a bucket and how to reach it.
type Config struct {
	// Endpoint is the server's URL: http(s)://host[:port]. No path.
	Endpoint string
	Bucket   string
	// Prefix is prepended to every key (a "/" is added when missing); "" for the whole bucket.
	Prefix string
	// Region is sent in signatures; "" lets the client ask the server (or use us-east-1).
	Region string
	// CAFile is a PEM file of certificate authorities to trust, beside the system's, for an
	// https endpoint.
	CAFile string
	// AccessKey and SecretKey sign the requests.
	AccessKey, SecretKey string
	// ObjectLock is "" for a bucket used without S3 Object Lock, or the mode of the retention
	// dates Retain sets: LockCompliance or LockGovernance. The bucket must have been created
	// with Object Lock enabled (see lock.go).
	ObjectLock string
}

// Check validates the settings without contacting the server. Errors name the setting.
func (c Config) Check() error {
	u, err := url.Parse(c.Endpoint)
	switch {
	case c.Endpoint == "":
		return errors.New("s3 endpoint: missing")
	case err != nil:
		return fmt.Errorf("s3 endpoint %q: %w", c.Endpoint, err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "", u.Path != "" && u.Path != "/", u.RawQuery != "", u.User != nil:
		return fmt.Errorf("s3 endpoint %q: must be http(s)://host[:port] without path, query or user", c.Endpoint)
	case c.Bucket == "":
		return errors.New("s3 bucket: missing")
	}
	if p := strings.TrimSuffix(c.Prefix, "/"); p != "" {
		if err := store.CheckKey(p); err != nil {
			return fmt.Errorf("s3 prefix %q: %w", c.Prefix, err)
		}
	}
	if c.AccessKey == "" || c.SecretKey == "" {
		return errors.New("s3 credentials: access key or secret missing")
	}
	if _, err := lockMode(c.ObjectLock); err != nil {
		return err
	}
	return nil
}

// ReadCredentials reads a credentials file: the access key id on its first line, the secret on
// its second. Errors name the file, never its content.
func ReadCredentials(path string) (accessKey, secretKey string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("s3 credentials file: %w", err)
	}
	lines := strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
	if len(lines) < 2 || strings.TrimSpace(lines[0]) == "" || strings.TrimSpace(lines[1]) == "" {
		return "", "", fmt.Errorf("s3 credentials file %s: want the access key id on line 1 and the secret on line 2", path)
	}
	return strings.TrimSpace(lines[0]), strings.TrimSpace(lines[1]), nil
}

// Store is a blob store in an S3 bucket. It is safe for concurrent use, also by other processes
// and hosts that open the same bucket and prefix, with the guarantees of store.Store as the
// package comment explains them.
type Store struct {
	client *minio.Client
	core   minio.Core
	tr     *http.Transport
	bucket string
	prefix string
	log    *slog.Logger
	// lock is the retention mode of an Object Lock store, "" when the store does not use it.
	lock minio.RetentionMode

	// leaseEvery is how often a held lock's lease is renewed (leaseDuration/3), leaseStale
	// after how long without renewal a lease may be taken over (leaseDuration + clockMargin).
	// Fields only so that a test can shorten them.
	leaseEvery, leaseStale time.Duration
	// removeWindow and markerExpiry are the constants of the same names, and removeSlack is
	// opTimeoutSlack; fields only so that a test can shorten them.
	removeWindow, markerExpiry, removeSlack time.Duration
	// probeStale is the constant of the same name; a field only so that a test can shorten it.
	probeStale time.Duration

	mu     sync.Mutex
	leases map[*lease]struct{}
	closed bool
}

// Open connects to the bucket and checks that it exists and that the credentials are accepted.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s, err := connect(cfg)
	if err != nil {
		return nil, err
	}
	s.log = log
	if u, err := url.Parse(cfg.Endpoint); err == nil && u.Scheme == "http" {
		if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			log.WarnContext(ctx, "s3 store: the endpoint is plain HTTP: the chunks (unless the repository is encrypted) and the requests cross the network readable and changeable by anyone on the path; use https", "endpoint", cfg.Endpoint)
		}
	}
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	ok, err := s.client.BucketExists(octx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("s3 bucket %s at %s: %w", cfg.Bucket, cfg.Endpoint, describe(err))
	}
	if !ok {
		return nil, fmt.Errorf("s3 bucket %s at %s: no such bucket", cfg.Bucket, cfg.Endpoint)
	}
	if s.lock != "" {
		if err := s.checkLockEnabled(octx); err != nil {
			return nil, err
		}
	} else if err := s.checkVersions(octx); err != nil {
		return nil, err
	}
	return s, nil
}

// connect makes the client of cfg's server without contacting it.
func connect(cfg Config) (*Store, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.Endpoint)
	tr, err := transport(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       u.Scheme == "https",
		Transport:    tr,
		Region:       cfg.Region,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   maxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", cfg.Endpoint, err)
	}
	prefix := strings.TrimSuffix(cfg.Prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	lock, _ := lockMode(cfg.ObjectLock) // checked by Check
	return &Store{client: client, core: minio.Core{Client: client}, tr: tr, bucket: cfg.Bucket, prefix: prefix, lock: lock,
		log: slog.New(slog.DiscardHandler), leases: map[*lease]struct{}{},
		leaseEvery: leaseDuration / 3, leaseStale: leaseDuration + clockMargin,
		removeWindow: removeWindow, markerExpiry: markerExpiry, removeSlack: opTimeoutSlack, probeStale: probeStale}, nil
}

// transport is an HTTP transport with timeouts for every phase but the body (bounded by the
// request's context), and with caFile's authorities trusted beside the system's.
func transport(caFile string) (*http.Transport, error) {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          maxConns,
		MaxIdleConnsPerHost:   maxConns,
		MaxConnsPerHost:       maxConns,
		// minio-go asks for identity encoding; a transparently decompressed body would not
		// have the length the headers promise.
		DisableCompression: true,
		TLSClientConfig:    &tls.Config{MinVersion: tls.VersionTLS12},
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("s3 ca file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("s3 ca file %s: no PEM certificate in it", caFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return tr, nil
}

// respError is an S3 error response reduced to what helps an operator (code, status,
// message): nothing of the request, so never a credential.
type respError struct{ r minio.ErrorResponse }

func (e *respError) Error() string {
	return fmt.Sprintf("%s (HTTP %d): %s", e.r.Code, e.r.StatusCode, e.r.Message)
}

// describe turns an S3 error response into a respError; other errors pass unchanged.
func describe(err error) error {
	var r minio.ErrorResponse
	if errors.As(err, &r) && (r.Code != "" || r.StatusCode != 0) {
		return &respError{r}
	}
	return err
}

// response finds the S3 error response in err, described or not.
func response(err error) minio.ErrorResponse {
	var re *respError
	if errors.As(err, &re) {
		return re.r
	}
	var r minio.ErrorResponse
	if errors.As(err, &r) {
		return r
	}
	return minio.ErrorResponse{}
}

func isNotFound(err error) bool {
	r := response(err)
	return r.Code == minio.NoSuchKey || r.Code == "NotFound" || r.StatusCode == http.StatusNotFound && r.Code != minio.NoSuchBucket
}

func isPrecondition(err error) bool {
	r := response(err)
	return r.StatusCode == http.StatusPreconditionFailed || r.Code == "PreconditionFailed"
}

// objectKey checks key and returns its bucket object name.
func (s *Store) objectKey(key string) (string, error) {
	if err := store.CheckKey(key); err != nil {
		return "", err
	}
	first, _, _ := strings.Cut(key, "/")
	if first == "tmp" || first == "locks" {
		return "", fmt.Errorf("%w: %q: tmp/ and locks/ are the store's own", store.ErrInvalidKey, key)
	}
	return s.prefix + key, nil
}

func (s *Store) markerKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return s.prefix + "tmp/removing/" + hex.EncodeToString(h[:])
}

func token() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Put implements store.Store.
func (s *Store) Put(ctx context.Context, key string, data []byte) error {
	obj, err := s.objectKey(key)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	for range 10 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
		if err := s.put(ctx, obj, data, minio.PutObjectOptions{}); err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
		// A removal of the key that read the object before this Put may delete it: wait for
		// any removal in progress to end, and put again if the object is gone. Look even when
		// no removal is in progress now: a whole removal — read, delete, marker dropped — may
		// fit between this PUT and the look for its marker.
		if _, err := s.waitMarker(ctx, key); err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
		if _, err := s.stat(ctx, obj); err == nil {
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("put %s: %w", key, err)
		}
	}
	return fmt.Errorf("put %s: removed by concurrent removals ten times in a row", key)
}

func (s *Store) put(ctx context.Context, obj string, data []byte, opts minio.PutObjectOptions) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	opts.ContentType = "application/octet-stream"
	_, err := s.client.PutObject(ctx, s.bucket, obj, bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return describe(err)
	}
	return nil
}

// waitMarker waits while a removal of key is in progress (its marker exists) and reports
// whether there was one. A marker seen for markerExpiry is taken as a dead remover's.
func (s *Store) waitMarker(ctx context.Context, key string) (bool, error) {
	mk := s.markerKey(key)
	var first time.Time
	for {
		_, err := s.stat(ctx, mk)
		if errors.Is(err, store.ErrNotFound) {
			return !first.IsZero(), nil
		}
		if err != nil {
			return false, fmt.Errorf("look for a removal in progress: %w", err)
		}
		if first.IsZero() {
			first = time.Now()
		} else if time.Since(first) > s.markerExpiry {
			s.log.WarnContext(ctx, "s3 store: a removal marker outlived its removal; going on", "key", key, "marker", mk)
			return true, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(markerPoll):
		}
	}
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string, dst []byte, limit int64) ([]byte, error) {
	obj, err := s.objectKey(key)
	if err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	r, info, err := s.open(ctx, obj)
	switch {
	case err != nil:
		return nil, fmt.Errorf("get %s: %w", key, err)
	case limit > 0 && info.Size > limit:
		r.Close()
		return nil, fmt.Errorf("get %s: %w: %d bytes, limit %d", key, store.ErrTooLarge, info.Size, limit)
	}
	defer r.Close()
	if info.Size < 0 {
		return nil, fmt.Errorf("get %s: the server did not say the object's size", key)
	}
	buf := dst[:0]
	if int64(cap(dst)) < info.Size {
		buf = make([]byte, 0, info.Size)
	}
	buf = buf[:info.Size]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("get %s: the object ended before its %d bytes", key, info.Size)
		}
		return nil, fmt.Errorf("get %s: %w", key, describe(err))
	}
	return buf, nil
}

// Stat implements store.Store.
func (s *Store) Stat(ctx context.Context, key string) (store.Info, error) {
	obj, err := s.objectKey(key)
	if err != nil {
		return store.Info{}, fmt.Errorf("stat: %w", err)
	}
	info, err := s.stat(ctx, obj)
	if err != nil {
		return store.Info{}, fmt.Errorf("stat %s: %w", key, err)
	}
	info.Key = key
	return info, nil
}

// stat is a HEAD of a bucket object: ErrNotFound when there is none.
func (s *Store) stat(ctx context.Context, obj string) (store.Info, error) {
	if err := ctx.Err(); err != nil {
		return store.Info{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	oi, err := s.client.StatObject(ctx, s.bucket, obj, minio.StatObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			return store.Info{}, store.ErrNotFound
		}
		if ctx.Err() != nil {
			return store.Info{}, ctx.Err()
		}
		return store.Info{}, describe(err)
	}
	return store.Info{Key: obj, Size: oi.Size, ModTime: oi.LastModified}, nil
}

// List implements store.Store with one recursive listing of the prefix, which S3 returns in
// byte order of the keys.
func (s *Store) List(ctx context.Context, prefix string, fn func(store.Info) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %q: %w", prefix, err)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing goroutine when fn fails
	last := ""
	for oi := range s.client.ListObjects(lctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if oi.Err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("list %q: %w", prefix, ctx.Err())
			}
			return fmt.Errorf("list %q: %w", prefix, describe(oi.Err))
		}
		key, ok := strings.CutPrefix(oi.Key, s.prefix)
		if !ok {
			continue
		}
		if _, err := s.objectKey(key); err != nil {
			continue // the store's own (tmp/, locks/) or not an object of the store
		}
		if key <= last {
			return fmt.Errorf("list %q: the server listed %q after %q, not in byte order", prefix, key, last)
		}
		last = key
		if err := fn(store.Info{Key: key, Size: oi.Size, ModTime: oi.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Touch implements store.Store: a copy of the object onto itself, then a look for a removal in
// progress (see the package comment). Under Object Lock it retains the object instead
// (touchRetained).
func (s *Store) Touch(ctx context.Context, key string) error {
	obj, err := s.objectKey(key)
	if err != nil {
		return fmt.Errorf("touch: %w", err)
	}
	if s.lock != "" {
		return s.touchRetained(ctx, key, obj)
	}
	start := time.Now()
	// A removal in progress is waited out first, so that the copy does not bring back an
	// object the removal is deleting (the copy reads the object, then writes it).
	if _, err := s.waitMarker(ctx, key); err != nil {
		return fmt.Errorf("touch %s: %w", key, err)
	}
	for range 10 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("touch %s: %w", key, err)
		}
		if err := s.touch(ctx, obj); err != nil {
			return fmt.Errorf("touch %s: %w", key, err)
		}
		if _, err := s.waitMarker(ctx, key); err != nil {
			return fmt.Errorf("touch %s: %w", key, err)
		}
		// The object must still be there, as new as the copy: a server may carry out a copy
		// as a read and a later update, and an update of an object removed in between
		// changes nothing but still answers 200 (SeaweedFS does).
		info, err := s.stat(ctx, obj)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("touch %s: %w", key, store.ErrNotFound)
		case err != nil:
			return fmt.Errorf("touch %s: %w", key, err)
		case !info.ModTime.Before(start.Truncate(time.Second).Add(-clockMargin)):
			return nil // spared by the removal, or put again since
		}
	}
	return fmt.Errorf("touch %s: raced with removals ten times in a row", key)
}

// touchRetention is how long a Touch under Object Lock keeps its object from removal: longer
// than any collection that may have missed the object's new user takes to decide.
const touchRetention = 48 * time.Hour

// touchRetained is Touch in an Object Lock bucket. A self-copy there is a new version, and the
// version it replaces stays, with its own retention date, for as long as the key is used: a
// chunk touched by every full backup and every copy would be stored once per touch. Instead the
// current version's retention date is moved to at least touchRetention from now (never earlier),
// which makes every removal refuse it (store.ErrRetained) until then, whatever its time. A
// removal that deleted the object first makes the retention fail (ErrNotFound); one in progress
// is waited out before and after, and the object must still be there at the end.
func (s *Store) touchRetained(ctx context.Context, key, obj string) error {
	if _, err := s.waitMarker(ctx, key); err != nil {
		return fmt.Errorf("touch %s: %w", key, err)
	}
	until := time.Now().Add(touchRetention)
	err := s.Retain(ctx, key, until)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		// Another Retain moved the date meanwhile, later than this one (the server refuses to
		// move it back): the second look finds it in place.
		err = s.Retain(ctx, key, until)
	}
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("touch %s: %w", key, store.ErrNotFound)
		}
		return fmt.Errorf("touch %s: %w", key, err)
	}
	if _, err := s.waitMarker(ctx, key); err != nil {
		return fmt.Errorf("touch %s: %w", key, err)
	}
	if _, err := s.stat(ctx, obj); err != nil {
		return fmt.Errorf("touch %s: %w", key, err)
	}
	return nil
}

func (s *Store) touch(ctx context.Context, obj string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	meta := map[string]string{
		"x-amz-metadata-directive": "REPLACE",
		"Content-Type":             "application/octet-stream",
		touchMetaKey:               strconv.FormatInt(time.Now().UnixNano(), 10),
	}
	if s.lock != "" {
		// The copy is a new version: it carries the retention of the version it replaces.
		if err := s.carryRetention(ctx, obj, meta); err != nil {
			return err
		}
	}
	_, err := s.core.CopyObject(ctx, s.bucket, obj, s.bucket, obj, meta, minio.CopySrcOptions{}, minio.PutObjectOptions{})
	switch {
	case err == nil:
		return nil
	case isNotFound(err):
		return store.ErrNotFound
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		return describe(err)
	}
}

// marker is a removal marker this store holds.
type marker struct {
	obj string
	// deadline is when the removal under it must have sent its last delete: removeWindow
	// after taking it began, less the slack of that delete's timeout.
	deadline time.Time
}

// takeMarker takes key's removal marker: false when another removal of key holds it. With
// look, it first looks whether the marker exists: a conditional PUT that competes with others
// for one key can wait seconds for the server's lock of the key (SeaweedFS), a HEAD does not.
func (s *Store) takeMarker(ctx context.Context, key string, look bool) (*marker, bool, error) {
	m := &marker{obj: s.markerKey(key), deadline: time.Now().Add(s.removeWindow - s.removeSlack)}
	if look {
		if _, err := s.stat(ctx, m.obj); err == nil {
			return nil, false, nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return nil, false, fmt.Errorf("look for a removal in progress: %w", err)
		}
	}
	tok := token()
	var opts minio.PutObjectOptions
	opts.SetMatchETagExcept("*")
	err := s.put(ctx, m.obj, []byte(tok+"\n"+key+"\n"), opts)
	if err == nil {
		return m, true, nil
	}
	if !isPrecondition(err) {
		return nil, false, fmt.Errorf("take removal marker: %w", err)
	}
	// Another removal holds it — or our own first attempt, whose answer was lost.
	b, info, gerr := s.getSmall(ctx, m.obj)
	switch {
	case errors.Is(gerr, store.ErrNotFound):
		return nil, false, nil // released meanwhile; the caller tries again later
	case gerr != nil:
		return nil, false, fmt.Errorf("read removal marker: %w", gerr)
	case strings.HasPrefix(string(b), tok+"\n"):
		return m, true, nil
	case time.Since(info.ModTime) > s.markerExpiry+clockMargin:
		// Left by a process that died while removing. No removal can still be running under
		// it (see removeWindow), so it may go; the next attempt takes a fresh one.
		s.log.WarnContext(ctx, "s3 store: removing a stale removal marker", "key", key, "marker", m.obj)
		if err := s.removeObject(ctx, m.obj); err != nil {
			return nil, false, fmt.Errorf("remove stale removal marker: %w", err)
		}
	}
	return nil, false, nil
}

func (s *Store) dropMarker(ctx context.Context, m *marker) error {
	// The marker must go even when the caller's context has ended, or every Touch of the key
	// waits markerExpiry.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	if err := s.removeObject(ctx, m.obj); err != nil {
		return fmt.Errorf("drop removal marker: %w", err)
	}
	return nil
}

// inWindow reports whether a removal under m may still delete: see removeWindow.
func (m *marker) inWindow() bool { return time.Now().Before(m.deadline) }

// opTimeoutSlack keeps the last delete of a removal inside its window.
const opTimeoutSlack = 5 * time.Second

// open sends one GET of a bucket object and returns its body and what its headers say: the
// size and the content belong to one version of the object, whatever is put meanwhile. The
// body must be closed; ErrNotFound when there is no object.
func (s *Store) open(ctx context.Context, obj string) (io.ReadCloser, store.Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, store.Info{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	body, oi, _, err := s.core.GetObject(ctx, s.bucket, obj, minio.GetObjectOptions{})
	if err != nil {
		cancel()
		if isNotFound(err) {
			return nil, store.Info{}, store.ErrNotFound
		}
		if ctx.Err() != nil {
			return nil, store.Info{}, ctx.Err()
		}
		return nil, store.Info{}, describe(err)
	}
	return &cancelCloser{ReadCloser: body, cancel: cancel}, store.Info{Key: obj, Size: oi.Size, ModTime: oi.LastModified}, nil
}

// cancelCloser ends a request's context when its body is closed.
type cancelCloser struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelCloser) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// getSmall reads one of the store's own small objects (markers, leases).
func (s *Store) getSmall(ctx context.Context, obj string) ([]byte, store.Info, error) {
	r, info, err := s.open(ctx, obj)
	if err != nil {
		return nil, store.Info{}, err
	}
	defer r.Close()
	if info.Size > 64<<10 {
		return nil, store.Info{}, fmt.Errorf("%s: %d bytes, not one of the store's small objects", obj, info.Size)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, store.Info{}, describe(err)
	}
	return b, info, nil
}

// removeObject deletes a bucket object within removeWindow: a DELETE that arrives later could
// undo the work of a Touch that waited for the removal to end.
func (s *Store) removeObject(ctx context.Context, obj string) error {
	ctx, cancel := context.WithTimeout(ctx, s.removeWindow)
	defer cancel()
	if s.lock != "" {
		// In a versioned (Object Lock) bucket a plain DELETE only hides the object behind a
		// delete marker: its versions are deleted instead, once their retention passed.
		ids, err := s.removableVersions(ctx, obj)
		if err != nil {
			return err
		}
		return s.removeVersions(ctx, obj, ids)
	}
	if err := s.client.RemoveObject(ctx, s.bucket, obj, minio.RemoveObjectOptions{}); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return describe(err)
	}
	return nil
}

// RemoveIfOlder implements store.Store under the key's removal marker (see the package comment).
func (s *Store) RemoveIfOlder(ctx context.Context, key string, cutoff time.Time) (bool, int64, error) {
	obj, err := s.objectKey(key)
	if err != nil {
		return false, 0, fmt.Errorf("remove: %w", err)
	}
	// Last-Modified has whole seconds: an object put at the cutoff may show the second before.
	cutoff = cutoff.Truncate(time.Second)
	// No first look at the object without the marker: the caller (garbage collection) calls
	// this only for objects its listing found old, and the look that decides must follow the
	// marker anyway.
	m, ok, err := s.takeMarker(ctx, key, false)
	if err != nil || !ok {
		// Another removal of the key is in progress: it decides.
		return false, 0, wrap("remove", key, err)
	}
	removed, size, err := s.removeUnder(ctx, m, obj, cutoff)
	err = errors.Join(err, s.endRemoval(ctx, key, m, err))
	if err != nil {
		return removed, size, fmt.Errorf("remove %s: %w", key, err)
	}
	return removed, size, nil
}

func (s *Store) removeUnder(ctx context.Context, m *marker, obj string, cutoff time.Time) (bool, int64, error) {
	info, err := s.stat(ctx, obj)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, 0, nil
	case err != nil:
		return false, 0, err
	case !info.ModTime.Before(cutoff):
		return false, 0, nil // touched or put since the first look
	case !m.inWindow():
		return false, 0, nil // too slow to delete safely; a later collection will
	}
	if err := s.removeObject(ctx, obj); err != nil {
		return false, 0, sent(err)
	}
	return true, info.Size, nil
}

// deleteSentError is the failure of a removal that sent a delete without learning its outcome
// (a timeout, a lost connection, a server error): the server may still carry it out, after the
// removal ended on our side.
type deleteSentError struct{ err error }

func (e *deleteSentError) Error() string { return e.err.Error() }
func (e *deleteSentError) Unwrap() error { return e.err }

// sent marks err, the failure of removeObject or hide, as a delete that may still land, unless
// the server refused it for retention (a definite answer).
func sent(err error) error {
	if errors.Is(err, store.ErrRetained) {
		return err
	}
	return &deleteSentError{err}
}

// endRemoval drops m, the marker of a removal of key that ended with err, unless that removal
// sent a delete whose outcome it does not know: then the marker stays until it expires
// (markerExpiry, see waitMarker and takeMarker), so that no Touch or Put counts on the object
// while a late delete may still remove it.
func (s *Store) endRemoval(ctx context.Context, key string, m *marker, err error) error {
	if ds := (*deleteSentError)(nil); errors.As(err, &ds) {
		s.log.WarnContext(ctx, "s3 store: a delete may still land; its removal marker stays until it expires", "key", key, "marker", m.obj, "err", ds.err)
		return nil
	}
	return s.dropMarker(ctx, m)
}

func wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s %s: %w", op, key, err)
}

// Remove implements store.Store.
func (s *Store) Remove(ctx context.Context, key string) error {
	obj, err := s.objectKey(key)
	if err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	if _, err := s.stat(ctx, obj); err != nil {
		return fmt.Errorf("remove %s: %w", key, err)
	}
	if err := s.removeObject(ctx, obj); err != nil {
		return fmt.Errorf("remove %s: %w", key, err)
	}
	return nil
}

// Rename implements store.Store: a create-only copy to the destination and a delete of the
// source, under the source's removal marker (see the package comment).
func (s *Store) Rename(ctx context.Context, from, to string) error {
	src, err := s.objectKey(from)
	if err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	dst, err := s.objectKey(to)
	if err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	var m *marker
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("rename %s: %w", from, err)
		}
		if _, err := s.stat(ctx, src); err != nil {
			return fmt.Errorf("rename %s: %w", from, err)
		}
		var ok bool
		if m, ok, err = s.takeMarker(ctx, from, true); err != nil {
			return fmt.Errorf("rename %s: %w", from, err)
		} else if ok {
			break
		}
		// Another Rename or removal of from is in progress; once it ends, look again.
		if _, err := s.waitMarker(ctx, from); err != nil {
			return fmt.Errorf("rename %s: %w", from, err)
		}
	}
	err = s.renameUnder(ctx, m, src, dst)
	if derr := s.endRemoval(ctx, from, m, err); derr != nil {
		err = errors.Join(err, derr)
	}
	if err != nil {
		if errors.Is(err, store.ErrExists) {
			return fmt.Errorf("rename %s to %s: %w", from, to, err)
		}
		return fmt.Errorf("rename %s: %w", from, err)
	}
	return nil
}

func (s *Store) renameUnder(ctx context.Context, m *marker, src, dst string) error {
	from, err := s.stat(ctx, src)
	if err != nil {
		return err // ErrNotFound: moved or removed before we took the marker
	}
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	meta := map[string]string{"If-None-Match": "*"}
	if s.lock != "" {
		// The object keeps its retention under its new key (and when it moves back).
		if err := s.carryRetention(cctx, src, meta); err != nil {
			return err
		}
	}
	_, err = s.core.CopyObject(cctx, s.bucket, src, s.bucket, dst, meta, minio.CopySrcOptions{}, minio.PutObjectOptions{})
	if err == nil {
		// A copy can be answered 200 with an error in its body, which the client library takes
		// for success: the source goes only once the destination is there, of its size.
		if to, serr := s.stat(cctx, dst); serr != nil || to.Size != from.Size {
			return fmt.Errorf("copy %s to %s: the copy is not there whole (%d of %d bytes, %v); the source stays", src, dst, to.Size, from.Size, serr)
		}
	}
	switch {
	case err == nil:
	case isPrecondition(err):
		return store.ErrExists
	case isNotFound(err):
		return store.ErrNotFound
	case cctx.Err() != nil:
		return cctx.Err()
	default:
		return describe(err)
	}
	if !m.inWindow() {
		return errors.New("copied, but too slow to remove the source safely: the object is under both keys")
	}
	err = s.removeObject(ctx, src)
	if errors.Is(err, store.ErrRetained) {
		// Object Lock: a version of the source must stay until its retention date. The source
		// is hidden behind a delete marker instead, so that it reads as moved (see lock.go).
		err = s.hide(ctx, src)
	}
	if err != nil {
		return sent(err)
	}
	return nil
}

// Lock implements store.Store with a lease object (see the package comment).
func (s *Store) Lock(ctx context.Context, name string) (release func() error, err error) {
	if err := store.CheckName(name); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if strings.Contains(name, clockProbe) {
		return nil, fmt.Errorf("lock %q: %w: %q names the store's clock probes", name, store.ErrInvalidKey, clockProbe)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	l := &lease{s: s, name: name, obj: s.prefix + "locks/" + name, token: token(), stop: make(chan struct{}), done: make(chan struct{})}
	// Before the lease: taking over a stale one judges its age by the server's clock.
	if err := s.checkClock(ctx, name); err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	if err := l.acquire(ctx); err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = l.drop(ctx)
		return nil, fmt.Errorf("lock %s: %w", name, errors.New("store closed"))
	}
	s.leases[l] = struct{}{}
	s.mu.Unlock()
	go l.renew()
	return func() error { return s.release(l) }, nil
}

// clockProbe names the objects checkClock writes, after the lock's name: CleanTemp removes those
// a process left behind.
const clockProbe = ".clock-"

// ErrClockBehind: the server dates the objects it stores further behind this host's clock than
// clockMargin.
var ErrClockBehind = errors.New("the S3 server's clock is behind this host's")

// checkClock writes a small object next to the lock name's lease and compares the time the
// server gives it with this host's clock. Leases, removal markers and garbage collection's
// cutoff all compare the server's object times with this host's clock, allowing clockMargin: a
// server further behind would make a live lease look stale and a chunk stored this minute look
// old enough to collect, so a lock (held by every collection) is refused then, naming both
// times. A server ahead errs on the safe side (objects look younger) and passes.
func (s *Store) checkClock(ctx context.Context, name string) error {
	obj := s.prefix + "locks/" + name + clockProbe + token()
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	_, err := s.client.PutObject(pctx, s.bucket, obj, bytes.NewReader(nil), 0, minio.PutObjectOptions{ContentType: "text/plain"})
	cancel()
	if err != nil {
		return fmt.Errorf("write %s to read the server's clock: %w", obj, describe(err))
	}
	info, err := s.stat(ctx, obj)
	if rerr := s.removeObject(context.WithoutCancel(ctx), obj); rerr != nil {
		s.log.WarnContext(ctx, "s3 store: remove the clock probe", "object", obj, "err", rerr)
	}
	if err != nil {
		return fmt.Errorf("read the time of %s: %w", obj, err)
	}
	// Last-Modified has whole seconds.
	if floor := start.Truncate(time.Second).Add(-clockMargin); info.ModTime.Before(floor) {
		return fmt.Errorf("%w by %s (it dated an object written at %s as %s; at most %s allowed): synchronise both clocks (NTP)",
			ErrClockBehind, start.Truncate(time.Second).Sub(info.ModTime), start.UTC().Format(time.RFC3339), info.ModTime.UTC().Format(time.RFC3339), clockMargin)
	}
	return nil
}

func (s *Store) release(l *lease) error {
	s.mu.Lock()
	_, ok := s.leases[l]
	delete(s.leases, l)
	s.mu.Unlock()
	if !ok {
		return errors.New("lock already released")
	}
	close(l.stop)
	<-l.done
	return l.drop(context.Background())
}

// lease is one held Lock.
type lease struct {
	s     *Store
	name  string
	obj   string
	token string
	stop  chan struct{}
	done  chan struct{}

	mu   sync.Mutex
	etag string // of the last write of the lease object
}

func (l *lease) content() []byte {
	return []byte(l.token + "\n" + time.Now().UTC().Format(time.RFC3339Nano) + "\n")
}

func (l *lease) write(ctx context.Context, opts minio.PutObjectOptions) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	b := l.content()
	opts.ContentType = "text/plain"
	info, err := l.s.client.PutObject(ctx, l.s.bucket, l.obj, bytes.NewReader(b), int64(len(b)), opts)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.etag = info.ETag
	l.mu.Unlock()
	return nil
}

func (l *lease) acquire(ctx context.Context) error {
	var opts minio.PutObjectOptions
	opts.SetMatchETagExcept("*")
	err := l.write(ctx, opts)
	if err == nil {
		return nil
	}
	if !isPrecondition(err) {
		return describe(err)
	}
	b, info, err := l.s.getSmall(ctx, l.obj)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.ErrLocked // released this moment; the caller may try again
	case err != nil:
		return fmt.Errorf("read lease: %w", err)
	case strings.HasPrefix(string(b), l.token+"\n"):
		return nil // our own first attempt, whose answer was lost
	case time.Since(info.ModTime) < l.s.leaseStale:
		return store.ErrLocked
	}
	// The holder stopped renewing: take the lease over, unless someone else does first.
	oi, err := l.s.client.StatObject(ctx, l.s.bucket, l.obj, minio.StatObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			return store.ErrLocked
		}
		return describe(err)
	}
	if time.Since(oi.LastModified) < l.s.leaseStale {
		return store.ErrLocked
	}
	var take minio.PutObjectOptions
	take.SetMatchETag(oi.ETag)
	if err := l.write(ctx, take); err != nil {
		if isPrecondition(err) || isNotFound(err) {
			return store.ErrLocked
		}
		return describe(err)
	}
	l.s.log.WarnContext(ctx, "s3 store: took over an expired lock", "lock", l.name)
	return nil
}

// renew rewrites the lease every leaseDuration/3 while it is held.
func (l *lease) renew() {
	defer close(l.done)
	t := time.NewTicker(l.s.leaseEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		etag := l.etag
		l.mu.Unlock()
		var opts minio.PutObjectOptions
		opts.SetMatchETag(etag)
		ctx, cancel := context.WithTimeout(context.Background(), l.s.leaseEvery)
		err := l.write(ctx, opts)
		cancel()
		if err != nil {
			l.s.log.Error("s3 store: renew lock", "lock", l.name, "err", describe(err))
			if isPrecondition(err) || isNotFound(err) {
				l.s.log.Error("s3 store: lock lost to another holder", "lock", l.name)
				return
			}
		}
	}
}

// drop deletes the lease object if it is still this lease's.
func (l *lease) drop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	b, _, err := l.s.getSmall(ctx, l.obj)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("release lock %s: %w", l.name, err)
	}
	if !strings.HasPrefix(string(b), l.token+"\n") {
		return nil // expired and taken over meanwhile
	}
	if err := l.s.removeObject(ctx, l.obj); err != nil {
		return fmt.Errorf("release lock %s: %w", l.name, err)
	}
	return nil
}

// RemovalParallelism is how many RemoveIfOlder calls a caller removing many objects (garbage
// collection) should run at once: removals are remote requests, latency-bound, and the store is
// safe for concurrent use.
// ClockMargin is how far an object's time may lag the clock of the host that wrote it: the
// server's clock may lag by clockMargin (Touch accepts that), and Last-Modified has whole
// seconds. A collector's cutoff must leave at least this much room.
func (s *Store) ClockMargin() time.Duration { return clockMargin + time.Second }

func (s *Store) RemovalParallelism() int { return removeParallel }

// TouchHolds is how long a Touch keeps its object from removal: touchRetention under Object
// Lock (touchRetained), and 0 otherwise, where a Touch moves the object's time and holds it
// against every collection whose cutoff came before. A collection must not remove anything
// this long after it read what is referenced.
func (s *Store) TouchHolds() time.Duration {
	if s.lock != "" {
		return touchRetention
	}
	return 0
}

// Close releases the locks still held. The store is not usable afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	ls := make([]*lease, 0, len(s.leases))
	for l := range s.leases {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	var err error
	for _, l := range ls {
		err = errors.Join(err, s.release(l))
	}
	s.tr.CloseIdleConnections()
	return err
}

// CleanTemp removes (with dryRun: only counts) what processes left when they died, or lost the
// server, in the middle of an operation: removal markers older than markerExpiry plus
// clockMargin, which no removal can still use, and clock probes (checkClock) older than
// s.probeStale, which no check still reads. It returns how many it found. It is safe while other
// processes use the store.
func (s *Store) CleanTemp(ctx context.Context, dryRun bool) (int, error) {
	var stale []string
	for _, kind := range []struct {
		what, prefix, within string
		after                time.Duration
	}{
		{"removal markers", s.prefix + "tmp/removing/", "", s.markerExpiry + clockMargin},
		{"clock probes", s.prefix + "locks/", clockProbe, s.probeStale},
	} {
		for oi := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: kind.prefix, Recursive: true}) {
			if oi.Err != nil {
				return 0, fmt.Errorf("list %s: %w", kind.what, describe(oi.Err))
			}
			if strings.Contains(strings.TrimPrefix(oi.Key, kind.prefix), kind.within) && time.Since(oi.LastModified) > kind.after {
				stale = append(stale, oi.Key)
			}
		}
	}
	if dryRun {
		return len(stale), nil
	}
	for _, obj := range stale {
		if err := s.removeObject(ctx, obj); err != nil {
			return 0, fmt.Errorf("remove %s, left by a process that died: %w", obj, err)
		}
	}
	return len(stale), nil
}
