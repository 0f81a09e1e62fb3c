#!/usr/bin/env bash
# Starts (or finds) the PostgreSQL and RabbitMQ servers that the local run and the tests use.
#
#   scripts/infra.sh up      start whatever is not already reachable (installs packages as root)
#   scripts/infra.sh down    stop the servers this script started
#   scripts/infra.sh status  say what is reachable
#
# and a 3-node RabbitMQ cluster for the tests that kill brokers (see "RabbitMQ cluster" below):
#
#   scripts/infra.sh cluster-up | cluster-down | cluster-reset | cluster-status
#   scripts/infra.sh node-kill <port> | node-start <port> | node-stop <port>
#
# Each server is started only if nothing answers at its configured address. Data lives in a
# git-ignored folder of the repository (.local/), servers listen on loopback only.
#
# Opt-in TLS (the TLS tests use it; off unless set): PG_TLS_DIR, a folder with ca.crt,
# server.crt and server.key, starts PostgreSQL with ssl=on; RABBITMQ_TLS_DIR (the same three
# files) with RABBITMQ_TLS_PORT adds an amqps listener to the single node (pg-up, rabbitmq-up).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL_DIR=${OUTBOX_LOCAL_DIR:-$REPO/.local}
PG_HOST=127.0.0.1
PG_PORT=${PG_PORT:-5432}
PG_SUPERUSER_PASSWORD=${PG_SUPERUSER_PASSWORD:-postgres}
RABBITMQ_PORT=${RABBITMQ_PORT:-5672}
RABBITMQ_MANAGEMENT_PORT=${RABBITMQ_MANAGEMENT_PORT:-15672}
RABBITMQ_CLUSTER_PORTS=${RABBITMQ_CLUSTER_PORTS:-5681 5682 5683}

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
  # max_slot_wal_keep_size bounds the WAL an abandoned or stopped relay's slot can hold
  # (PostgreSQL's default keeps it all, until the disk fills); past it PostgreSQL invalidates
  # the slot and the relay says how to recover (docs/operations.md). On the command line, so
  # clusters created before this setting get it too.
  local options="-p $PG_PORT -c max_slot_wal_keep_size=${PG_MAX_SLOT_WAL_KEEP_SIZE:-4GB}"
  if [ -n "${PG_TLS_DIR:-}" ]; then
    options="$options $(pg_tls_options "$dir")" || die "PostgreSQL TLS setup failed"
  fi
  as_pg_owner "$bin/pg_ctl" -D "$data" -l "$dir/postgresql.log" -o "$options" -w -t 60 start >/dev/null \
    || { tail -n 20 "$dir/postgresql.log" >&2; die "PostgreSQL did not start (log: $dir/postgresql.log)"; }
}

# With PG_TLS_DIR: copies its certificate and key next to the cluster, where the server's user
# owns them (PostgreSQL refuses a key that others can read), and prints the server options.
pg_tls_options() {
  local dir=$1 file
  for file in ca.crt server.crt server.key; do
    [ -r "$PG_TLS_DIR/$file" ] || die "PG_TLS_DIR=$PG_TLS_DIR has no readable $file"
  done
  mkdir -p "$dir/tls"
  cp "$PG_TLS_DIR/ca.crt" "$PG_TLS_DIR/server.crt" "$PG_TLS_DIR/server.key" "$dir/tls/"
  chmod 600 "$dir/tls/server.key"
  is_root && chown -R postgres: "$dir/tls"
  echo "-c ssl=on -c ssl_ca_file=$dir/tls/ca.crt -c ssl_cert_file=$dir/tls/server.crt -c ssl_key_file=$dir/tls/server.key"
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
# Enabled on every node we start: the management API (the tests and `make` targets use it) and the
# consistent-hash exchange, which spreads shipment events over the SHIPMENT_PARTITIONS queues.
RABBITMQ_PLUGINS=(rabbitmq_management rabbitmq_consistent_hash_exchange)

# Sets the environment that points the server and rabbitmqctl at one node: AMQP port $1, management
# port $2, data folder $3, and $4 the folder of its Erlang cookie (HOME, read by the server and by
# rabbitmqctl alike: nodes that share it can cluster). The single node and the cluster nodes differ
# only in these.
rabbitmq_node_env() {
  local port=$1 management_port=$2 dir=$3 cookie_home=$4
  mkdir -p "$dir/mnesia" "$dir/log"
  export HOME=$cookie_home
  export RABBITMQ_NODENAME=outbox-$port@localhost
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$port
  export RABBITMQ_DIST_PORT=$((port + 20000))
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
listeners.tcp.default = 127.0.0.1:$port
management.tcp.ip = 127.0.0.1
management.tcp.port = $management_port
loopback_users = none
log.console = false
log.file.level = warning
CONF
  [ -f "$dir/advanced.config" ] || echo '[].' >"$dir/advanced.config"
}

# The single node (rabbitmq-up); its folder goes to RABBITMQ_DIR (not printed: exports would be lost
# in a command substitution).
rabbitmq_env() {
  RABBITMQ_DIR=$LOCAL_DIR/rabbitmq
  rabbitmq_node_env "$RABBITMQ_PORT" "$RABBITMQ_MANAGEMENT_PORT" "$RABBITMQ_DIR" "$RABBITMQ_DIR"
  if [ -n "${RABBITMQ_TLS_DIR:-}" ]; then
    rabbitmq_tls_config "$RABBITMQ_DIR"
  fi
}

# With RABBITMQ_TLS_DIR and RABBITMQ_TLS_PORT: an amqps listener besides the plain one, with the
# folder's certificate and key; client certificates are asked for but not required.
rabbitmq_tls_config() {
  local dir=$1
  [ -n "${RABBITMQ_TLS_PORT:-}" ] || die "RABBITMQ_TLS_DIR needs RABBITMQ_TLS_PORT"
  cat >>"$dir/rabbitmq.conf" <<CONF
listeners.ssl.default = 127.0.0.1:$RABBITMQ_TLS_PORT
ssl_options.cacertfile = $RABBITMQ_TLS_DIR/ca.crt
ssl_options.certfile = $RABBITMQ_TLS_DIR/server.crt
ssl_options.keyfile = $RABBITMQ_TLS_DIR/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
CONF
}

rabbitmq_bin() {
  local bin=/usr/lib/rabbitmq/bin
  [ -x "$bin/rabbitmq-server" ] && echo "$bin"
}

# Enables the plugins and starts the node that the environment points at (folder $2), in the
# background; rabbitmq_wait waits for it.
rabbitmq_start() {
  local bin=$1 dir=$2
  "$bin/rabbitmq-plugins" --offline enable "${RABBITMQ_PLUGINS[@]}" >"$dir/log/plugins.log" 2>&1 \
    || { cat "$dir/log/plugins.log" >&2; die "could not enable ${RABBITMQ_PLUGINS[*]}"; }
  # A session of its own: the broker outlives the shell (or test) that started it, also when that
  # caller's process group is killed (pg_ctl daemonizes PostgreSQL the same way).
  setsid nohup "$bin/rabbitmq-server" >"$dir/log/server.out" 2>&1 </dev/null &
}

# Waits until a node's AMQP port $1 and management port $2 answer (folder $3, for its logs).
rabbitmq_wait() {
  local port=$1 management_port=$2 dir=$3 timeout=120
  local deadline=$((SECONDS + timeout))
  until port_open 127.0.0.1 "$port" && port_open 127.0.0.1 "$management_port"; do
    if [ $SECONDS -ge $deadline ]; then
      tail -n 30 "$dir/log/server.out" >&2
      die "RabbitMQ on 127.0.0.1:$port did not start within $timeout s (logs: $dir/log)"
    fi
    sleep 0.5
  done
}

# The pid of node $2's Erlang VM from the pid file in folder $1, if that process is still this
# node: after a SIGKILL or a reboot the file stays, and its pid may name another process by now.
rabbitmq_pid() {
  local dir=$1 node=$2 pid
  pid=$(cat "$dir/rabbitmq.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/environ" ] || return 1
  tr '\0' '\n' <"/proc/$pid/environ" | grep -qxF "RABBITMQ_NODENAME=$node" || return 1
  echo "$pid"
}

# Stops the node that the environment points at (folder $2): gracefully (rabbitmqctl waits for the
# VM to exit when given its pid file), else SIGTERM, which the VM also takes as a clean shutdown.
rabbitmq_stop() {
  local bin=$1 dir=$2 pid
  pid=$(rabbitmq_pid "$dir" "$RABBITMQ_NODENAME") || return 0
  log "stopping RabbitMQ node $RABBITMQ_NODENAME"
  "$bin/rabbitmqctl" stop "$dir/rabbitmq.pid" >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && { log "$RABBITMQ_NODENAME still running after 60 s: killing it"; kill -KILL "$pid" || true; }
  return 0
}

# A node that was already running has the plugins of the day it was started: the consistent-hash
# exchange came later, so enable it now if the node is ours (our cookie gets us in); a node that is
# not (another setup's, a package's) is left alone.
rabbitmq_enable_online() {
  local bin dir
  if bin=$(rabbitmq_bin); then
    rabbitmq_env
    dir=$RABBITMQ_DIR
    "$bin/rabbitmq-plugins" enable --online "${RABBITMQ_PLUGINS[@]}" >"$dir/log/plugins.log" 2>&1 && return
  fi
  log "warning: could not enable rabbitmq_consistent_hash_exchange on the RabbitMQ at 127.0.0.1:$RABBITMQ_PORT (not started by this script); it must be enabled for SHIPMENT_PARTITIONS > 1"
}

rabbitmq_up() {
  if port_open 127.0.0.1 "$RABBITMQ_PORT"; then
    log "RabbitMQ already reachable at 127.0.0.1:$RABBITMQ_PORT; using it"
    rabbitmq_enable_online
    return
  fi
  local bin dir
  bin=$(rabbitmq_bin) || true
  if [ -z "$bin" ]; then
    apt_install rabbitmq-server
    bin=$(rabbitmq_bin) || die "RabbitMQ binaries not found after install"
    if port_open 127.0.0.1 "$RABBITMQ_PORT"; then
      log "RabbitMQ started by its package at 127.0.0.1:$RABBITMQ_PORT"
      rabbitmq_enable_online
      return
    fi
  fi
  rabbitmq_env
  dir=$RABBITMQ_DIR
  log "starting RabbitMQ on 127.0.0.1:$RABBITMQ_PORT (management on $RABBITMQ_MANAGEMENT_PORT)"
  rabbitmq_start "$bin" "$dir"
  rabbitmq_wait "$RABBITMQ_PORT" "$RABBITMQ_MANAGEMENT_PORT" "$dir"
}

rabbitmq_down() {
  local bin
  bin=$(rabbitmq_bin) || return 0
  [ -d "$LOCAL_DIR/rabbitmq" ] || return 0
  rabbitmq_env
  rabbitmq_stop "$bin" "$RABBITMQ_DIR"
}

# ---------------------------------------------------------- RabbitMQ cluster
# Three nodes on loopback for the tests that kill a broker under load. Node k: AMQP port k of
# RABBITMQ_CLUSTER_PORTS, management port + 10000, distribution port + 20000, name
# outbox-<port>@localhost, data in $CLUSTER_DIR/<port>. Nodes of a cluster must share one Erlang
# cookie: it lives in $CLUSTER_DIR, HOME of the three nodes and of rabbitmqctl.
CLUSTER_DIR=$LOCAL_DIR/rabbitmq-cluster
read -r -a CLUSTER_PORTS <<<"${RABBITMQ_CLUSTER_PORTS//,/ }"

cluster_check_ports() {
  local port
  [ ${#CLUSTER_PORTS[@]} -gt 0 ] || die "RABBITMQ_CLUSTER_PORTS is empty"
  for port in "${CLUSTER_PORTS[@]}"; do
    if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -eq 0 ] || [ $((port + 20000)) -gt 65535 ]; then
      die "bad port '$port' in RABBITMQ_CLUSTER_PORTS (its distribution port, + 20000, must be a port too)"
    fi
  done
}

cluster_node() { echo "outbox-$1@localhost"; }

# Points the environment at the cluster node with AMQP port $1; its folder goes to NODE_DIR.
cluster_node_env() {
  NODE_DIR=$CLUSTER_DIR/$1
  rabbitmq_node_env "$1" $(($1 + 10000)) "$NODE_DIR" "$CLUSTER_DIR"
}

# The node names in one list ($1: running_nodes, disk_nodes) of `cluster_status --formatter json`
# on node $2, one a line; nothing if that node does not answer. (No jq: not on every machine.)
cluster_nodes() {
  local bin
  bin=$(rabbitmq_bin) || return 0
  { "$bin/rabbitmqctl" -n "$2" cluster_status --formatter json 2>/dev/null || true; } \
    | { grep -o "\"$1\":\[[^]]*\]" || true; } | { grep -o 'outbox-[0-9]*@[A-Za-z0-9._-]*' || true; } | sort
}

# Starts the node with AMQP port $1 unless it answers or is booting already; does not wait.
cluster_node_start() {
  local bin=$1 port=$2
  if port_open 127.0.0.1 "$port"; then
    log "RabbitMQ node already reachable at 127.0.0.1:$port; using it"
    return
  fi
  cluster_node_env "$port"
  if rabbitmq_pid "$NODE_DIR" "$RABBITMQ_NODENAME" >/dev/null; then
    log "RabbitMQ node $RABBITMQ_NODENAME is booting already"
    return
  fi
  # A node whose folder already holds the cluster's database rejoins the cluster by itself.
  log "starting RabbitMQ node $RABBITMQ_NODENAME (management on $((port + 10000)))"
  rabbitmq_start "$bin" "$NODE_DIR"
}

cluster_node_wait() {
  cluster_node_env "$1"
  rabbitmq_wait "$1" $(($1 + 10000)) "$NODE_DIR"
}

cluster_up() {
  cluster_check_ports
  local bin port node first
  bin=$(rabbitmq_bin) || { apt_install rabbitmq-server; bin=$(rabbitmq_bin) || die "RabbitMQ binaries not found after install"; }
  mkdir -p "$CLUSTER_DIR"
  if [ ! -f "$CLUSTER_DIR/.erlang.cookie" ]; then
    # Written before any node starts: each would otherwise make one of its own.
    (umask 077 && head -c 32 /dev/urandom | md5sum | cut -c1-20 >"$CLUSTER_DIR/.erlang.cookie")
    chmod 400 "$CLUSTER_DIR/.erlang.cookie"
  fi
  # All at once: a node that was clustered waits at boot for the peer that stopped last, so
  # restarting the nodes one after another could wait minutes.
  for port in "${CLUSTER_PORTS[@]}"; do cluster_node_start "$bin" "$port"; done
  for port in "${CLUSTER_PORTS[@]}"; do cluster_node_wait "$port"; done
  first=$(cluster_node "${CLUSTER_PORTS[0]}")
  # A fresh node boots as a cluster of its own: join it to the first node's.
  for port in "${CLUSTER_PORTS[@]:1}"; do
    node=$(cluster_node "$port")
    cluster_nodes disk_nodes "$first" | grep -qxF "$node" && continue
    log "joining $node to $first"
    { "$bin/rabbitmqctl" -n "$node" stop_app \
        && "$bin/rabbitmqctl" -n "$node" join_cluster "$first" \
        && "$bin/rabbitmqctl" -n "$node" start_app; } >"$CLUSTER_DIR/$port/log/join.log" 2>&1 \
      || { cat "$CLUSTER_DIR/$port/log/join.log" >&2; die "could not join $node to $first"; }
  done
  local deadline=$((SECONDS + 120)) running missing
  while :; do
    running=$(cluster_nodes running_nodes "$first")
    missing=
    for port in "${CLUSTER_PORTS[@]}"; do
      grep -qxF "$(cluster_node "$port")" <<<"$running" || missing="$missing $(cluster_node "$port")"
    done
    [ -z "$missing" ] && break
    [ $SECONDS -ge $deadline ] && die "not running in the cluster of $first after 120 s:$missing"
    sleep 1
  done
  local urls=()
  for port in "${CLUSTER_PORTS[@]}"; do urls+=("amqp://guest:guest@127.0.0.1:$port"); done
  log "RabbitMQ cluster up: $(IFS=,; echo "${urls[*]}")"
}

cluster_down() {
  cluster_check_ports
  local bin port
  bin=$(rabbitmq_bin) || return 0
  [ -d "$CLUSTER_DIR" ] || return 0
  # In parallel: a stop takes several seconds; cluster-up starts them all at once again anyway.
  local pids=()
  for port in "${CLUSTER_PORTS[@]}"; do
    [ -d "$CLUSTER_DIR/$port" ] || continue
    (cluster_node_env "$port" && rabbitmq_stop "$bin" "$NODE_DIR") &
    pids+=($!)
  done
  [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"
}

cluster_reset() {
  cluster_down
  log "deleting $CLUSTER_DIR"
  rm -rf "$CLUSTER_DIR"
}

# The running nodes, one a line on stdout, as the first node that answers sees them.
cluster_status() {
  cluster_check_ports
  local port running
  [ -d "$CLUSTER_DIR" ] || die "no RabbitMQ cluster in $CLUSTER_DIR"
  cluster_node_env "${CLUSTER_PORTS[0]}"   # HOME (the cookie) and epmd for rabbitmqctl
  for port in "${CLUSTER_PORTS[@]}"; do
    running=$(cluster_nodes running_nodes "$(cluster_node "$port")")
    if [ -n "$running" ]; then
      echo "$running"
      log "RabbitMQ cluster: $(wc -l <<<"$running") of ${#CLUSTER_PORTS[@]} nodes running (as $(cluster_node "$port") sees it)"
      return
    fi
  done
  die "no node of the RabbitMQ cluster answers (ports ${CLUSTER_PORTS[*]})"
}

# Checks that $1 is the AMQP port of a cluster node that has a folder ($2: the command, for usage).
cluster_node_arg() {
  [[ ${1:-} =~ ^[0-9]+$ ]] || die "usage: infra.sh $2 <AMQP port of a cluster node>"
  [ -d "$CLUSTER_DIR/$1" ] || die "no RabbitMQ cluster node with AMQP port $1 in $CLUSTER_DIR"
}

# A crash: SIGKILL to the node's Erlang VM, no chance to leave the cluster cleanly.
node_kill() {
  cluster_node_arg "${1:-}" node-kill
  local port=$1 pid
  cluster_node_env "$port"
  pid=$(rabbitmq_pid "$NODE_DIR" "$RABBITMQ_NODENAME") || die "$RABBITMQ_NODENAME is not running"
  log "killing RabbitMQ node $RABBITMQ_NODENAME (pid $pid)"
  kill -KILL "$pid"
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null || port_open 127.0.0.1 "$port"; do
    [ $SECONDS -ge $deadline ] && die "$RABBITMQ_NODENAME still there 30 s after SIGKILL"
    sleep 0.2
  done
}

node_start() {
  cluster_node_arg "${1:-}" node-start
  local bin
  bin=$(rabbitmq_bin) || die "RabbitMQ is not installed"
  cluster_node_start "$bin" "$1"
  cluster_node_wait "$1"
}

node_stop() {
  cluster_node_arg "${1:-}" node-stop
  local bin
  bin=$(rabbitmq_bin) || die "RabbitMQ is not installed"
  cluster_node_env "$1"
  rabbitmq_stop "$bin" "$NODE_DIR"
}

# ------------------------------------------------------------------- tools
# promtool checks the Prometheus alert rules in the tests; Debian's prometheus package has it.
tools_up() {
  if command -v promtool >/dev/null; then
    return
  fi
  if is_root; then
    apt_install prometheus
  else
    log "promtool not found (the alert rules' check is skipped): sudo apt-get install -y prometheus"
  fi
}

case "${1:-up}" in
  up) pg_up; rabbitmq_up ;;
  tools) tools_up ;;
  pg-up) pg_up ;;
  rabbitmq-up) rabbitmq_up ;;
  down) rabbitmq_down; pg_down ;;
  pg-down) pg_down ;;
  rabbitmq-down) rabbitmq_down ;;
  rabbitmqctl) shift; rabbitmq_env; exec "$(rabbitmq_bin)/rabbitmqctl" "$@" ;;
  status)
    port_open "$PG_HOST" "$PG_PORT" && log "PostgreSQL: up at $PG_HOST:$PG_PORT" || log "PostgreSQL: down"
    port_open 127.0.0.1 "$RABBITMQ_PORT" && log "RabbitMQ: up at 127.0.0.1:$RABBITMQ_PORT" || log "RabbitMQ: down" ;;
  cluster-up) cluster_up ;;
  cluster-down) cluster_down ;;
  cluster-reset) cluster_reset ;;
  cluster-status) cluster_status ;;
  node-kill) node_kill "${2:-}" ;;
  node-start) node_start "${2:-}" ;;
  node-stop) node_stop "${2:-}" ;;
  *) die "unknown command '$1' (up, down, status, tools, pg-up, rabbitmq-up, pg-down, rabbitmq-down, rabbitmqctl, cluster-up, cluster-down, cluster-reset, cluster-status, node-kill <port>, node-start <port>, node-stop <port>)" ;;
esac
