#!/usr/bin/env bash
# Runs the whole system on this machine without Docker:
#   PostgreSQL + RabbitMQ (scripts/infra.sh) → shipment-service (declares the RabbitMQ topology)
#   → order-service (creates orderdb and its tables) → scripts/provision-relay-role.sh (the relay's
#   least-privilege role and its publication) → outbox-relay (streams orders.outbox_event as that role).
#
#   scripts/up.sh          foreground: each service's log lines prefixed with its name; Ctrl-C stops all
#   scripts/up.sh detach   background: logs in .local/logs/<service>.log; `scripts/up.sh down` stops
#   scripts/up.sh down     stops the services started in the background (the servers keep running;
#                          `make infra-down` stops those)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL_DIR=${OUTBOX_LOCAL_DIR:-$REPO/.local}
LOG_DIR=$LOCAL_DIR/logs
PID_DIR=$LOCAL_DIR/pids
PROFILE=${PROFILE:-dev}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
BIN_DIR=$TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
SERVICES=(shipment-service order-service outbox-relay)

log() { printf '[up] %s\n' "$*" >&2; }
die() { printf '[up] error: %s\n' "$*" >&2; exit 1; }

stop_background() {
  local name pid
  for name in outbox-relay order-service shipment-service; do
    [ -f "$PID_DIR/$name.pid" ] || continue
    pid=$(cat "$PID_DIR/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_DIR/$name.pid"
  done
}

wait_healthy() { # name url
  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null "$2" 2>/dev/null; do
    if [ -f "$PID_DIR/$1.pid" ] && ! kill -0 "$(cat "$PID_DIR/$1.pid")" 2>/dev/null; then
      tail -n 20 "$LOG_DIR/$1.log" >&2 || true
      die "$1 exited during start-up (log: $LOG_DIR/$1.log)"
    fi
    [ $SECONDS -lt $deadline ] || die "$1 not healthy at $2 after 60 s (log: $LOG_DIR/$1.log)"
    sleep 0.2
  done
  log "$1 is healthy ($2)"
}

# Starts one service in the background, its output appended to its log file.
start_service() { # name health-url env...
  local name=$1 url=$2; shift 2
  : >"$LOG_DIR/$name.log"
  env "$@" "$BIN_DIR/$name" >>"$LOG_DIR/$name.log" 2>&1 &
  echo $! >"$PID_DIR/$name.pid"
  wait_healthy "$name" "$url"
}

mode=${1:-foreground}
case "$mode" in
  down) stop_background; exit 0 ;;
  foreground|detach) ;;
  *) die "unknown mode '$mode' (foreground, detach, down)" ;;
esac

mkdir -p "$LOG_DIR" "$PID_DIR"
stop_background
"$REPO/scripts/infra.sh" up

log "building the services ($PROFILE profile)"
cargo build --profile "$PROFILE" -p order-service -p outbox-relay -p shipment-service --bins \
  --manifest-path "$REPO/Cargo.toml"

export DB_HOST=${DB_HOST:-127.0.0.1} DB_PORT=${DB_PORT:-5432} DB_USER=${DB_USER:-postgres} \
  DB_PASSWORD=${DB_PASSWORD:-postgres} RABBITMQ_HOST=${RABBITMQ_HOST:-127.0.0.1} \
  RABBITMQ_PORT=${RABBITMQ_PORT:-5672} RABBITMQ_USER=${RABBITMQ_USER:-guest} \
  RABBITMQ_PASSWORD=${RABBITMQ_PASSWORD:-guest} RUST_LOG=${RUST_LOG:-info}

if [ "$mode" = foreground ]; then
  # Show every log file as it grows, each line prefixed with its service's name.
  for name in "${SERVICES[@]}"; do : >"$LOG_DIR/$name.log"; done
  for name in "${SERVICES[@]}"; do
    tail -n +1 -F "$LOG_DIR/$name.log" 2>/dev/null | sed -u "s/^/$(printf '%-17s|' "$name") /" &
  done
  trap 'log "stopping"; stop_background; kill $(jobs -p) 2>/dev/null; exit 0' INT TERM
fi

start_service shipment-service "http://127.0.0.1:${SHIPMENT_PORT:-3001}/health" \
  SERVER_PORT="${SHIPMENT_PORT:-3001}" DB_NAME=shipmentdb
start_service order-service "http://127.0.0.1:${ORDER_PORT:-3000}/health" \
  SERVER_PORT="${ORDER_PORT:-3000}" DB_NAME=orderdb
# The relay runs as its own least-privilege role (REPLICATION + SELECT on the outbox table);
# the table owner creates that role and the publication once the tables exist.
export RELAY_DB_USER=${RELAY_DB_USER:-outbox_relay} RELAY_DB_PASSWORD=${RELAY_DB_PASSWORD:-outbox_relay}
DB_NAME=orderdb "$REPO/scripts/provision-relay-role.sh"
# While the relay is down its slot keeps every WAL segment written since (by any database on
# the server, tests included); say so when that is a lot, as the relay reads through it first.
slot_behind=$(PGPASSWORD=${DB_PASSWORD:-postgres} psql -h "${DB_HOST:-127.0.0.1}" -p "${DB_PORT:-5432}" \
  -U "${DB_USER:-postgres}" -d orderdb -Atc "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), \
  confirmed_flush_lsn)) FROM pg_replication_slots WHERE slot_name = 'outbox_relay' AND \
  pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) > 256 * 1024 * 1024" 2>/dev/null || true)
[ -z "$slot_behind" ] || log "the relay's slot outbox_relay is $slot_behind of WAL behind (kept while the relay was not running); it reads through that before new events flow"
# The credentials go through the environment (a prefix assignment), not on env's command line.
DB_USER=$RELAY_DB_USER DB_PASSWORD=$RELAY_DB_PASSWORD \
  start_service outbox-relay "http://127.0.0.1:${RELAY_HTTP_PORT:-8080}/health" \
  DB_NAME=orderdb RELAY_HTTP_PORT="${RELAY_HTTP_PORT:-8080}"

log "all services are up: order-service :${ORDER_PORT:-3000}, shipment-service :${SHIPMENT_PORT:-3001}, relay :${RELAY_HTTP_PORT:-8080}"
if [ "$mode" = foreground ]; then
  log "Ctrl-C stops everything"
  while sleep 1; do
    for name in "${SERVICES[@]}"; do
      if ! kill -0 "$(cat "$PID_DIR/$name.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
        log "$name exited; stopping the others"; stop_background; kill $(jobs -p) 2>/dev/null; exit 1
      fi
    done
  done
else
  log "running in the background; logs in $LOG_DIR; stop with: make down"
fi
