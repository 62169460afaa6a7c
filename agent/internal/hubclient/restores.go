package hubclient

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/sendense/sendense/shared/api"
)

// NextRestore long-polls the hub for a restore job for up to wait. busy lists the restores this
// agent is running now, so that the hub hands back only running restores the agent lost (after a
// restart: those come back with Resumed set and the VMRef recorded). It returns nil when no
// restore came.
func (c *Client) NextRestore(ctx context.Context, wait time.Duration, busy []string) (*api.RestoreJob, error) {
	return longPoll[api.RestoreJob](ctx, c, api.PathAgentRestores, wait, busy)
}

// RestoreState asks whether a restore is still running and whether its cancellation was
// requested.
func (c *Client) RestoreState(ctx context.Context, id string) (api.JobState, error) {
	var st api.JobState
	err := c.Do(ctx, http.MethodGet, api.Path(api.PathAgentRestore, id), nil, &st)
	return st, err
}

// RestoreProgress reports a restore's phase, VM and bytes (its heartbeat) and returns whether
// to cancel.
func (c *Client) RestoreProgress(ctx context.Context, id string, p api.RestoreProgress) (api.JobState, error) {
	var st api.JobState
	err := c.Do(ctx, http.MethodPost, api.Path(api.PathAgentRestoreProg, id), p, &st)
	return st, err
}

// CompleteRestore reports the end of a restore.
func (c *Client) CompleteRestore(ctx context.Context, id string, done api.RestoreCompletion) error {
	return c.Do(ctx, http.MethodPost, api.Path(api.PathAgentRestoreDone, id), done, nil)
}

// OpenRestoreImage streams one disk image of a running restore's backup from offset to its end.
// It returns the body and the number of bytes it will carry. The hub verifies every chunk
// before sending it and closes the connection on a failed one, so a body that ends before that
// many bytes is an error (io.ErrUnexpectedEOF from the reader), never a short image. The
// request is bounded by ctx only: an image of hundreds of GiB takes as long as it takes.
func (c *Client) OpenRestoreImage(ctx context.Context, id, diskID string, offset int64) (io.ReadCloser, int64, error) {
	path := api.Path(api.PathAgentRestoreImage, id, diskID)
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, c.base().JoinPath(path).String(), nil)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", path, err)
	}
	want := http.StatusOK
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		want = http.StatusPartialContent
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != want {
		defer resp.Body.Close()
		if err := decodeResponse(resp, http.MethodGet, path, nil); err != nil {
			return nil, 0, err
		}
		return nil, 0, fmt.Errorf("GET %s: hub answered %d, want %d", path, resp.StatusCode, want)
	}
	if resp.ContentLength < 0 {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("GET %s: the hub sent no Content-Length", path)
	}
	return resp.Body, resp.ContentLength, nil
}
