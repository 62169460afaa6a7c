#!/usr/bin/env bash
# Starts a private MariaDB server for tests (no systemd), installing mariadb-server with apt when
# it is missing, and prints the DSN that SENDENSE_TEST_MYSQL_DSN expects. Idempotent: a server
# already answering on the socket is reused.
#
#   eval "$(scripts/mariadb.sh env)"    # export SENDENSE_TEST_MYSQL_DSN
#   scripts/mariadb.sh stop
set -euo pipefail

base=${SENDENSE_MARIADB_DIR:-/tmp/sendense-mariadb}
port=${SENDENSE_MARIADB_PORT:-33061}
sock="$base/mysqld.sock"
user=sendense
pass=sendense-test

log() { echo "mariadb.sh: $*" >&2; }

install() {
  if command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; then return; fi
  log "installing mariadb-server with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq mariadb-server >&2
}

alive() { mariadb-admin --socket="$sock" --user=root ping >/dev/null 2>&1; }

start() {
  install
  if alive; then return; fi
  mkdir -p "$base"
  if [ ! -d "$base/data/mysql" ]; then
    log "initialising $base/data"
    mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$base/data" \
      --auth-root-authentication-method=socket >"$base/install.log" 2>&1 ||
      { cat "$base/install.log" >&2; exit 1; }
  fi
  log "starting mariadbd on 127.0.0.1:$port"
  # --user is required when running as root; it is ignored otherwise.
  nohup /usr/sbin/mariadbd --no-defaults --user="$(id -un)" --datadir="$base/data" \
    --socket="$sock" --port="$port" --bind-address=127.0.0.1 --pid-file="$base/mysqld.pid" \
    --skip-name-resolve --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=2 \
    --max-connections=500 --log-error="$base/error.log" >/dev/null 2>&1 &
  local pid=$!
  # Wait while it starts; a server that exits (its port taken, say) fails at once.
  for _ in $(seq 1 120); do
    alive && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  alive || { log "mariadbd did not start; see $base/error.log"; tail -20 "$base/error.log" >&2; exit 1; }
  mariadb --socket="$sock" --user=root <<SQL
CREATE USER IF NOT EXISTS '$user'@'127.0.0.1' IDENTIFIED BY '$pass';
GRANT ALL PRIVILEGES ON *.* TO '$user'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
}

case "${1:-env}" in
  env)
    start
    echo "export SENDENSE_TEST_MYSQL_DSN='$user:$pass@tcp(127.0.0.1:$port)/'"
    ;;
  start) start ;;
  stop)
    if [ -f "$base/mysqld.pid" ]; then kill "$(cat "$base/mysqld.pid")" 2>/dev/null || true; fi
    ;;
  *) echo "usage: $0 env|start|stop" >&2; exit 2 ;;
esac
