package api

import (
	"fmt"
	"net/url"
	"strings"
)

// Every route of the hub API. A segment in braces ({id}) is a parameter: the hub's router
// registers these exact strings and a client fills them with Path, so both sides always agree.
const (
	// Unauthenticated.
	PathHealth = "/api/v1/debug/health"
	PathEnroll = "/api/v1/enroll" // POST: redeem a join token (no client certificate)

	// Agents, over mutual TLS.
	PathAgentRenew      = "/api/v1/agent/renew"     // POST: a new certificate for a new key
	PathAgentHeartbeat  = "/api/v1/agent/heartbeat" // POST: liveness, last_seen
	PathAgentInventory  = "/api/v1/agent/inventory" // PUT: the complete inventory of one source
	PathAgentJobs       = "/api/v1/agent/jobs"      // GET: long poll for the next job (?wait=30s&running=id,id)
	PathAgentJob        = "/api/v1/agent/jobs/{id}" // GET: job state (cancel requested?)
	PathAgentJobProg    = "/api/v1/agent/jobs/{id}/progress"
	PathAgentJobDone    = "/api/v1/agent/jobs/{id}/complete"
	PathAgentJobDisks   = "/api/v1/agent/jobs/{id}/disks"                    // PUT: the VM's disks as the snapshot sees them
	PathAgentJobVM      = "/api/v1/agent/jobs/{id}/vm"                       // PUT: the VM's configuration as the snapshot recorded it
	PathAgentOpenSess   = "/api/v1/agent/jobs/{id}/disks/{disk}/session"     // POST: open or reopen (idempotent)
	PathAgentSession    = "/api/v1/agent/sessions/{session}"                 // GET: with the slots done, to resume
	PathAgentChunk      = "/api/v1/agent/sessions/{session}/chunks/{digest}" // PUT: a chunk named by the agent
	PathAgentChunks     = "/api/v1/agent/sessions/{session}/chunks"          // POST: a chunk the hub names (ChunkStored)
	PathAgentSlots      = "/api/v1/agent/sessions/{session}/slots"
	PathAgentCommitSess = "/api/v1/agent/sessions/{session}/commit"
	PathAgentCheckSess  = "/api/v1/agent/sessions/{session}/check" // POST: compare slot digests with the parent index
	// Restore jobs: the same long poll and lifecycle as backup jobs, on their own routes.
	PathAgentRestores     = "/api/v1/agent/restores"      // GET: long poll for the next restore (?wait=30s&running=id,id)
	PathAgentRestore      = "/api/v1/agent/restores/{id}" // GET: state (cancel requested?)
	PathAgentRestoreProg  = "/api/v1/agent/restores/{id}/progress"
	PathAgentRestoreDone  = "/api/v1/agent/restores/{id}/complete"
	PathAgentRestoreImage = "/api/v1/agent/restores/{id}/disks/{disk}/image" // GET: a disk of the job's backup (Range)

	// Instant recovery: the same long poll for the next action (start or stop) of a session.
	PathAgentInstantRecoveries   = "/api/v1/agent/instant-recoveries"               // GET: long poll (?wait=30s)
	PathAgentInstantRecovery     = "/api/v1/agent/instant-recoveries/{id}"          // GET: the session's state (stop pending?)
	PathAgentInstantRecoveryDone = "/api/v1/agent/instant-recoveries/{id}/complete" // POST: the action's outcome

	// Operators, with an API token.
	PathAgents        = "/api/v1/agents"
	PathAgent         = "/api/v1/agents/{id}"
	PathAgentRevoke   = "/api/v1/agents/{id}/revoke"
	PathJoinTokens    = "/api/v1/tokens"
	PathJoinToken     = "/api/v1/tokens/{id}"
	PathAPITokens     = "/api/v1/apitokens"
	PathAPIToken      = "/api/v1/apitokens/{id}"
	PathSources       = "/api/v1/sources"           // GET: sources with their owning agents
	PathSourceMove    = "/api/v1/sources/{id}/move" // POST: give a source (id, instance uuid or name) to another agent
	PathVMs           = "/api/v1/vms"
	PathVM            = "/api/v1/vms/{id}"
	PathVMDisks       = "/api/v1/vms/{id}/disks"
	PathBackups       = "/api/v1/backups"
	PathBackup        = "/api/v1/backups/{id}"
	PathBackupCancel  = "/api/v1/backups/{id}/cancel"
	PathBackupChain   = "/api/v1/backups/{id}/chain" // {id} is a VM name or context id (the seed system's route)
	PathBackupImage   = "/api/v1/backups/{id}/disks/{disk}/image"
	PathBackupVM      = "/api/v1/backups/{id}/vm" // GET: the VM configuration of a restore point
	PathBackupProtect = "/api/v1/backups/{id}/protect"
	PathBackupUnprot  = "/api/v1/backups/{id}/unprotect"
	// POST: hold a restore point against deletion, pruning and moves while a client reads it in
	// several requests (BackupHold); PUT on one hold renews it, DELETE ends it.
	PathBackupHolds   = "/api/v1/backups/{id}/holds"
	PathBackupHold    = "/api/v1/backups/{id}/holds/{hold}"
	PathRestores      = "/api/v1/restores"             // POST: restore a backup (new VM or in place); GET: list
	PathRestore       = "/api/v1/restores/{id}"        // GET: one restore with its progress
	PathRestoreCancel = "/api/v1/restores/{id}/cancel" // POST
	PathRepositories  = "/api/v1/repositories"
	// POST: re-read and re-hash the chunks of every succeeded backup (or one), in the request.
	PathRepositoryVerify = "/api/v1/repositories/verify"
	PathPolicies         = "/api/v1/policies"
	PathPolicy           = "/api/v1/policies/{name}"
	PathPrune            = "/api/v1/prune" // POST: apply the policies' retention (or, dry_run, only report)
	PathEvents           = "/api/v1/events"
	PathRestoreTests     = "/api/v1/restore-tests"      // POST: start a restore test; GET: list (?vm, since, result)
	PathRestoreTest      = "/api/v1/restore-tests/{id}" // GET: one restore test with its evidence
	// GET: the restore tests of [from, to] by VM (?from=RFC3339, default 30 days back; ?to, default now).
	PathReportRestoreTests = "/api/v1/reports/restore-tests"
	PathOpenAPI            = "/api/v1/openapi.json"

	// Instant recovery: boot a VM from a restore point served over NFS.
	PathInstantRecoveries = "/api/v1/instant-recoveries"      // POST: start a session; GET: list
	PathInstantRecovery   = "/api/v1/instant-recoveries/{id}" // GET: one session; DELETE: stop and clean up
	// POST: move the VM to a production datastore (Storage vMotion), then unmount the export.
	PathInstantRecoveryMigrate = "/api/v1/instant-recoveries/{id}/migrate"

	// File-level restore: ?path=/p1/etc lists a directory of a disk's volumes, downloads one
	// file (Range) or streams a directory as tar.
	PathBackupFiles       = "/api/v1/backups/{id}/disks/{disk}/files"
	PathBackupFileContent = "/api/v1/backups/{id}/disks/{disk}/files/content"
	PathBackupFileArchive = "/api/v1/backups/{id}/disks/{disk}/files/archive"
)

// Path fills the {parameters} of route, in order, with params, each escaped as one path segment.
// It panics when the counts differ: that is a programming error, never a runtime condition.
func Path(route string, params ...string) string {
	var b strings.Builder
	rest := route
	for _, p := range params {
		i := strings.IndexByte(rest, '{')
		j := strings.IndexByte(rest, '}')
		if i < 0 || j < i {
			panic(fmt.Sprintf("api.Path(%q): %d parameters for fewer braces", route, len(params)))
		}
		b.WriteString(rest[:i])
		b.WriteString(url.PathEscape(p))
		rest = rest[j+1:]
	}
	if strings.IndexByte(rest, '{') >= 0 {
		panic(fmt.Sprintf("api.Path(%q): %d parameters for more braces", route, len(params)))
	}
	b.WriteString(rest)
	return b.String()
}
