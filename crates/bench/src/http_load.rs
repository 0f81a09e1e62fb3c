//! HTTP (issue 7, item 5): order-service `POST /orders` throughput and latency at several
//! concurrency levels. The service runs in this process (`Application::build`, its default
//! settings and pool size) against a database of its own; each level is a closed loop of
//! `concurrency` clients sending the request of `resources/data/create-order-request.json`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::infra::BenchDb;
use crate::stats::Percentiles;

/// The body of `resources/data/create-order-request.json`.
pub const CREATE_ORDER: &str = r#"{"customerId":3,"orderDate":"2024-01-01T12:00:00","lineItems":[{"item":"Debezium in Action","quantity":2,"totalPrice":39.98},{"item":"Debezium for Dummies","quantity":1,"totalPrice":29.99}]}"#;

/// One concurrency level.
#[derive(Debug, Clone, Serialize)]
pub struct HttpRun {
    pub concurrency: usize,
    pub requests_per_s: f64,
    pub latency_ms: Option<Percentiles>,
    pub errors: u64,
}

/// Every level of `levels`, `seconds` each, on one service instance.
pub async fn http_repetition(levels: &[usize], seconds: f64) -> Result<Vec<HttpRun>> {
    let db = BenchDb::create("bench_http", 2).await?;
    let result = run_on(&db, levels, seconds).await;
    db.drop().await?;
    result
}

async fn run_on(db: &BenchDb, levels: &[usize], seconds: f64) -> Result<Vec<HttpRun>> {
    let variables = HashMap::from([
        ("DATABASE_URL", db.url().to_owned()),
        ("SERVER_PORT", "0".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]);
    let config = order_service::Config::from_lookup(|name| variables.get(name).cloned())
        .context("order-service configuration")?;
    let app = order_service::Application::build(config)
        .await
        .context("starting order-service")?;
    let url = format!("http://127.0.0.1:{}/orders", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let mut runs = Vec::with_capacity(levels.len());
    let mut failure = None;
    for &concurrency in levels {
        match load(&url, concurrency, seconds).await {
            Ok(run) => {
                tracing::info!(
                    concurrency,
                    requests_per_s = run.requests_per_s.round(),
                    "HTTP level"
                );
                runs.push(run);
            }
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    let _ = stop.send(());
    server
        .await
        .context("order-service panicked")?
        .context("order-service failed")?;
    match failure {
        Some(error) => Err(error),
        None => Ok(runs),
    }
}

async fn load(url: &str, concurrency: usize, seconds: f64) -> Result<HttpRun> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let warm_up = Duration::from_secs_f64((seconds / 5.0).min(0.5));
    let start = Instant::now();
    let count_from = start + warm_up;
    let end = count_from + Duration::from_secs_f64(seconds);
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.to_owned();
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(CREATE_ORDER)
                    .send()
                    .await;
                let ok = match response {
                    Ok(response) => {
                        let created = response.status() == reqwest::StatusCode::CREATED;
                        // Read the body: the request is complete only then.
                        created && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                if sent >= count_from {
                    if ok {
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for client in clients {
        let (mut some, failed) = client.await.context("an HTTP client panicked")?;
        latencies.append(&mut some);
        errors += failed;
    }
    if latencies.is_empty() {
        bail!("no POST /orders succeeded at concurrency {concurrency} ({errors} errors)");
    }
    Ok(HttpRun {
        concurrency,
        requests_per_s: latencies.len() as f64 / seconds,
        latency_ms: Percentiles::of(&mut latencies),
        errors,
    })
}
