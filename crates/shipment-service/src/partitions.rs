//! Partitioned consumption (`SHIPMENT_PARTITIONS` = N > 1): several instances share the N
//! partition queues, each partition applied by one instance at a time, the work spread over
//! the live instances, and a dead instance's partitions taken over within seconds.
//!
//! Why not simply register every instance on every partition and let RabbitMQ's single active
//! consumer pick: RabbitMQ 3.10 activates the *first registered* consumer and keeps it until it
//! goes away. The instance that starts first would apply every partition while the others
//! wait, and an instance that comes back would never get work again. So the instances agree
//! on an assignment instead, and register only on the partitions assigned to them:
//!
//! - **Membership, through RabbitMQ.** Every instance announces its id each second on the
//!   fanout exchange `shipment.orders.members` and hears every announcement through an
//!   exclusive queue of its own. The members are the ids heard within the last
//!   [`MEMBER_TIMEOUT`]. No other coordinator: the broker cluster is the only shared thing.
//! - **Assignment.** With the members' ids sorted, partition `p` goes to member `p mod M`.
//!   Every instance computes the same assignment from the same view; 4 partitions on 3
//!   instances are 2/1/1.
//! - **Hand-over.** An instance gives up a partition by cancelling its consumer session
//!   (the batch in hand is committed and acked, the deliveries it held return to the queue);
//!   it takes one by opening a session on it.
//!
//! Single active consumer stays on every partition queue, as the guard: while two views
//! disagree (an instance just joined or left), two instances may both be registered on a
//! partition, and RabbitMQ still lets only the first one consume. Order holds across a
//! hand-over: the broker redelivers the returned deliveries before later ones, and an event
//! whose first apply is still committing elsewhere waits on its `consumed_message` row and is
//! then recognised as a duplicate.
//!
//! Failover time: a killed instance's connections close at once, its partitions' deliveries
//! return to the queues; the others drop it from their view after [`MEMBER_TIMEOUT`] (3 s) and
//! open sessions on its partitions.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ExchangeKind};
use service_kit::Backoff;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, BrokerError};
use crate::config::{BrokerSettings, ConsumerSettings};
use crate::consumer::{Consumer, Health, watch_alarms};
use crate::metrics as names;

/// How often an instance announces itself.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// An instance not heard for this long is gone; its partitions go to the others.
pub const MEMBER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a starting instance listens before its first assignment: long enough to hear
/// every live member once, so that it does not first claim partitions others hold.
const SETTLE: Duration = Duration::from_millis(2_500);

/// A random id for this process (std's hasher keys are random per process).
pub fn new_instance_id() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Who is alive, as this instance sees it: sorted ids, this instance included only while its
/// own announcements come back (while it is connected).
pub type View = Vec<u64>;

/// The partitions of `partitions` assigned to `me` when the members are `view`.
pub fn assigned(view: &[u64], me: u64, partitions: u16) -> BTreeSet<u16> {
    let Some(rank) = view.iter().position(|member| *member == me) else {
        return BTreeSet::new();
    };
    (0..partitions)
        .filter(|partition| usize::from(*partition) % view.len() == rank)
        .collect()
}

/// What `/health` reports about partitions.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PartitionReport {
    /// This instance's id (hexadecimal), as the others see it.
    pub instance: String,
    pub partitions: u16,
    pub members: usize,
    pub owned: Vec<u16>,
}

/// Runs the membership and the partition sessions until `shutdown`.
pub async fn run(
    pool: PgPool,
    broker: BrokerSettings,
    consumer: ConsumerSettings,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let me = new_instance_id();
    let (view_sender, view) = watch::channel(View::new());
    let membership = tokio::spawn(membership(
        broker.clone(),
        me,
        view_sender,
        health.clone(),
        shutdown.clone(),
    ));
    supervise(pool, broker, consumer, health, me, view, shutdown).await;
    if let Err(error) = membership.await {
        tracing::error!(%error, "the membership task failed");
    }
}

/// Keeps one consumer session per assigned partition, following the view.
async fn supervise(
    pool: PgPool,
    broker: BrokerSettings,
    settings: ConsumerSettings,
    health: Arc<Health>,
    me: u64,
    mut view: watch::Receiver<View>,
    shutdown: CancellationToken,
) {
    let mut running: HashMap<u16, (CancellationToken, JoinHandle<()>)> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = view.changed() => if changed.is_err() { break },
        }
        let members = view.borrow_and_update().clone();
        let wanted = assigned(&members, me, broker.partitions);
        let released: Vec<u16> = running
            .keys()
            .filter(|partition| !wanted.contains(partition))
            .copied()
            .collect();
        // Give up first, so that the new owner's session becomes the active consumer.
        for partition in &released {
            if let Some((token, task)) = running.remove(partition) {
                token.cancel();
                let _ = task.await;
                metrics::counter!(names::PARTITION_HANDOVERS, "direction" => "released")
                    .increment(1);
            }
        }
        let mut taken = Vec::new();
        for partition in &wanted {
            if running.contains_key(partition) {
                continue;
            }
            let token = shutdown.child_token();
            let consumer = Consumer::for_partition(
                pool.clone(),
                broker.for_partition(*partition),
                settings.clone(),
            );
            let task = tokio::spawn(consumer.run(None, token.clone()));
            running.insert(*partition, (token, task));
            taken.push(*partition);
            metrics::counter!(names::PARTITION_HANDOVERS, "direction" => "taken").increment(1);
        }
        let owned: Vec<u16> = wanted.iter().copied().collect();
        metrics::gauge!(names::PARTITIONS_OWNED).set(owned.len() as f64);
        metrics::gauge!(names::MEMBERS).set(members.len() as f64);
        if !released.is_empty() || !taken.is_empty() {
            tracing::info!(
                members = members.len(),
                ?owned,
                ?taken,
                ?released,
                "partitions of {} reassigned",
                broker.queue
            );
        }
        health.set_partitions(PartitionReport {
            instance: format!("{me:016x}"),
            partitions: broker.partitions,
            members: members.len(),
            owned,
        });
    }
    for (_, (token, task)) in running.drain() {
        token.cancel();
        let _ = task.await;
    }
}

/// Announces `me` and maintains the view, reconnecting as needed. While disconnected the view
/// is empty: this instance owns nothing (the others take over its partitions).
async fn membership(
    broker: BrokerSettings,
    me: u64,
    view: watch::Sender<View>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::starting_at(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let session = tokio::select! {
            _ = shutdown.cancelled() => return,
            session = MemberSession::open(&broker) => session,
        };
        let error = match session {
            Ok(session) => {
                backoff.reset();
                health.set_broker_connected(true);
                let _alarms = watch_alarms(&session.connection, &health);
                let error = session.run(me, &view, &shutdown).await;
                health.set_broker_connected(false);
                health.set_broker_blocked(None);
                session.close().await;
                match error {
                    None => return,
                    Some(error) => error,
                }
            }
            Err(error) => error,
        };
        view.send_replace(View::new());
        let pause = backoff.next_delay();
        tracing::warn!(%error, retry_in = ?pause, "membership: RabbitMQ unavailable; this instance owns no partition meanwhile");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One connection for the announcements.
struct MemberSession {
    connection: Connection,
    channel: lapin::Channel,
    deliveries: lapin::Consumer,
    exchange: String,
}

impl MemberSession {
    async fn open(broker: &BrokerSettings) -> Result<Self, BrokerError> {
        let connection = broker::connect(broker).await?;
        let channel_error = |operation| move |source| BrokerError::Channel { operation, source };
        let channel = connection
            .create_channel()
            .await
            .map_err(channel_error("channel.open"))?;
        let exchange = broker.members_exchange();
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|source| BrokerError::Declare {
                what: format!("exchange {exchange} (durable fanout)"),
                source,
            })?;
        // Ours alone, gone with the connection; stale announcements expire rather than pile
        // up behind a slow reader.
        let mut arguments = FieldTable::default();
        let ttl = i64::try_from(MEMBER_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
            .map_err(|source| BrokerError::Declare {
                what: "the instance's membership queue (exclusive)".to_owned(),
                source,
            })?;
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(channel_error("queue.bind (membership)"))?;
        let deliveries = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(channel_error("basic.consume (membership)"))?;
        Ok(Self {
            connection,
            channel,
            deliveries,
            exchange,
        })
    }

    /// Announces and listens until shutdown (`None`) or a broker error.
    async fn run(
        &self,
        me: u64,
        view: &watch::Sender<View>,
        shutdown: &CancellationToken,
    ) -> Option<BrokerError> {
        let mut deliveries = self.deliveries.clone();
        let mut heard: HashMap<u64, Instant> = HashMap::new();
        let started = Instant::now();
        let mut ticker = tokio::time::interval(HEARTBEAT / 2);
        let mut announced = Instant::now() - HEARTBEAT;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                delivery = deliveries.next() => match delivery {
                    Some(Ok(delivery)) => {
                        if let Ok(bytes) = <[u8; 8]>::try_from(delivery.data.as_slice()) {
                            heard.insert(u64::from_be_bytes(bytes), Instant::now());
                        }
                    }
                    Some(Err(source)) => {
                        return Some(BrokerError::Channel { operation: "consume (membership)", source });
                    }
                    None => return Some(BrokerError::ConsumerEnded),
                },
                _ = ticker.tick() => {
                    // lapin does not always wake a consumer stream when the socket dies.
                    if !self.connection.status().connected() {
                        return Some(BrokerError::ConnectionClosed);
                    }
                    // A resource alarm blocks every instance's announcements at once: silence
                    // then says nothing about who is alive. Keep the view (and so every
                    // partition's consumer, which frees the broker) until it lifts.
                    if self.connection.status().blocked() {
                        let now = Instant::now();
                        heard.values_mut().for_each(|seen| *seen = now);
                        continue;
                    }
                    if announced.elapsed() >= HEARTBEAT {
                        announced = Instant::now();
                        if let Err(source) = self.announce(me).await {
                            return Some(BrokerError::Channel { operation: "basic.publish (membership)", source });
                        }
                    }
                    heard.retain(|_, seen| seen.elapsed() < MEMBER_TIMEOUT);
                    if started.elapsed() >= SETTLE {
                        let mut members: View = heard.keys().copied().collect();
                        members.sort_unstable();
                        view.send_if_modified(|current| {
                            let changed = *current != members;
                            if changed {
                                *current = members;
                            }
                            changed
                        });
                    }
                }
            }
        }
    }

    async fn announce(&self, me: u64) -> Result<(), lapin::Error> {
        let expiration = MEMBER_TIMEOUT.as_millis().to_string();
        self.channel
            .basic_publish(
                self.exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &me.to_be_bytes(),
                BasicProperties::default().with_expiration(expiration.into()),
            )
            .await
            .map(|_| ())
    }

    async fn close(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.connection.close(200, "membership closed".into()),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_exactly_one_owner_and_the_spread_is_even() {
        let view: View = vec![3, 9, 40];
        let owned: Vec<BTreeSet<u16>> = view.iter().map(|me| assigned(&view, *me, 4)).collect();
        let sizes: Vec<usize> = owned.iter().map(BTreeSet::len).collect();
        assert_eq!(sizes, [2, 1, 1]);
        let mut all: Vec<u16> = owned.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 3]);
    }

    #[test]
    fn an_instance_outside_the_view_owns_nothing() {
        assert!(assigned(&[1, 2], 7, 4).is_empty());
        assert!(assigned(&[], 7, 4).is_empty());
        assert_eq!(assigned(&[7], 7, 3).len(), 3);
    }

    #[test]
    fn ids_differ_between_calls() {
        assert_ne!(new_instance_id(), new_instance_id());
    }
}
