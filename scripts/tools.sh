#!/usr/bin/env bash
# Installs the pinned Go tools the tests use into .tools/ when they are missing: promtool (lints
# metrics, checks and unit-tests the alert rules) and weed (SeaweedFS, the S3 server of the
# object-storage tests, see scripts/s3.sh). Building them takes a few minutes the first time.
#
#   scripts/tools.sh            # every tool
#   scripts/tools.sh weed       # only the named ones
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
PROMTOOL_VERSION=v0.316.0

promtool() {
  # `go install` stamps no version into promtool, so a marker file records which one is there.
  if [ ! -x "$TOOLS/promtool" ] || [ "$(cat "$TOOLS/promtool.version" 2>/dev/null)" != "$PROMTOOL_VERSION" ]; then
    echo "tools.sh: installing promtool $PROMTOOL_VERSION into $TOOLS (a few minutes)" >&2
    GOBIN="$TOOLS" go install "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
    echo "$PROMTOOL_VERSION" >"$TOOLS/promtool.version"
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
    mkdir -p "$TOOLS"
    (cd scripts/weed && GOWORK=off CGO_ENABLED=0 go build -trimpath -o "$TOOLS/weed.partial" github.com/seaweedfs/seaweedfs/weed)
    mv "$TOOLS/weed.partial" "$TOOLS/weed"
    echo "$want" >"$TOOLS/weed.version"
  fi
}

if [ $# -eq 0 ]; then set -- promtool weed; fi
for tool in "$@"; do
  case "$tool" in
    promtool) promtool ;;
    weed) weed ;;
    *) echo "tools.sh: unknown tool $tool (promtool, weed)" >&2; exit 2 ;;
  esac
done
