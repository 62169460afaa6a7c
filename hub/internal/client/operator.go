package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sendense/sendense/shared/api"
)

// maxPage is the largest page the API serves (limit=1000).
const maxPage = 1000

// pages fetches a paginated list: want items (0: all), in pages of at most maxPage. It returns
// the items and the total the last page reported.
func pages[L any, T any](ctx context.Context, c *Client, path string, q url.Values, want int, items func(*L) []T, page func(*L) api.Page) ([]T, int, error) {
	if q == nil {
		q = url.Values{}
	}
	out := []T{}
	total := 0
	for offset := 0; ; {
		limit := maxPage
		if want > 0 && want-len(out) < limit {
			limit = want - len(out)
		}
		q.Set("limit", strconv.Itoa(limit))
		q.Set("offset", strconv.Itoa(offset))
		var l L
		if err := c.get(ctx, path, q, &l); err != nil {
			return nil, 0, err
		}
		got := items(&l)
		out = append(out, got...)
		total = page(&l).Total
		offset += len(got)
		if len(got) == 0 || offset >= total || (want > 0 && len(out) >= want) {
			return out, total, nil
		}
	}
}

func setIf(q url.Values, key, v string) {
	if v != "" {
		q.Set(key, v)
	}
}

// VMs lists VMs by exact name, status and agent (empty: any); limit 0 lists all.
func (c *Client) VMs(ctx context.Context, name, status, agentID string, limit int) (api.VMList, error) {
	q := url.Values{}
	setIf(q, "name", name)
	setIf(q, "status", status)
	setIf(q, "agent", agentID)
	vms, total, err := pages(ctx, c, api.PathVMs, q, limit,
		func(l *api.VMList) []api.VMContext { return l.VMs }, func(l *api.VMList) api.Page { return l.Page })
	return api.VMList{VMs: vms, Page: api.Page{Limit: limit, Total: total}}, err
}

// VM shows one VM (name or context id) with its disks.
func (c *Client) VM(ctx context.Context, id string) (api.VMContext, error) {
	var vm api.VMContext
	return vm, c.get(ctx, api.Path(api.PathVM, id), nil, &vm)
}

// StartBackup queues a backup.
func (c *Client) StartBackup(ctx context.Context, req api.StartBackupRequest) (api.Backup, error) {
	var b api.Backup
	return b, c.do(ctx, http.MethodPost, api.PathBackups, nil, req, &b)
}

// Backups lists backups of a VM (name or context id) and status (empty: any), newest first;
// limit 0 lists all.
func (c *Client) Backups(ctx context.Context, vm, status string, limit int) (api.BackupList, error) {
	q := url.Values{}
	setIf(q, "vm", vm)
	setIf(q, "status", status)
	bs, total, err := pages(ctx, c, api.PathBackups, q, limit,
		func(l *api.BackupList) []api.Backup { return l.Backups }, func(l *api.BackupList) api.Page { return l.Page })
	return api.BackupList{Backups: bs, Page: api.Page{Limit: limit, Total: total}}, err
}

// Backup shows one backup with its disks.
func (c *Client) Backup(ctx context.Context, id string) (api.Backup, error) {
	var b api.Backup
	return b, c.get(ctx, api.Path(api.PathBackup, id), nil, &b)
}

// DeleteBackup deletes a finished, unprotected backup.
func (c *Client) DeleteBackup(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, api.Path(api.PathBackup, id), nil, nil, nil)
}

// CancelBackup asks for a queued or running backup to be cancelled.
func (c *Client) CancelBackup(ctx context.Context, id string) (api.Backup, error) {
	var b api.Backup
	return b, c.do(ctx, http.MethodPost, api.Path(api.PathBackupCancel, id), nil, nil, &b)
}

// SetProtected protects a backup or lifts its protection.
func (c *Client) SetProtected(ctx context.Context, id string, on bool) (api.Backup, error) {
	route := api.PathBackupUnprot
	if on {
		route = api.PathBackupProtect
	}
	var b api.Backup
	return b, c.do(ctx, http.MethodPost, api.Path(route, id), nil, nil, &b)
}

// HoldBackup holds a restore point against deletion, pruning and moves while the caller reads
// it in several requests; the caller renews the hold (RenewHold) before it expires and ends it
// (EndHold) when done.
func (c *Client) HoldBackup(ctx context.Context, backupID string) (api.BackupHold, error) {
	var h api.BackupHold
	return h, c.do(ctx, http.MethodPost, api.Path(api.PathBackupHolds, backupID), nil, nil, &h)
}

// RenewHold extends a hold; one that expired or ended → an error with status 404.
func (c *Client) RenewHold(ctx context.Context, backupID, id string) (api.BackupHold, error) {
	var h api.BackupHold
	return h, c.do(ctx, http.MethodPut, api.Path(api.PathBackupHold, backupID, id), nil, nil, &h)
}

// EndHold ends a hold.
func (c *Client) EndHold(ctx context.Context, backupID, id string) error {
	return c.do(ctx, http.MethodDelete, api.Path(api.PathBackupHold, backupID, id), nil, nil, nil)
}

// Events lists events, newest first; limit 0 lists all.
func (c *Client) Events(ctx context.Context, vm, typ string, since time.Time, limit int) (api.EventList, error) {
	q := url.Values{}
	setIf(q, "vm", vm)
	setIf(q, "type", typ)
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	es, total, err := pages(ctx, c, api.PathEvents, q, limit,
		func(l *api.EventList) []api.Event { return l.Events }, func(l *api.EventList) api.Page { return l.Page })
	return api.EventList{Events: es, Page: api.Page{Limit: limit, Total: total}}, err
}

// Agents lists enrolled agents.
func (c *Client) Agents(ctx context.Context) ([]api.Agent, error) {
	var l api.AgentList
	return l.Agents, c.get(ctx, api.PathAgents, nil, &l)
}

// Agent shows one agent.
func (c *Client) Agent(ctx context.Context, id string) (api.Agent, error) {
	var a api.Agent
	return a, c.get(ctx, api.Path(api.PathAgent, id), nil, &a)
}

// RevokeAgent revokes an agent.
func (c *Client) RevokeAgent(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, api.Path(api.PathAgentRevoke, id), nil, nil, nil)
}

// CreateJoinToken creates a single-use join token and returns its string once.
func (c *Client) CreateJoinToken(ctx context.Context, name string, ttl time.Duration) (string, api.JoinTokenInfo, error) {
	var r api.CreateJoinTokenResponse
	err := c.do(ctx, http.MethodPost, api.PathJoinTokens, nil, api.CreateJoinTokenRequest{Name: name, TTL: ttl.String()}, &r)
	return r.Token, r.Info, err
}

// JoinTokens lists join tokens (never their secrets).
func (c *Client) JoinTokens(ctx context.Context) ([]api.JoinTokenInfo, error) {
	var l api.JoinTokenList
	return l.Tokens, c.get(ctx, api.PathJoinTokens, nil, &l)
}

// RevokeJoinToken revokes an unused join token.
func (c *Client) RevokeJoinToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, api.Path(api.PathJoinToken, id), nil, nil, nil)
}

// CreateAPIToken creates an operator API token and returns it once.
func (c *Client) CreateAPIToken(ctx context.Context, name, role string) (string, api.APITokenInfo, error) {
	var r api.CreateAPITokenResponse
	err := c.do(ctx, http.MethodPost, api.PathAPITokens, nil, api.CreateAPITokenRequest{Name: name, Role: role}, &r)
	return r.Token, r.Info, err
}

// APITokens lists API tokens (never their secrets).
func (c *Client) APITokens(ctx context.Context) ([]api.APITokenInfo, error) {
	var l api.APITokenList
	return l.APITokens, c.get(ctx, api.PathAPITokens, nil, &l)
}

// RevokeAPIToken revokes an API token.
func (c *Client) RevokeAPIToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, api.Path(api.PathAPIToken, id), nil, nil, nil)
}

// Policies lists policies.
func (c *Client) Policies(ctx context.Context) ([]api.Policy, error) {
	var l api.PolicyList
	return l.Policies, c.get(ctx, api.PathPolicies, nil, &l)
}

// Policy shows one policy (name or id).
func (c *Client) Policy(ctx context.Context, name string) (api.Policy, error) {
	var p api.Policy
	return p, c.get(ctx, api.Path(api.PathPolicy, name), nil, &p)
}

// CreatePolicy creates a policy.
func (c *Client) CreatePolicy(ctx context.Context, p api.Policy) (api.Policy, error) {
	var out api.Policy
	return out, c.do(ctx, http.MethodPost, api.PathPolicies, nil, p, &out)
}

// DeletePolicy removes a policy (name or id).
func (c *Client) DeletePolicy(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, api.Path(api.PathPolicy, name), nil, nil, nil)
}

// Repositories lists repositories (admin).
func (c *Client) Repositories(ctx context.Context) ([]api.Repository, error) {
	var l api.RepositoryList
	return l.Repositories, c.get(ctx, api.PathRepositories, nil, &l)
}

func pathImage(backupID, diskID string) string {
	return api.Path(api.PathBackupImage, backupID, diskID)
}

// StartRestore queues a restore as a new VM or in place.
func (c *Client) StartRestore(ctx context.Context, req api.RestoreRequest) (api.Restore, error) {
	var r api.Restore
	return r, c.do(ctx, http.MethodPost, api.PathRestores, nil, req, &r)
}

// Restores lists restores by status and backup (empty: any), newest first; limit 0 lists all.
func (c *Client) Restores(ctx context.Context, status, backupID string, limit int) (api.RestoreList, error) {
	q := url.Values{}
	setIf(q, "status", status)
	setIf(q, "backup", backupID)
	rs, total, err := pages(ctx, c, api.PathRestores, q, limit,
		func(l *api.RestoreList) []api.Restore { return l.Restores }, func(l *api.RestoreList) api.Page { return l.Page })
	return api.RestoreList{Restores: rs, Page: api.Page{Limit: limit, Total: total}}, err
}

// Restore shows one restore with its progress.
func (c *Client) Restore(ctx context.Context, id string) (api.Restore, error) {
	var r api.Restore
	return r, c.get(ctx, api.Path(api.PathRestore, id), nil, &r)
}

// CancelRestore cancels a queued restore or asks the agent to stop a running one.
func (c *Client) CancelRestore(ctx context.Context, id string) (api.Restore, error) {
	var r api.Restore
	return r, c.do(ctx, http.MethodPost, api.Path(api.PathRestoreCancel, id), nil, nil, &r)
}

// RunRestoreTest starts a restore test, which the hub runs in the background, and follows it
// until it has passed or failed (or ctx ends), as `restore-test run` on the hub host does.
func (c *Client) RunRestoreTest(ctx context.Context, req api.StartRestoreTestRequest) (api.RestoreTest, error) {
	var t api.RestoreTest
	if err := c.do(ctx, http.MethodPost, api.PathRestoreTests, nil, req, &t); err != nil {
		return t, err
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for t.Status == api.RestoreTestQueued || t.Status == api.RestoreTestRunning {
		select {
		case <-ctx.Done():
			return t, fmt.Errorf("restore test %s is still %s: %w", t.ID, t.Status, ctx.Err())
		case <-tick.C:
		}
		if err := c.get(ctx, api.Path(api.PathRestoreTest, t.ID), nil, &t); err != nil {
			return t, err
		}
	}
	return t, nil
}

// RestoreTests lists restore tests, newest first; limit 0 lists all.
func (c *Client) RestoreTests(ctx context.Context, vm, result string, since time.Time, limit int) (api.RestoreTestList, error) {
	q := url.Values{}
	setIf(q, "vm", vm)
	setIf(q, "result", result)
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	ts, total, err := pages(ctx, c, api.PathRestoreTests, q, limit,
		func(l *api.RestoreTestList) []api.RestoreTest { return l.RestoreTests }, func(l *api.RestoreTestList) api.Page { return l.Page })
	return api.RestoreTestList{RestoreTests: ts, Page: api.Page{Limit: limit, Total: total}}, err
}

// RestoreTest shows one restore test with its evidence.
func (c *Client) RestoreTest(ctx context.Context, id string) (api.RestoreTest, error) {
	var t api.RestoreTest
	return t, c.get(ctx, api.Path(api.PathRestoreTest, id), nil, &t)
}

// RestoreTestReport reports the restore tests of [from, to] by VM.
func (c *Client) RestoreTestReport(ctx context.Context, from, to time.Time) (api.RestoreTestReport, error) {
	q := url.Values{"from": {from.UTC().Format(time.RFC3339Nano)}, "to": {to.UTC().Format(time.RFC3339Nano)}}
	var r api.RestoreTestReport
	return r, c.get(ctx, api.PathReportRestoreTests, q, &r)
}

// Files lists a directory (path, e.g. /p1/etc) of a disk of a backup.
func (c *Client) Files(ctx context.Context, backupID, diskID, p string) (api.FileList, error) {
	var l api.FileList
	return l, c.get(ctx, api.Path(api.PathBackupFiles, backupID, diskID), url.Values{"path": {p}}, &l)
}

// Sources lists the vCenters and ESXi hosts agents report on.
func (c *Client) Sources(ctx context.Context) ([]api.SourceInfo, error) {
	var l api.SourceList
	return l.Sources, c.get(ctx, api.PathSources, nil, &l)
}

// MoveSource gives a source (id, instance uuid or name) and its VMs to another agent.
func (c *Client) MoveSource(ctx context.Context, source, agentID string) (api.SourceInfo, error) {
	var s api.SourceInfo
	return s, c.do(ctx, http.MethodPost, api.Path(api.PathSourceMove, source), nil, api.MoveSourceRequest{AgentID: agentID}, &s)
}

// Prune applies the policies' retention now (or, dry run, only reports what it would do).
func (c *Client) Prune(ctx context.Context, req api.PruneRequest) (api.PruneResult, error) {
	var r api.PruneResult
	return r, c.do(ctx, http.MethodPost, api.PathPrune, nil, req, &r)
}

// CreateRepository creates a repository (or adopts the one there) in a directory of the hub or
// an S3 bucket.
func (c *Client) CreateRepository(ctx context.Context, req api.CreateRepositoryRequest) (api.Repository, error) {
	var r api.Repository
	return r, c.do(ctx, http.MethodPost, api.PathRepositories, nil, req, &r)
}

// Verify has the hub re-read and re-hash the chunks of every succeeded backup (or of
// backupID) and answers its report when done, with no answer timeout.
func (c *Client) Verify(ctx context.Context, backupID string) (api.VerifyReport, error) {
	var r api.VerifyReport
	return r, c.doLong(ctx, http.MethodPost, api.PathRepositoryVerify, nil, api.VerifyRequest{BackupID: backupID}, &r)
}
