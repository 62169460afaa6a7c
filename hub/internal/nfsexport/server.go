// Package nfsexport serves instant-recovery sessions over NFSv3: per session one folder with
// the VM's configuration, a descriptor and a flat file per disk, the flat files read on demand
// from a restore point's verified image under a bounded copy-on-write overlay, mountable only
// by the addresses the session names.
package nfsexport

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	billy "github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	nfs "github.com/willscott/go-nfs"
)

// ErrNoExport is returned for a session the server does not export.
var ErrNoExport = errors.New("no such export")

// ErrExists is returned when a session is exported twice.
var ErrExists = errors.New("export exists")

// validID is what a session id may be: it names a directory and the export path.
var validID = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// validFile is what a file or disk name in an export may be.
var validFile = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 ._()-]{0,120}$`)

// Disk is one disk of an export.
type Disk struct {
	// Name is the base name: the folder holds Name.vmdk (descriptor) and Name-flat.vmdk.
	Name string
	// Image is the restore point's disk; it must be safe for concurrent reads.
	Image io.ReaderAt
	// Size is the disk's capacity in bytes, a multiple of 512.
	Size int64
	// AdapterType goes into the descriptor: lsilogic, buslogic, ide or legacyESX.
	AdapterType string
	// SlotSize is the image's slot (chunk) size: reads are served from a cache of whole slots
	// (slotCacheSlots per disk). 0 reads the image directly.
	SlotSize int64
}

// slotCacheSlots is how many slots each disk keeps decoded: 8 × 4 MiB = 32 MiB per disk, which
// holds a guest's sequential read-ahead and the hot blocks of a boot.
const slotCacheSlots = 8

// Export is one session's export: the datastore an ESXi host mounts, holding one folder for
// the VM (ESXi keeps a VM's files in a folder of the datastore; the simulator cannot even
// register a .vmx at a datastore's root).
type Export struct {
	// ID names the session; the export path is "/" + ID.
	ID string
	// Folder is the VM's folder in the export; Files and Disks are in it.
	Folder string
	// Allowed are the only client addresses that may mount the export or use its handles.
	Allowed []netip.Addr
	// Files are written into the folder when it is first made (the .vmx); later writes by
	// the client win, so a re-export after a restart keeps what ESXi changed.
	Files map[string][]byte
	Disks []Disk
	// OverlayLimit bounds the bytes the client's writes may take in the overlays of all the
	// disks together (counted in whole 64 KiB blocks); 0 means unbounded.
	OverlayLimit int64
}

// export is an Export being served.
type export struct {
	id      string
	key     uint64
	dir     string // <root>/<id>
	allowed map[netip.Addr]bool
	fs      *sessionFS
	budget  *budget
	limit   int64

	mu      sync.Mutex
	handles map[uint64][]string
}

// Server serves the exports under one root directory. Its methods are safe for concurrent use.
type Server struct {
	root string
	log  *slog.Logger
	id   [8]byte // write verifier: stable for the process, so clients resend uncommitted writes after a restart

	mu      sync.RWMutex
	exports map[string]*export // by id
	byKey   map[uint64]*export

	conns connCounts
}

// New returns a server keeping its sessions' folders and overlays under root.
func New(root string, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("create export root %s: %w", root, err)
	}
	if l, ok := nfs.Log.(*nfs.DefaultLogger); ok {
		l.SetLevel(nfs.ErrorLevel)
	}
	s := &Server{root: root, log: log, exports: map[string]*export{}, byKey: map[uint64]*export{}}
	if _, err := rand.Read(s.id[:]); err != nil {
		return nil, fmt.Errorf("make write verifier: %w", err)
	}
	return s, nil
}

// Path is the export path of session id, as a client mounts it.
func Path(id string) string { return "/" + id }

// Add exports e. The folder and overlays are made under the root if they are not there, and
// reused if they are (a restart re-serves a session with the guest's writes kept).
func (s *Server) Add(e Export) error {
	if !validID.MatchString(e.ID) {
		return fmt.Errorf("export id %q: must match %s", e.ID, validID)
	}
	if len(e.Allowed) == 0 {
		return fmt.Errorf("export %s: no client address allowed", e.ID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.exports[e.ID]; ok {
		return fmt.Errorf("export %s: %w", e.ID, ErrExists)
	}
	ex, err := s.open(e)
	if err != nil {
		return fmt.Errorf("export %s: %w", e.ID, err)
	}
	s.exports[e.ID] = ex
	s.byKey[ex.key] = ex
	return nil
}

func (s *Server) open(e Export) (*export, error) {
	dir := filepath.Join(s.root, e.ID)
	folder := filepath.Join(dir, "export")
	if err := os.MkdirAll(folder, 0o700); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "overlay"), 0o700); err != nil {
		return nil, err
	}
	if !validFile.MatchString(e.Folder) {
		return nil, fmt.Errorf("folder %q: must match %s", e.Folder, validFile)
	}
	if err := os.MkdirAll(filepath.Join(folder, e.Folder), 0o700); err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for name, b := range e.Files {
		files[name] = b
	}
	flats := map[string]Disk{}
	for _, d := range e.Disks {
		if !validFile.MatchString(d.Name) || d.Size <= 0 || d.Size%512 != 0 || d.Image == nil {
			return nil, fmt.Errorf("disk %q of %d bytes: bad name, size or image", d.Name, d.Size)
		}
		files[d.Name+".vmdk"] = Descriptor(d)
		flats[d.Name+"-flat.vmdk"] = d
	}
	for name, b := range files {
		if !validFile.MatchString(name) {
			return nil, fmt.Errorf("file name %q: must match %s", name, validFile)
		}
		p := filepath.Join(folder, e.Folder, name)
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := writeFile(p, b); err != nil {
			return nil, err
		}
	}
	b := &budget{limit: e.OverlayLimit}
	sfs := &sessionFS{
		Filesystem: osfs.New(folder, osfs.WithBoundOS()),
		disks:      map[string]*cowDisk{},
		mtime:      time.Now(),
		budget:     b,
	}
	// What the client wrote to the folder before a restart counts against the budget, as when
	// written; the files the hub wrote itself do not.
	var written int64
	_ = filepath.WalkDir(folder, func(_ string, de os.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			if fi, ierr := de.Info(); ierr == nil {
				written += fi.Size()
			}
		}
		return nil
	})
	for _, c := range files {
		written -= int64(len(c))
	}
	b.used.Add(max(written, 0))
	for name, d := range flats {
		base := d.Image
		if d.SlotSize > 0 {
			base = newSlotCache(d.Image, d.Size, d.SlotSize, slotCacheSlots)
		}
		cd, err := openCOW(filepath.Join(dir, "overlay", d.Name+".cow"), base, d.Size, b)
		if err != nil {
			sfs.close()
			return nil, err
		}
		sfs.disks[e.Folder+"/"+name] = cd
	}
	ex := &export{
		id: e.ID, key: hash64(e.ID), dir: dir, fs: sfs, budget: b, limit: e.OverlayLimit,
		allowed: map[netip.Addr]bool{}, handles: map[uint64][]string{},
	}
	for _, a := range e.Allowed {
		ex.allowed[a.Unmap()] = true
	}
	// Register every existing path, so that handles a client got before a restart resolve.
	ex.register(nil)
	_ = filepath.WalkDir(folder, func(p string, _ os.DirEntry, err error) error {
		if rel, rerr := filepath.Rel(folder, p); err == nil && rerr == nil && rel != "." {
			ex.register(strings.Split(filepath.ToSlash(rel), "/"))
		}
		return nil
	})
	for name := range flats {
		ex.register([]string{e.Folder, name})
	}
	return ex, nil
}

// writeFile writes a new file durably: temp, fsync, rename.
func writeFile(p string, b []byte) error {
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("rename %s: %w", p, err)
	}
	return nil
}

func (fs *sessionFS) close() {
	for _, d := range fs.disks {
		d.Close()
	}
}

// Remove stops exporting session id. With drop, its folder and overlays are deleted; without,
// they stay for a later Add (a hub that stops keeps its sessions).
func (s *Server) Remove(id string, drop bool) error {
	s.mu.Lock()
	ex, ok := s.exports[id]
	if ok {
		delete(s.exports, id)
		delete(s.byKey, ex.key)
	}
	s.mu.Unlock()
	dir := filepath.Join(s.root, id)
	if ok {
		ex.fs.close()
	}
	if drop && validID.MatchString(id) {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("drop export %s: %w", id, err)
		}
		return nil
	}
	if !ok {
		return fmt.Errorf("export %s: %w", id, ErrNoExport)
	}
	return nil
}

// OverlayBytes returns the bytes the client's writes take in session id's overlays.
func (s *Server) OverlayBytes(id string) (int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ex, ok := s.exports[id]
	if !ok {
		return 0, fmt.Errorf("export %s: %w", id, ErrNoExport)
	}
	return ex.budget.used.Load(), nil
}

// Overlays returns the overlay bytes of every export, by id.
func (s *Server) Overlays() map[string]int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m := make(map[string]int64, len(s.exports))
	for id, ex := range s.exports {
		m[id] = ex.budget.used.Load()
	}
	return m
}

// Allows reports whether some export is open to client: the portmapper answers only them.
func (s *Server) Allows(client netip.Addr) bool {
	client = client.Unmap()
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, ex := range s.exports {
		if ex.allowed[client] {
			return true
		}
	}
	return false
}

// Serve answers MOUNT and NFSv3 on ln (both programs on the one port) until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accept nfs connection: %w", err)
		}
		client, ok := remoteAddr(c)
		// A host no session names is hung up on at once, as the portmapper does: the NFS
		// library decodes a request, with whatever lengths it claims, before any check of
		// ours. What a named host may mount and which handles it may use are checked per
		// request against the session's addresses.
		if !ok || !s.Allows(client) || !s.conns.acquire(client) {
			c.Close()
			continue
		}
		go func() {
			defer s.conns.release(client)
			s.serveConn(ctx, c, client)
		}()
	}
}

// Bounds of the NFS connections served at once: an ESXi host opens a few per mount.
const (
	maxNFSConns          = 256
	maxNFSConnsPerClient = 32
)

// connCounts counts the NFS connections being served, in all and per client address.
type connCounts struct {
	mu    sync.Mutex
	total int
	by    map[netip.Addr]int
}

func (c *connCounts) acquire(a netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.total >= maxNFSConns || c.by[a] >= maxNFSConnsPerClient {
		return false
	}
	if c.by == nil {
		c.by = map[netip.Addr]int{}
	}
	c.total++
	c.by[a]++
	return true
}

func (c *connCounts) release(a netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.by[a]--; c.by[a] <= 0 {
		delete(c.by, a)
	}
}

// serveConn serves one connection with a handler that knows the client's address, so every
// request (not only MOUNT) is checked against the export its handle names.
//
// The library reads the connection through a guardConn, which bounds what a request can make
// it allocate. The connection has a context of its own, given to the library and cancelled
// when the connection closes for any reason, so that no goroutine of the library is left
// waiting on it (a reply that failed to be written, a record the library refused without
// closing) and its slot in the connection counts is always released.
func (s *Server) serveConn(ctx context.Context, c net.Conn, client netip.Addr) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l := &oneConn{done: make(chan struct{})}
	l.c = &guardConn{Conn: c, onClose: func() {
		cancel()
		_ = l.Close()
	}}
	srv := &nfs.Server{Handler: &handler{s: s, client: client}, ID: s.id, Context: cctx}
	go func() {
		select {
		case <-cctx.Done():
			_ = l.c.Close()
		case <-l.done:
		}
	}()
	_ = srv.Serve(l)
}

// logPath is a mount path as a log line shows it: at most 256 bytes, the rest counted.
func logPath(p []byte) string {
	if len(p) <= 256 {
		return string(p)
	}
	return fmt.Sprintf("%s… (%d bytes)", p[:256], len(p))
}

func remoteAddr(c net.Conn) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// oneConn is a listener that yields one connection, then blocks until that connection is
// closed: it lets go-nfs's Server serve a single connection with its own handler.
type oneConn struct {
	c    net.Conn
	once sync.Once
	used bool
	mu   sync.Mutex
	done chan struct{}
}

func (l *oneConn) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.used {
		l.used = true
		l.mu.Unlock()
		return &closeNotify{Conn: l.c, l: l}, nil
	}
	l.mu.Unlock()
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConn) Addr() net.Addr { return l.c.LocalAddr() }

// closeNotify ends its listener's wait when the connection closes.
type closeNotify struct {
	net.Conn
	l *oneConn
}

func (c *closeNotify) Close() error {
	err := c.Conn.Close()
	c.l.Close()
	return err
}

// handler is the nfs.Handler of one client connection.
type handler struct {
	s      *Server
	client netip.Addr
}

var _ nfs.Handler = (*handler)(nil)

func (h *handler) Mount(ctx context.Context, c net.Conn, req nfs.MountRequest) (nfs.MountStatus, billy.Filesystem, []nfs.AuthFlavor) {
	id := strings.TrimPrefix(strings.TrimSuffix(string(req.Dirpath), "/"), "/")
	h.s.mu.RLock()
	ex, ok := h.s.exports[id]
	h.s.mu.RUnlock()
	if !ok {
		h.s.log.Warn("nfs mount of unknown export refused", "client", h.client.String(), "path", logPath(req.Dirpath))
		return nfs.MountStatusErrNoEnt, nil, nil
	}
	if !ex.allowed[h.client] {
		h.s.log.Warn("nfs mount refused", "client", h.client.String(), "session_id", id)
		return nfs.MountStatusErrAcces, nil, nil
	}
	h.s.log.Info("nfs export mounted", "client", h.client.String(), "session_id", id)
	return nfs.MountStatusOk, ex.fs, []nfs.AuthFlavor{nfs.AuthFlavorNull, nfs.AuthFlavorUnix}
}

func (h *handler) Change(fs billy.Filesystem) billy.Change {
	if c, ok := fs.(billy.Change); ok {
		return c
	}
	return nil
}

// FSStat reports the overlay bound as the filesystem's size, so the guest host sees how much
// it may still write.
func (h *handler) FSStat(ctx context.Context, fs billy.Filesystem, st *nfs.FSStat) error {
	ex := h.exportOf(fs)
	if ex == nil {
		return ErrNoExport
	}
	if ex.limit > 0 {
		used := ex.budget.used.Load()
		st.TotalSize = uint64(ex.limit)
		st.FreeSize = uint64(max(0, ex.limit-used))
		st.AvailableSize = st.FreeSize
	}
	return nil
}

// handleSize is the length of every file handle: 8 bytes of session key, 8 of path hash.
const handleSize = 16

func (h *handler) ToHandle(fs billy.Filesystem, p []string) []byte {
	ex := h.exportOf(fs)
	if ex == nil {
		return nil
	}
	ph := ex.register(p)
	b := make([]byte, handleSize)
	putUint64(b[:8], ex.key)
	putUint64(b[8:], ph)
	return b
}

func (h *handler) FromHandle(fh []byte) (billy.Filesystem, []string, error) {
	if len(fh) != handleSize {
		return nil, nil, fmt.Errorf("file handle of %d bytes: %w", len(fh), ErrNoExport)
	}
	h.s.mu.RLock()
	ex, ok := h.s.byKey[getUint64(fh[:8])]
	h.s.mu.RUnlock()
	if !ok || !ex.allowed[h.client] {
		// A stale handle and a forbidden one look the same to the client.
		return nil, nil, fmt.Errorf("file handle from %s: %w", h.client, ErrNoExport)
	}
	ex.mu.Lock()
	p, ok := ex.handles[getUint64(fh[8:])]
	ex.mu.Unlock()
	if !ok {
		return nil, nil, fmt.Errorf("file handle of session %s: %w", ex.id, os.ErrNotExist)
	}
	return ex.fs, append([]string(nil), p...), nil
}

func (h *handler) InvalidateHandle(fs billy.Filesystem, fh []byte) error {
	ex := h.exportOf(fs)
	if ex == nil || len(fh) != handleSize {
		return nil
	}
	ex.mu.Lock()
	delete(ex.handles, getUint64(fh[8:]))
	ex.mu.Unlock()
	return nil
}

// HandleLimit bounds how many entries one READDIR answers (half of it); a session folder
// holds a few dozen files.
func (h *handler) HandleLimit() int { return 1 << 16 }

func (h *handler) exportOf(fs billy.Filesystem) *export {
	h.s.mu.RLock()
	defer h.s.mu.RUnlock()
	for _, ex := range h.s.exports {
		if billy.Filesystem(ex.fs) == fs {
			return ex
		}
	}
	return nil
}

// register records path p and returns its hash.
func (ex *export) register(p []string) uint64 {
	joined := strings.Join(p, "/")
	ph := hash64(joined)
	ex.mu.Lock()
	ex.handles[ph] = append([]string(nil), p...)
	ex.mu.Unlock()
	return ph
}

func hash64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

func putUint64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (56 - 8*i))
	}
}

func getUint64(b []byte) uint64 {
	var v uint64
	for i := 0; i < 8; i++ {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// DropExcept deletes the folder and overlay of every session under the root that keep does
// not name and that is not served, and returns their ids.
func (s *Server) DropExcept(keep map[string]bool) ([]string, error) {
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("list export root %s: %w", s.root, err)
	}
	var dropped []string
	for _, e := range entries {
		id := e.Name()
		if !e.IsDir() || keep[id] || !validID.MatchString(id) {
			continue
		}
		s.mu.RLock()
		_, served := s.exports[id]
		s.mu.RUnlock()
		if served {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.root, id)); err != nil {
			return dropped, fmt.Errorf("drop export %s: %w", id, err)
		}
		dropped = append(dropped, id)
	}
	return dropped, nil
}
