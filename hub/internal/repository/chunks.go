package repository

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/sendense/sendense/hub/internal/directio"
	"github.com/sendense/sendense/shared/atomicfile"
	"github.com/sendense/sendense/shared/chunk"
)

// Errors of the chunk store. Callers branch on them with errors.Is; every returned error names
// the digest concerned.
var (
	// ErrChunkNotFound: the repository holds no chunk with that digest.
	ErrChunkNotFound = errors.New("chunk not found")
	// ErrChunkDamaged: the stored chunk cannot be read back as the plaintext its digest names
	// (bad framing, CRC mismatch, undecodable payload, or content that hashes differently). It
	// also wraps the underlying chunk.Err* when there is one.
	ErrChunkDamaged = errors.New("chunk damaged")
	// ErrBadBlob: an uploaded blob is malformed: bad framing or CRC (wrapping the chunk.Err*
	// cause), an undecodable payload, or a plaintext larger than the repository's chunk size.
	ErrBadBlob = errors.New("bad chunk blob")
	// ErrDigestMismatch: an uploaded blob is well formed but its plaintext does not hash to the
	// digest it was uploaded under.
	ErrDigestMismatch = errors.New("chunk digest mismatch")
	// ErrZeroChunk: an upload of an all-zero chunk. Zero slots are recognised by digest and never
	// stored.
	ErrZeroChunk = errors.New("zero chunks are not stored")
)

// Permissions of stored files and directories. Chunks and indexes are immutable, so their files
// are read-only; removing them only needs write access to their directory.
const (
	dirPerm  = 0o750
	filePerm = 0o440
)

func (l *Local) chunkDir(d chunk.Digest) string {
	return filepath.Join(l.root, "chunks", hex.EncodeToString(d[0:1]), hex.EncodeToString(d[1:2]))
}

func (l *Local) chunkPath(d chunk.Digest) string {
	return filepath.Join(l.chunkDir(d), d.String())
}

// HasChunk reports whether the repository holds a chunk with digest d. It does not read the
// chunk; VerifyChunk does.
func (l *Local) HasChunk(d chunk.Digest) (bool, error) {
	fi, err := os.Lstat(l.chunkPath(d))
	switch {
	case err == nil && fi.Mode().IsRegular():
		return true, nil
	case err == nil:
		return false, fmt.Errorf("chunk %s: %s is not a regular file", d, l.chunkPath(d))
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("stat chunk %s: %w", d, err)
	}
}

// MissingChunks returns the digests of ds that the repository does not hold, each once, in the
// order of ds. An agent asks this before uploading, so known chunks cost no transfer. Zero
// digests are reported like any other; callers should not ask for zero slots.
func (l *Local) MissingChunks(ds []chunk.Digest) ([]chunk.Digest, error) {
	var missing []chunk.Digest
	seen := make(map[chunk.Digest]struct{}, len(ds))
	for _, d := range ds {
		if _, dup := seen[d]; dup {
			continue
		}
		seen[d] = struct{}{}
		ok, err := l.HasChunk(d)
		if err != nil {
			return nil, err
		}
		if !ok {
			missing = append(missing, d)
		}
	}
	return missing, nil
}

// PutChunk stores blob (a shared/chunk blob) under digest d and reports whether it wrote it.
//
// The blob is checked completely before anything is written: framing and CRC, a plaintext no
// larger than the chunk size, decoding (raw or zstd, never expanding beyond the chunk size), the
// plaintext length, and the SHA-256 of the plaintext against d. A malformed blob returns
// ErrBadBlob, a well-formed blob of other content ErrDigestMismatch, the zero chunk ErrZeroChunk;
// in each case nothing is stored. The blob is checked even when the chunk exists already.
//
// When the chunk exists, PutChunk returns stored=false and leaves the stored chunk untouched:
// chunks are immutable. Otherwise it returns stored=true only once the chunk is durable (file and
// directory entries fsynced). PutChunk is idempotent and safe for concurrent calls with the same
// or different digests.
func (l *Local) PutChunk(ctx context.Context, d chunk.Digest, blob []byte) (stored bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("put chunk %s: %w", d, err)
	}
	if err := l.checkBlob(d, blob); err != nil {
		return false, fmt.Errorf("put chunk %s: %w", d, err)
	}
	unlock, err := l.lockDigest(ctx, d)
	if err != nil {
		return false, fmt.Errorf("put chunk %s: %w", d, err)
	}
	defer unlock()
	if ok, err := l.HasChunk(d); err != nil {
		return false, err
	} else if ok {
		// Already stored: refresh its time so that garbage collection spares it (see TouchChunk).
		return false, l.touchLocked(d)
	}
	if err := l.writeChunk(d, blob); err != nil {
		return false, fmt.Errorf("put chunk %s: %w", d, err)
	}
	return true, nil
}

// checkBlob verifies that blob is a well-formed blob of the plaintext named d.
func (l *Local) checkBlob(d chunk.Digest, blob []byte) error {
	if len(blob) > l.maxBlob {
		return fmt.Errorf("%w: %d bytes, more than the %d a chunk of %d bytes may take", ErrBadBlob, len(blob), l.maxBlob, l.desc.ChunkSize)
	}
	h, payload, err := chunk.OpenBlob(blob)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadBlob, err)
	}
	if int64(h.PlaintextLen) > l.desc.ChunkSize {
		return fmt.Errorf("%w: plaintext of %d bytes exceeds the chunk size %d", ErrBadBlob, h.PlaintextLen, l.desc.ChunkSize)
	}
	if d == chunk.ZeroDigest(int(h.PlaintextLen)) {
		return ErrZeroChunk
	}
	var plain []byte
	switch h.Codec {
	case chunk.CodecRaw:
		plain = payload
	default:
		bp := l.plainBuf()
		defer l.plainBufs.Put(bp)
		if plain, err = l.decode(h, payload, *bp); err != nil {
			return fmt.Errorf("%w: %w", ErrBadBlob, err)
		}
	}
	if got := chunk.Sum(plain); got != d {
		return fmt.Errorf("%w: plaintext hashes to %s", ErrDigestMismatch, got)
	}
	return nil
}

func (l *Local) plainBuf() *[]byte {
	if bp, ok := l.plainBufs.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, l.desc.ChunkSize)
	return &b
}

func (l *Local) payloadBuf() *[]byte {
	if bp, ok := l.payloadBufs.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, l.maxBlob)
	return &b
}

// decode returns the plaintext of a payload whose header h has been checked, written over dst
// (reallocated when too small). The output is capped at h.PlaintextLen bytes while decoding, so a
// payload that expands further fails without allocating more.
func (l *Local) decode(h chunk.Header, payload, dst []byte) ([]byte, error) {
	n := int(h.PlaintextLen)
	if cap(dst) < n {
		dst = make([]byte, 0, n)
	}
	switch h.Codec {
	case chunk.CodecRaw:
		return append(dst[:0], payload...), nil
	case chunk.CodecZstd:
		// With WithDecodeAllCapLimit the decoder stops at cap(dst), here exactly n bytes.
		out, err := l.dec.DecodeAll(payload, dst[:0:n])
		if err != nil {
			return nil, fmt.Errorf("decode zstd payload: %w", err)
		}
		if len(out) != n {
			return nil, fmt.Errorf("zstd payload decodes to %d bytes, header says %d", len(out), n)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%w: %d", chunk.ErrUnknownCodec, uint8(h.Codec))
	}
}

// lockDigest waits until no other PutChunk or RemoveChunk of d is in progress in this process and
// claims d; the returned function releases it.
func (l *Local) lockDigest(ctx context.Context, d chunk.Digest) (unlock func(), err error) {
	for {
		l.mu.Lock()
		busy, ok := l.inflight[d]
		if !ok {
			mine := make(chan struct{})
			l.inflight[d] = mine
			l.mu.Unlock()
			return func() {
				l.mu.Lock()
				delete(l.inflight, d)
				l.mu.Unlock()
				close(mine)
			}, nil
		}
		l.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// writeChunk stores blob durably under d's path: temp file → fsync → rename → fsync directory.
// The caller holds d's lock and has checked that the chunk does not exist.
func (l *Local) writeChunk(d chunk.Digest, blob []byte) (err error) {
	tmp, err := l.writeTemp("chunk-", blob)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err := l.ensureChunkDir(d); err != nil {
		return err
	}
	if err := os.Rename(tmp, l.chunkPath(d)); err != nil {
		return fmt.Errorf("rename into place: %w", err)
	}
	return atomicfile.SyncDir(l.chunkDir(d))
}

// writeTemp writes data to a new read-only file in tmp/, fsyncs and closes it, and returns its
// path. Temp files live apart from chunks and indexes, so a crash can never leave one where it
// could be taken for a chunk or an index.
func (l *Local) writeTemp(prefix string, data []byte) (path string, err error) {
	dir := filepath.Join(l.root, "tmp")
	f, err := os.CreateTemp(dir, prefix+"*.tmp")
	if errors.Is(err, fs.ErrNotExist) {
		// Someone removed tmp/; it holds nothing of value, so recreate it.
		if err := os.MkdirAll(dir, dirPerm); err != nil {
			return "", fmt.Errorf("create %s: %w", dir, err)
		}
		f, err = os.CreateTemp(dir, prefix+"*.tmp")
	}
	if err != nil {
		return "", fmt.Errorf("create temp file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := directio.WriteAt(f, data, 0); err != nil {
		return "", fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Chmod(filePerm); err != nil {
		return "", fmt.Errorf("chmod %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("fsync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("close %s: %w", f.Name(), err)
	}
	return f.Name(), nil
}

// ensureChunkDir makes chunks/ab/ and chunks/ab/cd/ exist durably. The parent of each is fsynced
// even when the directory existed already: another goroutine may have created it and not yet
// made its entry durable, and a chunk must not be acknowledged before its whole path is. Each
// directory is done once per process.
func (l *Local) ensureChunkDir(d chunk.Digest) error {
	i := int(d[0])<<8 | int(d[1])
	word, bit := &l.chunkDirs[i/64], uint64(1)<<(i%64)
	if word.Load()&bit != 0 {
		return nil
	}
	cd := l.chunkDir(d)
	ab := filepath.Dir(cd)
	for _, dir := range []string{ab, cd} {
		if err := os.Mkdir(dir, dirPerm); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create chunk directory: %w", err)
		}
		if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
			return err
		}
	}
	word.Or(bit)
	return nil
}

// ReadChunk returns the plaintext of chunk d, written over dst's storage when cap(dst) suffices
// (the result is dst[:n]) and in a new slice otherwise. It checks the framing and CRC, decodes,
// and re-hashes the plaintext: it never returns bytes other than those d names. A missing chunk
// returns ErrChunkNotFound, one that fails any check ErrChunkDamaged; other errors are I/O
// errors. Zero slots are never stored, so reading a zero digest returns ErrChunkNotFound.
func (l *Local) ReadChunk(ctx context.Context, d chunk.Digest, dst []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read chunk %s: %w", d, err)
	}
	out, err := l.readChunk(d, dst)
	if err != nil {
		return nil, fmt.Errorf("read chunk %s: %w", d, err)
	}
	return out, nil
}

func (l *Local) readChunk(d chunk.Digest, dst []byte) ([]byte, error) {
	f, err := os.Open(l.chunkPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrChunkNotFound
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size > int64(l.maxBlob) {
		return nil, fmt.Errorf("%w: file is %d bytes, more than any chunk of this repository takes (%d)", ErrChunkDamaged, size, l.maxBlob)
	}
	var hb [chunk.HeaderSize]byte
	if _, err := io.ReadFull(f, hb[:min(size, chunk.HeaderSize)]); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	h, err := chunk.ParseHeader(hb[:min(size, chunk.HeaderSize)])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrChunkDamaged, err)
	}
	if int64(h.PlaintextLen) > l.desc.ChunkSize {
		return nil, fmt.Errorf("%w: plaintext of %d bytes exceeds the chunk size %d", ErrChunkDamaged, h.PlaintextLen, l.desc.ChunkSize)
	}
	payloadLen := int(size) - chunk.HeaderSize
	var plain []byte
	if h.Codec == chunk.CodecRaw {
		// A raw payload is the plaintext: read it straight into dst. A payload longer than the
		// header says fails the Check below; it cannot overflow because of the maxBlob bound.
		if cap(dst) < payloadLen {
			dst = make([]byte, payloadLen)
		}
		plain = dst[:payloadLen]
		if _, err := io.ReadFull(f, plain); err != nil {
			return nil, fmt.Errorf("read payload: %w", err)
		}
		if err := h.Check(plain); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrChunkDamaged, err)
		}
	} else {
		bp := l.payloadBuf()
		defer l.payloadBufs.Put(bp)
		payload := (*bp)[:payloadLen]
		if _, err := io.ReadFull(f, payload); err != nil {
			return nil, fmt.Errorf("read payload: %w", err)
		}
		if err := h.Check(payload); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrChunkDamaged, err)
		}
		if plain, err = l.decode(h, payload, dst); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrChunkDamaged, err)
		}
	}
	if got := chunk.Sum(plain); got != d {
		return nil, fmt.Errorf("%w: plaintext hashes to %s", ErrChunkDamaged, got)
	}
	return plain, nil
}

// VerifyChunk re-reads chunk d and re-hashes its plaintext. It returns nil for a sound chunk,
// ErrChunkNotFound or ErrChunkDamaged otherwise (or an I/O error).
func (l *Local) VerifyChunk(ctx context.Context, d chunk.Digest) error {
	bp := l.plainBuf()
	defer l.plainBufs.Put(bp)
	_, err := l.ReadChunk(ctx, d, *bp)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	return nil
}

// RemoveChunk deletes chunk d durably; ErrChunkNotFound when there is none. It is meant for
// garbage collection, which must make sure no index or open upload still needs the chunk.
func (l *Local) RemoveChunk(ctx context.Context, d chunk.Digest) error {
	unlock, err := l.lockDigest(ctx, d)
	if err != nil {
		return fmt.Errorf("remove chunk %s: %w", d, err)
	}
	defer unlock()
	if err := os.Remove(l.chunkPath(d)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove chunk %s: %w", d, ErrChunkNotFound)
	} else if err != nil {
		return fmt.Errorf("remove chunk %s: %w", d, err)
	}
	if err := atomicfile.SyncDir(l.chunkDir(d)); err != nil {
		return fmt.Errorf("remove chunk %s: %w", d, err)
	}
	return nil
}

// WalkChunks calls fn for every chunk of the repository, in digest order, with the size of its
// blob file and its modification time (the time it was stored). Files in chunks/ that are not
// chunk blobs in their proper place are skipped. Chunks stored or removed during the walk may or
// may not be visited. An error from fn stops the walk and is returned as is.
func (l *Local) WalkChunks(ctx context.Context, fn func(d chunk.Digest, size int64, modTime time.Time) error) error {
	root := filepath.Join(l.root, "chunks")
	abs, err := readDir(root)
	if err != nil {
		return fmt.Errorf("walk chunks: %w", err)
	}
	for _, ab := range abs {
		if !ab.IsDir() || !isHexByte(ab.Name()) {
			continue
		}
		cds, err := readDir(filepath.Join(root, ab.Name()))
		if err != nil {
			return fmt.Errorf("walk chunks: %w", err)
		}
		for _, cd := range cds {
			if !cd.IsDir() || !isHexByte(cd.Name()) {
				continue
			}
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("walk chunks: %w", err)
			}
			dir := filepath.Join(root, ab.Name(), cd.Name())
			files, err := readDir(dir)
			if err != nil {
				return fmt.Errorf("walk chunks: %w", err)
			}
			prefix := ab.Name() + cd.Name()
			for _, e := range files {
				d, err := chunk.ParseDigest(e.Name())
				if err != nil || !e.Type().IsRegular() || e.Name()[:4] != prefix {
					continue
				}
				fi, err := e.Info()
				if errors.Is(err, fs.ErrNotExist) {
					continue // removed since the directory was read
				}
				if err != nil {
					return fmt.Errorf("walk chunks: %w", err)
				}
				if err := fn(d, fi.Size(), fi.ModTime()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// readDir is os.ReadDir that treats a directory removed meanwhile as empty.
func readDir(dir string) ([]os.DirEntry, error) {
	es, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return es, err
}

func isHexByte(s string) bool {
	if len(s) != 2 {
		return false
	}
	for i := 0; i < 2; i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Stats counts the chunks of the repository and the bytes their blob files take.
func (l *Local) Stats(ctx context.Context) (chunks int64, bytes int64, err error) {
	err = l.WalkChunks(ctx, func(_ chunk.Digest, size int64, _ time.Time) error {
		chunks++
		bytes += size
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("repository stats: %w", err)
	}
	return chunks, bytes, nil
}

// CleanTemp removes the files in tmp/ last modified more than olderThan ago and returns how many
// it removed. Such files are leftovers of writes interrupted by a crash; olderThan must exceed the
// longest write in progress (an hour is generous), or a write in flight loses its temp file and
// fails.
func (l *Local) CleanTemp(olderThan time.Duration) (removed int, err error) {
	dir := filepath.Join(l.root, "tmp")
	es, err := readDir(dir)
	if err != nil {
		return 0, fmt.Errorf("clean temp files: %w", err)
	}
	cutoff := time.Now().Add(-olderThan)
	for _, e := range es {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return removed, fmt.Errorf("clean temp files: %w", err)
		}
		if !fi.ModTime().Before(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("clean temp files: %w", err)
		}
		removed++
	}
	return removed, nil
}

// TouchChunk sets a chunk's modification time to now. A backup that reuses an existing chunk
// touches it, so that garbage collection, which only removes unreferenced chunks older than its
// grace period, cannot remove it between the backup's decision and its index.
func (l *Local) TouchChunk(ctx context.Context, d chunk.Digest) error {
	unlock, err := l.lockDigest(ctx, d)
	if err != nil {
		return fmt.Errorf("touch chunk %s: %w", d, err)
	}
	defer unlock()
	return l.touchLocked(d)
}

func (l *Local) touchLocked(d chunk.Digest) error {
	now := time.Now()
	if err := os.Chtimes(l.chunkPath(d), now, now); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("touch chunk %s: %w", d, ErrChunkNotFound)
		}
		return fmt.Errorf("touch chunk %s: %w", d, err)
	}
	return nil
}

// RemoveChunkIfOlder removes chunk d only if its modification time is still before cutoff,
// checked under the chunk's lock: a chunk that a backup reused (touched) after garbage
// collection looked at it survives. It reports whether it removed the chunk, and its size.
func (l *Local) RemoveChunkIfOlder(ctx context.Context, d chunk.Digest, cutoff time.Time) (bool, int64, error) {
	unlock, err := l.lockDigest(ctx, d)
	if err != nil {
		return false, 0, fmt.Errorf("remove chunk %s: %w", d, err)
	}
	defer unlock()
	fi, err := os.Stat(l.chunkPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("remove chunk %s: %w", d, err)
	}
	if !fi.ModTime().Before(cutoff) {
		return false, 0, nil
	}
	if err := os.Remove(l.chunkPath(d)); err != nil {
		return false, 0, fmt.Errorf("remove chunk %s: %w", d, err)
	}
	if err := atomicfile.SyncDir(l.chunkDir(d)); err != nil {
		return false, 0, fmt.Errorf("remove chunk %s: %w", d, err)
	}
	return true, fi.Size(), nil
}
