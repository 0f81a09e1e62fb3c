//! The report: every figure as median [min–max] over the repetitions, the raw runs, the
//! machine, the targets of issue 7 with their measured figures, and what did not run. Written
//! as `report.json` and printed as a table.

use std::fmt::Write as _;

use serde::Serialize;

use crate::ceilings::{BrokerRun, CeilingMessage, ProducerSweep};
use crate::cli::Settings;
use crate::consumer::{ConsumerRun, ScalingRun};
use crate::drain::{DrainRepetition, DrainRun};
use crate::http_load::HttpRun;
use crate::infra::{QueueType, WireFormat};
use crate::pipeline::{GOAL_P99_MS, PipelineResult, SUSTAINED_P99_MS};
use crate::stats::{Summary, show};
use crate::steady::SteadyRun;

/// The machine the figures were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub memory_mb: u64,
    pub kernel: String,
    pub postgresql: String,
    pub rabbitmq: String,
    /// `/proc/loadavg` before and after the run: other processes were running if the
    /// load before was well above zero.
    pub load_before: String,
    pub load_after: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Ceilings {
    /// (1a) best transactions per second and the concurrency it was reached at.
    pub producer_tps: Option<Summary>,
    pub producer_best_concurrency: Option<usize>,
    pub producer_sweeps: Vec<ProducerSweep>,
    /// (1b) persistent, confirmed messages per second to an independent publisher, per queue
    /// type and message (in the order measured).
    pub broker: Vec<BrokerCeiling>,
    pub broker_runs: Vec<BrokerRun>,
    /// (1c) rows per second streamed from a slot (measured on each drain backlog).
    pub wal_read_rows_per_s: Option<Summary>,
}

/// (1b) for one queue type and message over the repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerCeiling {
    pub queue_type: QueueType,
    pub message: CeilingMessage,
    pub message_bytes: usize,
    pub messages_per_s: Option<Summary>,
}

impl Ceilings {
    /// Recomputes [`Ceilings::broker`] from the runs.
    pub fn summarize_broker(&mut self) {
        let mut keys: Vec<(QueueType, CeilingMessage, usize)> = Vec::new();
        for run in &self.broker_runs {
            if !keys
                .iter()
                .any(|(q, m, _)| (*q, *m) == (run.queue_type, run.message))
            {
                keys.push((run.queue_type, run.message, run.message_bytes));
            }
        }
        // Queue types in the order measured, the bare reference first within each.
        let types: Vec<QueueType> = keys.iter().fold(Vec::new(), |mut types, (q, _, _)| {
            if !types.contains(q) {
                types.push(*q);
            }
            types
        });
        keys.sort_by_key(|(q, m, _)| {
            (
                types.iter().position(|t| t == q),
                *m != CeilingMessage::Bare,
            )
        });
        self.broker = keys
            .into_iter()
            .map(|(queue_type, message, message_bytes)| BrokerCeiling {
                queue_type,
                message,
                message_bytes,
                messages_per_s: Summary::of(
                    &self
                        .broker_runs
                        .iter()
                        .filter(|run| run.queue_type == queue_type && run.message == message)
                        .map(|run| run.messages_per_s)
                        .collect::<Vec<_>>(),
                ),
            })
            .collect();
    }

    /// The broker ceiling of `queue_type` with `message`, if measured.
    pub fn broker_of(&self, queue_type: QueueType, message: CeilingMessage) -> Option<Summary> {
        self.broker
            .iter()
            .find(|ceiling| ceiling.queue_type == queue_type && ceiling.message == message)
            .and_then(|ceiling| ceiling.messages_per_s)
    }

    /// The ceiling's own message outline for `format`, from its first run.
    fn ceiling_shape(&self, format: WireFormat) -> Option<&crate::ceilings::MessageShape> {
        self.broker_runs
            .iter()
            .filter(|run| run.message == CeilingMessage::Relay(format))
            .find_map(|run| run.shape.as_ref())
    }
}

/// Our relay's drain into one queue type in one wire format, against the broker ceiling of the
/// same queue type with the same message, measured in the same run (issue 14).
#[derive(Debug, Clone, Serialize)]
pub struct DrainVsCeiling {
    pub queue_type: QueueType,
    pub wire_format: Option<WireFormat>,
    /// The bare reference (400-byte bodies, no headers): not what the relay sends.
    pub bare_ceiling_messages_per_s: Option<Summary>,
    /// The relay's own message in this format, published by the independent client.
    pub same_message_ceiling_messages_per_s: Option<Summary>,
    pub drain_events_per_s: Option<Summary>,
    /// Median drain ÷ median same-message ceiling.
    pub ratio: Option<f64>,
    pub peak_rss_mb: Option<Summary>,
    pub cpu_s: Option<Summary>,
    /// A message the relay published in the drain (read back with `basic.get`) against the
    /// ceiling's: `None` when not compared, `Some(None)` when alike, else what differs.
    pub message_check: Option<Option<String>>,
}

/// One relay's drain (into one queue type, in one wire format) over the repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct DrainSummary {
    pub relay: String,
    pub queue_type: QueueType,
    pub wire_format: Option<WireFormat>,
    pub events: usize,
    pub events_per_s: Option<Summary>,
    pub seconds: Option<Summary>,
    pub startup_s: Option<Summary>,
    pub peak_rss_mb: Option<Summary>,
    pub cpu_s: Option<Summary>,
    pub cpu_drain_s: Option<Summary>,
    /// A message it published, read back from the queue (our relay only; first repetition
    /// that has one).
    pub relay_message: Option<crate::ceilings::MessageShape>,
}

impl DrainSummary {
    pub fn of(
        relay: &str,
        queue_type: QueueType,
        wire_format: Option<WireFormat>,
        runs: &[&DrainRun],
    ) -> Self {
        let figure = |f: &dyn Fn(&DrainRun) -> f64| {
            Summary::of(&runs.iter().map(|run| f(run)).collect::<Vec<_>>())
        };
        Self {
            relay: relay.to_owned(),
            queue_type,
            wire_format,
            events: runs.first().map_or(0, |run| run.events),
            events_per_s: figure(&|run| run.events_per_s),
            seconds: figure(&|run| run.seconds),
            startup_s: figure(&|run| run.startup_s),
            peak_rss_mb: figure(&|run| run.peak_rss_mb),
            cpu_s: figure(&|run| run.cpu_s),
            cpu_drain_s: figure(&|run| run.cpu_drain_s.unwrap_or(f64::NAN)),
            relay_message: runs.iter().find_map(|run| run.relay_message.clone()),
        }
    }
}

/// One relay at one rate over the repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct SteadySummary {
    pub relay: String,
    pub target_rate: f64,
    pub achieved_rate: Option<Summary>,
    pub p50_ms: Option<Summary>,
    pub p99_ms: Option<Summary>,
    pub p999_ms: Option<Summary>,
    pub max_ms: Option<Summary>,
    /// Every repetition kept up (all events arrived, the last within 1 s of the last commit).
    pub keeps_up: bool,
    pub catch_up_ms: Option<Summary>,
    pub max_lag: Option<Summary>,
    pub lag_unit: String,
    pub peak_rss_mb: Option<Summary>,
    pub cpu_s: Option<Summary>,
    pub missing_events: u64,
    /// Our relay's commit-to-publish p99 (upper bucket bound), ms: how much of the latency
    /// was spent before the event reached RabbitMQ.
    pub relay_commit_to_publish_p99_ms: Option<Summary>,
}

impl SteadySummary {
    pub fn of(relay: &str, target_rate: f64, runs: &[&SteadyRun]) -> Self {
        let figure = |f: &dyn Fn(&SteadyRun) -> Option<f64>| {
            Summary::of(
                &runs
                    .iter()
                    .map(|run| f(run).unwrap_or(f64::NAN))
                    .collect::<Vec<_>>(),
            )
        };
        Self {
            relay: relay.to_owned(),
            target_rate,
            achieved_rate: figure(&|run| Some(run.achieved_rate)),
            p50_ms: figure(&|run| run.latency_ms.map(|l| l.p50)),
            p99_ms: figure(&|run| run.latency_ms.map(|l| l.p99)),
            p999_ms: figure(&|run| run.latency_ms.map(|l| l.p999)),
            max_ms: figure(&|run| run.latency_ms.map(|l| l.max)),
            keeps_up: !runs.is_empty() && runs.iter().all(|run| run.keeps_up),
            catch_up_ms: figure(&|run| run.catch_up_ms),
            max_lag: figure(&|run| Some(run.max_lag as f64)),
            lag_unit: runs
                .first()
                .map_or_else(String::new, |run| run.lag_unit.to_owned()),
            peak_rss_mb: figure(&|run| Some(run.peak_rss_mb)),
            cpu_s: figure(&|run| Some(run.cpu_s)),
            missing_events: runs
                .iter()
                .map(|run| run.committed.saturating_sub(run.received as u64))
                .sum(),
            relay_commit_to_publish_p99_ms: figure(&|run| {
                run.relay_commit_to_publish.map(|q| q.p99_at_most_ms)
            }),
        }
    }
}

/// One HTTP concurrency level over the repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct HttpSummary {
    pub concurrency: usize,
    pub requests_per_s: Option<Summary>,
    pub p50_ms: Option<Summary>,
    pub p99_ms: Option<Summary>,
    pub errors: u64,
}

/// A target of issue 7 and what was measured.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    /// `None` when a figure it needs is missing.
    pub met: Option<bool>,
}

/// Everything `make bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date: String,
    pub command: String,
    pub machine: Machine,
    pub settings: Settings,
    pub ceilings: Ceilings,
    pub drain: Vec<DrainSummary>,
    /// Our relay's drain per queue type and format against the broker ceiling (issue 14).
    pub drain_vs_ceiling: Vec<DrainVsCeiling>,
    pub drain_repetitions: Vec<DrainRepetition>,
    pub steady: Vec<SteadySummary>,
    pub steady_runs: Vec<SteadyRun>,
    pub http: Vec<HttpSummary>,
    pub http_runs: Vec<Vec<HttpRun>>,
    pub consumer_service_events_per_s: Option<Summary>,
    pub consumer_direct_sql_events_per_s: Option<Summary>,
    pub consumer_runs: Vec<ConsumerRun>,
    /// Issue 15: the backlog through 1, 2 and 3 instances sharing the partitions.
    pub scaling_runs: Vec<ScalingRun>,
    /// Issue 15: the relay's drain into the partitioned topology.
    pub partitioned_drain: Option<crate::drain::PartitionedDrain>,
    /// The whole system as deployed at fixed `POST /orders` rates (issue 14).
    pub pipeline: Option<PipelineResult>,
    /// Wall-clock seconds each section took.
    pub section_seconds: Vec<(String, f64)>,
    /// Ours ÷ Debezium, medians: throughput (drain), p99 latency per rate, peak RSS.
    pub ratios_vs_debezium: Vec<(String, f64)>,
    pub targets: Vec<TargetCheck>,
    /// What did not run, and why.
    pub missing: Vec<String>,
    /// Where the per-event latency CSVs are.
    pub latency_csv_dir: String,
}

fn median(summary: Option<Summary>) -> Option<f64> {
    summary.map(|s| s.median)
}

impl Report {
    /// The first drain of `relay` (with the default flags: classic queue, plain format).
    fn drain_of(&self, relay: &str) -> Option<&DrainSummary> {
        self.drain.iter().find(|d| d.relay == relay)
    }

    fn steady_of(&self, relay: &str, rate: f64) -> Option<&SteadySummary> {
        self.steady
            .iter()
            .find(|s| s.relay == relay && (s.target_rate - rate).abs() < 0.5)
    }

    /// Fills `ratios_vs_debezium` and `targets` from the figures, given the labels of our
    /// relay, of Debezium's drain to RabbitMQ and capture-only drain, and of Debezium's steady
    /// runs.
    pub fn evaluate(
        &mut self,
        ours: &str,
        debezium: &str,
        debezium_none: &str,
        debezium_steady: &str,
    ) {
        let debezium_poll_ms = self.settings.debezium_poll_ms;
        let ours_drain = self.drain_of(ours).and_then(|d| median(d.events_per_s));
        let dbz_drain = self.drain_of(debezium).and_then(|d| median(d.events_per_s));
        let dbz_none = self
            .drain_of(debezium_none)
            .and_then(|d| median(d.events_per_s));
        let ours_case = self
            .drain_of(ours)
            .map(|d| (d.queue_type, d.wire_format.unwrap_or(WireFormat::Plain)));
        let broker = ours_case.and_then(|(q, format)| {
            median(self.ceilings.broker_of(q, CeilingMessage::Relay(format)))
        });
        self.drain_vs_ceiling = self
            .drain
            .iter()
            .filter(|d| d.relay == ours)
            .map(|d| {
                let format = d.wire_format.unwrap_or(WireFormat::Plain);
                let same = self
                    .ceilings
                    .broker_of(d.queue_type, CeilingMessage::Relay(format));
                let message_check = self
                    .ceilings
                    .ceiling_shape(format)
                    .zip(d.relay_message.as_ref())
                    .map(|(ceiling, relay)| ceiling.difference(relay));
                DrainVsCeiling {
                    queue_type: d.queue_type,
                    wire_format: d.wire_format,
                    bare_ceiling_messages_per_s: self
                        .ceilings
                        .broker_of(d.queue_type, CeilingMessage::Bare),
                    same_message_ceiling_messages_per_s: same,
                    drain_events_per_s: d.events_per_s,
                    ratio: median(d.events_per_s)
                        .zip(median(same))
                        .map(|(drain, ceiling)| drain / ceiling),
                    peak_rss_mb: d.peak_rss_mb,
                    cpu_s: d.cpu_s,
                    message_check,
                }
            })
            .collect();
        let mut targets = Vec::new();
        let mut ratios = Vec::new();

        let check =
            |target: &str, measured: Option<(f64, f64)>, text: &dyn Fn(f64, f64) -> String| {
                match measured {
                    Some((value, bound)) => TargetCheck {
                        target: target.to_owned(),
                        measured: text(value, bound),
                        met: Some(value >= bound),
                    },
                    None => TargetCheck {
                        target: target.to_owned(),
                        measured: "not measured".to_owned(),
                        met: None,
                    },
                }
            };
        let ratios_14: Vec<(String, f64)> = self
            .drain_vs_ceiling
            .iter()
            .filter_map(|d| {
                let format = d.wire_format.map_or("", WireFormat::name);
                d.ratio
                    .map(|ratio| (format!("{} {format}", d.queue_type.name()), ratio))
            })
            .collect();
        let lowest = ratios_14.iter().map(|(_, ratio)| *ratio).reduce(f64::min);
        targets.push(check(
            "issue 14: drain >= 0.9 x broker ceiling of its queue type with the relay's own \
             message in its format, every queue type and format",
            lowest.map(|lowest| (lowest, 0.9)),
            &|_, _| {
                ratios_14
                    .iter()
                    .map(|(case, ratio)| format!("{case} {ratio:.2} x"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ));
        targets.push(check(
            "drain >= 0.8 x broker ceiling (1b) of the same queue type and message",
            ours_drain.zip(broker).map(|(d, b)| (d, 0.8 * b)),
            &|d, bound| {
                format!(
                    "{d:.0} ev/s vs 0.8 x {:.0} = {bound:.0} ({:.2} x)",
                    bound / 0.8,
                    d / (bound / 0.8)
                )
            },
        ));
        targets.push(check(
            "drain >= 2 x Debezium drain to RabbitMQ",
            ours_drain.zip(dbz_drain).map(|(d, z)| (d, 2.0 * z)),
            &|d, bound| {
                format!(
                    "{d:.0} vs {:.0} ev/s ({:.2} x)",
                    bound / 2.0,
                    d / (bound / 2.0)
                )
            },
        ));
        targets.push(check(
            "drain > Debezium capture-only (--sink none)",
            ours_drain.zip(dbz_none),
            &|d, z| format!("{d:.0} vs {z:.0} ev/s ({:.2} x)", d / z),
        ));
        if let (Some(d), Some(z)) = (ours_drain, dbz_drain) {
            ratios.push(("drain throughput".to_owned(), d / z));
        }

        let low_rate = self.settings.steady_rate;
        let high_rate = self
            .steady
            .iter()
            .map(|s| s.target_rate)
            .find(|rate| (rate - low_rate).abs() >= 0.5);
        let p99 = |s: Option<&SteadySummary>| s.and_then(|s| median(s.p99_ms));
        let ours_low = self.steady_of(ours, low_rate);
        let dbz_low = self.steady_of(debezium_steady, low_rate);
        targets.push(check(
            &format!("steady {low_rate:.0}/s: p99 <= 10 ms"),
            p99(ours_low).map(|p| (10.0, p)),
            &|_, p| format!("p99 {p:.1} ms"),
        ));
        let ours_high = high_rate.and_then(|rate| self.steady_of(ours, rate));
        let dbz_high = high_rate.and_then(|rate| self.steady_of(debezium_steady, rate));
        targets.push(match (ours_high, p99(ours_high)) {
            (Some(summary), Some(p)) => TargetCheck {
                target: format!(
                    "steady {:.0}/s ({:.0}% of 1a): keeps up and p99 <= 25 ms",
                    summary.target_rate,
                    self.settings.ceiling_fraction * 100.0
                ),
                measured: format!(
                    "p99 {p:.1} ms, keeps up: {}, achieved {}/s",
                    summary.keeps_up,
                    show(summary.achieved_rate, 0)
                ),
                met: Some(summary.keeps_up && p <= 25.0),
            },
            _ => TargetCheck {
                target: "steady at 80% of 1a: keeps up and p99 <= 25 ms".to_owned(),
                measured: "not measured".to_owned(),
                met: None,
            },
        });
        for (rate, ours_run, dbz_run) in [
            (Some(low_rate), ours_low, dbz_low),
            (high_rate, ours_high, dbz_high),
        ] {
            let rate = rate.map_or_else(|| "80% of 1a".to_owned(), |r| format!("{r:.0}/s"));
            let target = format!(
                "steady {rate}: p99 below Debezium's (poll.interval.ms {debezium_poll_ms})"
            );
            // The bench does not run Debezium at the high rate when it fell behind at the low
            // one: its p99 there can only be worse, so the low rate's p99 is a lower bound.
            let inferred =
                dbz_run.is_none() && ours_run.is_some() && dbz_low.is_some_and(|low| !low.keeps_up);
            if inferred {
                targets.push(check(&target, p99(dbz_low).zip(p99(ours_run)), &|z, o| {
                    format!(
                        "{o:.1} ms vs Debezium > {z:.1} ms (not run at this rate: it did not \
                         keep up at {low_rate:.0}/s)"
                    )
                }));
                continue;
            }
            targets.push(check(&target, p99(dbz_run).zip(p99(ours_run)), &|z, o| {
                format!("{o:.1} ms vs Debezium {z:.1} ms")
            }));
            if let (Some(o), Some(z)) = (p99(ours_run), p99(dbz_run)) {
                ratios.push((format!("p99 latency at {rate}"), o / z));
            }
        }

        let rss_values: Vec<f64> = self
            .drain
            .iter()
            .filter(|d| d.relay == ours)
            .filter_map(|d| d.peak_rss_mb.map(|s| s.max))
            .chain(
                self.steady
                    .iter()
                    .filter(|s| s.relay == ours)
                    .filter_map(|s| s.peak_rss_mb.map(|s| s.max)),
            )
            .collect();
        let ours_rss = rss_values.iter().copied().reduce(f64::max);
        targets.push(check(
            "relay peak RSS <= 30 MB (largest over drain and steady runs)",
            ours_rss.map(|rss| (30.0, rss)),
            &|_, rss| format!("{rss:.1} MiB"),
        ));
        let dbz_rss = self.drain_of(debezium).and_then(|d| median(d.peak_rss_mb));
        if let (Some(o), Some(z)) = (
            self.drain_of(ours).and_then(|d| median(d.peak_rss_mb)),
            dbz_rss,
        ) {
            ratios.push(("peak RSS in the drain".to_owned(), o / z));
        }

        let ceiling = median(self.ceilings.producer_tps);
        let http_best = self
            .http
            .iter()
            .filter_map(|h| median(h.requests_per_s).map(|rps| (h.concurrency, rps)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        targets.push(check(
            "HTTP POST /orders >= 0.6 x producer ceiling (1a)",
            http_best.zip(ceiling).map(|((_, rps), c)| (rps, 0.6 * c)),
            &|rps, bound| {
                format!(
                    "{rps:.0} req/s vs 0.6 x {:.0} = {bound:.0} ({:.2} x)",
                    bound / 0.6,
                    rps / (bound / 0.6)
                )
            },
        ));
        let at_90 = self.pipeline.as_ref().and_then(|p| p.fixed(0.9));
        targets.push(match at_90 {
            Some(run) => {
                let p99 = run.latency_ms.map(|l| l.p99);
                TargetCheck {
                    target: format!(
                        "issue 14: pipeline keeps up at 90% of the HTTP ceiling with p99 commit -> \
                         applied <= {GOAL_P99_MS:.0} ms"
                    ),
                    measured: format!(
                        "{:.0}/s target, {:.0} req/s achieved, {:.0} applied/s, p99 {}, {} \
                         errors, {} of {} orders applied",
                        run.target_rate,
                        run.achieved_rate,
                        run.applied_rate,
                        p99.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.1} ms")),
                        run.errors,
                        run.applied,
                        run.created
                    ),
                    met: Some(
                        run.achieved_rate >= 0.95 * run.target_rate
                            && run.errors == 0
                            && run.applied == run.created
                            && p99.is_some_and(|p| p <= GOAL_P99_MS),
                    ),
                }
            }
            None => TargetCheck {
                target: format!(
                    "issue 14: pipeline keeps up at 90% of the HTTP ceiling with p99 commit -> \
                     applied <= {GOAL_P99_MS:.0} ms"
                ),
                measured: "not measured".to_owned(),
                met: None,
            },
        });
        self.targets = targets;
        self.ratios_vs_debezium = ratios;
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "\n== bench {} ==", self.date);
        let _ = writeln!(
            out,
            "machine: {} cores ({}), {} MB, kernel {}; {}; RabbitMQ {}",
            m.nproc, m.cpu_model, m.memory_mb, m.kernel, m.postgresql, m.rabbitmq
        );
        let _ = writeln!(
            out,
            "load average before: {} | after: {}",
            m.load_before, m.load_after
        );
        let _ = writeln!(
            out,
            "figures: median [min–max] over the repetitions: {} for ceilings and HTTP, {} for the \
             drain, {} for steady state, {} for the consumer",
            self.settings.repetitions,
            self.settings.drain_repetitions,
            self.settings.steady_repetitions,
            self.settings.consumer_repetitions
        );
        if !self.section_seconds.is_empty() {
            let total: f64 = self.section_seconds.iter().map(|(_, s)| s).sum();
            let parts: Vec<String> = self
                .section_seconds
                .iter()
                .map(|(section, seconds)| format!("{section} {seconds:.0} s"))
                .collect();
            let _ = writeln!(
                out,
                "time: {} (total {:.1} min)",
                parts.join(", "),
                total / 60.0
            );
        }
        let c = &self.ceilings;
        let _ = writeln!(out, "\n-- ceilings");
        let _ = writeln!(
            out,
            "1a producer (order tx, best concurrency {}): {} tx/s",
            c.producer_best_concurrency
                .map_or_else(|| "n/a".to_owned(), |c| c.to_string()),
            show(c.producer_tps, 0)
        );
        let _ = writeln!(
            out,
            "1b broker, independent publisher (amqprs: persistent, mandatory, confirms, window {}, \
             {} messages); bare: {} B bodies, delivery_mode + content_type, no headers; plain / \
             debezium: the relay's own message in that format (body, properties, headers):",
            self.settings.broker_window,
            self.settings.broker_messages,
            crate::ceilings::BROKER_BODY_BYTES
        );
        if c.broker.is_empty() {
            let _ = writeln!(out, "   n/a");
        }
        for ceiling in &c.broker {
            let _ = writeln!(
                out,
                "   {:<28} {:<9} {:>5} B body  {} msg/s ({} runs)",
                ceiling.queue_type.description(),
                ceiling.message.name(),
                ceiling.message_bytes,
                show(ceiling.messages_per_s, 0),
                ceiling.messages_per_s.map_or(0, |s| s.n)
            );
        }
        let _ = writeln!(
            out,
            "1c WAL read from a slot: {} rows/s",
            show(c.wal_read_rows_per_s, 0)
        );
        if !self.drain.is_empty() {
            let _ = writeln!(
                out,
                "\n-- drain of {} events\n{:<38} {:<8} {:<8} {:>24} {:>20} {:>18} {:>18} {:>18}",
                self.settings.drain_events,
                "relay",
                "queue",
                "format",
                "events/s",
                "seconds",
                "startup s",
                "peak RSS MiB",
                "CPU s"
            );
            for d in &self.drain {
                let _ = writeln!(
                    out,
                    "{:<38} {:<8} {:<8} {:>24} {:>20} {:>18} {:>18} {:>18}",
                    d.relay,
                    d.queue_type.name(),
                    d.wire_format.map_or("-", WireFormat::name),
                    show(d.events_per_s, 0),
                    show(d.seconds, 2),
                    show(d.startup_s, 2),
                    show(d.peak_rss_mb, 1),
                    show(d.cpu_s, 1)
                );
            }
        }
        if !self.drain_vs_ceiling.is_empty() {
            let _ = writeln!(
                out,
                "\n-- our relay's drain against the broker ceiling (1b) of its queue type with its own \
                 message in its format (ratio: drain median / same-message ceiling median; the \
                 bare ceiling is the header-less 400-byte reference)\n\n\
                 | queue type | format | bare ceiling msg/s | same-message ceiling msg/s | drain ev/s | ratio | peak RSS MiB | relay CPU s |\n\
                 |---|---|---|---|---|---|---|---|"
            );
            for d in &self.drain_vs_ceiling {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    d.queue_type.description(),
                    d.wire_format.map_or("-", WireFormat::name),
                    show(d.bare_ceiling_messages_per_s, 0),
                    show(d.same_message_ceiling_messages_per_s, 0),
                    show(d.drain_events_per_s, 0),
                    d.ratio
                        .map_or_else(|| "n/a".to_owned(), |ratio| format!("{ratio:.2}")),
                    show(d.peak_rss_mb, 1),
                    show(d.cpu_s, 1)
                );
            }
            let checks: Vec<String> = self
                .drain_vs_ceiling
                .iter()
                .filter_map(|d| {
                    let case = format!(
                        "{} {}",
                        d.queue_type.name(),
                        d.wire_format.map_or("-", WireFormat::name)
                    );
                    d.message_check.as_ref().map(|check| match check {
                        None => format!("{case}: same"),
                        Some(difference) => format!("{case}: DIFFERENT ({difference})"),
                    })
                })
                .collect();
            if !checks.is_empty() {
                let _ = writeln!(
                    out,
                    "(a message the relay published, read back with basic.get, against the \
                     ceiling's: body length, property set, header names) {}",
                    checks.join("; ")
                );
            }
        }
        if let Some(p) = &self.partitioned_drain {
            let _ = writeln!(
                out,
                "outbox-relay [plain] into {} partitions (consistent hash on the order id, quorum \
                 queues): {:.0} events/s, relay CPU {} s; messages per partition {:?}",
                p.partitions,
                p.events_per_s,
                p.relay_cpu_s
                    .map_or_else(|| "n/a".to_owned(), |cpu| format!("{cpu:.1}")),
                p.per_partition
            );
        }
        if !self.steady.is_empty() {
            let _ = writeln!(
                out,
                "\n-- steady state, commit-to-arrival latency ms\n{:<30} {:>7} {:>18} {:>16} {:>18} {:>18} {:>18} {:>8} {:>14} {:>16}",
                "relay",
                "rate",
                "achieved/s",
                "p50",
                "p99",
                "p99.9",
                "max",
                "keeps up",
                "peak RSS MiB",
                "p99 to publish"
            );
            for s in &self.steady {
                let _ = writeln!(
                    out,
                    "{:<30} {:>7.0} {:>18} {:>16} {:>18} {:>18} {:>18} {:>8} {:>14} {:>16}",
                    s.relay,
                    s.target_rate,
                    show(s.achieved_rate, 0),
                    show(s.p50_ms, 1),
                    show(s.p99_ms, 1),
                    show(s.p999_ms, 1),
                    show(s.max_ms, 1),
                    if s.keeps_up { "yes" } else { "NO" },
                    show(s.peak_rss_mb, 1),
                    s.relay_commit_to_publish_p99_ms
                        .map_or_else(|| "n/a".to_owned(), |p| format!("<= {}", p.display(1)))
                );
            }
            let _ = writeln!(
                out,
                "(p99 to publish: our relay's own histogram, source commit to the event handed to \
                 RabbitMQ, as the upper bound of its bucket; the rest of the latency is the broker \
                 and the consumer)"
            );
        }
        if !self.http.is_empty() {
            let _ = writeln!(
                out,
                "\n-- HTTP POST /orders\n{:>11} {:>20} {:>18} {:>18} {:>7}",
                "concurrency", "requests/s", "p50 ms", "p99 ms", "errors"
            );
            for h in &self.http {
                let _ = writeln!(
                    out,
                    "{:>11} {:>20} {:>18} {:>18} {:>7}",
                    h.concurrency,
                    show(h.requests_per_s, 0),
                    show(h.p50_ms, 1),
                    show(h.p99_ms, 1),
                    h.errors
                );
            }
        }
        if self.consumer_service_events_per_s.is_some() {
            let _ = writeln!(
                out,
                "\n-- consumer backlog of {} events\nshipment-service: {} events/s; same SQL straight to PostgreSQL: {} events/s",
                self.settings.consumer_events,
                show(self.consumer_service_events_per_s, 0),
                show(self.consumer_direct_sql_events_per_s, 0)
            );
        }
        for run in &self.scaling_runs {
            let _ = writeln!(
                out,
                "partitioned ({} partitions, routed by order id): {} instance(s): {:.0} events/s",
                run.partitions, run.instances, run.events_per_s
            );
        }
        if let Some(p) = &self.pipeline {
            let _ = writeln!(
                out,
                "\n-- pipeline: order-service, outbox-relay, shipment-service as deployed; POST /orders \
                 open loop; latency = outbox row's timestamp -> shipment transaction's commit \
                 (HTTP ceiling {:.0} req/s: {})\n\n\
                 | phase | target /s (of ceiling) | seconds | achieved req/s | applied /s | p50 ms | p99 ms | max ms | errors | applied / created | sustained | CPU s: order, relay, shipment |\n\
                 |---|---|---|---|---|---|---|---|---|---|---|---|",
                p.http_ceiling, p.http_ceiling_source
            );
            for run in &p.runs {
                let latency = |f: &dyn Fn(&crate::stats::Percentiles) -> f64| {
                    run.latency_ms
                        .map_or_else(|| "n/a".to_owned(), |l| format!("{:.1}", f(&l)))
                };
                let cpu = ["order-service", "outbox-relay", "shipment-service"]
                    .iter()
                    .map(|name| {
                        run.usage
                            .iter()
                            .find(|u| u.process == *name)
                            .map_or_else(|| "n/a".to_owned(), |u| format!("{:.1}", u.cpu_s))
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(
                    out,
                    "| {} | {:.0} ({:.0}%) | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} / {} | {} | {} |",
                    run.phase,
                    run.target_rate,
                    run.fraction * 100.0,
                    run.seconds,
                    run.achieved_rate,
                    run.applied_rate,
                    latency(&|l| l.p50),
                    latency(&|l| l.p99),
                    latency(&|l| l.max),
                    run.errors,
                    run.applied,
                    run.created,
                    if run.sustained { "yes" } else { "NO" },
                    cpu
                );
            }
            let _ = writeln!(
                out,
                "highest sustained rate (achieved >= 95% of it, no error, all applied, p99 < {:.0} \
                 ms): {}",
                SUSTAINED_P99_MS,
                p.highest_sustained.map_or_else(
                    || "none".to_owned(),
                    |(rate, fraction)| format!(
                        "{rate:.0}/s ({:.0}% of the HTTP ceiling)",
                        fraction * 100.0
                    )
                )
            );
        }
        if !self.ratios_vs_debezium.is_empty() {
            let _ = writeln!(out, "\n-- ours / Debezium (medians)");
            for (what, ratio) in &self.ratios_vs_debezium {
                let _ = writeln!(out, "{what}: {ratio:.2}");
            }
        }
        let _ = writeln!(out, "\n-- targets (issues 7 and 14)");
        for t in &self.targets {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "n/a",
            };
            let _ = writeln!(out, "[{verdict:>6}] {}: {}", t.target, t.measured);
        }
        if !self.missing.is_empty() {
            let _ = writeln!(out, "\n-- not measured");
            for line in &self.missing {
                let _ = writeln!(out, "- {line}");
            }
        }
        out
    }
}

/// Drain summaries per relay, queue type and format, in the order they first ran.
pub fn summarize_drains(repetitions: &[DrainRepetition]) -> Vec<DrainSummary> {
    type Key = (String, QueueType, Option<WireFormat>);
    let key_of = |run: &DrainRun| -> Key { (run.relay.clone(), run.queue_type, run.wire_format) };
    let mut keys: Vec<Key> = Vec::new();
    for repetition in repetitions {
        for run in &repetition.runs {
            let key = key_of(run);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys.iter()
        .map(|key| {
            let runs: Vec<&DrainRun> = repetitions
                .iter()
                .flat_map(|r| r.runs.iter())
                .filter(|run| &key_of(run) == key)
                .collect();
            DrainSummary::of(&key.0, key.1, key.2, &runs)
        })
        .collect()
}

/// Steady summaries per (rate, relay).
pub fn summarize_steady(runs: &[SteadyRun]) -> Vec<SteadySummary> {
    let mut keys: Vec<(f64, String)> = Vec::new();
    for run in runs {
        if !keys
            .iter()
            .any(|(rate, relay)| (*rate - run.target_rate).abs() < 0.5 && relay == &run.relay)
        {
            keys.push((run.target_rate, run.relay.clone()));
        }
    }
    keys.iter()
        .map(|(rate, relay)| {
            let matching: Vec<&SteadyRun> = runs
                .iter()
                .filter(|run| (run.target_rate - rate).abs() < 0.5 && &run.relay == relay)
                .collect();
            SteadySummary::of(relay, *rate, &matching)
        })
        .collect()
}

/// HTTP summaries per concurrency level.
pub fn summarize_http(repetitions: &[Vec<HttpRun>]) -> Vec<HttpSummary> {
    let mut levels: Vec<usize> = repetitions
        .iter()
        .flatten()
        .map(|run| run.concurrency)
        .collect();
    levels.sort_unstable();
    levels.dedup();
    levels
        .into_iter()
        .map(|concurrency| {
            let runs: Vec<&HttpRun> = repetitions
                .iter()
                .flatten()
                .filter(|run| run.concurrency == concurrency)
                .collect();
            let figure = |f: &dyn Fn(&HttpRun) -> Option<f64>| {
                Summary::of(
                    &runs
                        .iter()
                        .map(|run| f(run).unwrap_or(f64::NAN))
                        .collect::<Vec<_>>(),
                )
            };
            HttpSummary {
                concurrency,
                requests_per_s: figure(&|run| Some(run.requests_per_s)),
                p50_ms: figure(&|run| run.latency_ms.map(|l| l.p50)),
                p99_ms: figure(&|run| run.latency_ms.map(|l| l.p99)),
                errors: runs.iter().map(|run| run.errors).sum(),
            }
        })
        .collect()
}
