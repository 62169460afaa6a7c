#!/usr/bin/env bash
# Installs the pinned Go tools the tests use into .tools/ when they are missing: promtool (lints
# metrics, checks and unit-tests the alert rules) and weed (SeaweedFS, the S3 server of the
# object-storage tests, see scripts/s3.sh). Building them takes a few minutes the first time;
# the two build side by side, so one's downloads and single-threaded link overlap the other's
# compiling.
#
#   scripts/tools.sh            # every tool
#   scripts/tools.sh weed       # only the named ones
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
PROMTOOL_VERSION=v0.316.0
# The tests use only promtool's metric and rule checks: without the service-discovery plugins
# (the cloud and Kubernetes SDKs) it builds in a fraction of the time.
PROMTOOL_TAGS=remove_all_sd

promtool() {
  # `go install` stamps no version into promtool, so a marker file records which one is there.
  local want="$PROMTOOL_VERSION tags=$PROMTOOL_TAGS"
  if [ ! -x "$TOOLS/promtool" ] || [ "$(cat "$TOOLS/promtool.version" 2>/dev/null)" != "$want" ]; then
    echo "tools.sh: installing promtool $PROMTOOL_VERSION into $TOOLS (a few minutes)" >&2
    GOBIN="$TOOLS" go install -tags "$PROMTOOL_TAGS" -trimpath -ldflags '-s -w' "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
    echo "$want" >"$TOOLS/promtool.version"
  fi
}

weed() {
  # SeaweedFS is built from the wrapper module in scripts/weed, which pins its version (go.mod,
  # go.sum) and repeats the replace directive of SeaweedFS's own go.mod that a plain
  # `go install …@version` would ignore. The marker holds the pinned version line of go.mod.
  local want
  want=$(sed -n 's|.*github.com/seaweedfs/seaweedfs \(v[^ ]*\).*|\1|p' scripts/weed/go.mod | head -n 1)
  if [ ! -x "$TOOLS/weed" ] || [ "$(cat "$TOOLS/weed.version" 2>/dev/null)" != "$want" ]; then
    echo "tools.sh: building weed (SeaweedFS $want) into $TOOLS (5-6 minutes, about 4 GB of module cache)" >&2
    (cd scripts/weed && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$TOOLS/weed.partial" github.com/seaweedfs/seaweedfs/weed)
    mv "$TOOLS/weed.partial" "$TOOLS/weed"
    echo "$want" >"$TOOLS/weed.version"
  fi
}

if [ $# -eq 0 ]; then set -- promtool weed; fi
for tool in "$@"; do
  case "$tool" in
    promtool | weed) ;;
    *) echo "tools.sh: unknown tool $tool (promtool, weed)" >&2; exit 2 ;;
  esac
done
mkdir -p "$TOOLS"
pids=()
for tool in "$@"; do
  "$tool" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
exit "$failed"
