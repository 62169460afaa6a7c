#!/usr/bin/env bash
# The main job, end to end, on embedded defaults: a simulated vCenter (sendense-lab) with VM
# pgtest1 (disk 2000: 102 GB thin with ~2 GiB of data; disk 2001: 5 GB), a hub with SQLite and a
# local repository in a temporary directory, an agent enrolled over mutual TLS; discovery, a full
# backup, ~1% of the blocks changed, an incremental, a restore of both disks of the incremental
# proven byte-identical to the lab disks, and a summary. Everything started is stopped again.
# Exits non-zero if any step fails. Needs the binaries of `make build` in bin/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
W=$(mktemp -d /tmp/sendense-demo.XXXXXX)
pids=()
cleanup() {
  status=$?
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ $status -ne 0 ]; then
    echo "demo FAILED (exit $status); last log lines:" >&2
    for f in "$W"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }; done
  fi
  rm -rf "$W"
  exit $status
}
trap cleanup EXIT
t0=$(date +%s.%N)
step() { printf '\n== %s\n' "$*"; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
# wait_for FILE PATTERN: until a log line matches (the processes log JSON).
wait_for() {
  for _ in $(seq 1 600); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for $2 in $1" >&2
  return 1
}
json_field() { sed -n "s/.*\"$2\":\"\([^\"]*\)\".*/\1/p" "$1" | head -n 1; }
hub() { "$BIN/sendense-hub" --data-dir "$W/hub" "$@"; }

step "starting sendense-lab: a simulated vCenter with VM pgtest1 (102 GB + 5 GB disks, CBT on)"
"$BIN/sendense-lab" serve --demo --dir "$W/lab" 2>"$W/lab.log" &
pids+=($!)
for _ in $(seq 1 600); do [ -f "$W/lab/lab.json" ] && break; sleep 0.1; done
[ -f "$W/lab/lab.json" ] || { echo "the lab did not start" >&2; exit 1; }

step "starting sendense-hub (SQLite catalog and local repository in $W/hub, TLS 1.3)"
"$BIN/sendense-hub" serve --data-dir "$W/hub" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --log-format json 2>"$W/hub.log" &
pids+=($!)
wait_for "$W/hub.log" '"msg":"metrics listening"'
HUB="https://$(grep '"msg":"hub listening"' "$W/hub.log" | json_field /dev/stdin addr)"
HUB_METRICS="http://$(grep '"msg":"metrics listening"' "$W/hub.log" | json_field /dev/stdin addr)/metrics"
echo "hub at $HUB"

step "creating a join token and enrolling an agent (pinned CA, mutual TLS)"
TOKEN=$(hub token create --ttl 10m --name demo --public-url "$HUB")
"$BIN/sendense-agent" enroll --token "$TOKEN" --state-dir "$W/agent" --name demo-agent

step "starting sendense-agent: discovery, heartbeats, backup jobs"
"$BIN/sendense-lab" agent-config --dir "$W/lab" --state-dir "$W/agent" --name vc-lab >"$W/agent.yaml"
"$BIN/sendense-agent" run --config "$W/agent.yaml" --metrics-listen 127.0.0.1:0 --log-format json 2>"$W/agent.log" &
pids+=($!)
wait_for "$W/agent.log" '"msg":"inventory pushed"'
AGENT_METRICS="http://$(grep '"msg":"metrics listening"' "$W/agent.log" | json_field /dev/stdin addr)/metrics"
hub vms show pgtest1

step "full backup"
FULL=$(hub backup start --vm pgtest1)
hub backup wait "$FULL" | tee "$W/full.txt"

step "changing about 1% of the blocks of both disks"
"$BIN/sendense-lab" write --dir "$W/lab" --vm pgtest1 --disk disk-2000 --percent 1 --seed 42 | tail -n 1
"$BIN/sendense-lab" write --dir "$W/lab" --vm pgtest1 --disk disk-2001 --percent 1 --seed 43 | tail -n 1

step "incremental backup (CBT: only the changed slots are read)"
INC=$(hub backup start --vm pgtest1)
hub backup wait "$INC" | tee "$W/inc.txt"

step "restoring both disks of the incremental and comparing them with the lab disks"
rs=$(date +%s.%N)
hub restore --backup "$INC" --output "$W/restore"
restore_secs=$(since "$rs")
for d in disk-2000 disk-2001; do
  "$BIN/sendense-lab" compare --dir "$W/lab" --vm pgtest1 --disk "$d" "$W/restore/$d.raw"
done

step "summary"
cap0=$(stat -c %s "$W/restore/disk-2000.raw")
cap1=$(stat -c %s "$W/restore/disk-2001.raw")
alloc=$(du -s --block-size=1 "$W/restore" | cut -f1)
printf 'disks:      disk-2000 %s bytes, disk-2001 %s bytes (restored images are sparse: %s bytes allocated)\n' "$cap0" "$cap1" "$alloc"
printf 'full:       %s\n' "$(cat "$W/full.txt")"
printf 'incremental:%s\n' " $(cat "$W/inc.txt")"
printf 'restore:    both disks in %ss, verified chunk by chunk and identical to the lab disks\n' "$restore_secs"
printf 'metrics:    hub %s, agent %s (plain HTTP, loopback)\n' "$HUB_METRICS" "$AGENT_METRICS"
printf 'catalog:    %s\n' "$(hub vms list --name pgtest1 | head -n 2 | tail -n 1)"
printf 'total:      %ss\n' "$(since "$t0")"

# A console user with a password made for this run only: it ends with the demo's hub.
CONSOLE_PW=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$CONSOLE_PW" >"$W/console-password"
hub user add demo --role admin --password-file "$W/console-password" >/dev/null
printf 'console:    %s/ (user demo, password %s; the certificate is the hub CA %s)\n' "$HUB" "$CONSOLE_PW" "$W/hub/pki/ca.crt"
echo "demo OK"
if [ -n "${DEMO_HOLD:-}" ]; then
  echo "DEMO_HOLD is set: the lab, hub and agent keep running for the console; Ctrl-C stops them"
  while :; do sleep 3600; done
fi
