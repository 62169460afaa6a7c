#!/usr/bin/env bash
# The fault suite's long run: N randomized fault trials (kill -9 of the agent or the hub, cut
# agent-hub connections, MariaDB restarts, a full repository file system; default 100) and the
# load test of 50 agents, with nothing allowed to skip. `make test` runs a few trials.
#
#   scripts/chaos.sh [N]      CHAOS_SEED=... replays a run's choices; CHAOS_FAULTS=hub_kill,fs_full
#                             draws only those faults; CHAOS_LOAD_AGENTS=... sizes the load test
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
export SENDENSE_TEST_STRICT=1 CHAOS_TRIALS="${1:-100}" CHAOS_LOAD_AGENTS="${CHAOS_LOAD_AGENTS:-50}"
cd agent
exec go test -run 'TestChaos|TestLoad' -count=1 -timeout 2h -v ./internal/chaostest/
