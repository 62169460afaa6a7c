package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// downloadAttempts bounds how often a broken download is resumed (Range from the byte reached)
// before the error is returned.
const downloadAttempts = 5

// DownloadImage writes the raw image of a disk of a backup into dst at its offsets, 1 MiB at a
// time, and returns its size. The hub verifies every chunk as it serves it and breaks the
// transfer on damage, so a short body is never taken for the image: a transfer broken part-way
// is resumed with a Range request from the byte reached, pinned with If-Range to the same image
// (ETag), up to 5 times. progress, if not nil, is called with the bytes written so far.
func (c *Client) DownloadImage(ctx context.Context, backupID, diskID string, dst io.WriterAt, progress func(int64)) (int64, error) {
	path := pathImage(backupID, diskID)
	var done, size int64 = 0, -1
	var etag string
	var lastErr error
	for attempt := 0; attempt < downloadAttempts; attempt++ {
		n, sz, tag, err := c.downloadFrom(ctx, path, done, etag, dst, progress)
		done += n
		if size < 0 {
			size, etag = sz, tag
		}
		if err == nil {
			if done != size {
				return done, fmt.Errorf("download %s of %s: got %d of %d bytes", diskID, backupID, done, size)
			}
			return size, nil
		}
		var apiErr *Error
		if errors.As(err, &apiErr) || ctx.Err() != nil || size < 0 {
			return done, err // refused, cancelled, or broken before the first byte's headers
		}
		lastErr = err
	}
	return done, fmt.Errorf("download %s of %s: broken %d times, last: %w", diskID, backupID, downloadAttempts, lastErr)
}

// downloadFrom reads the image from offset on (Range when offset > 0) and returns the bytes
// written, the image's full size and ETag.
func (c *Client) downloadFrom(ctx context.Context, path string, offset int64, etag string, dst io.WriterAt, progress func(int64)) (int64, int64, string, error) {
	req, err := c.newRequest(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return 0, -1, "", err
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
		return 0, -1, "", err
	}
	defer resp.Body.Close()
	size := resp.ContentLength
	switch {
	case offset > 0 && resp.StatusCode == http.StatusPartialContent:
		size, err = rangeTotal(resp.Header.Get("Content-Range"), offset)
		if err != nil {
			return 0, -1, "", fmt.Errorf("GET %s: %w", path, err)
		}
	case offset > 0:
		return 0, -1, "", fmt.Errorf("GET %s: the image changed while it was downloaded (answer %d to a resume)", path, resp.StatusCode)
	case size < 0:
		return 0, -1, "", fmt.Errorf("GET %s: no Content-Length", path)
	}
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, rerr := io.ReadFull(resp.Body, buf)
		if k > 0 {
			if _, err := dst.WriteAt(buf[:k], offset+n); err != nil {
				return n, size, resp.Header.Get("ETag"), fmt.Errorf("write at %d: %w", offset+n, err)
			}
			n += int64(k)
			if progress != nil {
				progress(offset + n)
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			if offset+n < size {
				return n, size, resp.Header.Get("ETag"), fmt.Errorf("GET %s: transfer broken at byte %d of %d", path, offset+n, size)
			}
			return n, size, resp.Header.Get("ETag"), nil
		}
		if rerr != nil {
			return n, size, resp.Header.Get("ETag"), fmt.Errorf("GET %s: at byte %d: %w", path, offset+n, rerr)
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
