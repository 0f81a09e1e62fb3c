//! The in-flight window: events published but not yet confirmed, in commit order, and the
//! flush position derived from them. Positions are the source's (an LSN for replication, a
//! row of a batch for polling).
//!
//! Entries are events and commit markers in stream order. An event leaves the window only
//! when the broker confirmed it and every earlier event; a commit marker leaves when all
//! events before it have left, and then its end LSN becomes the flush position. So the
//! flush position is the end of the newest transaction whose events, and all earlier ones,
//! are confirmed. It only moves forward.
//!
//! The window is bounded by a number of entries and a byte budget; the pipeline reads from
//! the replication stream only while [`InFlightWindow::has_room`]. A 100,000-row transaction
//! therefore streams through: its first events are confirmed and leave before its last ones
//! are read.
//!
//! After a broker failure (return, nack, lost connection) [`InFlightWindow::replay_all`]
//! marks every entry unpublished, so the failed event and every later one are published
//! again in order.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use pgoutput::Lsn;

/// An event in the window.
#[derive(Debug)]
pub struct InFlight<M> {
    pub message: M,
    pub size: usize,
    /// When the event was read from the replication stream.
    pub received_at: Instant,
    /// When it was last published.
    pub published_at: Option<Instant>,
    /// Events with the same key are never in flight together (see [`InFlightWindow`]).
    key: Option<u64>,
}

#[derive(Debug)]
enum Entry<M, P> {
    Event(InFlight<M>),
    Commit(P),
}

/// Bounded, ordered window of unconfirmed events with commit markers.
///
/// An event with a key (its aggregate) is published only when no earlier event with that key
/// awaits its confirm: the broker may refuse (nack) one message and accept a later one of the
/// same queue, and the refused one, published again, would then land behind it. With one event
/// per aggregate in flight, a refusal can never put an aggregate's events out of order.
/// Publishing stays in window order (a blocked event blocks the ones after it).
#[derive(Debug)]
pub struct InFlightWindow<M, P = Lsn> {
    entries: VecDeque<Entry<M, P>>,
    /// Index in `entries` of the first entry not yet published.
    next_unpublished: usize,
    /// Published events whose confirm is outstanding.
    published: usize,
    events: usize,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    flushed: P,
    /// Keys of the published events awaiting their confirm, with their count.
    keys_in_flight: HashMap<u64, u32>,
}

impl<M, P: Copy + Ord> InFlightWindow<M, P> {
    pub fn new(max_events: usize, max_bytes: usize, flushed: P) -> Self {
        Self {
            entries: VecDeque::with_capacity(max_events.min(65_536)),
            next_unpublished: 0,
            published: 0,
            events: 0,
            bytes: 0,
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
            flushed,
            keys_in_flight: HashMap::new(),
        }
    }

    /// Whether another event may be read in. Counts events, not commit markers: with one event
    /// per transaction, counting both held only half the configured events in flight.
    pub fn has_room(&self) -> bool {
        self.events < self.max_events && self.bytes < self.max_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Events in the window.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Events published whose confirm is outstanding.
    pub fn published(&self) -> usize {
        self.published
    }

    /// The flush position: every event at or below it is confirmed.
    pub fn flushed(&self) -> P {
        self.flushed
    }

    /// When the oldest event still in the window was read.
    pub fn oldest_received_at(&self) -> Option<Instant> {
        self.entries.iter().find_map(|entry| match entry {
            Entry::Event(event) => Some(event.received_at),
            Entry::Commit(_) => None,
        })
    }

    /// The oldest event still in the window.
    pub fn oldest(&self) -> Option<&M> {
        match self.entries.front() {
            Some(Entry::Event(event)) => Some(&event.message),
            _ => None,
        }
    }

    /// When the oldest outstanding publish was sent.
    pub fn oldest_published_at(&self) -> Option<Instant> {
        match self.entries.front() {
            Some(Entry::Event(event)) => event.published_at,
            _ => None,
        }
    }

    pub fn push_event(&mut self, message: M, size: usize, received_at: Instant) {
        self.push(message, size, None, received_at);
    }

    /// [`Self::push_event`] for an event of aggregate `key` (a hash of it).
    pub fn push_keyed_event(&mut self, message: M, size: usize, key: u64, received_at: Instant) {
        self.push(message, size, Some(key), received_at);
    }

    fn push(&mut self, message: M, size: usize, key: Option<u64>, received_at: Instant) {
        self.events += 1;
        self.bytes += size;
        self.entries.push_back(Entry::Event(InFlight {
            message,
            size,
            received_at,
            published_at: None,
            key,
        }));
    }

    /// Records a transaction's end. Returns the new flush position if it moved (when nothing
    /// before the commit is outstanding).
    pub fn push_commit(&mut self, end_lsn: P) -> Option<P> {
        match self.entries.back_mut() {
            None => return self.advance(end_lsn),
            // A transaction without events right after another's commit: its commit supersedes
            // that one, so markers never outnumber events (the window stays bounded).
            Some(Entry::Commit(previous)) => *previous = end_lsn,
            Some(Entry::Event(_)) => self.entries.push_back(Entry::Commit(end_lsn)),
        }
        None
    }

    /// Advances the flush position to a server position while nothing is in flight (a quiet
    /// outbox must not pin WAL). Returns the new position if it moved.
    pub fn advance_idle(&mut self, lsn: P) -> Option<P> {
        if self.entries.is_empty() {
            self.advance(lsn)
        } else {
            None
        }
    }

    fn advance(&mut self, lsn: P) -> Option<P> {
        (lsn > self.flushed).then(|| {
            self.flushed = lsn;
            lsn
        })
    }

    /// The next event to publish, marked published; `None` when all are, or when the next
    /// one's aggregate has an event awaiting its confirm.
    pub fn next_to_publish(&mut self, now: Instant) -> Option<&M> {
        let index = (self.next_unpublished..self.entries.len())
            .find(|&i| matches!(self.entries[i], Entry::Event(_)));
        let Some(index) = index else {
            self.next_unpublished = self.entries.len();
            return None;
        };
        let Entry::Event(event) = &mut self.entries[index] else {
            return None;
        };
        if let Some(key) = event.key {
            let in_flight = self.keys_in_flight.entry(key).or_insert(0);
            if *in_flight > 0 {
                return None;
            }
            *in_flight += 1;
        }
        self.next_unpublished = index + 1;
        self.published += 1;
        event.published_at = Some(now);
        Some(&event.message)
    }

    /// Whether some event waits to be published.
    pub fn has_unpublished(&self) -> bool {
        self.entries
            .range(self.next_unpublished.min(self.entries.len())..)
            .any(|entry| matches!(entry, Entry::Event(_)))
    }

    /// The oldest event was confirmed: removes it and the commit markers after it. Returns
    /// the event and the new flush position if it moved.
    pub fn confirm_oldest(&mut self) -> Option<(InFlight<M>, Option<P>)> {
        let Some(Entry::Event(event)) = self.entries.pop_front() else {
            return None;
        };
        self.next_unpublished = self.next_unpublished.saturating_sub(1);
        self.published = self.published.saturating_sub(1);
        self.events -= 1;
        self.bytes -= event.size;
        if let Some(key) = event.key
            && let Some(count) = self.keys_in_flight.get_mut(&key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.keys_in_flight.remove(&key);
            }
        }
        let mut moved = None;
        while let Some(Entry::Commit(lsn)) = self.entries.front() {
            let lsn = *lsn;
            self.entries.pop_front();
            self.next_unpublished = self.next_unpublished.saturating_sub(1);
            if let Some(lsn) = self.advance(lsn) {
                moved = Some(lsn);
            }
        }
        Some((event, moved))
    }

    /// Marks every entry unpublished: all are published again, in order.
    pub fn replay_all(&mut self) {
        self.next_unpublished = 0;
        self.published = 0;
        self.keys_in_flight.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn lsn(value: u64) -> Lsn {
        Lsn(value)
    }

    #[test]
    fn flush_moves_only_after_whole_transactions_are_confirmed() {
        let now = Instant::now();
        let mut window = InFlightWindow::new(10, 1 << 20, lsn(100));
        window.push_event("a1", 10, now);
        window.push_event("a2", 10, now);
        assert_eq!(window.push_commit(lsn(200)), None);
        window.push_event("b1", 10, now);
        assert_eq!(window.push_commit(lsn(300)), None);
        assert_eq!(window.next_to_publish(now), Some(&"a1"));
        assert_eq!(window.next_to_publish(now), Some(&"a2"));
        assert_eq!(window.next_to_publish(now), Some(&"b1"));
        assert_eq!(window.next_to_publish(now), None);
        assert_eq!(window.published(), 3);

        let (event, moved) = window.confirm_oldest().unwrap();
        assert_eq!((event.message, moved), ("a1", None));
        assert_eq!(window.flushed(), lsn(100));
        let (event, moved) = window.confirm_oldest().unwrap();
        assert_eq!((event.message, moved), ("a2", Some(lsn(200))));
        let (_, moved) = window.confirm_oldest().unwrap();
        assert_eq!(moved, Some(lsn(300)));
        assert!(window.is_empty());
        assert_eq!(window.push_commit(lsn(400)), Some(lsn(400)));
        assert_eq!(window.advance_idle(lsn(350)), None, "never backwards");
        assert_eq!(window.advance_idle(lsn(500)), Some(lsn(500)));
    }

    #[test]
    fn idle_advance_waits_for_an_empty_window() {
        let now = Instant::now();
        let mut window = InFlightWindow::new(10, 1 << 20, lsn(0));
        window.push_event("x", 1, now);
        assert_eq!(window.advance_idle(lsn(900)), None);
        window.next_to_publish(now);
        window.confirm_oldest().unwrap();
        assert_eq!(window.advance_idle(lsn(900)), Some(lsn(900)));
    }

    #[test]
    fn replay_publishes_everything_again_in_order() {
        let now = Instant::now();
        let mut window = InFlightWindow::new(10, 1 << 20, lsn(0));
        window.push_event(1, 1, now);
        window.push_commit(lsn(10));
        window.push_event(2, 1, now);
        window.push_event(3, 1, now);
        window.next_to_publish(now);
        window.next_to_publish(now);
        window.replay_all();
        assert!(window.has_unpublished());
        let order: Vec<i32> = std::iter::from_fn(|| window.next_to_publish(now).copied()).collect();
        assert_eq!(order, vec![1, 2, 3]);
        // Partially confirmed, then replayed: only the rest comes again.
        window.confirm_oldest().unwrap();
        window.replay_all();
        let order: Vec<i32> = std::iter::from_fn(|| window.next_to_publish(now).copied()).collect();
        assert_eq!(order, vec![2, 3]);
        assert_eq!(window.flushed(), lsn(10));
    }

    #[test]
    fn commit_markers_take_no_room_and_do_not_pile_up() {
        let now = Instant::now();
        let mut window = InFlightWindow::new(2, 1_000, lsn(0));
        // One event per transaction: both fit, as RELAY_WINDOW_EVENTS=2 says.
        window.push_event(1, 10, now);
        assert_eq!(window.push_commit(lsn(10)), None);
        assert!(window.has_room());
        window.push_event(2, 10, now);
        assert_eq!(window.push_commit(lsn(20)), None);
        assert!(!window.has_room());
        // Transactions without events behind them: one marker, the newest.
        for end in [30, 40, 50] {
            assert_eq!(window.push_commit(lsn(end)), None);
        }
        assert_eq!(window.entries.len(), 4);
        while window.next_to_publish(now).is_some() {}
        window.confirm_oldest().unwrap();
        assert_eq!(window.flushed(), lsn(10));
        window.confirm_oldest().unwrap();
        assert_eq!(window.flushed(), lsn(50));
        assert!(window.is_empty());
    }

    #[test]
    fn an_aggregate_has_one_event_in_flight_at_a_time() {
        let mut window = InFlightWindow::new(10, 1 << 20, lsn(0));
        let now = Instant::now();
        window.push_keyed_event("x1", 1, 7, now);
        window.push_keyed_event("y1", 1, 8, now);
        window.push_keyed_event("x2", 1, 7, now);
        window.push_keyed_event("z1", 1, 9, now);
        assert_eq!(window.next_to_publish(now), Some(&"x1"));
        assert_eq!(window.next_to_publish(now), Some(&"y1"));
        // x2 waits for x1's confirm, and z1 waits behind it (order is kept).
        assert_eq!(window.next_to_publish(now), None);
        let (event, _) = window.confirm_oldest().unwrap();
        assert_eq!(event.message, "x1");
        assert_eq!(window.next_to_publish(now), Some(&"x2"));
        assert_eq!(window.next_to_publish(now), Some(&"z1"));
        // A refusal replays everything: x2 is published again, alone for its key.
        window.replay_all();
        assert_eq!(window.next_to_publish(now), Some(&"y1"));
        assert_eq!(window.next_to_publish(now), Some(&"x2"));
        assert_eq!(window.next_to_publish(now), Some(&"z1"));
    }

    #[test]
    fn room_is_bounded_by_count_and_bytes() {
        let now = Instant::now();
        let mut window = InFlightWindow::new(2, 100, lsn(0));
        window.push_event((), 10, now);
        assert!(window.has_room());
        window.push_event((), 10, now);
        assert!(!window.has_room());
        let mut by_bytes = InFlightWindow::new(100, 100, lsn(0));
        by_bytes.push_event((), 100, now);
        assert!(!by_bytes.has_room());
        by_bytes.next_to_publish(now);
        by_bytes.confirm_oldest().unwrap();
        assert!(by_bytes.has_room());
        assert_eq!(by_bytes.events(), 0);
    }
}
