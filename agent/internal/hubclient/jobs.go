package hubclient

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/sendense/sendense/shared/api"
)

// NextJob long-polls the hub for a job for up to wait. busy lists the jobs this agent is running
// now, so that the hub hands back only running jobs the agent lost (after a restart). It returns
// nil when no job came.
func (c *Client) NextJob(ctx context.Context, wait time.Duration, busy []string) (*api.Job, error) {
	return longPoll[api.Job](ctx, c, api.PathAgentJobs, wait, busy)
}

// longPoll asks route for work for up to wait, naming the work the agent is busy with; nil when
// none came (204).
func longPoll[T any](ctx context.Context, c *Client, route string, wait time.Duration, busy []string) (*T, error) {
	q := url.Values{}
	q.Set("wait", wait.String())
	if len(busy) > 0 {
		q.Set("running", strings.Join(busy, ","))
	}
	ctx, cancel := context.WithTimeout(ctx, wait+30*time.Second)
	defer cancel()
	var out T
	status, err := c.do(ctx, http.MethodGet, route+"?"+q.Encode(), nil, "", &out)
	if err != nil || status == http.StatusNoContent {
		return nil, err
	}
	return &out, nil
}

// JobState asks whether a job is still running and whether its cancellation was requested.
func (c *Client) JobState(ctx context.Context, jobID string) (api.JobState, error) {
	var st api.JobState
	err := c.Do(ctx, http.MethodGet, api.Path(api.PathAgentJob, jobID), nil, &st)
	return st, err
}

// Progress reports a job's progress (its heartbeat) and returns whether to cancel.
func (c *Client) Progress(ctx context.Context, jobID string, p api.JobProgress) (api.JobState, error) {
	var st api.JobState
	err := c.Do(ctx, http.MethodPost, api.Path(api.PathAgentJobProg, jobID), p, &st)
	return st, err
}

// Complete reports the end of a job.
func (c *Client) Complete(ctx context.Context, jobID string, done api.JobCompletion) error {
	return c.Do(ctx, http.MethodPost, api.Path(api.PathAgentJobDone, jobID), done, nil)
}

// ReportDisks sends the job's VM's disks as its snapshot shows them and returns the job with
// the disks to back up.
func (c *Client) ReportDisks(ctx context.Context, jobID string, r api.JobDisksReport) (*api.Job, error) {
	var j api.Job
	if err := c.Do(ctx, http.MethodPut, api.Path(api.PathAgentJobDisks, jobID), r, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// PutVMConfig sends the job's VM configuration as its snapshot recorded it; the hub stores it
// with the backup. Sending the same configuration again is harmless.
func (c *Client) PutVMConfig(ctx context.Context, jobID string, cfg api.VMConfig) error {
	return c.Do(ctx, http.MethodPut, api.Path(api.PathAgentJobVM, jobID), cfg, nil)
}

// OpenSession opens (or reopens) the upload session of one disk of a job.
func (c *Client) OpenSession(ctx context.Context, jobID, diskID string, req api.OpenSessionRequest) (api.Session, error) {
	var s api.Session
	err := c.Do(ctx, http.MethodPost, api.Path(api.PathAgentOpenSess, jobID, diskID), req, &s)
	return s, err
}

// RecordSlots records slot digests and returns the digests the hub lacks.
func (c *Client) RecordSlots(ctx context.Context, sessionID string, batch api.SlotBatch) (api.SlotBatchResult, error) {
	var res api.SlotBatchResult
	err := c.Do(ctx, http.MethodPost, api.Path(api.PathAgentSlots, sessionID), batch, &res)
	return res, err
}

// PutChunk uploads one chunk blob of size bytes (idempotent: the name is the content's digest)
// and records the slots of the session that hold it; stored is false when the hub already held
// the chunk. With digest "" the hub names the chunk by the digest of its plaintext. body gives a
// reader of the blob before each attempt (and once more to learn its length): a retry reads the
// blob again from a fresh reader.
func (c *Client) PutChunk(ctx context.Context, sessionID, digest string, slots []int64, size int64, body func() (io.Reader, error)) (stored bool, err error) {
	method, path := http.MethodPut, api.Path(api.PathAgentChunk, sessionID, digest)
	if digest == "" {
		method, path = http.MethodPost, api.Path(api.PathAgentChunks, sessionID)
	}
	if len(slots) > 0 {
		list := make([]string, len(slots))
		for i, s := range slots {
			list[i] = strconv.FormatInt(s, 10)
		}
		path += "?slots=" + strings.Join(list, ",")
	}
	// 201 both ways when the chunk was new; the name the hub gives is not needed here.
	status, err := c.send(ctx, method, path, retryablehttp.ReaderFunc(body), size, "application/octet-stream", nil)
	return status == http.StatusCreated, err
}

// Check compares slot digests with the parent index of the session and returns the slots that
// differ (CBT drift).
func (c *Client) Check(ctx context.Context, sessionID string, req api.CheckRequest) (api.CheckResult, error) {
	var res api.CheckResult
	err := c.Do(ctx, http.MethodPost, api.Path(api.PathAgentCheckSess, sessionID), req, &res)
	return res, err
}

// Commit closes a disk's session; the hub writes its index.
func (c *Client) Commit(ctx context.Context, sessionID string, req api.CommitRequest) (api.BackupDisk, error) {
	var bd api.BackupDisk
	err := c.Do(ctx, http.MethodPost, api.Path(api.PathAgentCommitSess, sessionID), req, &bd)
	return bd, err
}

// do sends a raw body (or none) and decodes a JSON answer; it returns the HTTP status.
func (c *Client) do(ctx context.Context, method, path string, body []byte, contentType string, out any) (int, error) {
	var rd any
	if body != nil {
		rd = bytes.NewReader(body)
	}
	return c.send(ctx, method, path, rd, int64(len(body)), contentType, out)
}

// send is do with the body as retryablehttp takes it (nil: none) and its length.
func (c *Client) send(ctx context.Context, method, path string, rd any, size int64, contentType string, out any) (int, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	u := c.base().JoinPath(strings.SplitN(path, "?", 2)[0])
	if i := strings.IndexByte(path, '?'); i >= 0 {
		u.RawQuery = path[i+1:]
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if rd != nil {
		req.ContentLength = size
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, decodeResponse(resp, method, strings.SplitN(path, "?", 2)[0], out)
}
