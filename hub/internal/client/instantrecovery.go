package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/sendense/sendense/shared/api"
)

// StartInstantRecovery starts a session: the hub exports the backup over NFS and the agent
// registers the VM on the host.
func (c *Client) StartInstantRecovery(ctx context.Context, req api.InstantRecoveryRequest) (api.InstantRecovery, error) {
	var r api.InstantRecovery
	return r, c.do(ctx, http.MethodPost, api.PathInstantRecoveries, nil, req, &r)
}

// InstantRecoveries lists sessions by status (empty: any), newest first; limit 0 lists all.
func (c *Client) InstantRecoveries(ctx context.Context, status string, limit int) (api.InstantRecoveryList, error) {
	q := url.Values{}
	setIf(q, "status", status)
	rs, total, err := pages(ctx, c, api.PathInstantRecoveries, q, limit,
		func(l *api.InstantRecoveryList) []api.InstantRecovery { return l.InstantRecoveries },
		func(l *api.InstantRecoveryList) api.Page { return l.Page })
	return api.InstantRecoveryList{InstantRecoveries: rs, Page: api.Page{Limit: limit, Total: total}}, err
}

// InstantRecovery shows one session.
func (c *Client) InstantRecovery(ctx context.Context, id string) (api.InstantRecovery, error) {
	var r api.InstantRecovery
	return r, c.get(ctx, api.Path(api.PathInstantRecovery, id), nil, &r)
}

// StopInstantRecovery asks for a session to be stopped and its overlay dropped.
func (c *Client) StopInstantRecovery(ctx context.Context, id string) (api.InstantRecovery, error) {
	var r api.InstantRecovery
	return r, c.do(ctx, http.MethodDelete, api.Path(api.PathInstantRecovery, id), nil, nil, &r)
}

// MigrateInstantRecovery asks for a running session's VM to be moved to a datastore.
func (c *Client) MigrateInstantRecovery(ctx context.Context, id string, req api.InstantRecoveryMigrateRequest) (api.InstantRecovery, error) {
	var r api.InstantRecovery
	return r, c.do(ctx, http.MethodPost, api.Path(api.PathInstantRecoveryMigrate, id), nil, req, &r)
}
