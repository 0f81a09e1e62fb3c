//! `outbox-relay resync` against the real servers, run as the binary an operator runs:
//! - re-publishing a time range, and from an event on, while the relay streams: the same
//!   message ids, headers and bodies as the first time, nothing else; a dry run publishes
//!   nothing; a bad flag and `--recreate-slot` on a held slot fail with what to do;
//! - the way back from a slot PostgreSQL invalidated (`max_slot_wal_keep_size` on a private
//!   server): the relay refuses to start and names the command, the resync re-creates the
//!   slot and re-publishes what was missed, and the relay started after it streams on with no
//!   gap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{BoundQueue, Fixture, Received, Row, bind_queue, insert_transaction};
use lapin::options::BasicGetOptions;
use outbox_relay::Relay;
use sqlx::PgPool;
use test_support::process::{free_port, workspace_binary};
use test_support::{EVENTUALLY, TestVhost, unique_suffix};

/// Runs `outbox-relay <args>` with `env` to its end.
async fn relay_command(env: &HashMap<String, String>, args: &[&str]) -> Output {
    let binary = workspace_binary("outbox-relay").unwrap();
    let run = tokio::process::Command::new(binary)
        .args(args)
        .envs(env)
        .env("RUST_LOG", "info")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("outbox-relay did not finish within 120 s")
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every message in the queue now (the resync has exited: all it published is there).
async fn drain(queue: &BoundQueue) -> Vec<Received> {
    let mut messages = Vec::new();
    while let Some(message) = queue
        .channel
        .basic_get(
            queue.queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        messages.push(Received {
            exchange: message.delivery.exchange.to_string(),
            routing_key: message.delivery.routing_key.to_string(),
            properties: message.delivery.properties.clone(),
            body: message.delivery.data.clone(),
        });
    }
    messages
}

/// Takes exactly `count` messages (waiting for them), and checks nothing else is there.
async fn take_exactly(queue: &BoundQueue, count: usize) -> Vec<Received> {
    let mut messages = queue.take(count, EVENTUALLY).await;
    assert_eq!(messages.len(), count, "messages received");
    messages.extend(drain(queue).await);
    assert_eq!(messages.len(), count, "more messages than expected");
    messages
}

/// message id → (eventType header, body).
fn by_id(messages: &[Received]) -> BTreeMap<String, (Option<String>, String)> {
    messages
        .iter()
        .map(|message| {
            (
                message.message_id().expect("message id"),
                (message.header("eventType"), message.body_text()),
            )
        })
        .collect()
}

async fn database_now(pool: &PgPool) -> String {
    let (now,): (String,) = sqlx::query_as(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    now
}

/// Inserts `rows`, each in its own transaction (distinct timestamps, in order).
async fn insert_each(pool: &PgPool, rows: &[Row]) {
    for row in rows {
        insert_transaction(pool, std::slice::from_ref(row)).await;
    }
}

#[tokio::test]
async fn resync_republishes_a_range_with_the_same_messages_while_the_relay_streams() {
    let fixture = Fixture::new("resync_range").await;
    let relay = Relay::start(fixture.config()).await.unwrap();
    common::wait_relay_streaming(&relay, "the relay to stream").await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let env = fixture.env(0);

    let since = database_now(&fixture.db.pool).await;
    let first = Row::orders("order-a", "OrderCreated", 0..6);
    insert_each(&fixture.db.pool, &first).await;
    let until = database_now(&fixture.db.pool).await;
    let second = Row::orders("order-b", "OrderLineUpdated", 0..4);
    insert_each(&fixture.db.pool, &second).await;
    let streamed = by_id(&take_exactly(&queue, 10).await);

    // A dry run counts and publishes nothing.
    let dry = relay_command(&env, &["resync", "--since", &since, "--dry-run"]).await;
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("dry run: 10 rows"),
        "{}",
        text(&dry)
    );
    assert!(drain(&queue).await.is_empty(), "a dry run published");

    // The whole range: the same ten messages again.
    let all = relay_command(&env, &["resync", "--since", &since]).await;
    assert!(all.status.success(), "{}", text(&all));
    assert!(
        String::from_utf8_lossy(&all.stdout).contains("re-published 10 events"),
        "{}",
        text(&all)
    );
    let republished = take_exactly(&queue, 10).await;
    assert_eq!(
        by_id(&republished),
        streamed,
        "re-published messages differ"
    );
    // In the table's order: each order's events in the order they were written.
    let ids: Vec<String> = republished
        .iter()
        .filter_map(Received::message_id)
        .collect();
    let written: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|row| row.id.to_string())
        .collect();
    assert_eq!(ids, written);

    // A bounded range, and from an event on.
    let bounded = relay_command(&env, &["resync", "--since", &since, "--until", &until]).await;
    assert!(bounded.status.success(), "{}", text(&bounded));
    let ids: Vec<String> = take_exactly(&queue, 6)
        .await
        .iter()
        .filter_map(Received::message_id)
        .collect();
    assert_eq!(ids, written[..6]);
    let from_event = second[1].id.to_string();
    let from = relay_command(&env, &["resync", "--from-event", &from_event]).await;
    assert!(from.status.success(), "{}", text(&from));
    let ids: Vec<String> = take_exactly(&queue, 3)
        .await
        .iter()
        .filter_map(Received::message_id)
        .collect();
    assert_eq!(ids, written[7..]);

    // Wrong input: named, nothing published.
    let bad = relay_command(&env, &["resync", "--since", "yesterday"]).await;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--since is invalid"),
        "{}",
        text(&bad)
    );
    let unknown = relay_command(
        &env,
        &["resync", "--from-event", &uuid::Uuid::new_v4().to_string()],
    )
    .await;
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("is not in orders.outbox_event"),
        "{}",
        text(&unknown)
    );
    // The relay holds the slot: re-creating it is refused, not forced.
    let held = relay_command(&env, &["resync", "--since", &since, "--recreate-slot"]).await;
    assert!(!held.status.success());
    assert!(
        String::from_utf8_lossy(&held.stderr).contains("held by a running relay"),
        "{}",
        text(&held)
    );
    assert!(drain(&queue).await.is_empty(), "a refused resync published");

    relay.shutdown().await.unwrap();
    queue.close().await;
    fixture.cleanup().await;
}

/// A private PostgreSQL (scripts/infra.sh on its own folder and port) with a small
/// `max_slot_wal_keep_size`, so a slot can be invalidated without touching the shared server.
/// Dropping it stops the server and deletes its folder, also when a test fails half-way.
struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    async fn start() -> Self {
        let base = if Path::new("/var/tmp").is_dir() {
            PathBuf::from("/var/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("outbox-resync-test-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let postgres = Self {
            dir,
            port: free_port(),
        };
        let output = tokio::process::Command::from(postgres.infra("pg-up"))
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "infra.sh pg-up: {}", text(&output));
        postgres
    }

    /// `scripts/infra.sh <command>` on this server's folder and port.
    fn infra(&self, command: &str) -> std::process::Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/infra.sh");
        let mut infra = std::process::Command::new("bash");
        infra
            .arg(script)
            .arg(command)
            .env("OUTBOX_LOCAL_DIR", &self.dir)
            .env("PG_PORT", self.port.to_string())
            .env("PG_MAX_SLOT_WAL_KEEP_SIZE", "32MB");
        infra
    }

    fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/{database}",
            self.port
        )
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Blocking, and errors ignored: a drop during a panic must not panic again.
        let _ = self.infra("pg-down").output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes WAL and checkpoints until PostgreSQL invalidates `slot`.
async fn invalidate_slot(pool: &PgPool, slot: &str) {
    sqlx::query("CREATE TABLE IF NOT EXISTS public.filler (x text)")
        .execute(pool)
        .await
        .unwrap();
    for _ in 0..20 {
        sqlx::query("INSERT INTO public.filler SELECT repeat(md5(i::text), 32) FROM generate_series(1, 20000) AS i")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("SELECT pg_switch_wal()")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("CHECKPOINT").execute(pool).await.unwrap();
        let (status,): (Option<String>,) =
            sqlx::query_as("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1")
                .bind(slot)
                .fetch_one(pool)
                .await
                .unwrap();
        if status.as_deref() == Some("lost") {
            return;
        }
    }
    panic!("PostgreSQL did not invalidate slot {slot}");
}

/// A private PostgreSQL with an outbox database, a vhost, and the environment of a relay on a slot
/// of its own there (no HTTP port: each relay gets its own).
struct SlotScene {
    postgres: PrivatePostgres,
    admin: PgPool,
    pool: PgPool,
    vhost: TestVhost,
    slot: String,
    env: HashMap<String, String>,
}

impl SlotScene {
    async fn new(prefix: &str) -> Self {
        test_support::init_tracing();
        let postgres = PrivatePostgres::start().await;
        let admin = PgPool::connect(&postgres.url("postgres")).await.unwrap();
        sqlx::query("CREATE DATABASE outbox")
            .execute(&admin)
            .await
            .unwrap();
        let pool = PgPool::connect(&postgres.url("outbox")).await.unwrap();
        for statement in common::OUTBOX_DDL {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        let vhost = TestVhost::create(prefix).await.unwrap();
        let slot = format!("slot_{}", unique_suffix());
        let env = HashMap::from([
            ("DATABASE_URL".into(), postgres.url("outbox")),
            ("AMQP_URL".into(), vhost.amqp_url.clone()),
            ("RELAY_SLOT".into(), slot.clone()),
            ("RELAY_PUBLICATION".into(), "outbox_pub".into()),
            ("RELAY_CONNECT_TIMEOUT_SECS".into(), "10".into()),
            ("RELAY_STATUS_INTERVAL_MS".into(), "100".into()),
        ]);
        Self {
            postgres,
            admin,
            pool,
            vhost,
            slot,
            env,
        }
    }

    /// Deletes the vhost and stops the private server (its slots go with its folder).
    async fn stop(self) {
        self.vhost.delete().await.unwrap();
        self.pool.close().await;
        self.admin.close().await;
        drop(self.postgres);
    }
}

#[tokio::test]
async fn an_invalidated_slot_is_named_and_resync_recreates_it_with_no_gap() {
    let scene = SlotScene::new("resync_slot").await;
    let (pool, slot) = (&scene.pool, &scene.slot);
    let queue = bind_queue(&scene.vhost.amqp_url, "order.events").await;
    let env = scene.env.clone();
    let spawn_relay = || {
        let mut env = env.clone();
        env.insert("RELAY_HTTP_PORT".into(), free_port().to_string());
        common::spawn_relay(&env)
    };

    // Streaming as usual, then the relay stops and events keep coming.
    let mut relay = spawn_relay();
    relay.wait_healthy(EVENTUALLY).await.unwrap();
    let before = Row::orders("order-1", "OrderCreated", 0..3);
    insert_each(pool, &before).await;
    take_exactly(&queue, 3).await;
    relay.terminate(Duration::from_secs(10)).await.unwrap();
    let stopped_at = database_now(pool).await;
    let missed = Row::orders("order-2", "OrderCreated", 0..5);
    insert_each(pool, &missed).await;

    // The slot falls too far behind: PostgreSQL invalidates it.
    invalidate_slot(pool, slot).await;

    // The relay refuses to start and says what happened and what to run.
    let mut start_env = env.clone();
    start_env.insert("RELAY_HTTP_PORT".into(), free_port().to_string());
    let refused = relay_command(&start_env, &[]).await;
    assert!(
        !refused.status.success(),
        "the relay started on a lost slot"
    );
    let output = text(&refused);
    assert!(output.contains("was invalidated by PostgreSQL"), "{output}");
    assert!(
        output.contains("outbox-relay resync --recreate-slot --since"),
        "{output}"
    );

    // The resync re-creates the slot first, then re-publishes what the relay missed.
    let resync = relay_command(&env, &["resync", "--recreate-slot", "--since", &stopped_at]).await;
    assert!(resync.status.success(), "{}", text(&resync));
    assert!(
        String::from_utf8_lossy(&resync.stdout).contains("replication slot created anew"),
        "{}",
        text(&resync)
    );
    let ids: Vec<String> = take_exactly(&queue, 5)
        .await
        .iter()
        .filter_map(Received::message_id)
        .collect();
    let missed_ids: Vec<String> = missed.iter().map(|row| row.id.to_string()).collect();
    assert_eq!(ids, missed_ids, "the missed events, in order");

    // Written after the new slot: streamed by the relay started after the resync.
    let after = Row::orders("order-3", "OrderCreated", 0..4);
    insert_each(pool, &after).await;
    let mut relay = spawn_relay();
    relay.wait_healthy(EVENTUALLY).await.unwrap();
    let ids: Vec<String> = take_exactly(&queue, 4)
        .await
        .iter()
        .filter_map(Received::message_id)
        .collect();
    let after_ids: Vec<String> = after.iter().map(|row| row.id.to_string()).collect();
    assert_eq!(ids, after_ids);

    relay.terminate(Duration::from_secs(10)).await.unwrap();
    queue.close().await;
    scene.stop().await;
}

/// A relay that cannot deliver (nothing bound to the exchange: the broker returns the event, the
/// relay holds its position) keeps the slot behind until PostgreSQL invalidates it under the relay
/// and ends its session. Once the event can be delivered and the relay reads again, it reports the
/// invalidation and what to run, instead of retrying blindly.
#[tokio::test]
async fn a_slot_invalidated_under_a_running_relay_is_reported() {
    let scene = SlotScene::new("resync_running").await;
    let (pool, slot) = (&scene.pool, &scene.slot);
    let mut env = scene.env.clone();
    env.insert("RELAY_HTTP_PORT".into(), free_port().to_string());
    let mut relay = common::spawn_relay(&env);
    relay.wait_healthy(EVENTUALLY).await.unwrap();
    insert_each(pool, &Row::orders("order-1", "OrderCreated", 0..1)).await;
    relay
        .wait_health(
            "the relay to stall on the returned event",
            EVENTUALLY,
            |_, body| body["stalled"].is_string(),
        )
        .await
        .unwrap();

    invalidate_slot(pool, slot).await;
    // The cause fixed: the stalled event is delivered, and the relay, reading again, finds its
    // session gone and the slot invalidated.
    let queue = bind_queue(&scene.vhost.amqp_url, "order.events").await;
    take_exactly(&queue, 1).await;

    let (status, body) = relay
        .wait_health("the invalidation reported", EVENTUALLY, |_, body| {
            body["last_error"]
                .as_str()
                .is_some_and(|error| error.contains("was invalidated by PostgreSQL"))
        })
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    let error = body["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("outbox-relay resync --recreate-slot"),
        "{error}"
    );
    let metrics = relay.metrics().await.unwrap();
    assert!(
        metrics.contains("outbox_relay_slot_invalidated 1"),
        "{metrics}"
    );

    relay.terminate(Duration::from_secs(10)).await.unwrap();
    queue.close().await;
    scene.stop().await;
}

#[tokio::test]
async fn an_empty_range_publishes_nothing_and_succeeds() {
    let fixture = Fixture::new("resync_empty").await;
    let env = fixture.env(0);
    let output = relay_command(&env, &["resync", "--since", "2999-01-01T00:00:00Z"]).await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("re-published 0 events (0 rows"),
        "{}",
        text(&output)
    );
    fixture.cleanup().await;
}
