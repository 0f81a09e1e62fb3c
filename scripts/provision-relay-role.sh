#!/usr/bin/env bash
# Creates (or updates) the outbox-relay's least-privilege PostgreSQL role and the publication it
# streams, as the outbox table's owner. Idempotent: run it after order-service has created its
# tables and before the relay starts (scripts/up.sh and docker-compose.yml do).
#
# The role gets LOGIN, REPLICATION, CONNECT on the database, USAGE on the outbox schema and SELECT
# on the outbox table, nothing more (scripts/sql/relay-role.sql says why each is needed).
#
# Environment:
#   DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME   the admin connection (the table owner)
#                          [127.0.0.1, 5432, postgres, postgres, orderdb]
#   RELAY_DB_USER          the relay's role [outbox_relay]
#   RELAY_DB_PASSWORD      its password [outbox_relay; set your own anywhere but a dev machine]
#   RELAY_PUBLICATION      the relay's publication [outbox_publication, the relay's default]
#   RELAY_TABLES           the outbox tables, comma separated [orders.outbox_event]
#
# No password appears on a command line: psql reads the admin's from PGPASSWORD and the relay's
# from the environment (\getenv, psql 15 or newer).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SQL_FILE=$SCRIPT_DIR/sql/relay-role.sql

log() { printf '[provision-relay-role] %s\n' "$*" >&2; }
die() { printf '[provision-relay-role] error: %s\n' "$*" >&2; exit 1; }

DB_HOST=${DB_HOST:-127.0.0.1}
DB_PORT=${DB_PORT:-5432}
DB_USER=${DB_USER:-postgres}
DB_NAME=${DB_NAME:-orderdb}
RELAY_DB_USER=${RELAY_DB_USER:-outbox_relay}
RELAY_PUBLICATION=${RELAY_PUBLICATION:-outbox_publication}
RELAY_TABLES=${RELAY_TABLES:-orders.outbox_event}
export RELAY_DB_PASSWORD=${RELAY_DB_PASSWORD:-outbox_relay}
export PGPASSWORD=${DB_PASSWORD:-postgres}

[ -f "$SQL_FILE" ] || die "missing $SQL_FILE"
command -v psql >/dev/null || die "psql is not installed"
psql_major=$(psql --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
[ "${psql_major:-0}" -ge 15 ] || die "psql 15 or newer is needed (\\getenv); found $(psql --version)"

log "role $RELAY_DB_USER, publication $RELAY_PUBLICATION for $RELAY_TABLES in $DB_NAME at $DB_HOST:$DB_PORT (as $DB_USER)"
# The values go in as psql variables (quoted by psql with :'name'), then as session settings the
# SQL file reads; the password comes from the environment.
psql -X -q -v ON_ERROR_STOP=1 -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER" -d "$DB_NAME" \
  -v relay_role="$RELAY_DB_USER" -v publication="$RELAY_PUBLICATION" -v tables="$RELAY_TABLES" \
  -v sql_file="$SQL_FILE" <<'PSQL'
\getenv relay_password RELAY_DB_PASSWORD
SELECT set_config('outbox_relay.role', :'relay_role', false),
       set_config('outbox_relay.password', :'relay_password', false),
       set_config('outbox_relay.publication', :'publication', false),
       set_config('outbox_relay.tables', :'tables', false) \g /dev/null
\i :sql_file
PSQL
log "done: start the relay with DB_USER=$RELAY_DB_USER and its password"
