//! Exponential backoff between retries (reconnects, stalled events, start-up waits), and
//! [`retry_until`], a start-up step retried while its failure is transient.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// The first delay after a failure, unless [`Backoff::starting_at`] says otherwise.
const FIRST: Duration = Duration::from_millis(100);

/// Exponential backoff from `first` (100 ms by default) to `max`, doubling on each failure.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Self::starting_at(FIRST, max)
    }

    pub fn starting_at(first: Duration, max: Duration) -> Self {
        Self {
            first,
            next: first,
            max,
        }
    }

    /// The delay to wait now; the next one doubles, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Runs `attempt` until it succeeds, fails for good (`is_transient` false), or `patience` would
/// run out before the next try; logs each wait naming `what`.
pub async fn retry_until<T, E, F, Fut>(
    what: &str,
    patience: Duration,
    mut backoff: Backoff,
    is_transient: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match attempt().await {
            Err(error) if is_transient(&error) => {
                let pause = backoff.next_delay();
                if tokio::time::Instant::now() + pause >= deadline {
                    return Err(error);
                }
                tracing::warn!(%error, retry_in = ?pause, "{what} not reachable yet");
                tokio::time::sleep(pause).await;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::cell::Cell;

    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let max = Duration::from_secs(5);
        let mut backoff = Backoff::new(max);
        let delays: Vec<_> = (0..8).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(*delays.last().unwrap(), max);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
        let mut custom = Backoff::starting_at(Duration::from_millis(200), max);
        assert_eq!(custom.next_delay(), Duration::from_millis(200));
        assert_eq!(custom.next_delay(), Duration::from_millis(400));
        custom.reset();
        assert_eq!(custom.next_delay(), Duration::from_millis(200));
    }

    /// Runs `retry_until` over an attempt that fails `failures` times (with a transient or a
    /// lasting error) before succeeding; returns the result and the number of attempts.
    async fn attempts(patience: u64, failures: u32, transient: bool) -> (Result<u32, String>, u32) {
        let calls = Cell::new(0);
        let result = retry_until(
            "thing",
            Duration::from_secs(patience),
            Backoff::new(Duration::from_secs(1)),
            |_: &String| transient,
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n <= failures {
                        Err(format!("down {n}"))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        (result, calls.get())
    }

    #[tokio::test(start_paused = true)]
    async fn retry_until_stops_on_success_on_a_lasting_error_and_at_its_deadline() {
        assert_eq!(attempts(60, 2, true).await, (Ok(3), 3));
        assert_eq!(attempts(60, 2, false).await, (Err("down 1".to_owned()), 1));
        let started = tokio::time::Instant::now();
        let (result, calls) = attempts(5, u32::MAX, true).await;
        assert!(result.is_err());
        assert!(calls > 1);
        // Paused time: the waits are virtual, and stop before the patience runs out.
        assert!(started.elapsed() <= Duration::from_secs(5));
    }
}
