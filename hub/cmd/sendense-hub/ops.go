package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/client"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/hub/internal/events"
	"github.com/sendense/sendense/hub/internal/identity"
	"github.com/sendense/sendense/hub/internal/inventory"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/hub/internal/restoretest"
	"github.com/sendense/sendense/shared/api"
)

// The operator commands get their data through small interfaces (declared beside each
// command) with two implementations: localOps, the hub's own services over the catalog, and
// *client.Client, the API. Both answer with the API's wire types, so that one formatting code
// prints the same tables and JSON either way.
var (
	_ vmOps            = (*localOps)(nil)
	_ vmOps            = (*client.Client)(nil)
	_ backupOps        = (*localOps)(nil)
	_ backupOps        = (*client.Client)(nil)
	_ eventOps         = (*localOps)(nil)
	_ eventOps         = (*client.Client)(nil)
	_ agentOps         = (*localOps)(nil)
	_ agentOps         = (*client.Client)(nil)
	_ joinTokenOps     = (*localOps)(nil)
	_ joinTokenOps     = (*client.Client)(nil)
	_ apiTokenOps      = (*localOps)(nil)
	_ apiTokenOps      = (*client.Client)(nil)
	_ policyOps        = (*localOps)(nil)
	_ policyOps        = (*client.Client)(nil)
	_ restoreOps       = (*localOps)(nil)
	_ restoreOps       = (*client.Client)(nil)
	_ restoreTestOps   = (*localOps)(nil)
	_ restoreTestOps   = (*client.Client)(nil)
	_ repositoryLister = (*localOps)(nil)
	_ repositoryLister = (*client.Client)(nil)
	_ sourceOps        = (*localOps)(nil)
	_ sourceOps        = (*client.Client)(nil)
	_ pruner           = (*localOps)(nil)
	_ pruner           = (*client.Client)(nil)
)

// opsCmd adapts a command body to run against the hub named by --hub (and the rest of the
// client options) or, without one, against the local catalog.
func opsCmd[T any](e *env, fn func(cmd *cobra.Command, args []string, o T) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cl, err := remoteClient(cmd, e)
		if err != nil {
			return err
		}
		if cl != nil {
			o, ok := any(cl).(T)
			if !ok {
				return fmt.Errorf("%q has no remote implementation", commandPath(cmd))
			}
			return fn(cmd, args, o)
		}
		return catalogCmd(e, func(cmd *cobra.Command, cfg *config.Config, cat *catalog.Catalog) error {
			l := &localOps{cfg: cfg, cat: cat, log: cfg.NewLogger(e.stderr)}
			defer l.close()
			o, ok := any(l).(T)
			if !ok {
				return fmt.Errorf("%q has no local implementation", commandPath(cmd))
			}
			return fn(cmd, args, o)
		})(cmd, args)
	}
}

// localOps runs operator requests through the hub's services on the local catalog, as the API's
// handlers do.
type localOps struct {
	cfg   *config.Config
	cat   *catalog.Catalog
	log   *slog.Logger
	repos *repository.Registry
	id    *identity.Service
}

func (l *localOps) close() {
	if l.repos != nil {
		l.repos.Close()
	}
}

func (l *localOps) inventory() *inventory.Service { return inventory.New(l.cat, l.log, nil) }

func (l *localOps) jobs() *jobs.Service {
	if l.repos == nil {
		l.repos = repository.NewRegistry(l.cat, l.log, nil)
	}
	return jobs.New(l.cat, l.repos, l.log, nil, jobs.Options{})
}

func (l *localOps) identity(ctx context.Context) (*identity.Service, error) {
	if l.id == nil {
		id, err := newIdentity(ctx, l.cfg, l.cat, l.log)
		if err != nil {
			return nil, err
		}
		l.id = id
	}
	return l.id, nil
}

func (l *localOps) VMs(ctx context.Context, name, status, agentID string, limit int) (api.VMList, error) {
	return l.inventory().List(ctx, inventory.Filter{Name: name, Status: status, AgentID: agentID, Limit: limit})
}

func (l *localOps) VM(ctx context.Context, id string) (api.VMContext, error) {
	return l.inventory().Show(ctx, id)
}

func (l *localOps) StartBackup(ctx context.Context, req api.StartBackupRequest) (api.Backup, error) {
	return l.jobs().Start(ctx, req)
}

func (l *localOps) Backups(ctx context.Context, vm, status string, limit int) (api.BackupList, error) {
	return l.jobs().List(ctx, jobs.ListFilter{VM: vm, Status: status, Limit: limit})
}

func (l *localOps) Backup(ctx context.Context, id string) (api.Backup, error) {
	return l.jobs().Get(ctx, id)
}

func (l *localOps) DeleteBackup(ctx context.Context, id string) error {
	return l.jobs().Delete(ctx, id)
}

func (l *localOps) CancelBackup(ctx context.Context, id string) (api.Backup, error) {
	return l.jobs().Cancel(ctx, id)
}

func (l *localOps) SetProtected(ctx context.Context, id string, on bool) (api.Backup, error) {
	return l.jobs().SetProtected(ctx, id, on)
}

func (l *localOps) Events(ctx context.Context, vm, typ string, since time.Time, limit int) (api.EventList, error) {
	return events.New(l.cat, l.log).List(ctx, events.Filter{VM: vm, Type: typ, Since: since, Limit: limit})
}

func (l *localOps) Agents(ctx context.Context) ([]api.Agent, error) {
	id, err := l.identity(ctx)
	if err != nil {
		return nil, err
	}
	return id.Agents(ctx)
}

func (l *localOps) Agent(ctx context.Context, agentID string) (api.Agent, error) {
	id, err := l.identity(ctx)
	if err != nil {
		return api.Agent{}, err
	}
	return id.Agent(ctx, agentID)
}

func (l *localOps) RevokeAgent(ctx context.Context, agentID string) error {
	id, err := l.identity(ctx)
	if err != nil {
		return err
	}
	return id.RevokeAgent(ctx, agentID)
}

func (l *localOps) CreateJoinToken(ctx context.Context, name string, ttl time.Duration) (string, api.JoinTokenInfo, error) {
	id, err := l.identity(ctx)
	if err != nil {
		return "", api.JoinTokenInfo{}, err
	}
	return id.CreateJoinToken(ctx, name, ttl)
}

func (l *localOps) JoinTokens(ctx context.Context) ([]api.JoinTokenInfo, error) {
	id, err := l.identity(ctx)
	if err != nil {
		return nil, err
	}
	return id.JoinTokens(ctx)
}

func (l *localOps) RevokeJoinToken(ctx context.Context, tokenID string) error {
	id, err := l.identity(ctx)
	if err != nil {
		return err
	}
	return id.RevokeJoinToken(ctx, tokenID)
}

func (l *localOps) CreateAPIToken(ctx context.Context, name, role string) (string, api.APITokenInfo, error) {
	id, err := l.identity(ctx)
	if err != nil {
		return "", api.APITokenInfo{}, err
	}
	return id.CreateAPIToken(ctx, name, role)
}

func (l *localOps) APITokens(ctx context.Context) ([]api.APITokenInfo, error) {
	id, err := l.identity(ctx)
	if err != nil {
		return nil, err
	}
	return id.APITokens(ctx)
}

func (l *localOps) RevokeAPIToken(ctx context.Context, tokenID string) error {
	id, err := l.identity(ctx)
	if err != nil {
		return err
	}
	return id.RevokeAPIToken(ctx, tokenID)
}

func (l *localOps) policies() *policy.Service {
	return policy.New(l.cat, l.jobs(), nil, l.log, nil, nil)
}

func (l *localOps) Policies(ctx context.Context) ([]api.Policy, error) {
	return l.policies().List(ctx)
}

func (l *localOps) Policy(ctx context.Context, name string) (api.Policy, error) {
	return l.policies().Get(ctx, name)
}

func (l *localOps) CreatePolicy(ctx context.Context, p api.Policy) (api.Policy, error) {
	return l.policies().Create(ctx, p)
}

func (l *localOps) DeletePolicy(ctx context.Context, name string) error {
	return l.policies().Delete(ctx, name)
}

func (l *localOps) StartRestore(ctx context.Context, req api.RestoreRequest) (api.Restore, error) {
	return l.jobs().StartRestore(ctx, req)
}

func (l *localOps) Restores(ctx context.Context, status, backupID string, limit int) (api.RestoreList, error) {
	return l.jobs().ListRestores(ctx, jobs.RestoreListFilter{Status: status, BackupID: backupID, Limit: limit})
}

func (l *localOps) Restore(ctx context.Context, id string) (api.Restore, error) {
	return l.jobs().GetRestore(ctx, id)
}

func (l *localOps) CancelRestore(ctx context.Context, id string) (api.Restore, error) {
	return l.jobs().CancelRestore(ctx, id)
}

func (l *localOps) restoreTests() *restoretest.Service {
	if l.repos == nil {
		l.repos = repository.NewRegistry(l.cat, l.log, nil)
	}
	return restoretest.New(l.cat, restore.New(l.cat, restoreRepos(l.repos), nil), l.log, nil, restoretest.Options{})
}

// RunRestoreTest runs the test in this process, at once. Its boot check starts the instant
// recovery through this hub's configuration: the running hub serves it, the agent boots it.
func (l *localOps) RunRestoreTest(ctx context.Context, req api.StartRestoreTestRequest) (api.RestoreTest, error) {
	s := l.restoreTests()
	if l.cfg.NFSListen != "" {
		ir, closeIR, err := localIRService(l.cfg, l.cat, l.repos, l.log)
		if err != nil {
			return api.RestoreTest{}, err
		}
		defer closeIR()
		s.EnableBoot(ir, l.jobs())
	}
	return s.RunNow(ctx, req, restoretest.ActorCLI)
}

func (l *localOps) RestoreTests(ctx context.Context, vm, result string, since time.Time, limit int) (api.RestoreTestList, error) {
	return l.restoreTests().List(ctx, restoretest.Filter{VM: vm, Result: result, Since: since, Limit: limit})
}

func (l *localOps) RestoreTest(ctx context.Context, id string) (api.RestoreTest, error) {
	return l.restoreTests().Get(ctx, id)
}

func (l *localOps) RestoreTestReport(ctx context.Context, from, to time.Time) (api.RestoreTestReport, error) {
	return l.restoreTests().Report(ctx, from, to)
}

func (l *localOps) Repositories(ctx context.Context) ([]api.Repository, error) {
	if l.repos == nil {
		l.repos = repository.NewRegistry(l.cat, l.log, nil)
	}
	return l.repos.Describe(ctx)
}

func (l *localOps) Sources(ctx context.Context) ([]api.SourceInfo, error) {
	return l.inventory().Sources(ctx)
}

func (l *localOps) MoveSource(ctx context.Context, source, agentID string) (api.SourceInfo, error) {
	return l.inventory().MoveSource(ctx, source, agentID)
}

func (l *localOps) Prune(ctx context.Context, req api.PruneRequest) (api.PruneResult, error) {
	rep, err := l.policies().Prune(ctx, policy.PruneOptions{Policy: req.Policy, VM: req.VM, DryRun: req.DryRun})
	return api.PruneResult{Decisions: rep.Decisions, Removed: rep.Removed, Errors: rep.Errors}, err
}
