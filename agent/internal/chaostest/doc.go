// Package chaostest holds the fault suite: randomized trials that kill the agent or the hub, cut
// their connection, restart the catalog's MariaDB or fill the repository's file system at a
// random moment of a backup of a lab VM, then check that no restore point was lost or corrupted
// and nothing was left behind; and a load test of many agents backing up into one hub at once.
//
// `make test` runs a few trials and a small load; `make chaos N=100` (scripts/chaos.sh) runs
// N trials and the full load. CHAOS_SEED replays a run's choices.
package chaostest
