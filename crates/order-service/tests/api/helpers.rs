//! `spawn_app` and the typed request helpers every test uses.

use std::collections::HashMap;

use order_service::{Application, Config};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use test_support::TestDatabase;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const CREATE_ORDER_REQUEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../resources/data/create-order-request.json"
);
pub const CANCEL_ORDER_LINE_REQUEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../resources/data/cancel-order-line-request.json"
);

/// The body of `resources/data/create-order-request.json`.
pub fn sample_create_request() -> Value {
    serde_json::from_str(&std::fs::read_to_string(CREATE_ORDER_REQUEST).unwrap()).unwrap()
}

/// The body of `resources/data/cancel-order-line-request.json`.
pub fn sample_cancel_request() -> Value {
    serde_json::from_str(&std::fs::read_to_string(CANCEL_ORDER_LINE_REQUEST).unwrap()).unwrap()
}

/// Row counts of the three tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub orders: i64,
    pub lines: i64,
    pub events: i64,
}

impl Counts {
    pub const fn new(orders: i64, lines: i64, events: i64) -> Self {
        Self {
            orders,
            lines,
            events,
        }
    }
}

/// One row of the outbox table.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: uuid::Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub payload: Value,
}

/// A running order-service over its own database.
pub struct TestApp {
    pub address: String,
    pub db: TestDatabase,
    pub schema: String,
    /// The service's own pool (closing it simulates a database outage).
    pub app_pool: PgPool,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Spawns the app with extra environment variables on top of `DATABASE_URL` and `SERVER_PORT=0`.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    test_support::init_tracing();
    let db = TestDatabase::create("orders").await.unwrap();
    spawn_app_on(db, extra).await
}

/// Spawns the app over `db` as it is (e.g. made with the original system's DDL).
pub async fn spawn_app_on(db: TestDatabase, extra: &[(&str, &str)]) -> TestApp {
    test_support::init_tracing();
    let mut vars: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".to_owned(), db.url.clone()),
        ("SERVER_PORT".to_owned(), "0".to_owned()),
    ]);
    for (name, value) in extra {
        vars.insert((*name).to_owned(), (*value).to_owned());
    }
    let config = Config::from_lookup(|name| vars.get(name).cloned()).unwrap();
    let schema = config.database.schema.clone();
    let application = Application::build(config).await.unwrap();
    let address = format!("http://127.0.0.1:{}", application.port());
    let app_pool = application.pool().clone();
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        db,
        schema,
        app_pool,
        client: reqwest::Client::new(),
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_order(&self, body: &Value) -> Response {
        self.client
            .post(self.url("/orders"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POSTs raw bytes with the given `Content-Type` (none when `None`).
    pub async fn post_order_raw(
        &self,
        body: impl Into<reqwest::Body>,
        content_type: Option<&str>,
    ) -> Response {
        let mut request = self.client.post(self.url("/orders")).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send().await.unwrap()
    }

    pub async fn get_order(&self, order_id: &str) -> Response {
        self.client
            .get(self.url(&format!("/orders/{order_id}")))
            .send()
            .await
            .unwrap()
    }

    /// GETs the order `order` names by its `id`; returns the answer's body.
    pub async fn fetch_order(&self, order: &Value) -> Value {
        self.get_order(order["id"].as_str().unwrap())
            .await
            .json()
            .await
            .unwrap()
    }

    pub async fn put_line(&self, order_id: &str, line_id: &str, body: &Value) -> Response {
        self.client
            .put(self.url(&format!("/orders/{order_id}/lines/{line_id}")))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// PUTs `{"newStatus": new_status}` for the line.
    pub async fn put_status(&self, order_id: &str, line_id: &str, new_status: &str) -> Response {
        self.put_line(
            order_id,
            line_id,
            &serde_json::json!({ "newStatus": new_status }),
        )
        .await
    }

    pub async fn put_line_raw(
        &self,
        order_id: &str,
        line_id: &str,
        body: impl Into<reqwest::Body>,
        content_type: Option<&str>,
    ) -> Response {
        let mut request = self
            .client
            .put(self.url(&format!("/orders/{order_id}/lines/{line_id}")))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// GETs `path`, asserts a 200 and answers the JSON body.
    pub async fn get_ok_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    /// GETs `/metrics`, asserts a 200 in the Prometheus text format and answers the text.
    pub async fn metrics_text(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        response.text().await.unwrap()
    }

    pub async fn request(&self, method: reqwest::Method, path: &str) -> Response {
        self.client
            .request(method, self.url(path))
            .send()
            .await
            .unwrap()
    }

    /// Creates the sample order; returns the response body.
    pub async fn create_sample_order(&self) -> Value {
        let response = self.post_order(&sample_create_request()).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    pub async fn counts(&self) -> Counts {
        let count = |table: &str| {
            let sql = format!("SELECT count(*) FROM \"{}\".{table}", self.schema);
            let pool = self.db.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(&sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        Counts {
            orders: count("purchase_order").await,
            lines: count("order_line").await,
            events: count("outbox_event").await,
        }
    }

    /// The outbox rows in insertion order.
    pub async fn outbox_rows(&self) -> Vec<OutboxRow> {
        let rows: Vec<(uuid::Uuid, String, String, String, Value)> = sqlx::query_as(&format!(
            "SELECT id, aggregate_type, aggregate_id, type, payload FROM \"{}\".outbox_event \
             ORDER BY \"timestamp\", id",
            self.schema
        ))
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        rows.into_iter()
            .map(
                |(id, aggregate_type, aggregate_id, event_type, payload)| OutboxRow {
                    id,
                    aggregate_type,
                    aggregate_id,
                    event_type,
                    payload,
                },
            )
            .collect()
    }

    pub async fn line_status(&self, line_id: &str) -> String {
        sqlx::query_scalar(&format!(
            "SELECT status FROM \"{}\".order_line WHERE id = $1::uuid",
            self.schema
        ))
        .bind(line_id)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    /// Stops the app gracefully (asserting it stopped cleanly) and drops its database.
    pub async fn stop(self) {
        self.stop_keeping_database()
            .await
            .drop_database()
            .await
            .unwrap();
    }

    /// Stops the app gracefully (asserting it stopped cleanly) and hands back its database, to
    /// start the service on it again.
    pub async fn stop_keeping_database(mut self) -> TestDatabase {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        self.db
    }
}

/// Asserts a JSON error response: its status, `statusCode` (the same number, as the original's
/// NestJS bodies), `error` code and `field`, and a non-empty `message`. Returns the body.
pub async fn assert_error(
    response: Response,
    status: StatusCode,
    code: &str,
    field: Option<&str>,
) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["statusCode"], status.as_u16(), "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(body["field"].as_str(), field, "{body}");
    body
}

/// [`assert_error`] for an error `code`, with the one status the service answers it with.
pub async fn assert_api_error(response: Response, code: &str, field: Option<&str>) -> Value {
    let status = match code {
        "invalid_field" | "malformed_json" | "invalid_path_parameter" => StatusCode::BAD_REQUEST,
        "not_found" | "order_not_found" | "order_line_not_found" => StatusCode::NOT_FOUND,
        "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
        "status_conflict" => StatusCode::CONFLICT,
        "payload_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "unsupported_media_type" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "internal_error" => StatusCode::INTERNAL_SERVER_ERROR,
        "database_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        other => panic!("no status known for error code {other}"),
    };
    assert_error(response, status, code, field).await
}

/// The ids of an order response: (order id, line ids).
pub fn ids(order: &Value) -> (String, Vec<String>) {
    let order_id = order["id"].as_str().unwrap().to_owned();
    let lines = order["lineItems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line["id"].as_str().unwrap().to_owned())
        .collect();
    (order_id, lines)
}
