#!/usr/bin/env bash
# Benchmark: Sendense against restic and kopia on the same 4 GiB disk image, every figure measured
# in this one run on this machine. The image: 2 GiB random, 1 GiB of compressible binaries (from /usr),
# 1 GiB never written (a hole). Steps: full backup, backup after 1% of the blocks changed (ten
# 1 MiB writes per GiB, spread), restore of the latest; plus the machine's limit (each stage's
# rate per CPU second — read, SHA-256 on each side, zstd on the compressible part and its
# decoding, TLS on loopback — combined over the cores: `sendense-lab machine-limit`) and the peak
# RSS of hub and agent, the cost of encryption at rest (the full backup again into an encrypted
# repository), of an object store (the full backup again into an S3 repository on a local
# SeaweedFS, and its restore), of a 100 ms round trip (the full backup through a loopback proxy
# adding it, `sendense-lab latency-proxy`, against the same proxy without delay and against no
# proxy, each into a fresh repository) and of the https and nbd transports (with the CPU seconds
# of hub, agent, nbdkit and the lab's datastore server for each), and eight disks backed up at
# once (the memory bounds). Prints one table with ratios against both peers.
#
# Sendense reads the disk through the lab's vSphere API with CBT and the file transport (as a
# hot-add appliance would), sends to a hub on loopback over TLS 1.3, and restores to a sparse
# file, synced (the peers' restores are timed without and with the sync of their file; each
# restore starts after an untimed sync, once with every repository in the page cache and once,
# as root, with the page cache dropped, beside what the disk alone allows that restore). restic
# 0.18.1 and kopia 0.21.1 (zstd-fastest, as Sendense) back up the lab's disk file itself (they
# must re-read all of it each time). Both are built into $TOOLS when missing; kopia
# through a throwaway module, as `go install` of it is refused.
#
# Knobs for comparisons (default: the shipped configuration): CHUNK_DURABILITY=chunk|commit for
# the hub, UPLOAD_MEMORY_MIB for the agent, BIN for another build's binaries, TOOLS for where the
# peers are built, DISCOVERY=0 to skip the discovery benchmark, RTT=0 to skip the round-trip one
# (default RTT=100ms), TRANSPORTS=0 to skip the https and nbd transports, EIGHT=0 to skip the
# eight disks at once.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
scripts/deps.sh
TOOLS=${TOOLS:-$PWD/.tools}
if [ ! -x "$TOOLS/restic" ]; then
  echo "installing restic 0.18.1 into $TOOLS (about a minute)" >&2
  GOBIN="$TOOLS" go install github.com/restic/restic/cmd/restic@v0.18.1
fi
RESTIC="$TOOLS/restic"
if [ ! -x "$TOOLS/kopia" ]; then
  echo "building kopia 0.21.1 into $TOOLS (about a minute)" >&2
  kb=$(mktemp -d "${TMPDIR:-/tmp}/kopia-build.XXXXXX")
  printf 'module kopiabuild\n\ngo 1.24\n\nrequire github.com/kopia/kopia v0.21.1\n' >"$kb/go.mod"
  printf 'package kopiabuild\n\nimport _ "github.com/kopia/kopia"\n' >"$kb/tools.go"
  (cd "$kb" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 && GOFLAGS=-mod=mod go build -o "$TOOLS/kopia" github.com/kopia/kopia)
  rm -rf "$kb"
fi
KOPIA="$TOOLS/kopia"
W=$(mktemp -d "${TMPDIR:-/tmp}/sendense-bench.XXXXXX")
pids=()
cleanup() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mbps() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s / 1e6 }'; }
wait_for() { for _ in $(seq 1 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timed out: $2" >&2; return 1; }
json_field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" | head -n 1; }
hub() { "$BIN/sendense-hub" --data-dir "$W/hub" "$@"; }
# CPU time from /proc, to tell which process a step's time goes to. cpu_ticks PID: the process's
# own ticks and those of its children it has waited for (the agent's nbdkit).
TICK=$(getconf CLK_TCK)
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13, $14 + $15 }'; }
# cpu_mark: ticks of the hub, the lab (the datastore's server, ESXi's part) and the agent.
cpu_mark() { echo "$(cpu_ticks "$HUB_PID" | cut -d' ' -f1) $(cpu_ticks "$LAB_PID" | cut -d' ' -f1) $(cpu_ticks "$AGENT_PID")"; }
# cpu_split BEFORE AFTER: CPU seconds between two marks, "hub/agent/nbdkit/lab".
cpu_split() {
  awk -v t="$TICK" -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ")
    printf "%.1f/%.1f/%.1f/%.1f", (y[1] - x[1]) / t, (y[3] - x[3]) / t, (y[4] - x[4]) / t, (y[2] - x[2]) / t }'
}
GiB=$((1 << 30))
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
SIZE=$((4 * GiB))

echo "== preparing the 4 GiB lab disk" >&2
"$BIN/sendense-lab" serve --dir "$W/lab" --vm bench --disk 4GiB:zeros 2>"$W/lab.log" &
LAB_PID=$!
pids+=($LAB_PID)
for _ in $(seq 1 600); do [ -f "$W/lab/lab.json" ] && break; sleep 0.1; done
FLAT=$(tr ',' '\n' <"$W/lab/lab.json" | sed -n 's/.*"flat_path": *"\([^"]*\)".*/\1/p' | head -n 1)
[ -f "$FLAT" ] || { echo "no lab disk file" >&2; exit 1; }
head -c $((2 * GiB)) /dev/urandom | dd of="$FLAT" bs=4M conv=notrunc status=none
# The reading side of this pipe is cut off after 1 GiB: SIGPIPE there is expected.
(set +o pipefail
  find /usr/bin /usr/lib /usr/libexec -type f -size +64k 2>/dev/null | sort | xargs cat 2>/dev/null | head -c $GiB |
    dd of="$FLAT" bs=4M seek=$((2 * GiB)) oflag=seek_bytes conv=notrunc status=none)
[ "$(du -B1 --apparent-size "$FLAT" | cut -f1)" -eq $SIZE ] || { echo "the lab disk is not 4 GiB" >&2; exit 1; }
sync "$FLAT"

echo "== machine limit" >&2
"$BIN/sendense-lab" machine-limit --image "$FLAT" --size $SIZE --data $((3 * GiB)) \
  --compressible-offset $((2 * GiB)) --compressible-length $GiB >"$W/limit.tsv"
limit_mbps=$(awk -F'\t' '$1 == "limit" { print $2 }' "$W/limit.tsv")

echo "== starting hub and agent" >&2
# Without the scheduled verification and garbage collection: a hub whose catalog has never
# verified runs its first verification, which re-reads and re-hashes every chunk, a minute after
# it starts, in the middle of whichever program's step is timed then (it took 7.7 s during kopia's
# incremental in one run). restic and kopia run nothing in the background.
"$BIN/sendense-hub" serve --data-dir "$W/hub" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --log-format json --pprof \
  --verify-interval 0 --gc-interval 0 \
  ${CHUNK_DURABILITY:+--chunk-durability "$CHUNK_DURABILITY"} 2>"$W/hub.log" &
HUB_PID=$!
pids+=($HUB_PID)
wait_for "$W/hub.log" '"msg":"metrics listening"'
HUB="https://$(grep '"msg":"hub listening"' "$W/hub.log" | json_field addr)"
"$BIN/sendense-agent" enroll --token "$(hub token create --public-url "$HUB")" --state-dir "$W/agent" >/dev/null
"$BIN/sendense-lab" agent-config --dir "$W/lab" --state-dir "$W/agent" --transport file >"$W/agent.yaml"
[ -z "${UPLOAD_MEMORY_MIB:-}" ] || echo "upload_memory_mib: $UPLOAD_MEMORY_MIB" >>"$W/agent.yaml"
"$BIN/sendense-agent" run --config "$W/agent.yaml" --metrics-listen 127.0.0.1:0 --pprof --log-format json 2>"$W/agent.log" &
AGENT_PID=$!
AGENT_IDX=${#pids[@]}
pids+=($AGENT_PID)
wait_for "$W/agent.log" '"msg":"inventory pushed"'

# Backups are started through the operator API, as an operator's tooling would: the hub wakes
# the agent's waiting long poll at once.
TOKEN=$(hub apitoken create --name bench --role operator 2>/dev/null)
# Every backup, like every restore, starts with nothing of another program's left to write back
# (an untimed sync): a Sendense commit syncs its chunks, and on ext4 that can wait for the dirty
# data of a peer's run just before (the likely cause of one incremental at 1.22 s, not 0.5 s).
#
# backup_run: one Sendense backup; prints "seconds bytes_sent id".
# An optional argument is the request's body (default: the VM's next backup in the default
# repository).
backup_run() {
  local id t s out body=${1:-'{"vm":"bench"}'}
  sync
  t=$(now)
  id=$(curl -sf --cacert "$W/hub/pki/ca.crt" -H "Authorization: Bearer $TOKEN" -d "$body" "$HUB/api/v1/backups" | json_field id)
  out=$(hub backup wait "$id" 2>/dev/null)
  s=$(secs "$t" "$(now)")
  hub backup show "$id" >"$W/$id.json" 2>/dev/null
  echo "$s $(sed -n 's/^  "bytes_sent": \([0-9]*\),/\1/p' "$W/$id.json") $id"
}

export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$W/restic" RESTIC_CACHE_DIR="$W/restic-cache"
"$RESTIC" init -q
restic_backup() {
  local t
  sync
  t=$(now)
  "$RESTIC" backup -q --no-scan "$FLAT" >/dev/null
  secs "$t" "$(now)"
}

export KOPIA_PASSWORD=bench KOPIA_CONFIG_PATH="$W/kopia.config" KOPIA_CACHE_DIRECTORY="$W/kopia-cache" \
  KOPIA_CHECK_FOR_UPDATES=false KOPIA_LOG_DIR="$W/kopia-logs"
"$KOPIA" repository create filesystem --path "$W/kopia" >/dev/null 2>&1
"$KOPIA" policy set --global --compression=zstd-fastest >/dev/null 2>&1
kopia_backup() {
  local t
  sync
  t=$(now)
  "$KOPIA" snapshot create "$FLAT" >/dev/null 2>&1
  secs "$t" "$(now)"
}

echo "== full backups" >&2
c0=$(cpu_mark)
read -r s_full sent_full _ < <(backup_run)
cpu_full=$(cpu_split "$c0" "$(cpu_mark)")
echo "sendense full: ${s_full}s" >&2
r_full=$(restic_backup)
echo "restic full: ${r_full}s" >&2
k_full=$(kopia_backup)
echo "kopia full: ${k_full}s" >&2
r_size_full=$(du -sb "$W/restic" | cut -f1)

echo "== 1% of the blocks changed" >&2
"$BIN/sendense-lab" write --dir "$W/lab" --vm bench --disk disk-2000 --percent 1 --seed 7 >/dev/null
read -r s_inc sent_inc inc_id < <(backup_run)
r_inc=$(restic_backup)
k_inc=$(kopia_backup)

echo "== restores" >&2
# Each program restores twice: with its repository in the page cache (read once, untimed, before
# the restore) and with the page cache dropped (a restore of last week's backup reads its disk).
# Without either, the comparison would be lopsided: restic and kopia write their repositories
# through the page cache, and the hub writes chunks with direct I/O, so only theirs would still be
# cached from the backup. Each restore starts with nothing of another program's left to write
# back (an untimed sync). Sendense's restore ends with its output synced to disk; restic's and
# kopia's do not, so the sync of their output file is timed after their restore and the table
# gives both figures. Dropping the page cache needs root; without it the cold line is skipped.
k_snap=$("$KOPIA" snapshot list "$FLAT" --json 2>/dev/null | tr -d ' \n' | sed 's/.*"rootEntry":{[^}]*"obj":"\([^"]*\)".*/\1/')
declare -A s_rest r_rest r_sync k_rest k_sync
# restore_prepare MODE DIR: warm reads every file under DIR; cold drops the page cache.
restore_prepare() {
  sync
  if [ "$1" = warm ]; then find "$2" -type f -exec cat {} + >/dev/null; else echo 3 >/proc/sys/vm/drop_caches; fi
}
# disk_floor: what the disk alone allows a restore with the page cache dropped, just before
# Sendense's: every file of its repository read (four readers) while the image's 3 GiB of data
# are written with direct I/O, then synced. The bytes written come from the page cache (the lab
# disk, read untimed first), so only the repository's reads and the writes touch the disk.
disk_floor() {
  local t rd
  sync
  echo 3 >/proc/sys/vm/drop_caches
  cat "$FLAT" >/dev/null
  t=$(now)
  find "$W/hub/repositories" -type f -print0 | xargs -0 -r -P 4 -n 64 cat >/dev/null &
  rd=$!
  if dd if="$FLAT" of="$W/floor.raw" bs=4M count=$((3 * GiB >> 22)) oflag=direct status=none 2>/dev/null; then
    wait "$rd"
    sync "$W/floor.raw"
    s_floor=$(secs "$t" "$(now)")
  else # a file system without direct I/O (tmpfs): no figure
    wait "$rd"
  fi
  rm -f "$W/floor.raw"
}
modes=(warm)
[ -w /proc/sys/vm/drop_caches ] && modes+=(cold)
for mode in "${modes[@]}"; do
  [ "$mode" = warm ] || disk_floor
  restore_prepare "$mode" "$W/hub/repositories"
  t=$(now); hub restore --backup "$inc_id" --disk disk-2000 --output "$W/restored.raw" >/dev/null 2>&1; s_rest[$mode]=$(secs "$t" "$(now)")
  cmp "$FLAT" "$W/restored.raw" || { echo "Sendense restore differs from the disk!" >&2; exit 1; }
  rm -f "$W/restored.raw"
  restore_prepare "$mode" "$W/restic"
  t=$(now); "$RESTIC" restore -q latest --target "$W/restic-out" >/dev/null; r_rest[$mode]=$(secs "$t" "$(now)")
  t=$(now); sync "$W/restic-out$FLAT"; r_sync[$mode]=$(secs "$t" "$(now)")
  cmp "$FLAT" "$W/restic-out$FLAT" || { echo "restic restore differs from the disk!" >&2; exit 1; }
  rm -rf "$W/restic-out"
  restore_prepare "$mode" "$W/kopia"
  t=$(now); "$KOPIA" restore "$k_snap" "$W/kopia-out.raw" >/dev/null 2>&1; k_rest[$mode]=$(secs "$t" "$(now)")
  t=$(now); sync "$W/kopia-out.raw"; k_sync[$mode]=$(secs "$t" "$(now)")
  cmp "$FLAT" "$W/kopia-out.raw" || { echo "kopia restore differs from the disk!" >&2; exit 1; }
  rm -f "$W/kopia-out.raw"
  echo "restore ($mode): sendense ${s_rest[$mode]}s${s_floor:+ (the disk alone: ${s_floor}s)}, restic ${r_rest[$mode]}s + ${r_sync[$mode]}s, kopia ${k_rest[$mode]}s + ${k_sync[$mode]}s" >&2
done

hub_rss=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$HUB_PID/status")
agent_rss=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$AGENT_PID/status")
repo_size=$(du -sb "$W/hub/repositories" | cut -f1)
r_size=$(du -sb "$W/restic" | cut -f1)

k_size=$(du -sb "$W/kopia" | cut -f1)
# The peers' repositories are measured: free their space for the steps below (the whole run
# needs about 15 GB at its peak otherwise).
rm -rf "$W/restic" "$W/restic-cache" "$W/kopia" "$W/kopia-cache"

# The cost of encryption at rest: the same full backup into an encrypted repository (restic and
# kopia always encrypt), created on the running hub. After the RSS figures above, which are of
# the shipped default.
echo "== full backup into an encrypted repository" >&2
head -c 24 /dev/urandom | base64 >"$W/enc.password"
hub repo create enc --path "$W/enc" --encrypt --password-file "$W/enc.password" >/dev/null 2>&1
read -r s_enc _ _ < <(backup_run '{"vm":"bench","type":"full","repository":"enc"}')
echo "sendense encrypted full: ${s_enc}s" >&2
rm -rf "$W/enc"

# The same full backup into an S3 repository on a local SeaweedFS (scripts/s3.sh), and its
# restore: what an object store costs against the local directory on the same machine.
echo "== full backup into an S3 repository (SeaweedFS on loopback)" >&2
trap 'scripts/s3.sh stop "$W/s3" >/dev/null 2>&1 || true; cleanup' EXIT
eval "$(scripts/s3.sh start "$W/s3" | sed 's/^/export /')"
printf '%s\n%s\n' "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$W/s3.credentials"
hub repo create s3 --s3-endpoint "$S3_ENDPOINT" --s3-bucket "$S3_BUCKET" --s3-credentials-file "$W/s3.credentials" >/dev/null 2>&1
read -r s_s3 _ s3_id < <(backup_run '{"vm":"bench","type":"full","repository":"s3"}')
echo "sendense full into S3: ${s_s3}s" >&2
restore_prepare warm "$W/s3"
t=$(now); hub restore --backup "$s3_id" --disk disk-2000 --output "$W/restored-s3.raw" >/dev/null 2>&1; s_s3_rest=$(secs "$t" "$(now)")
cmp "$FLAT" "$W/restored-s3.raw" || { echo "Sendense restore from S3 differs from the disk!" >&2; exit 1; }
rm -f "$W/restored-s3.raw"

# The full backup over a wide-area link: a fresh repository each time (nothing deduplicated), first
# direct, then with the agent restarted behind a proxy: without delay, then adding the round trip.
RTT=${RTT:-100ms}
if [ "$RTT" != 0 ]; then
  echo "== full backup with $RTT round trip" >&2
  hub repo create direct --path "$W/direct" >/dev/null 2>&1
  read -r s_direct _ _ < <(backup_run '{"vm":"bench","type":"full","repository":"direct"}')
  rm -rf "$W/direct"
  # Through the proxy twice: without delay (what the proxy's own copying costs on this machine)
  # and with the round trip; the ratio of the two is what the round trip alone costs.
  for rtt in 0s "$RTT"; do
    kill -TERM "$AGENT_PID"
    wait "$AGENT_PID" 2>/dev/null || true
    [ -z "${PROXY_PID:-}" ] || { kill -TERM "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true; }
    rm -f "$W/proxy.addr"
    "$BIN/sendense-lab" latency-proxy --target "${HUB#https://}" --rtt "$rtt" >"$W/proxy.addr" &
    PROXY_PID=$!
    pids+=($PROXY_PID)
    for _ in $(seq 1 100); do [ -s "$W/proxy.addr" ] && break; sleep 0.1; done
    sed "s|^hub_url:.*||" "$W/agent.yaml" >"$W/agent-far.yaml"
    echo "hub_url: https://$(cat "$W/proxy.addr")" >>"$W/agent-far.yaml"
    "$BIN/sendense-agent" run --config "$W/agent-far.yaml" --metrics-listen 127.0.0.1:0 --log-format json 2>"$W/agent-far-$rtt.log" &
    AGENT_PID=$!
    pids[AGENT_IDX]=$AGENT_PID
    wait_for "$W/agent-far-$rtt.log" '"msg":"inventory pushed"'
    hub repo create "far-$rtt" --path "$W/far-$rtt" >/dev/null 2>&1
    read -r s_far _ _ < <(backup_run '{"vm":"bench","type":"full","repository":"far-'"$rtt"'"}')
    rm -rf "$W/far-$rtt"
    [ "$rtt" != 0s ] || s_near=$s_far
  done
  echo "sendense full direct ${s_direct}s, through the proxy ${s_near}s, with $RTT round trip ${s_far}s" >&2
fi

# The transports real installations use: the same full backup, into a fresh repository each,
# with the agent reading through the datastore's HTTPS file access (`https`) and through nbdkit's
# curl plugin (`nbd`) instead of the file transport above. TRANSPORTS=0 skips this step.
declare -A s_tr cpu_tr
if [ "${TRANSPORTS:-1}" = 1 ]; then
  for tr in https nbd; do
    echo "== full backup through the $tr transport" >&2
    kill -TERM "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true
    "$BIN/sendense-lab" agent-config --dir "$W/lab" --state-dir "$W/agent" --transport "$tr" >"$W/agent-$tr.yaml"
    [ -z "${UPLOAD_MEMORY_MIB:-}" ] || echo "upload_memory_mib: $UPLOAD_MEMORY_MIB" >>"$W/agent-$tr.yaml"
    "$BIN/sendense-agent" run --config "$W/agent-$tr.yaml" --metrics-listen 127.0.0.1:0 --log-format json 2>"$W/agent-$tr.log" &
    AGENT_PID=$!
    pids+=($AGENT_PID)
    wait_for "$W/agent-$tr.log" '"msg":"inventory pushed"'
    hub repo create "tr-$tr" --path "$W/tr-$tr" >/dev/null 2>&1
    c0=$(cpu_mark)
    read -r s_tr[$tr] _ _ < <(backup_run '{"vm":"bench","type":"full","repository":"tr-'"$tr"'"}')
    cpu_tr[$tr]=$(cpu_split "$c0" "$(cpu_mark)")
    echo "sendense full through $tr: ${s_tr[$tr]}s, CPU s hub/agent/nbdkit/lab ${cpu_tr[$tr]}" >&2
    rm -rf "$W/tr-$tr"
  done
fi

# Eight disks streaming at once, the memory bounds' test: eight VMs of 512 MiB of random data on a
# second lab, backed up at once by a second agent running eight jobs (max_parallel_jobs: 8) into a
# fresh repository. The hub's peak RSS is reset first (the figure above is of the steps before).
# EIGHT=0 skips this step.
if [ "${EIGHT:-1}" = 1 ]; then
  echo "== eight disks at once" >&2
  "$BIN/sendense-lab" serve --dir "$W/lab8" --vms 8 --disk-size 512MiB --fill random 2>"$W/lab8.log" &
  LAB8_PID=$!
  pids+=($LAB8_PID)
  for _ in $(seq 1 1200); do [ -f "$W/lab8/lab.json" ] && break; sleep 0.1; done
  [ -f "$W/lab8/lab.json" ] || { echo "the lab of eight VMs did not start: $W/lab8.log" >&2; exit 1; }
  "$BIN/sendense-agent" enroll --token "$(hub token create --public-url "$HUB")" --state-dir "$W/agent8" >/dev/null
  "$BIN/sendense-lab" agent-config --dir "$W/lab8" --state-dir "$W/agent8" --transport file >"$W/agent8.yaml"
  echo "max_parallel_jobs: 8" >>"$W/agent8.yaml"
  [ -z "${UPLOAD_MEMORY_MIB:-}" ] || echo "upload_memory_mib: $UPLOAD_MEMORY_MIB" >>"$W/agent8.yaml"
  "$BIN/sendense-agent" run --config "$W/agent8.yaml" --metrics-listen 127.0.0.1:0 --log-format json 2>"$W/agent8.log" &
  AGENT8_PID=$!
  pids+=($AGENT8_PID)
  wait_for "$W/agent8.log" '"msg":"inventory pushed"'
  hub repo create eight --path "$W/eight" >/dev/null 2>&1
  sync
  # What the hub holds before the step (buffers kept for reuse and garbage up to its soft memory
  # limit, from the steps before) counts in its peak: the table shows both.
  hub_before8=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$HUB_PID/status")
  echo 5 >"/proc/$HUB_PID/clear_refs"
  t=$(now)
  eight_ids=()
  for i in 1 2 3 4 5 6 7 8; do
    eight_ids+=("$(curl -sf --cacert "$W/hub/pki/ca.crt" -H "Authorization: Bearer $TOKEN" \
      -d '{"vm":"bench-000'"$i"'","type":"full","repository":"eight"}' "$HUB/api/v1/backups" | json_field id)")
  done
  for id in "${eight_ids[@]}"; do
    hub backup wait "$id" >/dev/null 2>&1 || { echo "backup $id of the eight disks failed" >&2; exit 1; }
  done
  s_eight=$(secs "$t" "$(now)")
  hub_rss8=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$HUB_PID/status")
  agent_rss8=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$AGENT8_PID/status")
  echo "sendense eight disks at once: ${s_eight}s, hub ${hub_rss8} MiB (${hub_before8} MiB before), agent ${agent_rss8} MiB" >&2
  # Their 4 GiB of lab disks and 4 GiB of repository are not needed for the steps after.
  kill -TERM "$AGENT8_PID" "$LAB8_PID"; wait "$AGENT8_PID" "$LAB8_PID" 2>/dev/null || true
  rm -rf "$W/eight" "$W/lab8"
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f×", a / b }'; }
# speed: how Sendense's time $2 compares with a peer's $1, as "N× faster" or "N× slower".
speed() { awk -v a="$1" -v b="$2" 'BEGIN { if (a >= b) printf "%.1f× faster", a / b; else printf "%.1f× slower", b / a }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f %%", 100 * a / b }'; }
printf '\nSendense vs restic 0.18.1 and kopia 0.21.1 (zstd-fastest), 4 GiB image (2 GiB random, 1 GiB binaries, 1 GiB hole), %s, %s cores, %s, load average before the run %s\n' \
  "$(date -u +%Y-%m-%d)" "$(nproc)" "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)" "$LOAD"
printf '| step | Sendense | restic | kopia | vs restic | vs kopia |\n|---|---|---|---|---|---|\n'
printf '| full backup | %ss, %s MB/s, %s MiB sent | %ss, %s MB/s | %ss, %s MB/s | %s | %s |\n' "$s_full" "$(mbps $SIZE "$s_full")" $((sent_full >> 20)) \
  "$r_full" "$(mbps $SIZE "$r_full")" "$k_full" "$(mbps $SIZE "$k_full")" "$(speed "$r_full" "$s_full")" "$(speed "$k_full" "$s_full")"
printf '| full backup, encrypted repository | %ss, %s MB/s (%s the plain full'"'"'s time) | | | %s | %s |\n' "$s_enc" "$(mbps $SIZE "$s_enc")" \
  "$(ratio "$s_enc" "$s_full")" "$(speed "$r_full" "$s_enc")" "$(speed "$k_full" "$s_enc")"
printf '| full backup, S3 repository (SeaweedFS on loopback) | %ss, %s MB/s (%s the local full'"'"'s time) | | | %s | %s |\n' "$s_s3" "$(mbps $SIZE "$s_s3")" \
  "$(ratio "$s_s3" "$s_full")" "$(speed "$r_full" "$s_s3")" "$(speed "$k_full" "$s_s3")"
for tr in https nbd; do
  [ -n "${s_tr[$tr]:-}" ] || continue
  printf '| full backup, %s transport | %ss, %s MB/s (%s the file transport'"'"'s time) | | | %s | %s |\n' "$tr" "${s_tr[$tr]}" "$(mbps $SIZE "${s_tr[$tr]}")" \
    "$(ratio "${s_tr[$tr]}" "$s_full")" "$(speed "$r_full" "${s_tr[$tr]}")" "$(speed "$k_full" "${s_tr[$tr]}")"
done
line="file ${cpu_full}"
for tr in https nbd; do [ -z "${cpu_tr[$tr]:-}" ] || line+="; $tr ${cpu_tr[$tr]}"; done
printf '| CPU seconds of the full backup, hub/agent/nbdkit/lab (the datastore server: ESXi'"'"'s part) | %s | | | | |\n' "$line"
printf '| backup after 1%% changed | %ss, %s MiB sent | %ss | %ss | %s | %s |\n' "$s_inc" $((sent_inc >> 20)) "$r_inc" "$k_inc" "$(speed "$r_inc" "$s_inc")" "$(speed "$k_inc" "$s_inc")"
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a + b }'; }
declare -A mode_name=([warm]="repositories in the page cache" [cold]="page cache dropped")
for mode in "${modes[@]}"; do
  printf '| restore of the latest, %s | %ss, %s MB/s (sparse, verified, synced) | %ss, %s MB/s, + %ss to sync its file | %ss, %s MB/s, + %ss to sync its file | %s (%s with its sync) | %s (%s with its sync) |\n' \
    "${mode_name[$mode]}" "${s_rest[$mode]}" "$(mbps $SIZE "${s_rest[$mode]}")" "${r_rest[$mode]}" "$(mbps $SIZE "${r_rest[$mode]}")" "${r_sync[$mode]}" \
    "${k_rest[$mode]}" "$(mbps $SIZE "${k_rest[$mode]}")" "${k_sync[$mode]}" \
    "$(speed "${r_rest[$mode]}" "${s_rest[$mode]}")" "$(speed "$(add "${r_rest[$mode]}" "${r_sync[$mode]}")" "${s_rest[$mode]}")" \
    "$(speed "${k_rest[$mode]}" "${s_rest[$mode]}")" "$(speed "$(add "${k_rest[$mode]}" "${k_sync[$mode]}")" "${s_rest[$mode]}")"
done
if [ "${#modes[@]}" = 2 ] && [ -n "${s_floor:-}" ]; then
  printf '| the disk alone, for that restore: its repository read while 3 GiB are written with direct I/O, then synced | %ss: the restore at %s of it | | | | |\n' \
    "$s_floor" "$(pct "$s_floor" "${s_rest[cold]}")"
elif [ "${#modes[@]}" = 2 ]; then
  printf '| the disk alone, for that restore | not measured: the file system refuses direct I/O | | | | |\n'
else
  printf '| restore, page cache dropped | not measured: dropping the page cache needs root | | | | |\n'
fi
printf '| restore from the S3 repository | %ss, %s MB/s (%s the local restore'"'"'s time from the page cache) | | | %s | %s |\n' "$s_s3_rest" "$(mbps $SIZE "$s_s3_rest")" \
  "$(ratio "$s_s3_rest" "${s_rest[warm]}")" "$(speed "${r_rest[warm]}" "$s_s3_rest")" "$(speed "${k_rest[warm]}" "$s_s3_rest")"
printf '| repository size | %s MiB | %s MiB (after the full: %s MiB) | %s MiB | | |\n' $((repo_size >> 20)) $((r_size >> 20)) $((r_size_full >> 20)) $((k_size >> 20))
printf '| peak RSS | hub %s MiB, agent %s MiB | | | | |\n' "$hub_rss" "$agent_rss"
[ -z "${s_eight:-}" ] || printf '| eight disks at once (8 VMs x 512 MiB random, max_parallel_jobs: 8) | %ss, %s MB/s; peak RSS hub %s MiB (%s MiB before the step), agent %s MiB | | | | |\n' \
  "$s_eight" "$(mbps $((8 << 29)) "$s_eight")" "$hub_rss8" "$hub_before8" "$agent_rss8"
[ "$RTT" = 0 ] || printf '| full backup with %s round trip (loopback proxy) | %ss, %s MB/s: %s of the %s MB/s through the proxy without delay (%ss), %s of the %s MB/s direct (%ss); fresh repositories | | | | |\n' \
  "$RTT" "$s_far" "$(mbps $SIZE "$s_far")" "$(pct "$s_near" "$s_far")" "$(mbps $SIZE "$s_near")" "$s_near" "$(pct "$s_direct" "$s_far")" "$(mbps $SIZE "$s_direct")" "$s_direct"
printf '| full backup against the machine limit | %s of %s MB/s | | | | |\n' "$(pct "$(mbps $SIZE "$s_full")" "$limit_mbps")" "$limit_mbps"
printf '\nMachine limit (rate per CPU second of each stage; the limit spreads their CPU time over %s cores)\n| stage | MB/s per core | CPU s for this image |\n|---|---|---|\n' "$(nproc)"
awk -F'\t' '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$W/limit.tsv"

[ "${DISCOVERY:-1}" = 1 ] || exit 0
echo "== discovery at scale: 1,000 VMs x 3 disks" >&2
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
pids=()
"$BIN/sendense-lab" serve --dir "$W/lab2" --vms 1000 --disks-per-vm 3 --disk-size 1GiB --fill zeros 2>"$W/lab2.log" &
pids+=($!)
for _ in $(seq 1 1200); do [ -f "$W/lab2/lab.json" ] && break; sleep 0.1; done
"$BIN/sendense-hub" serve --data-dir "$W/hub2" --listen 127.0.0.1:0 --metrics-listen "" --log-format json 2>"$W/hub2.log" &
HUB2_PID=$!
pids+=($HUB2_PID)
wait_for "$W/hub2.log" '"msg":"hub listening"'
HUB2="https://$(grep '"msg":"hub listening"' "$W/hub2.log" | json_field addr)"
"$BIN/sendense-agent" enroll --token "$("$BIN/sendense-hub" --data-dir "$W/hub2" token create --public-url "$HUB2" 2>/dev/null)" --state-dir "$W/agent2" >/dev/null 2>&1
"$BIN/sendense-lab" agent-config --dir "$W/lab2" --state-dir "$W/agent2" >"$W/agent2.yaml"
t=$(now)
/usr/bin/time -f '%M' -o "$W/agent2.rss" "$BIN/sendense-agent" discover --config "$W/agent2.yaml" --log-level warn >/dev/null 2>"$W/discover.log"
d_first=$(secs "$t" "$(now)")
t=$(now)
"$BIN/sendense-agent" discover --config "$W/agent2.yaml" --log-level warn >/dev/null 2>>"$W/discover.log"
d_again=$(secs "$t" "$(now)")
vms=$("$BIN/sendense-hub" --data-dir "$W/hub2" vms list 2>/dev/null | tail -n 1)
hub2_rss=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$HUB2_PID/status")
printf '\nDiscovery at scale (sendense-lab, 1,000 VMs x 3 disks; one `sendense-agent discover`, hub on SQLite)\n'
printf '| step | time | peak RSS |\n|---|---|---|\n'
printf '| first discovery: read vCenter, push, record 3,000 disks | %ss | agent %s MiB, hub %s MiB |\n' "$d_first" $(($(cat "$W/agent2.rss") / 1024)) "$hub2_rss"
printf '| same inventory again (no row changes) | %ss | |\n' "$d_again"
printf '| hub catalog | %s | |\n' "$vms"
