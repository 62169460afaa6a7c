#!/usr/bin/env bash
# Runs a private S3 server for tests and trials: SeaweedFS (`weed mini`, built once into .tools/
# by scripts/tools.sh) on loopback, telemetry off, with one generated identity and one bucket.
#
#   scripts/s3.sh start DIR   # start (or find running) the server whose data is in DIR and print
#                             # S3_ENDPOINT=… S3_ACCESS_KEY=… S3_SECRET_KEY=… S3_BUCKET=… lines
#   scripts/s3.sh stop DIR    # stop it (SIGTERM, then SIGKILL after 20 s)
#
# DIR keeps the data, the identity (s3.json) and the ports (s3.env) across stops: a server
# started again in the same DIR has the same endpoint, credentials, bucket and objects. A start
# while the server of DIR runs prints its lines and starts nothing. The ports are chosen free at
# the first start: S3, master, volume and filer, each with its gRPC port 10000 above.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WEED="$ROOT/.tools/weed"

log() { echo "s3.sh: $*" >&2; }
usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }

[ $# -eq 2 ] || usage
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)
pidfile="$dir/weed.pid"
envfile="$dir/s3.env"
# One start or stop of DIR at a time: two concurrent starts must not start two servers.
exec 9>"$dir/s3.lock"
flock 9

# running succeeds while the server of DIR runs. The cmdline check keeps a reused pid from
# counting; the server this script just started (starting) counts before it has exec'd weed,
# since its cmdline is still this script's for a moment after the fork.
starting=
running() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1 # exited, not yet reaped
  grep -q weed "/proc/$pid/cmdline" 2>/dev/null || [ "$pid" = "$starting" ]
}

# port_free: nothing listens on the port. (Connections of a server killed in DIR may linger
# on its ports; weed binds over those. pick_port keeps ports out of the range the kernel hands
# to outgoing connections.)
port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

# pick_port prints a free port p from 20000 whose gRPC companion p+10000 is free too, that
# differs from the ports given as arguments and that the kernel never hands out to outgoing
# connections: both stay below the ephemeral range (32768 and up by default), or a busy machine
# can take a companion between this check and weed's bind, and weed exits.
pick_port() {
  local p lo span
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
  span=$((lo - 10000 - 20000))
  [ "$span" -ge 100 ] || span=10000
  span=$((span < 10000 ? span : 10000))
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % span))
    case " $* " in *" $p "*) continue ;; esac
    if port_free "$p" && port_free $((p + 10000)); then
      echo "$p"
      return
    fi
  done
  log "no free port pair found"
  exit 1
}

# answers succeeds when a signed ListObjectsV2 of the bucket returns 200: the server is up, checks
# the identity and has the bucket.
answers() {
  curl -fsS -o /dev/null --max-time 3 --aws-sigv4 "aws:amz:us-east-1:s3" \
    --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" "$S3_ENDPOINT/$S3_BUCKET?list-type=2&max-keys=1" 2>/dev/null
}

start() {
  if [ ! -f "$envfile" ]; then
    local s3 master volume filer key secret
    s3=$(pick_port)
    master=$(pick_port "$s3")
    volume=$(pick_port "$s3" "$master")
    filer=$(pick_port "$s3" "$master" "$volume")
    key=$(head -c 15 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
    secret=$(head -c 30 /dev/urandom | base64 | tr -d '/+=\n')
    umask 077
    cat >"$dir/s3.json" <<JSON
{"identities":[{"name":"sendense","credentials":[{"accessKey":"$key","secretKey":"$secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
    cat >"$envfile.partial" <<ENV
S3_ENDPOINT=http://127.0.0.1:$s3
S3_ACCESS_KEY=$key
S3_SECRET_KEY=$secret
S3_BUCKET=sendense-test
S3_MASTER_PORT=$master
S3_VOLUME_PORT=$volume
S3_FILER_PORT=$filer
ENV
    mv "$envfile.partial" "$envfile"
  fi
  # shellcheck disable=SC1090
  . "$envfile"
  export S3_ENDPOINT S3_ACCESS_KEY S3_SECRET_KEY S3_BUCKET
  if running; then
    if answers; then
      print
      return
    fi
  else
    [ -x "$WEED" ] || scripts/tools.sh weed
    local s3port=${S3_ENDPOINT##*:}
    for p in "$s3port" "$S3_MASTER_PORT" "$S3_VOLUME_PORT" "$S3_FILER_PORT"; do
      port_free "$p" || { log "port $p of $dir is taken by another process"; exit 1; }
    done
    mkdir -p "$dir/data"
    log "starting weed mini in $dir (S3 on $S3_ENDPOINT)"
    # setsid: the server outlives the shell that started it and gets no terminal signals.
    setsid nohup "$WEED" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -master.telemetry=false -webdav=false -admin.ui=false \
      -s3.config="$dir/s3.json" -bucket="$S3_BUCKET" \
      -s3.port="$s3port" -s3.port.iceberg=0 -s3.port.lance=0 \
      -master.port="$S3_MASTER_PORT" -volume.port="$S3_VOLUME_PORT" -filer.port="$S3_FILER_PORT" \
      >"$dir/weed.log" 2>&1 </dev/null 9>&- &
    starting=$!
    echo "$starting" >"$pidfile"
  fi
  for _ in $(seq 1 120); do
    if answers; then
      print
      return
    fi
    running || { log "weed exited; last lines of $dir/weed.log:"; tail -20 "$dir/weed.log" >&2; exit 1; }
    sleep 0.5
  done
  log "S3 did not answer within 60 s; see $dir/weed.log"
  exit 1
}

print() {
  echo "S3_ENDPOINT=$S3_ENDPOINT"
  echo "S3_ACCESS_KEY=$S3_ACCESS_KEY"
  echo "S3_SECRET_KEY=$S3_SECRET_KEY"
  echo "S3_BUCKET=$S3_BUCKET"
}

stop() {
  if ! running; then
    rm -f "$pidfile"
    return
  fi
  local pid
  pid=$(cat "$pidfile")
  kill -TERM "$pid"
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "weed $pid did not stop within 20 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
