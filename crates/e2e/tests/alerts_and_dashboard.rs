//! The Prometheus alert rules (`deploy/prometheus/alerts.yml`) and the Grafana dashboard
//! (`deploy/grafana/outbox-dashboard.json`): they parse, they cover what an operator must be
//! told (relay stalled, lag growing, oldest unconfirmed event, dead letters, consumer delay),
//! every metric they name is one the binaries export (so a renamed metric breaks this test, not
//! an alert in production), and `promtool check rules` accepts the rules (`make test` installs
//! promtool with Debian's `prometheus` package).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use e2e::repo_root;
use serde_json::Value;

const PREFIXES: [&str; 3] = ["outbox_relay_", "shipment_", "http_request"];

/// Every metric name (a string literal with one of [`PREFIXES`]) in the binaries' sources.
fn exported_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for crate_dir in ["outbox-relay", "shipment-service", "order-service"] {
        let mut stack = vec![repo_root().join("crates").join(crate_dir).join("src")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|ext| ext == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for literal in text.split('"').skip(1).step_by(2) {
                        if PREFIXES.iter().any(|prefix| literal.starts_with(prefix))
                            && literal.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        {
                            names.insert(literal.to_owned());
                        }
                    }
                }
            }
        }
    }
    names
}

/// The metric names an expression uses (histogram series map to their metric).
fn metrics_in(expression: &str) -> BTreeSet<String> {
    expression
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| PREFIXES.iter().any(|prefix| word.starts_with(prefix)))
        .map(|word| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word)
                .to_owned()
        })
        .collect()
}

fn alert_rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yml")).unwrap();
    let rules: Value = serde_norway::from_str(&text).expect("alerts.yml parses as YAML");
    let mut alerts = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name").to_owned();
            let expression = rule["expr"].as_str().expect("expr").to_owned();
            assert!(
                rule["annotations"]["summary"].is_string()
                    && rule["annotations"]["description"].is_string(),
                "{name} says what happened and what to do"
            );
            assert!(
                rule["labels"]["severity"].is_string(),
                "{name} has a severity"
            );
            alerts.push((name, expression));
        }
    }
    alerts
}

#[test]
fn the_alert_rules_cover_the_operators_questions_with_exported_metrics() {
    let exported = exported_metrics();
    assert!(
        exported.contains("outbox_relay_lag_bytes")
            && exported.contains("shipment_dead_lettered_total"),
        "the scan finds the metrics: {exported:?}"
    );
    let alerts = alert_rules();
    let names: BTreeSet<&str> = alerts.iter().map(|(name, _)| name.as_str()).collect();
    for required in [
        "OutboxRelayStalled",
        "OutboxRelayLagGrowing",
        "OutboxRelayOldestUnconfirmedEvent",
        "OutboxRelayBrokerBlocked",
        "ShipmentDeadLetters",
        "ShipmentConsumerDelay",
    ] {
        assert!(
            names.contains(required),
            "{required} missing from {names:?}"
        );
    }
    for (name, expression) in &alerts {
        for metric in metrics_in(expression) {
            assert!(
                exported.contains(&metric),
                "alert {name} uses {metric}, which no binary exports"
            );
        }
    }
}

#[test]
fn the_dashboard_shows_exported_metrics_of_the_three_services() {
    let exported = exported_metrics();
    let text =
        std::fs::read_to_string(repo_root().join("deploy/grafana/outbox-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut used = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().expect("targets") {
            for metric in metrics_in(target["expr"].as_str().expect("expr")) {
                assert!(
                    exported.contains(&metric),
                    "panel {title:?} uses {metric}, which no binary exports"
                );
                used.insert(metric);
            }
        }
    }
    for prefix in PREFIXES {
        assert!(
            used.iter().any(|metric| metric.starts_with(prefix)),
            "no panel for {prefix}*"
        );
    }
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let rules = repo_root().join("deploy/prometheus/alerts.yml");
    let output = match std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
    {
        Ok(output) => output,
        Err(error) if std::env::var_os("CI").is_none() => {
            eprintln!(
                "promtool is not installed ({error}): `make test` installs it (Debian package \
                 prometheus); skipping its check here"
            );
            return;
        }
        Err(error) => panic!("promtool is missing under CI: {error}"),
    };
    assert!(
        output.status.success(),
        "promtool refused the rules:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("SUCCESS"), "{said}");
}
