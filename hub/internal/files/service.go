package files

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/shared/api"
)

// ErrDamaged: a chunk under the path asked for is missing or fails its checks (restore
// quarantines it). The answer for that path fails; other paths of the disk still read.
var ErrDamaged = errors.New("restore point damaged under this path")

// One open disk keeps pages pages of at most maxPage bytes of its image: 32 MiB per request.
// A page is a chunk (4 MiB by default): every read of an image reads and verifies a whole chunk.
const (
	pages   = 8
	maxPage = 4 << 20
)

// imageOpener opens a disk of a restore point (restore.Service).
type imageOpener interface {
	// OpenIn returns the disk's image read from the repository named repo, the backup's own or
	// one holding a copy of it (empty: its own); every read of it verifies its chunks.
	OpenIn(ctx context.Context, backupID, diskID, repo string) (*restore.Image, restore.Disk, error)
}

// Service browses the files of restore points.
type Service struct {
	open imageOpener
	m    *metrics
}

// NewService returns the service; its metrics are registered on reg (nil: not registered).
func NewService(open imageOpener, reg prometheus.Registerer) *Service {
	return &Service{open: open, m: newMetrics(reg)}
}

type metrics struct {
	listings  prometheus.Counter
	entries   prometheus.Counter
	downloads *prometheus.CounterVec
	bytes     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		listings: prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_file_listings_total", Help: "Directories of restore points listed (file-level restore)."}),
		entries:  prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_file_listed_entries_total", Help: "Entries returned by directory listings of restore points."}),
		downloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sendense_hub_file_downloads_total",
			Help: "Files (kind=file) and directory archives (kind=archive) served from restore points, by outcome (ok, failed)."}, []string{"kind", "outcome"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sendense_hub_file_download_bytes_total",
			Help: "Bytes of file contents served from restore points, by kind (file, archive)."}, []string{"kind"}),
	}
	for _, k := range []string{"file", "archive"} {
		m.bytes.WithLabelValues(k)
		for _, o := range []string{"ok", "failed"} {
			m.downloads.WithLabelValues(k, o)
		}
	}
	if reg != nil {
		reg.MustRegister(m.listings, m.entries, m.downloads, m.bytes)
	}
	return m
}

// Browser is the file tree of one disk of one restore point, open for one request: its reads
// run under the context it was opened with. Not safe for concurrent use.
type Browser struct {
	Disk restore.Disk
	d    *Disk
	m    *metrics
}

// Open opens the disk diskID of backup backupID for browsing under ctx.
func (s *Service) Open(ctx context.Context, backupID, diskID string) (*Browser, error) {
	return s.OpenIn(ctx, backupID, diskID, "")
}

// OpenIn is Open reading the backup from the repository named repo: its own or one holding a
// copy of it (empty: its own).
func (s *Service) OpenIn(ctx context.Context, backupID, diskID, repo string) (*Browser, error) {
	img, disk, err := s.open.OpenIn(ctx, backupID, diskID, repo)
	if err != nil {
		return nil, err
	}
	d, err := OpenDisk(img.Reader(ctx), img.Size(), min(img.Index().ChunkSize, maxPage), pages)
	if err != nil {
		return nil, fmt.Errorf("backup %s disk %s: %w", backupID, diskID, damaged(err))
	}
	return &Browser{Disk: disk, d: d, m: s.m}, nil
}

// damaged marks the errors of missing or damaged chunks with ErrDamaged.
func damaged(err error) error {
	if errors.Is(err, repository.ErrChunkDamaged) || errors.Is(err, repository.ErrChunkNotFound) {
		return fmt.Errorf("%w: %w", ErrDamaged, err)
	}
	return err
}

// Stat describes the node at p without following a symlink; a volume whose filesystem this
// package does not read is of type other.
func (b *Browser) Stat(p string) (api.FileEntry, error) {
	e, err := b.d.Stat(p)
	if err != nil {
		return api.FileEntry{}, damaged(err)
	}
	return e.wire(), nil
}

// List returns the directory at p with its path normalised.
func (b *Browser) List(p string) (api.FileList, error) {
	names, err := SplitPath(p)
	if err != nil {
		return api.FileList{}, err
	}
	entries, err := b.d.ReadDir(p)
	if err != nil {
		return api.FileList{}, damaged(err)
	}
	b.m.listings.Inc()
	b.m.entries.Add(float64(len(entries)))
	out := api.FileList{Path: joinPath(names), Entries: make([]api.FileEntry, 0, len(entries))}
	for _, e := range entries {
		out.Entries = append(out.Entries, e.wire())
	}
	return out, nil
}

func (e Entry) wire() api.FileEntry {
	return api.FileEntry{Name: e.Name, Type: e.Type, Size: e.Size, Mtime: e.Mtime, Mode: e.Mode, Target: e.Target}
}

// File is one regular file of a restore point, ready to be served.
type File struct {
	Path  string // normalised
	Entry api.FileEntry
	r     io.ReaderAt
	m     *metrics
}

// File opens the regular file at p.
func (b *Browser) File(p string) (*File, error) {
	names, err := SplitPath(p)
	if err != nil {
		return nil, err
	}
	e, r, err := b.d.Open(p)
	if err != nil {
		return nil, damaged(err)
	}
	return &File{Path: joinPath(names), Entry: e.wire(), r: r, m: b.m}, nil
}

// ReadAt reads the file's bytes like io.ReaderAt; bytes under a damaged chunk fail the read
// (ErrDamaged) and are never returned.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.r.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("%s: %w", f.Path, damaged(err))
	}
	return n, err
}

// Copy writes n bytes of the file from off to w. Bytes under a damaged chunk fail the copy
// (ErrDamaged); they are never written. Report the download's end with Done.
func (f *File) Copy(w io.Writer, off, n int64) (int64, error) {
	if n <= 0 {
		return 0, nil
	}
	buf := make([]byte, min(n, 1<<20))
	written, err := io.CopyBuffer(w, io.NewSectionReader(f, off, n), buf)
	if err == nil && written != n {
		err = fmt.Errorf("%s: %d of %d bytes: %w", f.Path, written, n, io.ErrUnexpectedEOF)
	}
	return written, err
}

// Done counts a download of the file that sent bytes and ended with err (nil: complete).
func (f *File) Done(bytes int64, err error) {
	f.m.bytes.WithLabelValues("file").Add(float64(bytes))
	outcome := "ok"
	if err != nil {
		outcome = "failed"
	}
	f.m.downloads.WithLabelValues("file", outcome).Inc()
}

// Archive is a directory of a restore point, ready to be streamed as tar.
type Archive struct {
	Path string // normalised
	Name string // the directory's name, the archive's top directory
	b    *Browser
}

// Archive checks that p is a directory and returns it.
func (b *Browser) Archive(p string) (*Archive, error) {
	names, err := SplitPath(p)
	if err != nil {
		return nil, err
	}
	e, err := b.d.Stat(p)
	if err != nil {
		return nil, damaged(err)
	}
	if e.Type != TypeDir {
		return nil, fmt.Errorf("%s is a %s: %w", joinPath(names), e.Type, ErrNotDir)
	}
	name := "disk"
	if len(names) > 0 {
		name = names[len(names)-1]
	}
	return &Archive{Path: joinPath(names), Name: name, b: b}, nil
}

// Stream streams the archive to w and returns the bytes of file contents it held. Any error
// leaves the archive incomplete: the caller must not let it pass as whole.
func (a *Archive) Stream(w io.Writer) (int64, error) {
	var content int64
	err := a.b.d.WriteTar(w, a.Path, func(n int64) { content += n })
	a.b.m.bytes.WithLabelValues("archive").Add(float64(content))
	if err != nil {
		a.b.m.downloads.WithLabelValues("archive", "failed").Inc()
		return content, fmt.Errorf("archive %s: %w", a.Path, damaged(err))
	}
	a.b.m.downloads.WithLabelValues("archive", "ok").Inc()
	return content, nil
}
