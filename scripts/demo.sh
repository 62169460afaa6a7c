#!/usr/bin/env bash
# The main-job demo on embedded defaults: starts the hub with SQLite and a local repository in a
# temporary data directory, shows its health, and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=bin
work=$(mktemp -d /tmp/sendense-demo.XXXXXX)
port=${SENDENSE_DEMO_PORT:-18082}
mport=${SENDENSE_DEMO_METRICS_PORT:-19082}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting sendense-hub (SQLite catalog, local repository in $work/data)"
$bin/sendense-hub serve --data-dir "$work/data" --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport" 2>"$work/hub.log" &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf --cacert "$work/data/pki/ca.crt" "https://localhost:$port/api/v1/debug/health" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "== health (verified against the hub CA, TLS 1.3)"
curl -sf --cacert "$work/data/pki/ca.crt" "https://localhost:$port/api/v1/debug/health"
echo
echo "== metrics served at http://127.0.0.1:$mport/metrics"
curl -sf "http://127.0.0.1:$mport/metrics" | grep '^sendense_hub_build_info'
echo "== demo finished"
