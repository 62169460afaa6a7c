package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/version"
)

// Who may call an operation.
const (
	authPublic   = "public"
	authAgent    = "agent"
	authViewer   = api.RoleViewer
	authOperator = api.RoleOperator
	authAdmin    = api.RoleAdmin
)

// operation describes one route for the OpenAPI document; the types of its bodies are turned
// into schemas by reflection, so the document follows the wire types in shared/api.
type operation struct {
	method, path string // path in OpenAPI form: /api/v1/backups/{id}
	summary      string
	auth         string
	query        []string // query parameters
	req, resp    any      // nil: none; a []byte: raw octets
	status       int
}

var operations = []operation{
	{"GET", api.PathHealth, "Health: status, version, uptime, catalog and repository checks, the registered routes", authPublic, nil, nil, api.Health{}, 200},
	{"GET", api.PathOpenAPI, "This document", authPublic, nil, nil, map[string]any{}, 200},
	{"POST", api.PathEnroll, "Redeem a join token for an agent certificate", authPublic, nil, api.EnrollRequest{}, api.EnrollResponse{}, 201},

	{"POST", api.PathAgentHeartbeat, "Agent heartbeat", authAgent, nil, api.HeartbeatRequest{}, api.HeartbeatResponse{}, 200},
	{"POST", api.PathAgentRenew, "Renew the agent certificate for a new key", authAgent, nil, api.RenewRequest{}, api.RenewResponse{}, 200},
	{"PUT", api.PathAgentInventory, "Push the complete inventory of one source", authAgent, nil, api.Inventory{}, api.InventoryResult{}, 200},
	{"GET", api.PathAgentJobs, "Long poll for the next job (204: none)", authAgent, []string{"wait", "running"}, nil, api.Job{}, 200},
	{"GET", api.PathAgentJob, "A job's state", authAgent, nil, nil, api.JobState{}, 200},
	{"POST", api.PathAgentJobProg, "Report progress (heartbeat of the job); answers whether to cancel", authAgent, nil, api.JobProgress{}, api.JobState{}, 200},
	{"POST", api.PathAgentJobDone, "Report the end of a job", authAgent, nil, api.JobCompletion{}, api.JobState{}, 200},
	{"PUT", api.PathAgentJobDisks, "Report the VM's disks as the job's snapshot shows them; answers the job with the disks to back up", authAgent, nil, api.JobDisksReport{}, api.Job{}, 200},
	{"PUT", api.PathAgentJobVM, "Store the VM configuration the job's snapshot recorded with the backup (the same again: no change)", authAgent, nil, api.VMConfig{}, nil, 204},
	{"GET", api.PathAgentInstantRecoveries, "Long poll for the next action (start or stop) of an instant-recovery session (204: none)", authAgent, []string{"wait", "running"}, nil, api.InstantRecoveryJob{}, 200},
	{"GET", api.PathAgentInstantRecovery, "An instant-recovery session's state (cancel_requested: its stop is pending)", authAgent, nil, nil, api.JobState{}, 200},
	{"POST", api.PathAgentInstantRecoveryDone, "Report the outcome of an instant-recovery action", authAgent, nil, api.InstantRecoveryReport{}, api.InstantRecovery{}, 200},
	{"GET", api.PathAgentRestores, "Long poll for the next restore as a new VM (204: none)", authAgent, []string{"wait", "running"}, nil, api.RestoreJob{}, 200},
	{"GET", api.PathAgentRestore, "A restore's state", authAgent, nil, nil, api.JobState{}, 200},
	{"POST", api.PathAgentRestoreProg, "Report a restore's progress and the VM it created; answers whether to cancel", authAgent, nil, api.RestoreProgress{}, api.JobState{}, 200},
	{"POST", api.PathAgentRestoreDone, "Report the end of a restore", authAgent, nil, api.RestoreCompletion{}, api.JobState{}, 200},
	{"GET", api.PathAgentRestoreImage, "A disk image of the backup a running restore reads (Range supported, every chunk verified)", authAgent, nil, nil, []byte{}, 200},
	{"HEAD", api.PathAgentRestoreImage, "Size and ETag of a disk image of a running restore's backup", authAgent, nil, nil, nil, 200},
	{"POST", api.PathAgentOpenSess, "Open (or reopen) the upload session of a disk", authAgent, nil, api.OpenSessionRequest{}, api.Session{}, 200},
	{"GET", api.PathAgentSession, "A session with the slots already recorded", authAgent, nil, nil, api.Session{}, 200},
	{"PUT", api.PathAgentChunk, "Upload one chunk blob (201 stored, 200 already held) and record the slots that hold it", authAgent, []string{"slots"}, []byte{}, nil, 201},
	{"POST", api.PathAgentChunks, "Upload one chunk blob the hub names by the SHA-256 of its plaintext (201 stored, 200 already held) and record the slots that hold it", authAgent, []string{"slots"}, []byte{}, api.ChunkStored{}, 201},
	{"POST", api.PathAgentSlots, "Record slot digests; answers the digests the hub lacks", authAgent, nil, api.SlotBatch{}, api.SlotBatchResult{}, 200},
	{"POST", api.PathAgentCheckSess, "Compare slot digests with the parent index (CBT drift check); answers the slots that differ", authAgent, nil, api.CheckRequest{}, api.CheckResult{}, 200},
	{"POST", api.PathAgentCommitSess, "Close a session: the hub writes the disk's index", authAgent, nil, api.CommitRequest{}, api.BackupDisk{}, 200},

	{"GET", api.PathAgents, "List agents", authViewer, nil, nil, api.AgentList{}, 200},
	{"GET", api.PathAgent, "Show an agent", authViewer, nil, nil, api.Agent{}, 200},
	{"POST", api.PathAgentRevoke, "Revoke an agent: its next request is refused", authAdmin, nil, nil, api.Agent{}, 200},
	{"GET", api.PathJoinTokens, "List join tokens (no secrets)", authAdmin, nil, nil, api.JoinTokenList{}, 200},
	{"POST", api.PathJoinTokens, "Create a join token (its string is shown once)", authAdmin, nil, api.CreateJoinTokenRequest{}, api.CreateJoinTokenResponse{}, 201},
	{"DELETE", api.PathJoinToken, "Revoke an unused join token", authAdmin, nil, nil, nil, 204},
	{"GET", api.PathAPITokens, "List API tokens (no secrets)", authAdmin, nil, nil, api.APITokenList{}, 200},
	{"POST", api.PathAPITokens, "Create an API token (shown once)", authAdmin, nil, api.CreateAPITokenRequest{}, api.CreateAPITokenResponse{}, 201},
	{"DELETE", api.PathAPIToken, "Revoke an API token", authAdmin, nil, nil, nil, 204},

	{"GET", api.PathSources, "List the vCenters and ESXi hosts agents report on, with their owning agents", authViewer, nil, nil, api.SourceList{}, 200},
	{"POST", api.PathSourceMove, "Give a source (id, instance uuid, or a name only one agent uses) and its VMs to another agent", authAdmin, nil, api.MoveSourceRequest{}, api.SourceInfo{}, 200},
	{"GET", api.PathVMs, "List VMs", authViewer, []string{"name", "status", "agent", "protected", "limit", "offset"}, nil, api.VMList{}, 200},
	{"GET", api.PathVM, "Show a VM (by context id or unique name) with its disks", authViewer, nil, nil, api.VMContext{}, 200},
	{"GET", api.PathVMDisks, "A VM's disks", authViewer, nil, nil, api.VMDiskList{}, 200},

	{"POST", api.PathBackups, "Start a backup of a VM", authOperator, nil, api.StartBackupRequest{}, api.Backup{}, 202},
	{"GET", api.PathBackups, "List backups, newest first", authViewer, []string{"vm", "status", "since", "limit", "offset"}, nil, api.BackupList{}, 200},
	{"GET", api.PathBackup, "Show a backup with its disks", authViewer, nil, nil, api.Backup{}, 200},
	{"DELETE", api.PathBackup, "Delete a finished, unprotected backup with its finished restore records (409 while a restore, an instant recovery, an incremental or a copy still uses it; space is reclaimed by garbage collection)", authOperator, nil, nil, nil, 204},
	{"POST", api.PathBackupProtect, "Protect a backup from pruning and deletion", authOperator, nil, nil, api.Backup{}, 200},
	{"POST", api.PathBackupUnprot, "Lift the protection of a backup", authOperator, nil, nil, api.Backup{}, 200},
	{"POST", api.PathBackupHolds, "Hold a restore point against deletion, pruning and moves while reading it in several requests; renew before expires_at (404: no such backup, 409: not a restore point, or 8 live holds of this token or 32 of all)", authViewer, nil, nil, api.BackupHold{}, 201},
	{"PUT", api.PathBackupHold, "Renew a hold for another two minutes (404 once it expired or ended, or for another token than the one that took it)", authViewer, nil, nil, api.BackupHold{}, 200},
	{"DELETE", api.PathBackupHold, "End a hold (404 for another token than the one that took it)", authViewer, nil, nil, nil, 204},
	{"POST", api.PathBackupCancel, "Cancel a queued or running backup", authOperator, nil, nil, api.Backup{}, 202},
	{"GET", api.PathBackupChain, "Per disk, the lineage of a VM's backups ({id} is the VM name or context id)", authViewer, nil, nil, api.Chain{}, 200},
	{"GET", api.PathBackupImage, "The raw disk image of a restore point (Range supported, every chunk verified)", authViewer, nil, nil, []byte{}, 200},
	{"GET", api.PathBackupVM, "The VM configuration of a restore point: hardware, firmware, controllers, disks, NICs, CD-ROMs, boot-relevant extraConfig (404: a backup without one)", authViewer, nil, nil, api.VMConfig{}, 200},
	{"HEAD", api.PathBackupImage, "Size and ETag of a disk image", authViewer, nil, nil, nil, 200},
	{"GET", api.PathBackupFiles, "List a directory of a restore point's disk: at / one entry per volume (p1, p2, … or disk), then its filesystem (ext2/3/4, XFS)", authViewer, []string{"path"}, nil, api.FileList{}, 200},
	{"GET", api.PathBackupFileContent, "Download one file of a restore point's disk (Range supported, every chunk verified; audited)", authViewer, []string{"path"}, nil, []byte{}, 200},
	{"GET", api.PathBackupFileArchive, "Stream a directory of a restore point's disk as a tar archive (every chunk verified; audited)", authViewer, []string{"path"}, nil, []byte{}, 200},

	{"POST", api.PathInstantRecoveries, "Boot a VM from a backup: serve it over NFS to the ESXi host, where the agent mounts it, registers the VM and powers it on", authOperator, nil, api.InstantRecoveryRequest{}, api.InstantRecovery{}, 202},
	{"GET", api.PathInstantRecoveries, "List instant-recovery sessions, newest first", authViewer, []string{"status", "limit", "offset"}, nil, api.InstantRecoveryList{}, 200},
	{"GET", api.PathInstantRecovery, "Show an instant-recovery session with its overlay use", authViewer, nil, nil, api.InstantRecovery{}, 200},
	{"POST", api.PathInstantRecoveryMigrate, "Move a running session's VM to a production datastore (Storage vMotion), then unmount the export and drop the overlay", authOperator, nil, api.InstantRecoveryMigrateRequest{}, api.InstantRecovery{}, 202},
	{"DELETE", api.PathInstantRecovery, "Stop a session: the agent powers the VM off, unregisters it and unmounts the export; then the overlay is dropped", authOperator, nil, nil, api.InstantRecovery{}, 202},

	{"POST", api.PathRestores, "Restore a backup as a new VM: queued for the agent of the target source", authOperator, nil, api.RestoreRequest{}, api.Restore{}, 202},
	{"GET", api.PathRestores, "List restores, newest first", authViewer, []string{"status", "backup", "limit", "offset"}, nil, api.RestoreList{}, 200},
	{"GET", api.PathRestore, "Show a restore with its progress", authViewer, nil, nil, api.Restore{}, 200},
	{"POST", api.PathRestoreCancel, "Cancel a queued or running restore (the half-made VM is removed)", authOperator, nil, nil, api.Restore{}, 202},

	{"GET", api.PathRepositories, "List repositories", authAdmin, nil, nil, api.RepositoryList{}, 200},
	{"POST", api.PathRepositories, "Create a repository", authAdmin, nil, api.CreateRepositoryRequest{}, api.Repository{}, 201},
	{"POST", api.PathRepositoryVerify, "Re-read and re-hash the chunks of every succeeded backup (or of backup_id), quarantining damaged ones; answers when done", authAdmin, nil, api.VerifyRequest{}, api.VerifyReport{}, 200},

	{"GET", api.PathPolicies, "List policies", authViewer, nil, nil, api.PolicyList{}, 200},
	{"POST", api.PathPolicies, "Create a policy", authOperator, nil, api.Policy{}, api.Policy{}, 201},
	{"GET", api.PathPolicy, "Show a policy", authViewer, nil, nil, api.Policy{}, 200},
	{"PUT", api.PathPolicy, "Replace a policy's settings", authOperator, nil, api.Policy{}, api.Policy{}, 200},
	{"DELETE", api.PathPolicy, "Delete a policy (its backups stay)", authOperator, nil, nil, nil, 204},
	{"POST", api.PathPrune, "Apply the policies' retention now (dry_run: only report), never to protected backups", authOperator, nil, api.PruneRequest{}, api.PruneResult{}, 200},

	{"GET", api.PathEvents, "List recorded events, newest first (vm: name or context id; since: RFC 3339)", authViewer, []string{"vm", "type", "since", "limit", "offset"}, nil, api.EventList{}, 200},
	{"POST", api.PathRestoreTests, "Start a restore test of the VM's latest (or a named) restore point, run by the hub in the background: a full verified read of every disk, the paths that must exist in its filesystems, and an instant-recovery boot on an ESXi host with its RTO (the boot check: host, network, tcp_port, boot_timeout)", authOperator, nil, api.StartRestoreTestRequest{}, api.RestoreTest{}, 202},
	{"GET", api.PathRestoreTests, "List restore tests with their evidence, newest first", authViewer, []string{"vm", "since", "result", "limit", "offset"}, nil, api.RestoreTestList{}, 200},
	{"GET", api.PathRestoreTest, "Show a restore test with its checks and evidence", authViewer, nil, nil, api.RestoreTest{}, 200},
	{"GET", api.PathReportRestoreTests, "The restore tests of a period by VM, and the VMs without one (from, to: RFC 3339; default the last 30 days)", authViewer, []string{"from", "to"}, nil, api.RestoreTestReport{}, 200},
}

// schemaGen turns Go types into OpenAPI schemas, collecting named structs as components.
type schemaGen struct{ components map[string]any }

var timeType = reflect.TypeOf(time.Time{})

func (g *schemaGen) schema(t reflect.Type) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t.Kind() == reflect.Pointer:
		s := g.schema(t.Elem())
		s["nullable"] = true
		return s
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint8:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		name := t.Name()
		if _, done := g.components[name]; !done {
			g.components[name] = nil // breaks cycles
			props := map[string]any{}
			for i := range t.NumField() {
				f := t.Field(i)
				if !f.IsExported() {
					continue
				}
				tag := strings.Split(f.Tag.Get("json"), ",")[0]
				if tag == "-" {
					continue
				}
				if tag == "" {
					tag = f.Name
				}
				props[tag] = g.schema(f.Type)
			}
			g.components[name] = map[string]any{"type": "object", "properties": props}
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	return map[string]any{}
}

func (g *schemaGen) content(v any) map[string]any {
	if b, ok := v.([]byte); ok && b != nil {
		return map[string]any{"application/octet-stream": map[string]any{"schema": map[string]any{"type": "string", "format": "binary"}}}
	}
	var s map[string]any
	if m, ok := v.(map[string]any); ok {
		props := map[string]any{}
		for k, val := range m {
			props[k] = g.schema(reflect.TypeOf(val))
		}
		s = map[string]any{"type": "object", "properties": props}
	} else {
		s = g.schema(reflect.TypeOf(v))
	}
	return map[string]any{"application/json": map[string]any{"schema": s}}
}

// OpenAPI builds the API's OpenAPI 3 document.
func OpenAPI() ([]byte, error) {
	g := &schemaGen{components: map[string]any{}}
	paths := map[string]map[string]any{}
	for _, op := range operations {
		o := map[string]any{
			"summary": op.summary,
			"tags":    []string{strings.Split(strings.TrimPrefix(op.path, "/api/v1/"), "/")[0]},
		}
		var params []any
		for _, seg := range strings.Split(op.path, "/") {
			if strings.HasPrefix(seg, "{") {
				params = append(params, map[string]any{"name": strings.Trim(seg, "{}"), "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
			}
		}
		for _, q := range op.query {
			params = append(params, map[string]any{"name": q, "in": "query", "schema": map[string]any{"type": "string"}})
		}
		if len(params) > 0 {
			o["parameters"] = params
		}
		switch op.auth {
		case authPublic:
			o["security"] = []any{}
		case authAgent:
			o["security"] = []any{map[string]any{"agentCertificate": []string{}}}
			o["description"] = "Mutual TLS: the client certificate of an active agent (CN = agent id). An agent only sees its own objects."
		default:
			o["security"] = []any{map[string]any{"apiToken": []string{}}}
			o["description"] = fmt.Sprintf("Operator API token with role %s or higher.", op.auth)
		}
		if op.req != nil {
			o["requestBody"] = map[string]any{"required": true, "content": g.content(op.req)}
		}
		ok := map[string]any{"description": http.StatusText(op.status)}
		if op.resp != nil {
			ok["content"] = g.content(op.resp)
		}
		errResp := map[string]any{"description": "Error", "content": g.content(api.Error{})}
		o["responses"] = map[string]any{fmt.Sprint(op.status): ok, "default": errResp}
		if paths[op.path] == nil {
			paths[op.path] = map[string]any{}
		}
		paths[op.path][strings.ToLower(op.method)] = o
	}
	doc := map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title":   "Sendense hub API",
			"version": version.Get().Version,
			"description": "Backups of VMware vSphere VMs. Operators authenticate with API tokens (Authorization: Bearer sdt_...), " +
				"agents with client certificates issued at enrollment. Errors are {error, code, field}.",
		},
		"paths": paths,
		"components": map[string]any{
			"schemas": g.components,
			"securitySchemes": map[string]any{
				"apiToken":         map[string]any{"type": "http", "scheme": "bearer"},
				"agentCertificate": map[string]any{"type": "mutualTLS"},
			},
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}

// DescribedRoutes lists "METHOD /path" of every operation in the document, in Gin's path form.
func DescribedRoutes() []string {
	var out []string
	for _, op := range operations {
		segs := strings.Split(op.path, "/")
		for i, s := range segs {
			if strings.HasPrefix(s, "{") {
				segs[i] = ":" + strings.Trim(s, "{}")
			}
		}
		out = append(out, op.method+" "+strings.Join(segs, "/"))
	}
	sort.Strings(out)
	return out
}

func (s *Server) registerOpenAPI() {
	doc, err := OpenAPI()
	s.engine.GET(api.PathOpenAPI, func(c *gin.Context) {
		if err != nil {
			s.fail(c, err)
			return
		}
		c.Data(http.StatusOK, "application/json", doc)
	})
}
