//! The pipeline on an in-memory source and an in-memory sink, in paused time: returns,
//! nacks, reconnects of either side, standby and takeover, unroutable rows, bounded
//! shutdown, and the flush position never passing an unconfirmed event.
//!
//! The source replays a log of transactions (like a slot: a new session starts after the
//! position asked for); the sink records every publish and answers with scripted outcomes,
//! or holds confirms until the test releases them. "Nothing happened" checks let paused time
//! run far ahead, so they cost no wall-clock time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use pgoutput::Lsn;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::message::Encoding;
use crate::pipeline::{Pipeline, Settings};
use crate::router::{RouterConfig, TableName};
use crate::row::{ColumnSchema, Row, TableSchema, Value};
use crate::sink::{Connector, MessageProperties, Outcome, OutgoingMessage, Sink, SinkError};
use crate::source::{Opened, Source, SourceError, SourceEvent};
use crate::telemetry::RelayStatus;

const TABLE_ID: u32 = 16_400;
/// Generous: paused time makes long waits free.
const EVENTUALLY: Duration = Duration::from_secs(120);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap()
}

// ---------------------------------------------------------------- the in-memory source

/// One committed transaction of the in-memory log.
#[derive(Debug, Clone)]
struct Txn {
    commit: Lsn,
    rows: Vec<Row>,
}

#[derive(Debug, Default)]
struct SourceState {
    log: Vec<Txn>,
    /// The next opens answer "standby".
    standby_opens: usize,
    /// The next `next` fails (the session is lost).
    fail_next: bool,
    opens: Vec<Lsn>,
    acked: Vec<Lsn>,
    rewinds: usize,
    closed_at: Option<Lsn>,
}

#[derive(Debug, Clone, Default)]
struct SourceHandle {
    state: Arc<Mutex<SourceState>>,
    appended: Arc<Notify>,
}

impl SourceHandle {
    fn commit(&self, commit: u64, rows: Vec<Row>) {
        lock(&self.state).log.push(Txn {
            commit: Lsn(commit),
            rows,
        });
        self.appended.notify_one();
    }

    fn state(&self) -> MutexGuard<'_, SourceState> {
        lock(&self.state)
    }

    fn acked(&self) -> Vec<Lsn> {
        self.state().acked.clone()
    }
}

/// A log-replaying source; `REREADS` makes it behave like polling (a rewind reads again).
#[derive(Debug)]
struct MemorySource<const REREADS: bool> {
    handle: SourceHandle,
    session: Option<VecDeque<SourceEvent<Lsn>>>,
    /// The log index of the next transaction to read.
    next_txn: usize,
    acked: Lsn,
}

impl<const REREADS: bool> MemorySource<REREADS> {
    fn new(handle: SourceHandle) -> Self {
        Self {
            handle,
            session: None,
            next_txn: 0,
            acked: Lsn(0),
        }
    }

    fn seek(&mut self, after: Lsn) {
        let state = self.handle.state();
        self.next_txn = state
            .log
            .iter()
            .position(|txn| txn.commit > after)
            .unwrap_or(state.log.len());
    }
}

impl<const REREADS: bool> Source for MemorySource<REREADS> {
    type Position = Lsn;
    const REREADS_CHANGED_ROWS: bool = REREADS;

    async fn open(&mut self, from: Lsn) -> Result<Opened<Lsn>, SourceError> {
        {
            let mut state = self.handle.state();
            state.opens.push(from);
            if state.standby_opens > 0 {
                state.standby_opens -= 1;
                return Ok(Opened::Standby);
            }
        }
        self.seek(from);
        self.acked = from;
        self.session = Some(VecDeque::from([SourceEvent::Table(outbox_table())]));
        Ok(Opened::Streaming { from })
    }

    async fn next(&mut self) -> Result<SourceEvent<Lsn>, SourceError> {
        loop {
            let Some(pending) = self.session.as_mut() else {
                return Err(SourceError::Ended);
            };
            if let Some(event) = pending.pop_front() {
                return Ok(event);
            }
            {
                let mut state = self.handle.state();
                if std::mem::take(&mut state.fail_next) {
                    drop(state);
                    self.session = None;
                    return Err(SourceError::Ended);
                }
                if let Some(txn) = state.log.get(self.next_txn) {
                    pending.push_back(SourceEvent::Begin { commit_time: None });
                    pending.extend(txn.rows.iter().cloned().map(SourceEvent::Row));
                    pending.push_back(SourceEvent::Commit {
                        position: txn.commit,
                    });
                    self.next_txn += 1;
                    continue;
                }
            }
            // Cancel-safe: a notification is kept until someone waits.
            self.handle.appended.notified().await;
        }
    }

    fn ack(&mut self, position: Lsn) {
        assert!(position > self.acked, "acks only move forward");
        self.acked = position;
        self.handle.state().acked.push(position);
    }

    fn rewind(&mut self) {
        assert!(REREADS, "only a re-reading source is rewound");
        self.handle.state().rewinds += 1;
        let acked = self.acked;
        self.seek(acked);
        if let Some(pending) = self.session.as_mut() {
            pending.clear();
        }
    }

    fn disconnect(&mut self) {
        self.session = None;
    }

    async fn close(&mut self, position: Lsn) {
        self.session = None;
        self.handle.state().closed_at = Some(position);
    }
}

// ------------------------------------------------------------------ the in-memory sink

#[derive(Debug, Default)]
struct SinkState {
    /// `(exchange, message id)` of every publish, replays included.
    published: Vec<(String, String)>,
    /// Outcomes of the next publishes, in order; then `Delivered`, or held.
    script: VecDeque<Outcome>,
    /// Confirms wait for [`SinkHandle::release`].
    hold: bool,
    held: VecDeque<oneshot::Sender<Outcome>>,
    /// The connection with this number is the live one.
    live: u64,
    connects: u64,
    /// The next connection attempts fail.
    connect_failures: usize,
    closed: bool,
}

#[derive(Debug, Clone, Default)]
struct SinkHandle {
    state: Arc<Mutex<SinkState>>,
}

impl SinkHandle {
    fn state(&self) -> MutexGuard<'_, SinkState> {
        lock(&self.state)
    }

    fn ids(&self) -> Vec<String> {
        self.state()
            .published
            .iter()
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Answers the oldest held confirm.
    fn release(&self, outcome: Outcome) {
        let sender = self.state().held.pop_front().expect("a held confirm");
        let _ = sender.send(outcome);
    }

    fn held(&self) -> usize {
        self.state().held.len()
    }

    /// The connection drops (every held confirm is lost with it).
    fn lose_connection(&self) {
        let mut state = self.state();
        state.live += 1_000;
        state.held.clear();
    }
}

#[derive(Debug)]
struct MemorySink {
    handle: SinkHandle,
    number: u64,
}

type Confirm = Pin<Box<dyn Future<Output = Outcome> + Send>>;

impl Sink for MemorySink {
    type Confirm = Confirm;

    async fn publish(&mut self, message: &OutgoingMessage) -> Result<Confirm, SinkError> {
        let mut state = self.handle.state();
        if state.live != self.number {
            return Err(SinkError::Publish {
                exchange: message.exchange.clone(),
                reason: "connection closed (test)".into(),
            });
        }
        state
            .published
            .push((message.exchange.clone(), message.message_id.clone()));
        if let Some(outcome) = state.script.pop_front() {
            return Ok(Box::pin(std::future::ready(outcome)));
        }
        if !state.hold {
            return Ok(Box::pin(std::future::ready(Outcome::Delivered)));
        }
        let (sender, receiver) = oneshot::channel();
        state.held.push_back(sender);
        Ok(Box::pin(async move {
            receiver
                .await
                .unwrap_or_else(|_| Outcome::Failed("connection lost (test)".into()))
        }))
    }

    fn is_connected(&self) -> bool {
        self.handle.state().live == self.number
    }

    async fn close(self) {
        self.handle.state().closed = true;
    }
}

#[derive(Debug)]
struct MemoryConnector {
    handle: SinkHandle,
}

impl Connector for MemoryConnector {
    type Sink = MemorySink;

    async fn connect(&mut self) -> Result<MemorySink, SinkError> {
        let mut state = self.handle.state();
        if state.connect_failures > 0 {
            state.connect_failures -= 1;
            return Err(SinkError::Timeout {
                address: "memory".into(),
            });
        }
        state.connects += 1;
        state.live = state.connects;
        Ok(MemorySink {
            handle: self.handle.clone(),
            number: state.live,
        })
    }

    fn address(&self) -> &str {
        "memory"
    }
}

// --------------------------------------------------------------------------- fixtures

fn outbox_table() -> TableSchema {
    let column = |name: &str| ColumnSchema {
        name: name.into(),
        type_oid: 1043,
    };
    TableSchema {
        id: TABLE_ID,
        name: TableName::parse("orders.outbox_event").unwrap(),
        columns: ["id", "aggregate_type", "aggregate_id", "type", "payload"]
            .into_iter()
            .map(column)
            .collect(),
    }
}

/// An outbox row with event id `id`, routed to `order.events`.
fn row(id: &str) -> Row {
    row_to(id, Some("order"))
}

/// A row whose routing column is `aggregate_type` (NULL: unroutable), of its own aggregate.
fn row_to(id: &str, aggregate_type: Option<&str>) -> Row {
    row_of(id, aggregate_type, &format!("agg-{id}"))
}

/// A row of aggregate `aggregate`.
fn row_of(id: &str, aggregate_type: Option<&str>, aggregate: &str) -> Row {
    let text = |value: &str| Value::Text(Bytes::copy_from_slice(value.as_bytes()));
    Row {
        table: TABLE_ID,
        values: vec![
            text(id),
            aggregate_type.map_or(Value::Null, text),
            text(aggregate),
            text("OrderCreated"),
            text(r#"{"n":1}"#),
        ],
    }
}

fn settings(dead_letter_exchange: Option<&str>) -> Settings {
    Settings {
        router: RouterConfig::default(),
        encoding: Encoding {
            wire_format: wire_format::WireFormat::Plain,
            payload_field: "payload".into(),
            properties: MessageProperties::Full,
        },
        dead_letter_exchange: dead_letter_exchange.map(str::to_owned),
        window_events: 100,
        window_bytes: 1 << 20,
        shutdown_timeout: Duration::from_secs(5),
    }
}

struct Running {
    source: SourceHandle,
    sink: SinkHandle,
    status: Arc<RelayStatus>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops it; the run must end within the shutdown timeout plus the closes' bounds.
    async fn shutdown(self) -> (SourceHandle, SinkHandle) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("shutdown is bounded")
            .unwrap();
        (self.source, self.sink)
    }
}

async fn start_with<const REREADS: bool>(
    settings: Settings,
    prepare: impl FnOnce(&SourceHandle, &SinkHandle),
) -> Running {
    let source = SourceHandle::default();
    let sink = SinkHandle::default();
    prepare(&source, &sink);
    let mut connector = MemoryConnector {
        handle: sink.clone(),
    };
    let first = connector.connect().await.unwrap();
    let status = Arc::new(RelayStatus::default());
    let pipeline = Pipeline::new(
        settings,
        Arc::clone(&status),
        MemorySource::<REREADS>::new(source.clone()),
        connector,
        first,
        Lsn(0),
    );
    let stop = CancellationToken::new();
    let shutdown = {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    };
    let task = tokio::spawn(pipeline.run(shutdown));
    Running {
        source,
        sink,
        status,
        stop,
        task,
    }
}

async fn start(prepare: impl FnOnce(&SourceHandle, &SinkHandle)) -> Running {
    start_with::<false>(settings(None), prepare).await
}

/// Starts with confirms held and one transaction (commit 100) of `events`, all published.
async fn start_holding(events: &[&str]) -> Running {
    let relay = start(|source, sink| {
        sink.state().hold = true;
        source.commit(100, events.iter().map(|id| row(id)).collect());
    })
    .await;
    eventually("published", || relay.sink.held() == events.len()).await;
    relay
}

/// Waits (in paused time) until `condition` holds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(EVENTUALLY, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for: {what}");
}

/// Lets paused time run `seconds` ahead (for "nothing happens" checks).
async fn later(seconds: u64) {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}

/// The refused event `e1` went out `times` times, each retry alone (nothing else between
/// the first publish and the last retry but what was published before the refusal came
/// back), and after the successful retry the rest in order.
fn assert_probed(published: &[String], times: usize, rest: &[&str], label: &str) {
    assert_eq!(published[0], "e1", "{label}: {published:?}");
    let retries: Vec<usize> = (0..published.len())
        .filter(|&i| published[i] == "e1")
        .collect();
    assert_eq!(retries.len(), times, "{label}: {published:?}");
    for pair in retries[1..].windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "{label}: retries alone: {published:?}"
        );
    }
    let last = *retries.last().unwrap();
    assert_eq!(published[last + 1..], ids(rest), "{label}: {published:?}");
}

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

// ------------------------------------------------------------------------------ tests

#[tokio::test(start_paused = true)]
async fn the_flush_position_never_passes_an_unconfirmed_event() {
    let relay = start(|source, sink| {
        sink.state().hold = true;
        source.commit(100, vec![row("a1"), row("a2")]);
        source.commit(200, vec![row("b1")]);
    })
    .await;
    eventually("three publishes", || relay.sink.held() == 3).await;
    assert_eq!(relay.sink.ids(), ids(&["a1", "a2", "b1"]));

    relay.sink.release(Outcome::Delivered);
    later(10).await;
    assert!(relay.source.acked().is_empty(), "a2 is not confirmed");
    relay.sink.release(Outcome::Delivered);
    eventually("first transaction acked", || {
        relay.source.acked() == [Lsn(100)]
    })
    .await;
    relay.sink.release(Outcome::Delivered);
    eventually("second transaction acked", || {
        relay.source.acked() == [Lsn(100), Lsn(200)]
    })
    .await;
    assert_eq!(relay.status.report().events_confirmed, 3);
    let (source, _) = relay.shutdown().await;
    assert_eq!(source.state().closed_at, Some(Lsn(200)));
}

async fn refused_event_is_retried_alone_then_the_rest(refusal: Outcome, label: &str) {
    let relay = start(|source, sink| {
        sink.state().script.push_back(refusal);
        source.commit(100, vec![row("e1"), row("e2"), row("e3")]);
    })
    .await;
    eventually("the refusal reported", || {
        relay.status.report().stalled.is_some()
    })
    .await;
    let report = relay.status.report();
    assert!(
        report.stalled.as_deref().unwrap().contains("order.events"),
        "{report:?}"
    );
    assert!(!report.ready);
    assert!(report.unroutable_events >= 1);
    eventually("delivered after the retry", || {
        relay.source.acked() == [Lsn(100)]
    })
    .await;
    assert_probed(&relay.sink.ids(), 2, &["e2", "e3"], label);
    eventually("stall cleared", || relay.status.report().stalled.is_none()).await;
    relay.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_returned_event_is_never_success_and_is_published_again_alone() {
    refused_event_is_retried_alone_then_the_rest(
        Outcome::Returned {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
        },
        "returned",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_nacked_event_is_never_success_and_is_published_again_alone() {
    refused_event_is_retried_alone_then_the_rest(Outcome::Nacked, "nacked").await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_probe_keeps_the_stall_and_nothing_is_acked() {
    let relay = start(|source, sink| {
        let returned = Outcome::Returned {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
        };
        sink.state()
            .script
            .extend([returned.clone(), returned.clone(), returned]);
        source.commit(100, vec![row("e1"), row("e2")]);
    })
    .await;
    eventually("three refusals", || {
        relay.sink.ids().iter().filter(|id| *id == "e1").count() >= 3
    })
    .await;
    assert!(relay.source.acked().is_empty());
    assert!(relay.status.report().stalled.is_some());
    eventually("delivered once the broker routes", || {
        relay.source.acked() == [Lsn(100)]
    })
    .await;
    assert_probed(&relay.sink.ids(), 4, &["e2"], "returned three times");
    relay.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_sink_connection_publishes_the_window_again_on_a_new_one() {
    let relay = start_holding(&["e1", "e2"]).await;
    {
        let mut state = relay.sink.state();
        state.connect_failures = 2;
        state.hold = false;
    }
    relay.sink.lose_connection();
    eventually("republished on a new connection", || {
        relay.source.acked() == [Lsn(100)]
    })
    .await;
    assert_eq!(relay.sink.ids(), ids(&["e1", "e2", "e1", "e2"]));
    assert_eq!(
        relay.sink.state().connects,
        2,
        "two failed attempts, then one"
    );
    let report = relay.status.report();
    assert!(
        report.broker_connected && report.last_error.is_none(),
        "{report:?}"
    );
    relay.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_confirm_reconnects_the_sink() {
    let relay = start(|source, sink| {
        sink.state()
            .script
            .push_back(Outcome::Failed("channel closed".into()));
        source.commit(100, vec![row("e1")]);
    })
    .await;
    eventually("acked", || relay.source.acked() == [Lsn(100)]).await;
    assert_eq!(relay.sink.ids(), ids(&["e1", "e1"]));
    assert_eq!(relay.sink.state().connects, 2);
    relay.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_source_reopens_from_the_flush_position() {
    let relay = start(|source, _| source.commit(100, vec![row("e1")])).await;
    eventually("first acked", || relay.source.acked() == [Lsn(100)]).await;
    relay.source.state().fail_next = true;
    relay.source.commit(200, vec![row("e2")]);
    eventually("second acked", || {
        relay.source.acked() == [Lsn(100), Lsn(200)]
    })
    .await;
    assert_eq!(relay.source.state().opens, [Lsn(0), Lsn(100)]);
    assert_eq!(
        relay.sink.ids(),
        ids(&["e1", "e2"]),
        "nothing acked comes again"
    );
    assert!(relay.status.report().streaming);
    relay.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_source_waits_for_the_window_to_drain_before_reopening() {
    let relay = start_holding(&["e1"]).await;
    relay.source.state().fail_next = true;
    relay.source.commit(200, vec![row("e2")]);
    later(10).await;
    assert_eq!(
        relay.source.state().opens.len(),
        1,
        "not while e1 is in flight"
    );
    relay.sink.release(Outcome::Delivered);
    eventually("reopened from the flush position", || {
        relay.source.state().opens == [Lsn(0), Lsn(100)]
    })
    .await;
    eventually("e2 published", || relay.sink.held() == 1).await;
    relay.sink.release(Outcome::Delivered);
    eventually("both acked", || {
        relay.source.acked() == [Lsn(100), Lsn(200)]
    })
    .await;
    relay.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_standby_takes_over_when_the_source_is_free() {
    let relay = start(|source, _| {
        source.state().standby_opens = 3;
        source.commit(100, vec![row("e1")]);
    })
    .await;
    eventually("standing by", || relay.status.report().standby).await;
    assert!(!relay.status.report().ready);
    assert!(relay.sink.ids().is_empty(), "a standby reads nothing");
    eventually("took over", || relay.source.acked() == [Lsn(100)]).await;
    let report = relay.status.report();
    assert!(!report.standby && report.streaming, "{report:?}");
    assert_eq!(relay.source.state().opens.len(), 4);
    relay.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_unroutable_row_stalls_reading_where_rows_cannot_change() {
    let relay = start(|source, _| {
        source.commit(100, vec![row("e1")]);
        source.commit(200, vec![row("e2"), row_to("bad", None), row("e3")]);
        source.commit(300, vec![row("e4")]);
    })
    .await;
    eventually("stalled", || relay.status.report().stalled.is_some()).await;
    let report = relay.status.report();
    let reason = report.stalled.clone().unwrap();
    assert!(reason.contains("route.by.field"), "{reason}");
    assert_eq!(report.unroutable_events, 1);
    later(60).await;
    // e2 went out; nothing after the row did, and the flush stays before its transaction.
    assert_eq!(relay.sink.ids(), ids(&["e1", "e2"]));
    assert_eq!(relay.source.acked(), [Lsn(100)]);
    assert_eq!(relay.source.state().rewinds, 0);
    assert_eq!(relay.status.report().unroutable_events, 1, "counted once");
    let (source, _) = relay.shutdown().await;
    assert_eq!(source.state().closed_at, Some(Lsn(100)));
}

#[tokio::test(start_paused = true)]
async fn an_unroutable_row_goes_to_the_dead_letter_exchange() {
    let relay = start_with::<false>(settings(Some("relay.dlx")), |source, _| {
        source.commit(100, vec![row("e1"), row_to("bad", None), row("e3")]);
    })
    .await;
    eventually("acked", || relay.source.acked() == [Lsn(100)]).await;
    let published = relay.sink.state().published.clone();
    let exchanges: Vec<&str> = published.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(exchanges, ["order.events", "relay.dlx", "order.events"]);
    assert!(relay.status.report().stalled.is_none());
    assert_eq!(relay.status.report().unroutable_events, 1);
    relay.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_rereading_source_resumes_once_the_row_is_fixed() {
    // Like polling: each row its own transaction.
    let relay = start_with::<true>(settings(None), |source, _| {
        source.commit(1, vec![row("e1")]);
        source.commit(2, vec![row_to("bad", None)]);
        source.commit(3, vec![row("e3")]);
    })
    .await;
    eventually("stalled", || relay.status.report().stalled.is_some()).await;
    eventually("rows before it acked", || relay.source.acked() == [Lsn(1)]).await;
    eventually("read again", || relay.source.state().rewinds >= 2).await;
    assert_eq!(relay.sink.ids(), ids(&["e1"]));
    assert_eq!(relay.status.report().unroutable_events, 1, "counted once");

    // The operator fixes the row.
    relay.source.state().log[1].rows[0] = row("bad");
    eventually("resumed", || {
        relay.source.acked() == [Lsn(1), Lsn(2), Lsn(3)]
    })
    .await;
    assert_eq!(relay.sink.ids(), ids(&["e1", "bad", "e3"]));
    eventually("stall cleared", || relay.status.report().stalled.is_none()).await;
    relay.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_in_flight_confirms_then_acks_them() {
    let relay = start_holding(&["e1", "e2"]).await;
    relay.stop.cancel();
    later(1).await;
    assert!(!relay.task.is_finished(), "waits for the confirms");
    relay.sink.release(Outcome::Delivered);
    relay.sink.release(Outcome::Delivered);
    let (source, sink) = relay.shutdown().await;
    assert_eq!(source.state().closed_at, Some(Lsn(100)));
    assert!(sink.state().closed);
}

#[tokio::test(start_paused = true)]
async fn shutdown_with_confirms_that_never_come_is_bounded() {
    let relay = start_holding(&["e1"]).await;
    let (source, sink) = relay.shutdown().await;
    assert_eq!(
        source.state().closed_at,
        Some(Lsn(0)),
        "nothing unconfirmed acked"
    );
    assert!(sink.state().closed);
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_prompt_while_paused_standing_by_or_reconnecting() {
    // Paused after a return (the retry is seconds away).
    let paused = start(|source, sink| {
        sink.state()
            .script
            .extend([Outcome::Nacked, Outcome::Nacked, Outcome::Nacked]);
        source.commit(100, vec![row("e1")]);
    })
    .await;
    eventually("stalled", || paused.status.report().stalled.is_some()).await;
    paused.shutdown().await;

    // Standing by for ever.
    let standby = start(|source, _| source.state().standby_opens = usize::MAX).await;
    eventually("standing by", || standby.status.report().standby).await;
    standby.shutdown().await;

    // The sink cannot reconnect.
    let reconnecting = start(|source, _| source.commit(100, vec![row("e1")])).await;
    reconnecting.sink.state().connect_failures = usize::MAX;
    reconnecting.sink.lose_connection();
    eventually("disconnected", || {
        !reconnecting.status.report().broker_connected
    })
    .await;
    reconnecting.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_aggregates_next_event_waits_for_the_confirm_of_the_one_before() {
    // a1 and a2 are one order's events, b1 another's: a2 is not published while a1 waits for
    // its confirm, so a refusal of a1 can never let a2 into the queue ahead of it.
    let relay = start(|source, sink| {
        sink.state().hold = true;
        source.commit(
            100,
            vec![
                row_of("a1", Some("order"), "order-a"),
                row_of("b1", Some("order"), "order-b"),
                row_of("a2", Some("order"), "order-a"),
            ],
        );
    })
    .await;
    eventually("a1 and b1 published", || relay.sink.held() == 2).await;
    later(1).await;
    assert_eq!(relay.sink.ids(), ["a1", "b1"], "a2 waits for a1's confirm");
    relay.sink.release(Outcome::Delivered);
    eventually("a2 published", || relay.sink.ids().len() == 3).await;
    assert_eq!(relay.sink.ids(), ["a1", "b1", "a2"]);
    relay.sink.release(Outcome::Delivered);
    relay.sink.release(Outcome::Delivered);
    let (source, _) = relay.shutdown().await;
    assert_eq!(source.state().closed_at, Some(Lsn(100)));
}
