//! The producer load: orders created through the order-service's HTTP API at a fixed rate
//! (with 1–3 lines each), and a line of some of them cancelled right after, until stopped or
//! until the order budget is spent. Loopback only.
//!
//! It records what the API acknowledged (201 for a create, 200 for a cancel): the audit checks
//! that each of these is in the database. Any other answer, a timeout or a refused connection
//! (expected while PostgreSQL restarts) is counted by kind; whether such an order was committed
//! is for the database to say.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How hard and how long to push.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Create requests started per second.
    pub orders_per_second: u32,
    /// No more creates than this in the whole run.
    pub max_orders: u64,
    /// Probability that a created order gets one line cancelled.
    pub cancel_probability: f64,
    /// Most requests in flight at once.
    pub concurrency: usize,
}

/// What the load did and what the API acknowledged.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    pub creates_started: u64,
    /// Orders answered 201, by id.
    pub acknowledged_orders: Vec<Uuid>,
    pub cancels_started: u64,
    /// Lines whose cancel was answered 200.
    pub acknowledged_cancels: Vec<Uuid>,
    /// Answers other than 201/200, by kind (`503`, `timeout`, `connect`, ...).
    pub create_failures: BTreeMap<String, u64>,
    pub cancel_failures: BTreeMap<String, u64>,
    /// Slots skipped because every request slot was busy for over half a second (the service
    /// hung, e.g. while PostgreSQL was down).
    pub skipped: u64,
    pub elapsed: Duration,
}

impl LoadOutcome {
    /// Acknowledged orders per second over the load's duration.
    pub fn acknowledged_rate(&self) -> f64 {
        self.acknowledged_orders.len() as f64 / self.elapsed.as_secs_f64().max(0.001)
    }
}

fn lock(log: &Mutex<LoadOutcome>) -> MutexGuard<'_, LoadOutcome> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the load until `stop` is cancelled or `settings.max_orders` creates were started, then
/// waits for the requests in flight.
pub async fn run(
    order_service_url: String,
    settings: LoadSettings,
    seed: u64,
    stop: CancellationToken,
) -> LoadOutcome {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    let log = Arc::new(Mutex::new(LoadOutcome::default()));
    let slots = Arc::new(Semaphore::new(settings.concurrency));
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let rate = f64::from(settings.orders_per_second.max(1));
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Slots used so far: requests started plus slots skipped while the service hung.
    let mut used: u64 = 0;
    let mut started_count: u64 = 0;
    'load: while started_count < settings.max_orders {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        // More than half a second behind: the service hung; drop the backlog rather than
        // burst it all at once when it comes back.
        let lag_limit = (rate / 2.0) as u64;
        if due > used + lag_limit {
            lock(&log).skipped += due - used - lag_limit;
            used = due - lag_limit;
        }
        while used < due && started_count < settings.max_orders {
            let permit = tokio::select! {
                _ = stop.cancelled() => break 'load,
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break 'load,
                },
            };
            used += 1;
            started_count += 1;
            let request = OrderRequest::random(&mut rng, settings.cancel_probability);
            let http = http.clone();
            let url = order_service_url.clone();
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                request.send(&http, &url, &log).await;
                drop(permit);
            });
        }
    }
    // Wait for the requests in flight: every slot free again.
    let all = u32::try_from(settings.concurrency).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    let mut outcome = std::mem::take(&mut *lock(&log));
    outcome.creates_started = started_count;
    outcome.elapsed = started.elapsed();
    outcome
}

/// One create, and maybe the cancel of one of its lines.
#[derive(Debug)]
struct OrderRequest {
    body: Value,
    /// Which line to cancel after the create, if any.
    cancel_line: Option<usize>,
}

impl OrderRequest {
    fn random(rng: &mut StdRng, cancel_probability: f64) -> Self {
        let lines: usize = rng.random_range(1..=3);
        let line_items: Vec<Value> = (0..lines)
            .map(|index| {
                let cents: u32 = rng.random_range(100..100_000);
                json!({
                    "item": format!("chaos item {}", rng.random_range(0..1000usize) + index),
                    "quantity": rng.random_range(1..=5),
                    "totalPrice": f64::from(cents) / 100.0,
                })
            })
            .collect();
        let body = json!({
            "customerId": rng.random_range(1..=10_000),
            "orderDate": "2024-01-01T12:00:00",
            "lineItems": line_items,
        });
        let cancel_line = rng
            .random_bool(cancel_probability)
            .then(|| rng.random_range(0..lines));
        Self { body, cancel_line }
    }

    async fn send(self, http: &reqwest::Client, url: &str, log: &Mutex<LoadOutcome>) {
        let answer = http
            .post(format!("{url}/orders"))
            .json(&self.body)
            .send()
            .await;
        let order: Value = match answer {
            Ok(response) if response.status() == reqwest::StatusCode::CREATED => {
                match response.json().await {
                    Ok(order) => order,
                    Err(_) => {
                        count(&mut lock(log).create_failures, "201 with unreadable body");
                        return;
                    }
                }
            }
            Ok(response) => {
                count(&mut lock(log).create_failures, response.status().as_str());
                return;
            }
            Err(error) => {
                count(&mut lock(log).create_failures, error_kind(&error));
                return;
            }
        };
        let Some(order_id) = uuid_at(&order, &["id"]) else {
            count(&mut lock(log).create_failures, "201 without an order id");
            return;
        };
        lock(log).acknowledged_orders.push(order_id);
        let Some(line) = self.cancel_line else {
            return;
        };
        let Some(line_id) = order["lineItems"][line]["id"]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok())
        else {
            count(&mut lock(log).cancel_failures, "201 without line ids");
            return;
        };
        lock(log).cancels_started += 1;
        let answer = http
            .put(format!("{url}/orders/{order_id}/lines/{line_id}"))
            .json(&json!({"newStatus": "CANCELLED"}))
            .send()
            .await;
        match answer {
            Ok(response) if response.status() == reqwest::StatusCode::OK => {
                lock(log).acknowledged_cancels.push(line_id);
            }
            Ok(response) => count(&mut lock(log).cancel_failures, response.status().as_str()),
            Err(error) => count(&mut lock(log).cancel_failures, error_kind(&error)),
        }
    }
}

fn uuid_at(value: &Value, path: &[&str]) -> Option<Uuid> {
    let mut current = value;
    for key in path {
        current = current.get(key)?;
    }
    Uuid::parse_str(current.as_str()?).ok()
}

fn count(counts: &mut BTreeMap<String, u64>, kind: &str) {
    *counts.entry(kind.to_owned()).or_default() += 1;
}

fn error_kind(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection refused"
    } else {
        "transport error"
    }
}
