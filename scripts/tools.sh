#!/usr/bin/env bash
# Installs the pinned Go tools the tests use into .tools/ when they are missing: promtool (lints
# metrics, checks and unit-tests the alert rules). Building it takes a few minutes the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
PROMTOOL_VERSION=v0.316.0
# `go install` stamps no version into promtool, so a marker file records which one is there.
if [ ! -x "$TOOLS/promtool" ] || [ "$(cat "$TOOLS/promtool.version" 2>/dev/null)" != "$PROMTOOL_VERSION" ]; then
  echo "tools.sh: installing promtool $PROMTOOL_VERSION into $TOOLS (a few minutes)" >&2
  GOBIN="$TOOLS" go install "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
  echo "$PROMTOOL_VERSION" >"$TOOLS/promtool.version"
fi
