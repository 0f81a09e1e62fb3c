//! The relay as a least-privilege PostgreSQL role: the provisioning SQL of
//! `scripts/provision-relay-role.sh` (the same file, `scripts/sql/relay-role.sql`) grants the
//! role LOGIN, REPLICATION, CONNECT, USAGE on the schema and SELECT on the outbox table, and
//! creates the publication as the table owner. With exactly that, events flow; connected as that
//! role, the order tables cannot be read and the outbox cannot be written. Without the
//! pre-created publication, the start error names the missing privilege and the statement the
//! owner must run.
//!
//! Roles are cluster-wide: each test names its own `t_relay_<random>` and drops it at the end,
//! after its database, even when an assertion failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use common::{Row, bind_queue, insert_transaction, relay_cli};
use outbox_relay::config::Cli;
use outbox_relay::{Config, Relay};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use test_support::{EVENTUALLY, TestDatabase, TestVhost, unique_suffix};

/// What the provisioning script runs, as the table owner.
const PROVISIONING_SQL: &str = include_str!("../../../scripts/sql/relay-role.sql");
/// order-service's schema: the outbox table next to the tables the relay must not read.
const ORDER_SERVICE_MIGRATION: &str =
    include_str!("../../order-service/migrations/20260101000000_create_orders.sql");
const OUTBOX_TABLE: &str = "orders.outbox_event";

/// A database with order-service's schema, a vhost, and a role name and password of its own.
struct Setup {
    db: TestDatabase,
    vhost: TestVhost,
    role: String,
    password: String,
    slot: String,
    publication: String,
}

impl Setup {
    async fn new(prefix: &str) -> Self {
        test_support::init_tracing();
        let db = TestDatabase::create(prefix).await.unwrap();
        let admin = PgConnection::connect_with(&db.options).await.unwrap();
        run_all(
            admin,
            &[
                "CREATE SCHEMA orders; SET search_path TO orders",
                ORDER_SERVICE_MIGRATION,
            ],
        )
        .await;
        let suffix = unique_suffix();
        Self {
            db,
            vhost: TestVhost::create(prefix).await.unwrap(),
            role: format!("t_relay_{suffix}"),
            password: format!("Lp-{}", unique_suffix()),
            slot: format!("slot_{suffix}"),
            publication: format!("pub_{suffix}"),
        }
    }

    /// Runs the provisioning SQL as the admin (the owner of the tables).
    async fn provision(&self) {
        let mut admin = PgConnection::connect_with(&self.db.options).await.unwrap();
        sqlx::query(
            "SELECT set_config('outbox_relay.role', $1, false), \
                    set_config('outbox_relay.password', $2, false), \
                    set_config('outbox_relay.publication', $3, false), \
                    set_config('outbox_relay.tables', $4, false)",
        )
        .bind(&self.role)
        .bind(&self.password)
        .bind(&self.publication)
        .bind(OUTBOX_TABLE)
        .execute(&mut admin)
        .await
        .unwrap();
        run_all(admin, &[PROVISIONING_SQL]).await;
    }

    /// Connection options of the relay's role.
    fn role_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host(self.db.options.get_host())
            .port(self.db.options.get_port())
            .username(&self.role)
            .password(&self.password)
            .database(&self.db.name)
    }

    /// The relay's settings, connecting as the role.
    fn relay_config(&self) -> Config {
        Config::from_cli(Cli {
            db_host: Some(self.db.options.get_host().to_owned()),
            db_port: Some(self.db.options.get_port().to_string()),
            db_user: Some(self.role.clone()),
            db_password: Some(self.password.clone()),
            db_name: Some(self.db.name.clone()),
            ..relay_cli(&self.vhost.amqp_url, &self.slot, &self.publication)
        })
        .unwrap()
    }

    /// Runs `scenario`, then drops the database, the role and the vhost whatever happened, and
    /// re-raises a failure of the scenario.
    async fn run(self, scenario: impl AsyncFnOnce(&Self)) {
        let outcome = AssertUnwindSafe(scenario(&self)).catch_unwind().await;
        self.db.drop_database().await.unwrap();
        // The database's grants went with it; the role holds nothing else.
        let mut admin = PgConnection::connect(&test_support::pg_admin_url())
            .await
            .unwrap();
        sqlx::query(&format!("DROP ROLE IF EXISTS \"{}\"", self.role))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        self.vhost.delete().await.unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// The SQLSTATE of a failed statement run as the role (None if it succeeded).
async fn sqlstate_of(connection: &mut PgConnection, statement: &str) -> Option<String> {
    match sqlx::query(statement).execute(&mut *connection).await {
        Ok(_) => None,
        Err(sqlx::Error::Database(error)) => error.code().map(|code| code.into_owned()),
        Err(other) => panic!("{statement}: {other}"),
    }
}

/// Runs each of `scripts` (several statements each) on `admin`'s session, then closes it.
async fn run_all(mut admin: PgConnection, scripts: &[&str]) {
    for script in scripts {
        sqlx::raw_sql(script).execute(&mut admin).await.unwrap();
    }
    admin.close().await.unwrap();
}

#[tokio::test]
async fn the_least_privilege_role_streams_events_and_reads_nothing_else() {
    let setup = Setup::new("relay_least_priv").await;
    setup.run(async |setup| {
        // Twice: the provisioning is idempotent (the second run updates the existing role).
        setup.provision().await;
        setup.provision().await;

        let (superuser, replication, create_db, create_role): (bool, bool, bool, bool) =
            sqlx::query_as(
                "SELECT rolsuper, rolreplication, rolcreatedb, rolcreaterole \
                 FROM pg_roles WHERE rolname = $1",
            )
            .bind(&setup.role)
            .fetch_one(&setup.db.pool)
            .await
            .unwrap();
        assert_eq!(
            (superuser, replication, create_db, create_role),
            (false, true, false, false),
            "the role is a plain replication login"
        );

        let queue = bind_queue(&setup.vhost.amqp_url, "order.events").await;
        let relay = Relay::start(setup.relay_config()).await.unwrap();
        let rows = Row::orders("agg-lp", "OrderCreated", 0..3);
        insert_transaction(&setup.db.pool, &rows).await;
        let received = queue.take(rows.len(), EVENTUALLY).await;
        assert_eq!(
            received
                .iter()
                .map(|message| message.message_id())
                .collect::<Vec<_>>(),
            rows.iter()
                .map(|row| Some(row.id.to_string()))
                .collect::<Vec<_>>(),
            "every event arrives, in commit order, through the least-privilege relay"
        );
        relay.shutdown().await.unwrap();
        queue.close().await;

        let mut as_role = PgConnection::connect_with(&setup.role_options())
            .await
            .unwrap();
        // What it needs works...
        assert_eq!(
            sqlstate_of(&mut as_role, "SELECT count(*) FROM orders.outbox_event").await,
            None
        );
        // ...and nothing else does.
        let order_id = uuid::Uuid::now_v7();
        for statement in [
            "SELECT * FROM orders.purchase_order".to_owned(),
            "SELECT * FROM orders.order_line".to_owned(),
            format!(
                "INSERT INTO orders.outbox_event (id, aggregate_type, aggregate_id, type, \
                 payload, \"timestamp\") VALUES ('{order_id}', 'order', 'x', 'Forged', '{{}}', now())"
            ),
            "UPDATE orders.outbox_event SET type = 'Forged'".to_owned(),
            "DELETE FROM orders.outbox_event".to_owned(),
            "TRUNCATE orders.outbox_event".to_owned(),
            format!(
                "INSERT INTO orders.purchase_order (id, customer_id, order_date) \
                 VALUES ('{order_id}', 1, now())"
            ),
            "CREATE TABLE orders.intruder (id int)".to_owned(),
        ] {
            assert_eq!(
                sqlstate_of(&mut as_role, &statement).await.as_deref(),
                Some("42501"),
                "as the relay's role, `{statement}` must fail with insufficient_privilege"
            );
        }
        as_role.close().await.unwrap();
        let outbox_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM orders.outbox_event")
            .fetch_one(&setup.db.pool)
            .await
            .unwrap();
        assert_eq!(outbox_rows, 3, "the outbox holds exactly what was written");
    })
    .await;
}

#[tokio::test]
async fn without_the_publication_the_start_error_names_the_privilege_and_the_statement() {
    let setup = Setup::new("relay_least_priv_pub").await;
    setup
        .run(async |setup| {
            setup.provision().await;
            sqlx::query(&format!("DROP PUBLICATION \"{}\"", setup.publication))
                .execute(&setup.db.pool)
                .await
                .unwrap();

            let message = match Relay::start(setup.relay_config()).await {
                Ok(relay) => {
                    relay.shutdown().await.unwrap();
                    panic!("the relay started without its publication")
                }
                Err(error) => error.to_string(),
            };
            let statement = format!(
                "CREATE PUBLICATION \"{}\" FOR TABLE \"orders\".\"outbox_event\"",
                setup.publication
            );
            assert!(message.contains("insufficient privilege"), "{message}");
            assert!(message.contains(&setup.role), "{message}");
            assert!(message.contains(&statement), "{message}");
            assert!(!message.contains(&setup.password), "{message}");

            // The statement the message names, run by the owner, is all the relay was missing.
            sqlx::query(&statement)
                .execute(&setup.db.pool)
                .await
                .unwrap();
            let relay = Relay::start(setup.relay_config()).await.unwrap();
            relay.shutdown().await.unwrap();
        })
        .await;
}
