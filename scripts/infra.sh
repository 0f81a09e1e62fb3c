#!/usr/bin/env bash
# Starts (or finds) the PostgreSQL and RabbitMQ servers that the local run and the tests use.
#
#   scripts/infra.sh up      start whatever is not already reachable (installs packages as root)
#   scripts/infra.sh down    stop the servers this script started
#   scripts/infra.sh status  say what is reachable
#
# Each server is started only if nothing answers at its configured address. Data lives in a
# git-ignored folder of the repository (.local/), servers listen on loopback only.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL_DIR=${OUTBOX_LOCAL_DIR:-$REPO/.local}
PG_HOST=127.0.0.1
PG_PORT=${PG_PORT:-5432}
PG_SUPERUSER_PASSWORD=${PG_SUPERUSER_PASSWORD:-postgres}
RABBITMQ_PORT=${RABBITMQ_PORT:-5672}
RABBITMQ_MANAGEMENT_PORT=${RABBITMQ_MANAGEMENT_PORT:-15672}

log() { printf '[infra] %s\n' "$*" >&2; }
die() { printf '[infra] error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

apt_install() {
  if ! is_root; then
    die "$1 is not installed. Install it with: sudo apt-get install -y $*"
  fi
  log "installing $* with apt-get"
  if [ ! -f "$LOCAL_DIR/.apt-updated" ]; then
    apt-get update -qq >&2
    mkdir -p "$LOCAL_DIR" && touch "$LOCAL_DIR/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# ---------------------------------------------------------------- PostgreSQL
pg_bin_dir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && echo "$dir"
}

# Runs a PostgreSQL server command as the `postgres` OS user when we are root (the server
# refuses to run as root), as ourselves otherwise.
as_pg_owner() {
  if is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Where the cluster goes when the postgres user cannot reach LOCAL_DIR: one folder per LOCAL_DIR,
# so a private cluster (another OUTBOX_LOCAL_DIR) never touches the shared one.
fallback_dir() {
  echo "/var/tmp/outbox-local-$(printf '%s' "$LOCAL_DIR" | md5sum | cut -c1-8)"
}

pg_dir() {
  local dir=$LOCAL_DIR/pg
  if is_root; then
    mkdir -p "$dir"
    chown postgres: "$dir"
    # The postgres user must be able to reach the folder; a checkout under a private home
    # directory may not allow that, so fall back to a folder outside it.
    if ! runuser -u postgres -- test -w "$dir"; then
      dir=$(fallback_dir)/pg
      mkdir -p "$dir" && chown postgres: "$dir"
    fi
  else
    mkdir -p "$dir"
  fi
  echo "$dir"
}

pg_up() {
  if port_open "$PG_HOST" "$PG_PORT"; then
    log "PostgreSQL already reachable at $PG_HOST:$PG_PORT; using it"
    return
  fi
  local bin
  bin=$(pg_bin_dir) || true
  if [ -z "$bin" ]; then
    apt_install postgresql
    bin=$(pg_bin_dir) || die "PostgreSQL binaries not found after install"
  fi
  # Debian's package may start its own cluster on 5432; if so, use it only if it is configured
  # for logical replication, which we check below like any reachable server.
  if port_open "$PG_HOST" "$PG_PORT"; then
    log "PostgreSQL started by its package at $PG_HOST:$PG_PORT"
    return
  fi
  local dir data
  dir=$(pg_dir)
  data=$dir/data
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initialising a PostgreSQL cluster in $data"
    printf '%s\n' "$PG_SUPERUSER_PASSWORD" > "$dir/pwfile"
    is_root && chown postgres: "$dir/pwfile"
    as_pg_owner "$bin/initdb" -D "$data" -U postgres --pwfile="$dir/pwfile" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    rm -f "$dir/pwfile"
    mkdir -p "$dir/run" && { is_root && chown postgres: "$dir/run" || true; }
    cat >>"$data/postgresql.conf" <<CONF
# --- outbox project settings ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/run'
wal_level = logical
max_replication_slots = 100
max_wal_senders = 100
max_connections = 300
wal_sender_timeout = 60s
CONF
  fi
  # The port can differ from the one the cluster was created with.
  log "starting PostgreSQL on $PG_HOST:$PG_PORT"
  as_pg_owner "$bin/pg_ctl" -D "$data" -l "$dir/postgresql.log" -o "-p $PG_PORT" -w -t 60 start >/dev/null \
    || { tail -n 20 "$dir/postgresql.log" >&2; die "PostgreSQL did not start (log: $dir/postgresql.log)"; }
}

pg_down() {
  local bin dir
  bin=$(pg_bin_dir) || return 0
  for dir in "$LOCAL_DIR/pg" "$(fallback_dir)/pg"; do
    if [ -f "$dir/data/postmaster.pid" ]; then
      log "stopping PostgreSQL ($dir/data)"
      as_pg_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
  done
}

# ------------------------------------------------------------------ RabbitMQ
# Sets the environment that points the server and rabbitmqctl at our node; the folder goes to
# RABBITMQ_DIR (not printed: exports would be lost in a command substitution).
rabbitmq_env() {
  RABBITMQ_DIR=$LOCAL_DIR/rabbitmq
  local dir=$RABBITMQ_DIR
  mkdir -p "$dir/mnesia" "$dir/log"
  export HOME=$dir   # the Erlang cookie lives here, shared by the server and rabbitmqctl
  export RABBITMQ_NODENAME=outbox-$RABBITMQ_PORT@localhost
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$RABBITMQ_PORT
  export RABBITMQ_DIST_PORT=$((RABBITMQ_PORT + 20000))
  export RABBITMQ_MNESIA_BASE=$dir/mnesia
  export RABBITMQ_LOG_BASE=$dir/log
  export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
  export RABBITMQ_CONFIG_FILE=$dir/rabbitmq
  export RABBITMQ_PID_FILE=$dir/rabbitmq.pid
  export RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config
  export ERL_EPMD_ADDRESS=127.0.0.1
  # Erlang distribution (inter-node) listener on loopback too, not on every interface.
  # Without busy-waiting schedulers: on a small host shared with PostgreSQL and the services,
  # spinning Erlang schedulers take CPU time the others need (RabbitMQ docs, "Runtime").
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none"
  cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$RABBITMQ_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $RABBITMQ_MANAGEMENT_PORT
loopback_users = none
log.console = false
log.file.level = warning
CONF
  [ -f "$dir/advanced.config" ] || echo '[].' >"$dir/advanced.config"
}

rabbitmq_bin() {
  local bin=/usr/lib/rabbitmq/bin
  [ -x "$bin/rabbitmq-server" ] && echo "$bin"
}

rabbitmq_up() {
  if port_open 127.0.0.1 "$RABBITMQ_PORT"; then
    log "RabbitMQ already reachable at 127.0.0.1:$RABBITMQ_PORT; using it"
    return
  fi
  local bin dir
  bin=$(rabbitmq_bin) || true
  if [ -z "$bin" ]; then
    apt_install rabbitmq-server
    bin=$(rabbitmq_bin) || die "RabbitMQ binaries not found after install"
    if port_open 127.0.0.1 "$RABBITMQ_PORT"; then
      log "RabbitMQ started by its package at 127.0.0.1:$RABBITMQ_PORT"
      return
    fi
  fi
  rabbitmq_env
  dir=$RABBITMQ_DIR
  "$bin/rabbitmq-plugins" --offline enable rabbitmq_management >"$dir/log/plugins.log" 2>&1 \
    || { cat "$dir/log/plugins.log" >&2; die "could not enable rabbitmq_management"; }
  log "starting RabbitMQ on 127.0.0.1:$RABBITMQ_PORT (management on $RABBITMQ_MANAGEMENT_PORT)"
  # A session of its own: the broker outlives the shell (or test) that started it, also when that
  # caller's process group is killed (pg_ctl daemonizes PostgreSQL the same way).
  setsid nohup "$bin/rabbitmq-server" >"$dir/log/server.out" 2>&1 </dev/null &
  local deadline=$((SECONDS + 120))
  until port_open 127.0.0.1 "$RABBITMQ_PORT" && port_open 127.0.0.1 "$RABBITMQ_MANAGEMENT_PORT"; do
    if [ $SECONDS -ge $deadline ]; then
      tail -n 30 "$dir/log/server.out" >&2
      die "RabbitMQ did not start within 120 s (logs: $dir/log)"
    fi
    sleep 0.5
  done
}

rabbitmq_down() {
  local bin dir
  bin=$(rabbitmq_bin) || return 0
  [ -d "$LOCAL_DIR/rabbitmq" ] || return 0
  rabbitmq_env
  dir=$RABBITMQ_DIR
  if [ -f "$dir/rabbitmq.pid" ] && kill -0 "$(cat "$dir/rabbitmq.pid")" 2>/dev/null; then
    log "stopping RabbitMQ"
    "$bin/rabbitmqctl" stop >/dev/null 2>&1 || kill "$(cat "$dir/rabbitmq.pid")" || true
  fi
}

case "${1:-up}" in
  up) pg_up; rabbitmq_up ;;
  pg-up) pg_up ;;
  rabbitmq-up) rabbitmq_up ;;
  down) rabbitmq_down; pg_down ;;
  pg-down) pg_down ;;
  rabbitmq-down) rabbitmq_down ;;
  rabbitmqctl) shift; rabbitmq_env; exec "$(rabbitmq_bin)/rabbitmqctl" "$@" ;;
  status)
    port_open "$PG_HOST" "$PG_PORT" && log "PostgreSQL: up at $PG_HOST:$PG_PORT" || log "PostgreSQL: down"
    port_open 127.0.0.1 "$RABBITMQ_PORT" && log "RabbitMQ: up at 127.0.0.1:$RABBITMQ_PORT" || log "RabbitMQ: down" ;;
  *) die "unknown command '$1' (up, down, status, pg-up, rabbitmq-up, pg-down, rabbitmq-down, rabbitmqctl)" ;;
esac
