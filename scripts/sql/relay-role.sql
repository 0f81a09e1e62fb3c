-- The outbox-relay's least-privilege PostgreSQL role, and the publication it streams.
--
-- Run by the table owner (an admin) in the outbox database. scripts/provision-relay-role.sh
-- runs it with psql; the relay's least-privilege test runs the same file. Parameters are
-- session settings set just before (so that no value is spliced into this text):
--   outbox_relay.role         the relay's role, e.g. outbox_relay
--   outbox_relay.password     its password
--   outbox_relay.publication  the relay's publication (RELAY_PUBLICATION, default outbox_publication)
--   outbox_relay.tables       the outbox tables, comma separated schema.table (RELAY_TABLES,
--                             default orders.outbox_event)
--
-- The role gets exactly: LOGIN, REPLICATION (logical slot and WAL stream), CONNECT on this
-- database, USAGE on each outbox table's schema, SELECT on each outbox table. Nothing else:
-- it is no superuser, owns nothing, and may not write the outbox nor read any other table.
-- CREATE PUBLICATION ... FOR TABLE needs ownership of the tables, so the publication is
-- created here, by the owner, not by the relay. Idempotent: an existing role gets its
-- attributes and password reset, an existing publication gets missing tables added.
DO $provision$
DECLARE
    relay_role  text := current_setting('outbox_relay.role');
    relay_password text := current_setting('outbox_relay.password');
    publication text := current_setting('outbox_relay.publication');
    table_list  text := current_setting('outbox_relay.tables');
    entry       text;
    parts       text[];
    published   boolean;
BEGIN
    IF relay_role = '' OR relay_password = '' OR publication = '' OR table_list = '' THEN
        RAISE EXCEPTION 'outbox_relay.role, .password, .publication and .tables must all be set';
    END IF;

    IF EXISTS (SELECT FROM pg_roles WHERE rolname = relay_role) THEN
        EXECUTE format(
            'ALTER ROLE %I WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE '
            'NOBYPASSRLS PASSWORD %L', relay_role, relay_password);
    ELSE
        EXECUTE format(
            'CREATE ROLE %I WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE '
            'NOBYPASSRLS PASSWORD %L', relay_role, relay_password);
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), relay_role);

    FOREACH entry IN ARRAY string_to_array(table_list, ',') LOOP
        parts := string_to_array(btrim(entry), '.');
        IF array_length(parts, 1) IS DISTINCT FROM 2 THEN
            RAISE EXCEPTION 'outbox table % is not schema.table', btrim(entry);
        END IF;
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', parts[1], relay_role);
        EXECUTE format('GRANT SELECT ON TABLE %I.%I TO %I', parts[1], parts[2], relay_role);

        IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = publication) THEN
            EXECUTE format('CREATE PUBLICATION %I FOR TABLE %I.%I', publication, parts[1], parts[2]);
            RAISE NOTICE 'created publication % for table %.%', publication, parts[1], parts[2];
        ELSE
            SELECT EXISTS (
                SELECT FROM pg_publication_tables
                WHERE pubname = publication AND schemaname = parts[1] AND tablename = parts[2]
            ) INTO published;
            IF NOT published THEN
                EXECUTE format('ALTER PUBLICATION %I ADD TABLE %I.%I', publication, parts[1], parts[2]);
                RAISE NOTICE 'added table %.% to publication %', parts[1], parts[2], publication;
            END IF;
        END IF;
    END LOOP;
END
$provision$;
