package repository

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/api"
)

// DefaultName is the repository created in the data directory on first start.
const DefaultName = "default"

// MaxNameLen bounds a repository name, in bytes.
const MaxNameLen = 128

// registryCatalog is what the registry needs from the catalog.
type registryCatalog interface {
	CreateRepository(ctx context.Context, r *catalog.Repository) error
	RepositoryByName(ctx context.Context, name string) (*catalog.Repository, error)
	RepositoryByID(ctx context.Context, id string) (*catalog.Repository, error)
	Repositories(ctx context.Context) ([]catalog.Repository, error)
	SetRepositoryPasswordFile(ctx context.Context, id, path string) error
}

// Registry is the hub's set of repositories: each one is a record in the catalog and a store
// holding the repository, and the registry keeps the two in step. It opens each repository once
// and keeps it open. It is safe for concurrent use.
type Registry struct {
	cat registryCatalog
	log *slog.Logger

	mu   sync.Mutex
	open map[string]*Repository
	// opening holds the opens in progress: the callers that ask meanwhile wait for the one
	// open instead of running their own. Opening an encrypted repository derives its key with
	// argon2id (by default 64 MiB and a few tenths of a second of CPU): the first uploads of a
	// backup into a repository the hub has not opened yet (created by the CLI, or after a
	// restart) arrive together, up to 32 per agent, and each used to derive the key anew (measured:
	// 8.5 CPU seconds of argon2id in one encrypted full backup, and that many times 64 MiB).
	opening map[string]*openCall
	// inflight counts the opens running (runOpen), which Close waits for; closed is set by Close.
	inflight sync.WaitGroup
	closed   bool
	// opens counts the repositories opened from their store, for tests.
	opens int

	// kdf is the argon2id cost of password slots added through this registry; zero: the
	// default. Tests lower it (SetKDFCost).
	kdf KDF

	// durability is when the chunks of repositories opened through this registry are made
	// durable (SetDurability); "" is the default.
	durability Durability
}

// SetDurability sets when the chunks of repositories this registry creates or opens from now on
// are made durable (see Durability).
func (g *Registry) SetDurability(d Durability) { g.durability = d }

// repoOptions are the options of every repository the registry opens.
func (g *Registry) repoOptions() []Option {
	opts := []Option{withKDF(g.kdf), WithLogger(g.log)}
	if g.durability != "" {
		opts = append(opts, WithDurability(g.durability))
	}
	return opts
}

// SetKDFCost sets the argon2id cost of the password slots of repositories this registry
// creates or opens; tests lower it from DefaultKDFCost.
func (g *Registry) SetKDFCost(k KDF) { g.kdf = k }

// withKDF is WithKDFCost unless k is zero.
func withKDF(k KDF) Option {
	return func(o *options) {
		if k.Time != 0 {
			o.kdfCost = k
		}
	}
}

// NewRegistry returns a registry over the catalog's repositories and registers its metrics
// (the capacity of each repository's file system) on reg (nil: none).
func NewRegistry(cat registryCatalog, log *slog.Logger, reg prometheus.Registerer) *Registry {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Registry{cat: cat, log: log, open: map[string]*Repository{}, opening: map[string]*openCall{}}
	if reg != nil {
		reg.MustRegister(newCapacityCollector(cat, log))
	}
	return r
}

// CheckName checks a repository name: 1 to MaxNameLen bytes without spaces, slashes, NUL or
// other control characters. The error is an *api.FieldError.
func CheckName(name string) error {
	bad := name == "" || len(name) > MaxNameLen || strings.ContainsAny(name, " /\\") ||
		strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f })
	if bad {
		return &api.FieldError{Field: "name", Msg: "must be a non-empty name without spaces or slashes, at most 128 characters"}
	}
	return nil
}

// EnsureDefault makes sure the repository named DefaultName exists, creating it at dir when the
// catalog has none, and returns it.
func (g *Registry) EnsureDefault(ctx context.Context, dir string) (*catalog.Repository, *Repository, error) {
	rec, err := g.cat.RepositoryByName(ctx, DefaultName)
	if errors.Is(err, catalog.ErrNotFound) {
		rec, err = g.Create(ctx, DefaultName, dir, 0)
		if errors.Is(err, catalog.ErrConflict) {
			// Another hub instance created it at the same moment.
			rec, err = g.cat.RepositoryByName(ctx, DefaultName)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	r, err := g.Open(ctx, rec.ID)
	return rec, r, err
}

// Create checks name (CheckName) and chunkSize (CheckChunkSize; 0: DefaultChunkSize),
// initialises a repository in dir (or adopts the repository there, which must then have that
// chunk size unless chunkSize is 0) and records it in the catalog under name. A name in use
// returns catalog.ErrConflict.
func (g *Registry) Create(ctx context.Context, name, dir string, chunkSize int64) (*catalog.Repository, error) {
	return g.CreateEncrypted(ctx, name, dir, chunkSize, "")
}

// CreateEncrypted is Create of an encrypted repository whose first key slot opens with the
// content of passwordFile (a password or a key file), or adopts the encrypted repository at dir
// that the file unlocks. The file's absolute path is recorded, never its content: the hub reads
// the file whenever it opens the repository. An empty passwordFile is Create.
func (g *Registry) CreateEncrypted(ctx context.Context, name, dir string, chunkSize int64, passwordFile string) (*catalog.Repository, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if err := CheckChunkSize(chunkSize); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("repository path %s: %w", dir, err)
	}
	if _, err := g.cat.RepositoryByName(ctx, name); err == nil {
		return nil, fmt.Errorf("repository %q: %w", name, catalog.ErrConflict)
	}
	opts := g.repoOptions()
	if passwordFile != "" {
		if passwordFile, err = secretRef(passwordFile); err != nil {
			return nil, err
		}
		opts = append(opts, WithPasswordFile(passwordFile))
	}
	r, err := OpenDir(ctx, abs, g.log, opts...)
	if errors.Is(err, ErrNotRepository) {
		if passwordFile != "" {
			opts = append(opts, Encrypt())
		}
		r, err = InitDir(ctx, abs, chunkSize, g.log, opts...)
	}
	var pathErr *fs.PathError
	switch {
	case errors.As(err, &pathErr) && !errors.Is(err, ErrNotRepository):
		// The directory cannot be made or used (not a directory, no such parent, no
		// permission, read-only): a mistake in the path the operator named.
		return nil, &api.FieldError{Field: "path", Msg: fmt.Sprintf("cannot hold a repository: %v", err)}
	case err != nil:
		return nil, fmt.Errorf("repository %q: %w", name, err)
	}
	if passwordFile != "" && !r.Encrypted() {
		_ = r.Close()
		return nil, &api.FieldError{Field: "password_file", Msg: fmt.Sprintf("%s already holds a repository that is not encrypted", abs)}
	}
	if chunkSize != 0 && r.ChunkSize() != chunkSize {
		_ = r.Close()
		return nil, &api.FieldError{Field: "chunk_size", Msg: fmt.Sprintf("%s already holds a repository with chunk size %d", abs, r.ChunkSize())}
	}
	rec := &catalog.Repository{ID: r.ID(), Name: name, Kind: api.RepositoryLocal, Path: abs, ChunkSize: r.ChunkSize(), PasswordFile: passwordFile}
	if err := g.cat.CreateRepository(ctx, rec); err != nil {
		_ = r.Close()
		return nil, err
	}
	g.keep(rec.ID, r)
	return rec, nil
}

// keep caches r under id unless another goroutine opened it first; it returns the cached one.
func (g *Registry) keep(id string, r *Repository) *Repository {
	g.mu.Lock()
	defer g.mu.Unlock()
	if have, ok := g.open[id]; ok {
		_ = r.Close()
		return have
	}
	g.open[id] = r
	return r
}

// ErrRegistryClosed is returned by Open once the registry is closed.
var ErrRegistryClosed = errors.New("the repository registry is closed")

// Open returns the repository with that catalog id, checking that its store still holds the
// repository the catalog recorded. An S3 repository's credentials file is read now, at every
// open: replacing the file takes effect at the next open (a hub restart or CLI command).
//
// Concurrent calls for a repository not open yet share one open, which runs apart from any one
// caller: a caller whose ctx ends stops waiting and the open goes on for the others. It is
// cancelled when every caller waiting for it has left (the next call opens anew) or the
// registry closes. A failed open is not kept.
func (g *Registry) Open(ctx context.Context, id string) (*Repository, error) {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, ErrRegistryClosed
	}
	if r, ok := g.open[id]; ok {
		g.mu.Unlock()
		return r, nil
	}
	call, ok := g.opening[id]
	if !ok {
		// The open keeps the first caller's values (its logger, its trace) but not its
		// deadline or cancellation: those belong to that caller alone.
		octx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		call = &openCall{done: make(chan struct{}), cancel: cancel}
		g.opening[id] = call
		g.inflight.Add(1)
		go g.runOpen(octx, id, call)
	}
	call.waiters++
	g.mu.Unlock()

	select {
	case <-call.done:
		return call.r, call.err
	case <-ctx.Done():
		g.mu.Lock()
		call.waiters--
		if call.waiters == 0 {
			// Nobody wants this open any more: stop it, and let the next caller start
			// afresh rather than join an open being cancelled.
			call.cancel()
			if g.opening[id] == call {
				delete(g.opening, id)
			}
		}
		g.mu.Unlock()
		return nil, ctx.Err()
	}
}

// openCall is an open in progress. waiters is guarded by the registry's mutex; r and err are set
// before done is closed.
type openCall struct {
	done    chan struct{}
	cancel  context.CancelFunc
	waiters int
	r       *Repository
	err     error
}

// runOpen runs one shared open and hands its result to the callers waiting for it.
func (g *Registry) runOpen(ctx context.Context, id string, call *openCall) {
	defer g.inflight.Done()
	defer call.cancel()
	r, err := g.openNow(ctx, id)
	g.mu.Lock()
	if g.opening[id] == call {
		delete(g.opening, id)
	}
	switch {
	case g.closed:
		// Close ran meanwhile, cancelling this open: its callers learn why. Close closes only
		// what it found open, so a repository opened all the same is ours to close.
		if err == nil {
			_ = r.Close()
		}
		r, err = nil, ErrRegistryClosed
	case err != nil:
	default:
		if have, ok := g.open[id]; ok {
			_ = r.Close()
			r = have
		} else {
			g.open[id] = r
		}
	}
	call.r, call.err = r, err
	g.mu.Unlock()
	close(call.done)
}

// openNow opens the repository with that catalog id from its store.
func (g *Registry) openNow(ctx context.Context, id string) (*Repository, error) {
	g.mu.Lock()
	g.opens++
	g.mu.Unlock()
	rec, err := g.cat.RepositoryByID(ctx, id)
	if err != nil {
		return nil, err
	}
	r, err := g.openRecord(ctx, rec, rec.PasswordFile)
	if err != nil {
		return nil, fmt.Errorf("repository %q: %w", rec.Name, err)
	}
	if r.ID() != rec.ID {
		_ = r.Close()
		return nil, fmt.Errorf("repository %q: %s holds repository %s, the catalog expects %s", rec.Name, rec.Path, r.ID(), rec.ID)
	}
	return r, nil
}

// List returns every repository record.
func (g *Registry) List(ctx context.Context) ([]catalog.Repository, error) {
	return g.cat.Repositories(ctx)
}

// Close cancels the opens in progress, waits for them to end and closes every repository the
// registry opened. Open fails with ErrRegistryClosed from then on.
func (g *Registry) Close() error {
	g.mu.Lock()
	g.closed = true
	for _, call := range g.opening {
		call.cancel()
	}
	g.mu.Unlock()
	g.inflight.Wait()

	g.mu.Lock()
	defer g.mu.Unlock()
	var err error
	for id, r := range g.open {
		err = errors.Join(err, r.Close())
		delete(g.open, id)
	}
	return err
}

// Describe returns every repository as operators see it.
func (g *Registry) Describe(ctx context.Context) ([]api.Repository, error) {
	rs, err := g.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Repository, 0, len(rs))
	for i := range rs {
		out = append(out, wire(&rs[i]))
	}
	return out, nil
}

// Add is Create or CreateS3 for operators: it returns the new repository as they see it.
func (g *Registry) Add(ctx context.Context, req api.CreateRepositoryRequest) (api.Repository, error) {
	var r *catalog.Repository
	var err error
	switch {
	case req.S3Endpoint != "" && req.Path != "":
		return api.Repository{}, &api.FieldError{Field: "path", Msg: "a repository is a directory (path) or an S3 bucket (s3_endpoint), not both"}
	case req.S3Endpoint != "":
		r, err = g.CreateS3(ctx, req.Name, req.S3Settings, req.ChunkSize, "")
	default:
		r, err = g.Create(ctx, req.Name, req.Path, req.ChunkSize)
	}
	if err != nil {
		return api.Repository{}, err
	}
	return wire(r), nil
}

func wire(r *catalog.Repository) api.Repository {
	w := api.Repository{ID: r.ID, Name: r.Name, Kind: r.Kind, Path: r.Path, ChunkSize: r.ChunkSize, CreatedAt: r.CreatedAt, Encrypted: r.PasswordFile != ""}
	if r.Kind == api.RepositoryS3 {
		w.S3Settings = s3Settings(r)
	}
	return w
}

// openRecord opens the repository a catalog record describes, in its directory or its bucket,
// unlocking an encrypted one with the secret in passwordFile.
func (g *Registry) openRecord(ctx context.Context, rec *catalog.Repository, passwordFile string) (*Repository, error) {
	if rec.Kind == api.RepositoryS3 {
		return g.openS3(ctx, rec, passwordFile)
	}
	return OpenDir(ctx, rec.Path, g.log, append(g.repoOptions(), WithPasswordFile(passwordFile))...)
}
