//! Command-line flags: repetitions, sizes, which sections run, where the binaries are.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::infra::{QueueType, WireFormat};

/// The parts of the benchmark (issue 7), selectable with `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    /// 1a producer, 1b broker, 1c WAL read (1c runs inside each drain repetition).
    Ceilings,
    /// 100,000 events committed while the relay is stopped, then drained.
    Drain,
    /// Fixed-rate producer, commit-to-arrival latency per event.
    Steady,
    /// order-service `POST /orders` at several concurrency levels.
    Http,
    /// shipment-service applying a backlog.
    Consumer,
    /// The whole system as deployed (three binaries), orders through `POST /orders` at fixed
    /// rates, commit → applied latency per order (issue 14).
    Pipeline,
}

impl Section {
    pub const ALL: [Section; 6] = [
        Section::Ceilings,
        Section::Drain,
        Section::Steady,
        Section::Http,
        Section::Consumer,
        Section::Pipeline,
    ];
}

/// `bench`: measures the outbox pipeline on this machine against the local PostgreSQL and
/// RabbitMQ (start them with `scripts/infra.sh up`), prints a table and writes
/// `<out-dir>/report.json`.
#[derive(Debug, Clone, Parser)]
#[command(name = "bench", version)]
pub struct Args {
    /// Small sizes and one repetition: a smoke run (correctness, not numbers).
    #[arg(long)]
    pub quick: bool,
    /// Repetitions of the ceilings and of the HTTP measurement [default: 3], and of the
    /// other sections when their own flag is not given (figures are median [min–max] over
    /// them).
    #[arg(long)]
    pub repetitions: Option<usize>,
    /// Repetitions of the drain (each drains the backlog with every relay) [default: 2].
    #[arg(long)]
    pub drain_repetitions: Option<usize>,
    /// Repetitions of the steady-state runs (each is `--steady-seconds` per relay and rate)
    /// [default: 2].
    #[arg(long)]
    pub steady_repetitions: Option<usize>,
    /// Repetitions of the consumer backlog [default: 2].
    #[arg(long)]
    pub consumer_repetitions: Option<usize>,
    /// Only these sections (comma separated); default all.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<Section>,

    /// Events committed before each drain.
    #[arg(long)]
    pub drain_events: Option<usize>,
    /// Seconds of load in each steady-state run [default: 20].
    #[arg(long)]
    pub steady_seconds: Option<f64>,
    /// The fixed low rate of the steady-state runs, events per second.
    #[arg(long, default_value_t = 1000.0)]
    pub steady_rate: f64,
    /// The high steady rate as a fraction of the measured producer ceiling (1a).
    #[arg(long, default_value_t = 0.8)]
    pub ceiling_fraction: f64,
    /// The high steady rate in events per second, instead of `--ceiling-fraction` of the
    /// measured ceiling (e.g. when the ceilings do not run).
    #[arg(long)]
    pub high_rate: Option<f64>,
    /// Seconds per producer-ceiling measurement (each concurrency level, each repetition).
    #[arg(long)]
    pub producer_seconds: Option<f64>,
    /// Concurrency levels tried for the producer ceiling.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 4, 8, 16, 32])]
    pub producer_concurrency: Vec<usize>,
    /// Messages per broker-ceiling measurement (each queue type and message, each repetition)
    /// [default: 30,000].
    #[arg(long)]
    pub broker_messages: Option<usize>,
    /// Publisher confirms outstanding at once in the broker ceiling (the relay's default
    /// window).
    #[arg(long, default_value_t = 1024)]
    pub broker_window: usize,
    /// Queue types of `shipment.orders` measured: the broker ceiling (1b) runs for each, our
    /// relay's drain for each but `stream` (the other relays drain into the first of them).
    #[arg(long, value_delimiter = ',', value_enum,
          default_values_t = [QueueType::Classic, QueueType::Quorum, QueueType::Stream])]
    pub queue_types: Vec<QueueType>,
    /// Wire formats our relay's drain runs with (`RELAY_WIRE_FORMAT`), each on every queue type.
    #[arg(long, value_delimiter = ',', value_enum,
          default_values_t = [WireFormat::Plain, WireFormat::Debezium])]
    pub formats: Vec<WireFormat>,
    /// Concurrency levels of the HTTP measurement.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 16, 64])]
    pub http_concurrency: Vec<usize>,
    /// Seconds per HTTP measurement.
    #[arg(long)]
    pub http_seconds: Option<f64>,
    /// Events in the consumer backlog.
    #[arg(long)]
    pub consumer_events: Option<usize>,
    /// Seconds of load of the pipeline at 50 % and at 90 % of the HTTP ceiling [default: 60].
    #[arg(long)]
    pub pipeline_seconds: Option<f64>,
    /// Seconds of load of each step of the pipeline's search for its highest sustained rate
    /// [default: 15].
    #[arg(long)]
    pub pipeline_search_seconds: Option<f64>,
    /// The HTTP ceiling (requests/s) the pipeline's rates are fractions of, instead of the
    /// HTTP section's best (or, without that section, a quick measurement of its own).
    #[arg(long)]
    pub pipeline_http_ceiling: Option<f64>,

    /// The outbox-relay binary [default: `outbox-relay` next to this binary].
    #[arg(long)]
    pub relay_bin: Option<PathBuf>,
    /// The Debezium peer (its `run` script and tools).
    #[arg(long, default_value = "../shared/peers/debezium")]
    pub debezium_dir: PathBuf,
    /// Skip Debezium (e.g. no Java on this machine).
    #[arg(long)]
    pub no_debezium: bool,
    /// Debezium `poll.interval.ms` in the steady runs (10 is its best measured here).
    #[arg(long, default_value_t = 10)]
    pub debezium_poll_ms: u32,
    /// Skip the polling relay even if `outbox-relay` has a polling source.
    #[arg(long)]
    pub no_polling: bool,
    /// Where `report.json`, the per-event latency CSVs and the relays' logs go.
    #[arg(long, default_value = "target/bench")]
    pub out_dir: PathBuf,
}

/// The sizes in effect, after `--quick` and the explicit flags.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    pub quick: bool,
    pub repetitions: usize,
    pub drain_repetitions: usize,
    pub steady_repetitions: usize,
    pub consumer_repetitions: usize,
    pub sections: Vec<Section>,
    pub drain_events: usize,
    pub steady_seconds: f64,
    pub steady_rate: f64,
    pub ceiling_fraction: f64,
    pub producer_seconds: f64,
    pub producer_concurrency: Vec<usize>,
    pub broker_messages: usize,
    pub broker_window: usize,
    pub queue_types: Vec<QueueType>,
    pub formats: Vec<WireFormat>,
    pub http_concurrency: Vec<usize>,
    pub http_seconds: f64,
    pub consumer_events: usize,
    pub pipeline_seconds: f64,
    pub pipeline_search_seconds: f64,
    pub pipeline_http_ceiling: Option<f64>,
    pub debezium: bool,
    pub debezium_poll_ms: u32,
    pub polling: bool,
}

impl Args {
    /// Resolves the defaults (full or `--quick`) and checks the values.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let quick = self.quick;
        let pick = |value: Option<usize>, full: usize, small: usize| {
            value.unwrap_or(if quick { small } else { full })
        };
        let pick_f = |value: Option<f64>, full: f64, small: f64| {
            value.unwrap_or(if quick { small } else { full })
        };
        let settings = Settings {
            quick,
            repetitions: pick(self.repetitions, 3, 1),
            drain_repetitions: pick(self.drain_repetitions.or(self.repetitions), 2, 1),
            steady_repetitions: pick(self.steady_repetitions.or(self.repetitions), 2, 1),
            consumer_repetitions: pick(self.consumer_repetitions.or(self.repetitions), 2, 1),
            sections: if self.only.is_empty() {
                Section::ALL.to_vec()
            } else {
                self.only.clone()
            },
            drain_events: pick(self.drain_events, 100_000, 2_000),
            steady_seconds: pick_f(self.steady_seconds, 20.0, 3.0),
            steady_rate: if quick && self.steady_rate == 1000.0 {
                200.0
            } else {
                self.steady_rate
            },
            ceiling_fraction: self.ceiling_fraction,
            producer_seconds: pick_f(self.producer_seconds, 3.0, 0.5),
            producer_concurrency: if quick {
                vec![1, 4]
            } else {
                self.producer_concurrency.clone()
            },
            broker_messages: pick(self.broker_messages, 30_000, 2_000),
            broker_window: self.broker_window,
            queue_types: dedup(&self.queue_types),
            formats: dedup(&self.formats),
            http_concurrency: if quick {
                vec![1, 4]
            } else {
                self.http_concurrency.clone()
            },
            http_seconds: pick_f(self.http_seconds, 5.0, 0.5),
            consumer_events: pick(self.consumer_events, 50_000, 1_000),
            pipeline_seconds: pick_f(self.pipeline_seconds, 60.0, 5.0),
            pipeline_search_seconds: pick_f(self.pipeline_search_seconds, 15.0, 3.0),
            pipeline_http_ceiling: self.pipeline_http_ceiling,
            debezium: !self.no_debezium,
            debezium_poll_ms: self.debezium_poll_ms,
            polling: !self.no_polling,
        };
        anyhow::ensure!(
            settings.repetitions >= 1,
            "--repetitions must be at least 1"
        );
        anyhow::ensure!(
            settings.drain_repetitions >= 1,
            "--drain-repetitions must be at least 1"
        );
        anyhow::ensure!(
            settings.steady_repetitions >= 1,
            "--steady-repetitions must be at least 1"
        );
        anyhow::ensure!(
            settings.consumer_repetitions >= 1,
            "--consumer-repetitions must be at least 1"
        );
        anyhow::ensure!(
            settings.drain_events >= 1,
            "--drain-events must be at least 1"
        );
        anyhow::ensure!(
            settings.steady_seconds > 0.0 && settings.steady_rate > 0.0,
            "--steady-seconds and --steady-rate must be positive"
        );
        anyhow::ensure!(
            settings.ceiling_fraction > 0.0 && settings.ceiling_fraction <= 1.0,
            "--ceiling-fraction must be in (0, 1]"
        );
        anyhow::ensure!(
            !settings.producer_concurrency.is_empty()
                && settings.producer_concurrency.iter().all(|&c| c >= 1),
            "--producer-concurrency needs levels of at least 1"
        );
        anyhow::ensure!(
            !settings.http_concurrency.is_empty()
                && settings.http_concurrency.iter().all(|&c| c >= 1),
            "--http-concurrency needs levels of at least 1"
        );
        anyhow::ensure!(
            settings.broker_window >= 1,
            "--broker-window must be at least 1"
        );
        anyhow::ensure!(
            settings.broker_messages >= 1,
            "--broker-messages must be at least 1"
        );
        anyhow::ensure!(
            !settings.queue_types.is_empty() && !settings.formats.is_empty(),
            "--queue-types and --formats need at least one value each"
        );
        anyhow::ensure!(
            !settings.runs(Section::Drain) || !settings.drain_queue_types().is_empty(),
            "the drain needs classic or quorum in --queue-types (a stream's depth cannot be read)"
        );
        anyhow::ensure!(
            settings.producer_seconds > 0.0 && settings.http_seconds > 0.0,
            "--producer-seconds and --http-seconds must be positive"
        );
        anyhow::ensure!(
            settings.pipeline_seconds > 0.0 && settings.pipeline_search_seconds > 0.0,
            "--pipeline-seconds and --pipeline-search-seconds must be positive"
        );
        anyhow::ensure!(
            settings
                .pipeline_http_ceiling
                .is_none_or(|ceiling| ceiling >= 1.0),
            "--pipeline-http-ceiling must be at least 1 request/s"
        );
        Ok(settings)
    }
}

impl Settings {
    /// Whether `section` is part of this run.
    pub fn runs(&self, section: Section) -> bool {
        self.sections.contains(&section)
    }

    /// The queue types our relay's drain runs into (`--queue-types` but `stream`); the other
    /// relays drain into the first.
    pub fn drain_queue_types(&self) -> Vec<QueueType> {
        self.queue_types
            .iter()
            .copied()
            .filter(|queue_type| queue_type.drainable())
            .collect()
    }
}

/// `values` without repeats, in their first order.
fn dedup<T: Copy + PartialEq>(values: &[T]) -> Vec<T> {
    let mut unique = Vec::with_capacity(values.len());
    for &value in values {
        if !unique.contains(&value) {
            unique.push(value);
        }
    }
    unique
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn quick_shrinks_everything_and_flags_win() {
        let args = Args::parse_from(["bench", "--quick", "--drain-events", "500"]);
        let settings = args.settings().unwrap();
        assert_eq!(settings.repetitions, 1);
        assert_eq!(settings.drain_events, 500);
        assert!(settings.steady_seconds < 20.0);
        let full = Args::parse_from(["bench"]).settings().unwrap();
        assert_eq!(full.drain_events, 100_000);
        assert_eq!(full.steady_seconds, 20.0);
        assert_eq!(full.sections.len(), Section::ALL.len());
        assert_eq!((full.repetitions, full.drain_repetitions), (3, 2));
        let explicit =
            Args::parse_from(["bench", "--repetitions", "4", "--steady-repetitions", "1"]);
        let explicit = explicit.settings().unwrap();
        assert_eq!(
            explicit.drain_repetitions, 4,
            "--repetitions applies where no own flag"
        );
        assert_eq!(
            explicit.steady_repetitions, 1,
            "the section's own flag wins"
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_name() {
        let error = Args::parse_from(["bench", "--repetitions", "0"])
            .settings()
            .unwrap_err();
        assert!(error.to_string().contains("--repetitions"), "{error}");
        let error = Args::parse_from(["bench", "--ceiling-fraction", "1.5"])
            .settings()
            .unwrap_err();
        assert!(error.to_string().contains("--ceiling-fraction"), "{error}");
    }

    #[test]
    fn queue_types_and_formats_are_picked_and_stream_does_not_drain() {
        let full = Args::parse_from(["bench"]).settings().unwrap();
        assert_eq!(
            full.queue_types,
            vec![QueueType::Classic, QueueType::Quorum, QueueType::Stream]
        );
        assert_eq!(
            full.drain_queue_types(),
            vec![QueueType::Classic, QueueType::Quorum]
        );
        assert_eq!(full.formats, vec![WireFormat::Plain, WireFormat::Debezium]);
        let picked = Args::parse_from([
            "bench",
            "--queue-types",
            "quorum,quorum",
            "--formats",
            "debezium",
        ])
        .settings()
        .unwrap();
        assert_eq!(picked.queue_types, vec![QueueType::Quorum]);
        assert_eq!(picked.formats, vec![WireFormat::Debezium]);
        let error = Args::parse_from(["bench", "--queue-types", "stream"])
            .settings()
            .unwrap_err();
        assert!(error.to_string().contains("--queue-types"), "{error}");
        let ceiling_only =
            Args::parse_from(["bench", "--queue-types", "stream", "--only", "ceilings"]);
        assert!(ceiling_only.settings().is_ok());
    }

    #[test]
    fn only_selects_sections() {
        let args = Args::parse_from(["bench", "--only", "drain,http"]);
        let settings = args.settings().unwrap();
        assert!(settings.runs(Section::Drain));
        assert!(!settings.runs(Section::Steady));
    }
}
