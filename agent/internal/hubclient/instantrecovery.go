package hubclient

import (
	"context"
	"net/http"
	"time"

	"github.com/sendense/sendense/shared/api"
)

// NextInstantRecovery long-polls the hub for the next action (start or stop) of an
// instant-recovery session of this agent for up to wait. It returns nil when none came.
func (c *Client) NextInstantRecovery(ctx context.Context, wait time.Duration, busy []string) (*api.InstantRecoveryJob, error) {
	return longPoll[api.InstantRecoveryJob](ctx, c, api.PathAgentInstantRecoveries, wait, busy)
}

// CompleteInstantRecovery reports the outcome of an action.
func (c *Client) CompleteInstantRecovery(ctx context.Context, id string, rep api.InstantRecoveryReport) error {
	return c.Do(ctx, http.MethodPost, api.Path(api.PathAgentInstantRecoveryDone, id), rep, nil)
}

// InstantRecoveryState asks for a session's state: CancelRequested says its stop is pending.
func (c *Client) InstantRecoveryState(ctx context.Context, id string) (api.JobState, error) {
	var st api.JobState
	err := c.Do(ctx, http.MethodGet, api.Path(api.PathAgentInstantRecovery, id), nil, &st)
	return st, err
}
