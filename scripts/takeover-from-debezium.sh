#!/usr/bin/env bash
# The take-over drill (`make takeover-from-debezium`): real Debezium 3.6.3 (the peer harness in
# ../shared/peers/debezium) streams the original system's outbox to RabbitMQ under load; it is
# stopped mid-stream; our relay starts on the original `application.properties` with the
# original's environment, on the same slot (`debezium`) and publication (`dbz_publication`); the
# load goes on; then an audit from the databases counts what was lost, applied twice, and what
# shipment-service absorbed as duplicates. Writes target/takeover/report.json.
#
#   env: TAKEOVER_RATE (rows/s, 200), TAKEOVER_BEFORE_S (load with Debezium, 20),
#        TAKEOVER_AFTER_S (load with our relay, 20), TAKEOVER_SIGNAL (TERM: Debezium stopped as an
#        operator would; KILL: a crash), DEBEZIUM_PEER_DIR, PG_PORT, RABBITMQ_PORT,
#        RABBITMQ_MANAGEMENT_PORT
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEER_DIR=${DEBEZIUM_PEER_DIR:-$REPO/../shared/peers/debezium}
PG_PORT=${PG_PORT:-5432}
RABBITMQ_PORT=${RABBITMQ_PORT:-5672}
RABBITMQ_API=http://127.0.0.1:${RABBITMQ_MANAGEMENT_PORT:-15672}/api
RATE=${TAKEOVER_RATE:-200}
BEFORE_S=${TAKEOVER_BEFORE_S:-20}
AFTER_S=${TAKEOVER_AFTER_S:-20}
STOP_SIGNAL=${TAKEOVER_SIGNAL:-TERM}
ORDER_DB=takeover_orderdb
SHIPMENT_DB=takeover_shipmentdb
VHOST=takeover
SLOT=debezium
PUBLICATION=dbz_publication
BIN_DIR=${CARGO_TARGET_DIR:-$REPO/target}/debug
OUT_DIR=${CARGO_TARGET_DIR:-$REPO/target}/takeover
WORK=$(mktemp -d /tmp/takeover.XXXXXX)
SHIPMENT_PORT=3901
RELAY_PORT=3902

export PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=postgres PGPASSWORD=${PG_SUPERUSER_PASSWORD:-postgres}
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -At)

log() { printf '[takeover %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { date +%s%3N; }

DEBEZIUM_PID="" RELAY_PID="" SHIPMENT_PID="" LOAD_PID=""
cleanup() {
  local pid
  for pid in "$LOAD_PID" "$DEBEZIUM_PID" "$RELAY_PID" "$SHIPMENT_PID"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  # An abandoned slot holds WAL forever.
  "${PSQL[@]}" -d postgres -c "SELECT pg_drop_replication_slot('$SLOT') FROM pg_replication_slots
    WHERE slot_name = '$SLOT' AND database = '$ORDER_DB' AND NOT active" >/dev/null 2>&1 || true
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $ORDER_DB WITH (FORCE)" >/dev/null 2>&1 || true
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $SHIPMENT_DB WITH (FORCE)" >/dev/null 2>&1 || true
  curl -fsS -u guest:guest -X DELETE "$RABBITMQ_API/vhosts/$VHOST" >/dev/null 2>&1 || true
  if [ -n "${KEEP_WORK:-}" ]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

wait_until() { # seconds description command...
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what: not after ${seconds}s (logs in $WORK; KEEP_WORK=1 keeps them)"
    sleep 0.2
  done
}
slot_active() { [ "$("${PSQL[@]}" -d postgres -c "SELECT active FROM pg_replication_slots WHERE slot_name = '$SLOT'")" = t ]; }
slot_free() { [ "$("${PSQL[@]}" -d postgres -c "SELECT active FROM pg_replication_slots WHERE slot_name = '$SLOT'")" = f ]; }
healthy() { curl -fsS -o /dev/null "$1"; }
count() { "${PSQL[@]}" -d "$1" -c "$2"; }

[ -x "$PEER_DIR/run" ] || die "no Debezium peer at $PEER_DIR (set DEBEZIUM_PEER_DIR)"
command -v pgbench >/dev/null || die "pgbench not found (it comes with the PostgreSQL packages)"
"$REPO/scripts/infra.sh" up
log "building outbox-relay and shipment-service"
cargo build -q -p outbox-relay -p shipment-service --bins --manifest-path "$REPO/Cargo.toml"
mkdir -p "$OUT_DIR"

log "fresh databases ($ORDER_DB with the original DDL, $SHIPMENT_DB) and vhost $VHOST"
cleanup_before() { trap - EXIT; cleanup; trap cleanup EXIT; mkdir -p "$WORK"; }
cleanup_before
"${PSQL[@]}" -d postgres -c "CREATE DATABASE $ORDER_DB"
"${PSQL[@]}" -d "$ORDER_DB" -f "$REPO/resources/original/orderdb-schema.sql"
curl -fsS -u guest:guest -X PUT "$RABBITMQ_API/vhosts/$VHOST" >/dev/null
curl -fsS -u guest:guest -X PUT -H 'content-type: application/json' \
  -d '{"configure":".*","write":".*","read":".*"}' "$RABBITMQ_API/permissions/$VHOST/guest" >/dev/null

log "shipment-service (declares order.events -> shipment.orders in vhost $VHOST)"
env DB_NAME=$SHIPMENT_DB DB_PORT=$PG_PORT RABBITMQ_VHOST=$VHOST RABBITMQ_PORT=$RABBITMQ_PORT \
  SERVER_PORT=$SHIPMENT_PORT RUST_LOG=warn "$BIN_DIR/shipment-service" >"$WORK/shipment-service.log" 2>&1 &
SHIPMENT_PID=$!
wait_until 60 "shipment-service healthy" healthy "http://127.0.0.1:$SHIPMENT_PORT/health"

log "Debezium 3.6.3 on slot $SLOT, publication $PUBLICATION (JVM start takes a while)"
"$PEER_DIR/run" --pg-host 127.0.0.1 --pg-port "$PG_PORT" --pg-user postgres --pg-password "$PGPASSWORD" \
  --pg-dbname "$ORDER_DB" --slot "$SLOT" --publication "$PUBLICATION" --offset-dir "$WORK/offsets" \
  --amqp-url "amqp://guest:guest@127.0.0.1:$RABBITMQ_PORT/$VHOST" --sink rabbitmq \
  >"$WORK/debezium.json" 2>"$WORK/debezium.log" &
DEBEZIUM_PID=$!
wait_until 240 "Debezium's slot active" slot_active

total_s=$((BEFORE_S + AFTER_S))
log "load: $RATE OrderCreated rows/s for ${total_s}s, as the original producer writes them"
pgbench -n -f "$REPO/scripts/sql/original-outbox-insert.sql" -c 2 -j 1 -R "$RATE" -T "$total_s" \
  "$ORDER_DB" >"$WORK/pgbench.txt" 2>&1 &
LOAD_PID=$!
sleep "$BEFORE_S"

published_by_debezium=$(count "$SHIPMENT_DB" "SELECT count(*) FROM shipments.consumed_message")
log "stopping Debezium with SIG$STOP_SIGNAL ($published_by_debezium events applied so far)"
stopped_at=$(now_ms)
kill -"$STOP_SIGNAL" "$DEBEZIUM_PID"
wait "$DEBEZIUM_PID" 2>/dev/null || true
DEBEZIUM_PID=""
debezium_exited_at=$(now_ms)
wait_until 30 "slot released" slot_free
confirmed_at_takeover=$("${PSQL[@]}" -d postgres -c "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$SLOT'")

log "outbox-relay on resources/debezium/original/application.properties with the original's environment"
env -i PATH="$PATH" RELAY_DEBEZIUM_PROPERTIES="$REPO/resources/debezium/original/application.properties" \
  RABBITMQ_HOSTNAME=127.0.0.1 RABBITMQ_PORT="$RABBITMQ_PORT" RABBITMQ_USER=guest RABBITMQ_PASSWORD=guest \
  DEBEZIUM_SINK_RABBITMQ_CONNECTION_VIRTUAL_HOST="$VHOST" \
  DATABASE_HOSTNAME=127.0.0.1 DATABASE_PORT="$PG_PORT" DATABASE_USER=postgres DATABASE_PASSWORD="$PGPASSWORD" \
  DATABASE_NAME="$ORDER_DB" DATABASE_SCHEMA=orders DATABASE_OUTBOX_TABLE=outbox_event \
  RELAY_HTTP_PORT=$RELAY_PORT RUST_LOG=info "$BIN_DIR/outbox-relay" >"$WORK/relay.log" 2>&1 &
RELAY_PID=$!
wait_until 60 "our relay streaming" healthy "http://127.0.0.1:$RELAY_PORT/health"
streaming_at=$(now_ms)

wait "$LOAD_PID" || die "pgbench failed: $(tail -n 5 "$WORK/pgbench.txt")"
LOAD_PID=""
outbox_rows=$(count "$ORDER_DB" "SELECT count(*) FROM orders.outbox_event")
log "load done: $outbox_rows outbox rows committed; waiting until shipment-service applied them"
applied_all() { [ "$(count "$SHIPMENT_DB" "SELECT count(*) FROM shipments.consumed_message")" -ge "$outbox_rows" ]; }
wait_until 180 "every event applied" applied_all || true
sleep 2 # let any late duplicate arrive before counting

# The audit: the outbox rows against what shipment-service recorded.
"${PSQL[@]}" -d "$ORDER_DB" -c "COPY (SELECT id FROM orders.outbox_event ORDER BY id) TO STDOUT" >"$WORK/outbox.ids"
"${PSQL[@]}" -d "$SHIPMENT_DB" -c "COPY (SELECT event_id FROM shipments.consumed_message ORDER BY event_id) TO STDOUT" >"$WORK/consumed.ids"
lost=$(comm -23 "$WORK/outbox.ids" "$WORK/consumed.ids" | wc -l)
unexpected=$(comm -13 "$WORK/outbox.ids" "$WORK/consumed.ids" | wc -l)
applied_twice=$(count "$SHIPMENT_DB" "SELECT count(*) - count(DISTINCT order_id) FROM shipments.shipment")
shipments=$(count "$SHIPMENT_DB" "SELECT count(*) FROM shipments.shipment")
metrics=$(curl -fsS "http://127.0.0.1:$SHIPMENT_PORT/metrics")
metric() { printf '%s\n' "$metrics" | awk -v name="$1" '$1 == name || index($1, name "{") == 1 { sum += $NF } END { printf "%d", sum }'; }
duplicates=$(metric shipment_duplicates_total)
dead_lettered=$(metric shipment_dead_lettered_total)
relay_confirmed=$(curl -fsS "http://127.0.0.1:$RELAY_PORT/metrics" | awk '$1 ~ /^outbox_relay_events_confirmed_total/ { sum += $NF } END { printf "%d", sum }')

cat >"$OUT_DIR/report.json" <<JSON
{"date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "rate_per_s": $RATE, "before_s": $BEFORE_S, "after_s": $AFTER_S,
 "debezium_stopped_with": "SIG$STOP_SIGNAL", "events_committed": $outbox_rows,
 "applied_when_debezium_stopped": $published_by_debezium, "slot_confirmed_lsn_at_takeover": "$confirmed_at_takeover",
 "debezium_exit_ms": $((debezium_exited_at - stopped_at)), "stop_to_relay_streaming_ms": $((streaming_at - stopped_at)),
 "events_published_by_our_relay": $relay_confirmed, "events_lost": $lost, "unexpected_events": $unexpected,
 "shipments": $shipments, "applied_twice": $applied_twice, "duplicates_absorbed": $duplicates,
 "dead_lettered": $dead_lettered}
JSON
cat "$OUT_DIR/report.json"
log "committed $outbox_rows, lost $lost, applied twice $applied_twice, duplicates absorbed $duplicates, dead-lettered $dead_lettered; Debezium stop -> our relay streaming $(((streaming_at - stopped_at)))ms"
[ "$lost" = 0 ] && [ "$applied_twice" = 0 ] && [ "$unexpected" = 0 ] && [ "$dead_lettered" = 0 ] \
  || die "the take-over lost or doubled events (see above)"
