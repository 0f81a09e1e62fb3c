#!/usr/bin/env bash
# Removes test databases (t_*, with their replication slots) and RabbitMQ vhosts (t_*) that
# interrupted test runs left behind. A database or vhost still in use (it has sessions or
# connections) belongs to a running test and is kept. `make test` runs this first.
set -euo pipefail

PG_URL=${TEST_PG_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}
API=${TEST_RABBITMQ_API:-http://guest:guest@127.0.0.1:15672}

if command -v psql >/dev/null; then
  sql() { psql "$PG_URL" -X -q -tA -v ON_ERROR_STOP=1 -c "$1"; }
  # An abandoned slot holds WAL forever: drop inactive slots of test databases first.
  sql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
       WHERE NOT active AND database LIKE 't\_%'" >/dev/null
  dropped=0
  for db in $(sql "SELECT datname FROM pg_database d WHERE datname LIKE 't\_%'
                   AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datid = d.oid)
                   AND NOT EXISTS (SELECT 1 FROM pg_replication_slots s WHERE s.database = d.datname)"); do
    sql "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 && dropped=$((dropped + 1)) || true
  done
  [ "$dropped" = 0 ] || echo "[clean] dropped $dropped leftover test databases" >&2
  # Test roles (t_relay_*, t_app_*) are cluster-wide; drop those without a session. A role that
  # still owns objects in a kept database fails to drop and is kept with it.
  for role in $(sql "SELECT rolname FROM pg_roles r WHERE (rolname LIKE 't\_relay\_%' OR rolname LIKE 't\_app\_%')
                     AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.usesysid = r.oid)"); do
    sql "DROP ROLE IF EXISTS \"$role\"" >/dev/null 2>&1 || true
  done
else
  echo "[clean] psql not found; leftover test databases are not removed" >&2
fi

if command -v curl >/dev/null && command -v python3 >/dev/null; then
  idle_vhosts=$(curl -fsS "$API/api/vhosts" 2>/dev/null | python3 -c '
import json, sys
for vhost in json.load(sys.stdin):
    if vhost["name"].startswith("t_"):
        print(vhost["name"])' || true)
  deleted=0
  for vhost in $idle_vhosts; do
    connections=$(curl -fsS "$API/api/vhosts/$vhost/connections" 2>/dev/null || echo '[x]')
    if [ "$connections" = "[]" ]; then
      curl -fsS -X DELETE "$API/api/vhosts/$vhost" >/dev/null 2>&1 && deleted=$((deleted + 1)) || true
    fi
  done
  [ "$deleted" = 0 ] || echo "[clean] deleted $deleted leftover test vhosts" >&2
  # Test users (t_user_*) without a connection.
  idle_users=$(curl -fsS "$API/api/users" 2>/dev/null | python3 -c '
import json, sys
for user in json.load(sys.stdin):
    if user["name"].startswith("t_user_"):
        print(user["name"])' || true)
  for user in $idle_users; do
    curl -fsS -X DELETE "$API/api/users/$user" >/dev/null 2>&1 || true
  done
fi
