//! Summaries of repeated measurements (median [min–max]) and latency percentiles.

use serde::Serialize;

/// One figure over the repetitions: every figure in the report is one of these.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many repetitions produced a value.
    pub n: usize,
}

impl Summary {
    /// The summary of `values`, or `None` when there are none (the measurement did not run).
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            n,
        })
    }

    /// `median [min–max]` with `decimals` digits, for the table.
    pub fn display(&self, decimals: usize) -> String {
        if self.n == 1 {
            format!("{:.*}", decimals, self.median)
        } else {
            format!(
                "{:.*} [{:.*}–{:.*}]",
                decimals, self.median, decimals, self.min, decimals, self.max
            )
        }
    }
}

/// `Summary::display` for an optional summary; `n/a` when it is missing.
pub fn show(summary: Option<Summary>, decimals: usize) -> String {
    summary.map_or_else(|| "n/a".to_owned(), |s| s.display(decimals))
}

/// Latency distribution of one run, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values` (sorted here); `None` when empty.
    pub fn of(values: &mut [f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = (q * values.len() as f64).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1]
        };
        Some(Self {
            count: values.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: values[values.len() - 1],
            mean: values.iter().sum::<f64>() / values.len() as f64,
        })
    }
}

/// Upper bounds of the p50 and p99 of a Prometheus histogram, in milliseconds: the smallest
/// bucket bound that holds at least that share of the observations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BucketQuantiles {
    pub count: u64,
    pub p50_at_most_ms: f64,
    pub p99_at_most_ms: f64,
}

impl BucketQuantiles {
    /// Reads histogram `name` (seconds, no labels) from Prometheus text; `None` when it is
    /// missing or empty.
    pub fn from_prometheus(text: &str, name: &str) -> Option<Self> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, u64)> = text
            .lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .filter_map(|rest| {
                let (bound, count) = rest.split_once("\"} ")?;
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                Some((bound, count.trim().parse::<f64>().ok()? as u64))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = buckets.last()?.1;
        if count == 0 {
            return None;
        }
        let at_most = |share: f64| {
            let needed = (share * count as f64).ceil() as u64;
            buckets
                .iter()
                .find(|(_, cumulative)| *cumulative >= needed)
                .map_or(f64::INFINITY, |(bound, _)| bound * 1000.0)
        };
        Some(Self {
            count,
            p50_at_most_ms: at_most(0.5),
            p99_at_most_ms: at_most(0.99),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn summary_takes_the_middle_value() {
        let summary = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((summary.median, summary.min, summary.max), (2.0, 1.0, 3.0));
        assert_eq!(Summary::of(&[1.0, 2.0, 4.0, 10.0]).unwrap().median, 3.0);
        assert!(Summary::of(&[]).is_none());
        assert_eq!(Summary::of(&[5.0, f64::NAN]).unwrap().n, 1);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut values: Vec<f64> = (1..=1000).map(f64::from).collect();
        let p = Percentiles::of(&mut values).unwrap();
        assert_eq!(p.p50, 500.0);
        assert_eq!(p.p99, 990.0);
        assert_eq!(p.p999, 999.0);
        assert_eq!(p.max, 1000.0);
        let mut one = vec![7.0];
        assert_eq!(Percentiles::of(&mut one).unwrap().p999, 7.0);
    }

    #[test]
    fn display_shows_the_range_only_for_several_runs() {
        assert_eq!(Summary::of(&[2.0]).unwrap().display(1), "2.0");
        assert_eq!(Summary::of(&[1.0, 2.0, 3.0]).unwrap().display(0), "2 [1–3]");
    }

    #[test]
    fn bucket_quantiles_are_the_first_bound_holding_the_share() {
        let text = "# TYPE x histogram\n\
            x_bucket{le=\"0.001\"} 40\n\
            x_bucket{le=\"0.005\"} 90\n\
            x_bucket{le=\"0.01\"} 99\n\
            x_bucket{le=\"+Inf\"} 100\n\
            x_sum 0.5\nx_count 100\n";
        let quantiles = BucketQuantiles::from_prometheus(text, "x").unwrap();
        assert_eq!(quantiles.count, 100);
        assert_eq!(quantiles.p50_at_most_ms, 5.0);
        assert_eq!(quantiles.p99_at_most_ms, 10.0);
        assert!(BucketQuantiles::from_prometheus(text, "y").is_none());
    }
}
