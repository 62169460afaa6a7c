package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sendense/sendense/shared/api"
)

// downloadAttempts bounds how often a broken download is resumed (Range from the byte reached)
// before the error is returned.
const downloadAttempts = 5

// errChanged: a resumed download's answer is not the rest of what the first answer started.
var errChanged = errors.New("changed while it was downloaded")

// DownloadImage writes the raw image of a disk of a backup into dst at its offsets, 1 MiB at a
// time, and returns its size. The hub verifies every chunk as it serves it and breaks the
// transfer on damage, so a short body is never taken for the image: a transfer broken part-way
// is resumed with a Range request from the byte reached, pinned with If-Range to the same image
// (ETag), up to 5 times. progress, if not nil, is called with the bytes written so far. repo,
// when not empty, reads the backup from its copy in the repository of that name.
func (c *Client) DownloadImage(ctx context.Context, backupID, diskID, repo string, dst io.WriterAt, progress func(int64)) (int64, error) {
	var q url.Values
	if repo != "" {
		q = url.Values{"repository": {repo}}
	}
	size, _, err := c.download(ctx, pathImage(backupID, diskID), q, dst, progress)
	if err != nil {
		return size, fmt.Errorf("download %s of %s: %w", diskID, backupID, err)
	}
	return size, nil
}

// DownloadFile writes one file of a disk of a backup into dst at its offsets, resumed like
// DownloadImage, and returns its size and modification time. The hub audits the download.
func (c *Client) DownloadFile(ctx context.Context, backupID, diskID, p string, dst io.WriterAt) (int64, time.Time, error) {
	size, h, err := c.download(ctx, api.Path(api.PathBackupFileContent, backupID, diskID), url.Values{"path": {p}}, dst, nil)
	if err != nil {
		return size, time.Time{}, fmt.Errorf("download %s: %w", p, err)
	}
	mtime, _ := http.ParseTime(h.Get("Last-Modified"))
	return size, mtime, nil
}

// download GETs path?q into dst, resuming a broken transfer with Range and If-Range up to
// downloadAttempts times, and returns the size and the first answer's headers.
func (c *Client) download(ctx context.Context, path string, q url.Values, dst io.WriterAt, progress func(int64)) (int64, http.Header, error) {
	var done, size int64 = 0, -1
	var etag string
	var header http.Header
	var lastErr error
	for attempt := 0; attempt < downloadAttempts; attempt++ {
		n, sz, h, err := c.downloadFrom(ctx, path, q, done, etag, dst, progress)
		done += n
		if size < 0 && h != nil {
			size, etag, header = sz, h.Get("ETag"), h
		}
		if err == nil {
			if done != size {
				return done, header, fmt.Errorf("got %d of %d bytes", done, size)
			}
			return size, header, nil
		}
		var apiErr *Error
		if errors.As(err, &apiErr) || errors.Is(err, errChanged) || ctx.Err() != nil || size < 0 {
			return done, header, err // refused, cancelled, or broken before the first byte's headers
		}
		lastErr = err
	}
	return done, header, fmt.Errorf("broken %d times, last: %w", downloadAttempts, lastErr)
}

// downloadFrom reads from offset on (Range when offset > 0) and returns the bytes written, the
// full size and the answer's headers.
func (c *Client) downloadFrom(ctx context.Context, path string, q url.Values, offset int64, etag string, dst io.WriterAt, progress func(int64)) (int64, int64, http.Header, error) {
	req, err := c.newRequest(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		return 0, -1, nil, err
	}
	req.Header.Set("Accept", "application/octet-stream")
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		if etag != "" {
			req.Header.Set("If-Range", etag)
		}
	}
	resp, err := c.send(req)
	if err != nil {
		return 0, -1, nil, err
	}
	defer resp.Body.Close()
	size := resp.ContentLength
	switch {
	case offset > 0 && resp.StatusCode == http.StatusPartialContent:
		size, err = rangeTotal(resp.Header.Get("Content-Range"), offset)
		if err != nil {
			return 0, -1, nil, fmt.Errorf("GET %s: %w: %w", path, errChanged, err)
		}
	case offset > 0:
		return 0, -1, nil, fmt.Errorf("GET %s: %w (answer %d to a resume)", path, errChanged, resp.StatusCode)
	case size < 0:
		return 0, -1, nil, fmt.Errorf("GET %s: no Content-Length", path)
	}
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, rerr := io.ReadFull(resp.Body, buf)
		if k > 0 {
			if _, err := dst.WriteAt(buf[:k], offset+n); err != nil {
				return n, size, resp.Header, fmt.Errorf("write at %d: %w", offset+n, err)
			}
			n += int64(k)
			if progress != nil {
				progress(offset + n)
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			if offset+n < size {
				return n, size, resp.Header, fmt.Errorf("GET %s: transfer broken at byte %d of %d", path, offset+n, size)
			}
			return n, size, resp.Header, nil
		}
		if rerr != nil {
			return n, size, resp.Header, fmt.Errorf("GET %s: at byte %d: %w", path, offset+n, rerr)
		}
	}
}

// rangeTotal reads "bytes first-last/total" and checks that it starts at offset.
func rangeTotal(cr string, offset int64) (int64, error) {
	spec, ok := strings.CutPrefix(cr, "bytes ")
	rng, total, ok2 := strings.Cut(spec, "/")
	first, _, ok3 := strings.Cut(rng, "-")
	if !ok || !ok2 || !ok3 {
		return 0, fmt.Errorf("bad Content-Range %q", cr)
	}
	f, err1 := strconv.ParseInt(first, 10, 64)
	t, err2 := strconv.ParseInt(total, 10, 64)
	if err1 != nil || err2 != nil || f != offset || t < offset {
		return 0, fmt.Errorf("Content-Range %q does not resume at byte %d", cr, offset)
	}
	return t, nil
}
