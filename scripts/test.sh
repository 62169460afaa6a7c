#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, starts a private MariaDB,
# then vets and tests every module with nothing allowed to skip (SENDENSE_TEST_STRICT).
set -euo pipefail
cd "$(dirname "$0")/.."

# stage prints a stage's heading with the time since the start, so a slow run shows where its
# time went (keep the whole run under 30 minutes on a clean checkout).
stage() { printf '== [%02d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

stage "dependencies: apt packages, pinned tools, MariaDB"
scripts/deps.sh
# The tools build before everything else rather than beside the first modules' stages: both are
# CPU-bound on two cores, and from empty Go caches the tools and the stages up to the hub's vet
# took 15.1 minutes side by side against 13.2 one after the other (2026-12-07).
scripts/tools.sh
eval "$(scripts/mariadb.sh env)"
export SENDENSE_TEST_STRICT=1
# The tests' shared S3 server keeps its objects in a directory of this run only: SeaweedFS
# reclaims deleted objects' space lazily, and a directory kept across runs grows by gigabytes.
if [ -z "${SENDENSE_TEST_S3_DIR:-}" ]; then
  SENDENSE_TEST_S3_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sendense-test-s3.XXXXXX")
  export SENDENSE_TEST_S3_DIR
  trap 'scripts/s3.sh stop "$SENDENSE_TEST_S3_DIR" >/dev/null 2>&1 || true; rm -rf "$SENDENSE_TEST_S3_DIR"' EXIT
fi

modules=(shared migrations hub agent)

stage "gofmt"
out=$(gofmt -l "${modules[@]}")
if [ -n "$out" ]; then echo "gofmt needed:"; echo "$out"; exit 1; fi

# The packages of the backup pipeline, upload sessions, job claiming and restore run their tests
# under the race detector only: a race run is also a full run of their tests, and running them
# twice cost a warm run of the suite about eight minutes (25.6 minutes before, 17.3 after).
race_pkgs=(./agent/internal/backup/ ./hub/internal/api/ ./agent/internal/daemon/ ./agent/internal/nbd/
  ./hub/internal/jobs/ ./hub/internal/restore/ ./hub/internal/repository/... ./hub/internal/connlimit/)
race_list=$(go list "${race_pkgs[@]}")

for m in "${modules[@]}"; do
  stage "$m: each module builds alone (GOWORK=off)"
  (cd "$m" && GOWORK=off go build -o /dev/null ./...)
  stage "$m: go vet"
  (cd "$m" && go vet ./...)
  stage "$m: go test (all but the race stage's packages)"
  pkgs=$(cd "$m" && go list ./... | grep -vxF "$race_list" || true)
  # shellcheck disable=SC2086 # one import path per word
  (cd "$m" && go test -count=1 -timeout 20m $pkgs)
done
stage "fuzz: every target for 3s (make fuzz runs them longer)"
scripts/fuzz.sh 3s
stage "race detector: backup pipeline, upload sessions, job claiming, restore"
# One run over both modules (the workspace joins them), so that the agent's and the hub's longest
# packages run side by side instead of one after the other.
CGO_ENABLED=1 go test -race -count=1 -timeout 20m "${race_pkgs[@]}"

stage "end to end: the demo (make demo) as a test"
make build
scripts/demo.sh

stage "all tests passed"
