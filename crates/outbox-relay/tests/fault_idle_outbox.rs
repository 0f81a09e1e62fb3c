//! An idle outbox in a busy database: writes to other tables move the slot forward, so the
//! relay does not pin WAL (no heartbeat table needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, current_wal_lsn, spawn_streaming, stop_relay};

#[tokio::test]
async fn slot_advances_while_only_other_tables_change() {
    let fixture = Fixture::new("relay_idle").await;
    let (mut relay, before) = spawn_streaming(&fixture).await;

    for round in 0..200 {
        sqlx::query("INSERT INTO orders.other_table (note) VALUES ($1)")
            .bind(format!("busy {round} {}", "x".repeat(200)))
            .execute(&fixture.db.pool)
            .await
            .unwrap();
    }
    let written = current_wal_lsn(&fixture.db.pool).await;
    assert!(written > before);

    let confirmed = fixture
        .wait_slot_past("slot advances past the other table's writes", written)
        .await;
    eprintln!("idle outbox: slot advanced {} bytes", confirmed - before);
    stop_relay(&mut relay).await;
    fixture.cleanup().await;
}
