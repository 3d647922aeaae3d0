//! Which notification to deliver next (IO-free): one lane per subscription, delivered in
//! sequence order with at most one notification of a lane in flight, so that a callback sees
//! its notifications in the order they were queued even across retries; a lane whose head
//! failed waits out an exponential back-off before the head is tried again; lanes take turns
//! when the number in flight is capped.

use std::{collections::BTreeMap, time::Duration};

use tokio::time::Instant;

use super::Notification;

/// Exponential back-off between attempts of one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure.
    pub first: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait after the `failures`-th consecutive failure (1-based): `first`, doubling,
    /// capped at `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }
}

#[derive(Debug, Default)]
struct Lane {
    pending: BTreeMap<u64, Notification>,
    in_flight: Option<u64>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// The pending notifications of every subscription and their delivery state.
#[derive(Debug)]
pub struct DeliveryQueue {
    lanes: BTreeMap<String, Lane>,
    backoff: Backoff,
    in_flight: usize,
    /// The lane served last, so that the next call to [`DeliveryQueue::due`] starts after it.
    cursor: Option<String>,
}

impl DeliveryQueue {
    /// An empty queue retrying with `backoff`.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            lanes: BTreeMap::new(),
            backoff,
            in_flight: 0,
            cursor: None,
        }
    }

    /// A notification found in the outbox. Inserting one already known changes nothing.
    pub fn insert(&mut self, n: Notification) {
        let lane = self.lanes.entry(n.subscription.clone()).or_default();
        lane.pending.entry(n.seq).or_insert(n);
    }

    /// A notification left the outbox (delivered, dropped or its subscription deleted).
    pub fn remove(&mut self, subscription: &str, seq: u64) {
        if let Some(lane) = self.lanes.get_mut(subscription) {
            let was_head = lane
                .pending
                .first_key_value()
                .is_some_and(|(s, _)| *s == seq);
            if lane.pending.remove(&seq).is_some() && was_head {
                // A new head starts without the old one's back-off.
                lane.failures = 0;
                lane.retry_at = None;
            }
            self.prune(subscription);
        }
    }

    fn prune(&mut self, subscription: &str) {
        if self
            .lanes
            .get(subscription)
            .is_some_and(|l| l.pending.is_empty() && l.in_flight.is_none())
        {
            self.lanes.remove(subscription);
        }
    }

    /// Up to `limit` notifications to send now: the head of every lane with nothing in
    /// flight and no back-off pending, starting after the lane served last. Each is marked
    /// in flight until [`delivered`](Self::delivered) or [`failed`](Self::failed).
    pub fn due(&mut self, now: Instant, limit: usize) -> Vec<Notification> {
        let mut out = Vec::new();
        let mut order: Vec<String> = self.lanes.keys().cloned().collect();
        if let Some(c) = &self.cursor {
            let served = order.partition_point(|k| k <= c);
            order.rotate_left(served);
        }
        for sub in order {
            if out.len() >= limit {
                break;
            }
            let lane = self.lanes.get_mut(&sub).expect("listed");
            if lane.in_flight.is_some() || lane.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            let Some((seq, head)) = lane.pending.first_key_value() else {
                continue;
            };
            lane.in_flight = Some(*seq);
            out.push(head.clone());
            self.in_flight += 1;
            self.cursor = Some(sub);
        }
        out
    }

    fn finish(&mut self, subscription: &str, seq: u64) -> Option<&mut Lane> {
        let lane = self.lanes.get_mut(subscription)?;
        if lane.in_flight != Some(seq) {
            return None;
        }
        lane.in_flight = None;
        self.in_flight -= 1;
        Some(lane)
    }

    /// The callback took notification `seq`: the lane moves on to the next one.
    pub fn delivered(&mut self, subscription: &str, seq: u64) {
        if let Some(lane) = self.finish(subscription, seq) {
            lane.pending.remove(&seq);
            lane.failures = 0;
            lane.retry_at = None;
        }
        self.prune(subscription);
    }

    /// The subscription ended while notification `seq` was in flight (its callback answered
    /// 410 Gone): the whole lane goes, nothing more is sent to it.
    pub fn drop_lane(&mut self, subscription: &str, seq: u64) {
        self.finish(subscription, seq);
        self.lanes.remove(subscription);
    }

    /// Sending notification `seq` failed at `now`: the lane waits out its back-off. Returns
    /// the number of consecutive failures of this head, 0 if it is no longer the head.
    pub fn failed(&mut self, subscription: &str, seq: u64, now: Instant) -> u32 {
        let backoff = self.backoff;
        let Some(lane) = self.finish(subscription, seq) else {
            return 0;
        };
        if !lane.pending.contains_key(&seq) {
            // Removed while in flight (its subscription was deleted).
            self.prune(subscription);
            return 0;
        }
        lane.failures += 1;
        lane.retry_at = Some(now + backoff.delay(lane.failures));
        lane.failures
    }

    /// When the earliest back-off ends, if a lane is waiting for one.
    pub fn next_retry(&self) -> Option<Instant> {
        self.lanes
            .values()
            .filter(|l| l.in_flight.is_none() && !l.pending.is_empty())
            .filter_map(|l| l.retry_at)
            .min()
    }

    /// Notifications known, in flight or not.
    pub fn pending(&self) -> usize {
        self.lanes.values().map(|l| l.pending.len()).sum()
    }

    /// Notifications being sent.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Forgets everything (leadership lost; the outbox is read again when regained).
    pub fn clear(&mut self) {
        self.lanes.clear();
        self.in_flight = 0;
        self.cursor = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(sub: &str, seq: u64) -> Notification {
        Notification {
            subscription: sub.into(),
            seq,
            family: "f".into(),
            callback: "http://127.0.0.1:1/".into(),
            body: serde_json::json!({ "seq": seq }),
            enqueued_at_ms: 0,
            delivery: Default::default(),
        }
    }

    fn keys(v: &[Notification]) -> Vec<(String, u64)> {
        v.iter().map(|n| (n.subscription.clone(), n.seq)).collect()
    }

    const BACKOFF: Backoff = Backoff {
        first: Duration::from_millis(100),
        max: Duration::from_secs(2),
    };

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let d: Vec<u128> = (1..=7).map(|f| BACKOFF.delay(f).as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(BACKOFF.delay(u32::MAX), BACKOFF.max);
    }

    #[test]
    fn one_in_flight_per_subscription_in_sequence_order() {
        let mut q = DeliveryQueue::new(BACKOFF);
        let t = Instant::now();
        for seq in [2, 0, 1] {
            q.insert(n("a", seq));
        }
        q.insert(n("b", 5));
        q.insert(n("a", 0)); // duplicate from a relist: no effect
        assert_eq!(q.pending(), 4);
        assert_eq!(keys(&q.due(t, 10)), [("a".into(), 0), ("b".into(), 5)]);
        // Nothing more while both heads are in flight.
        assert!(q.due(t, 10).is_empty());
        q.delivered("a", 0);
        assert_eq!(keys(&q.due(t, 10)), [("a".into(), 1)]);
        q.delivered("b", 5);
        q.delivered("a", 1);
        assert_eq!(keys(&q.due(t, 10)), [("a".into(), 2)]);
        q.delivered("a", 2);
        assert_eq!(q.pending(), 0);
        assert_eq!(q.in_flight(), 0);
        assert!(q.lanes.is_empty());
    }

    #[test]
    fn a_failed_head_blocks_its_lane_for_the_backoff_and_is_retried_first() {
        let mut q = DeliveryQueue::new(BACKOFF);
        let t = Instant::now();
        q.insert(n("a", 0));
        q.insert(n("a", 1));
        q.insert(n("b", 0));
        assert_eq!(q.due(t, 10).len(), 2);
        assert_eq!(q.failed("a", 0, t), 1);
        q.delivered("b", 0);
        assert_eq!(q.next_retry(), Some(t + Duration::from_millis(100)));
        assert!(q.due(t + Duration::from_millis(99), 10).is_empty());
        let retry = q.due(t + Duration::from_millis(100), 10);
        assert_eq!(keys(&retry), [("a".into(), 0)]);
        assert_eq!(q.failed("a", 0, t + Duration::from_millis(100)), 2);
        assert_eq!(
            q.next_retry(),
            Some(t + Duration::from_millis(300)),
            "second failure waits 200 ms"
        );
        assert_eq!(
            keys(&q.due(t + Duration::from_millis(300), 10)),
            [("a".into(), 0)]
        );
        q.delivered("a", 0);
        // The next head starts without back-off.
        assert_eq!(
            keys(&q.due(t + Duration::from_millis(300), 10)),
            [("a".into(), 1)]
        );
    }

    #[test]
    fn lanes_take_turns_under_a_cap() {
        let mut q = DeliveryQueue::new(BACKOFF);
        let t = Instant::now();
        for s in ["a", "b", "c"] {
            q.insert(n(s, 0));
            q.insert(n(s, 1));
        }
        let first = q.due(t, 1);
        assert_eq!(keys(&first), [("a".into(), 0)]);
        q.delivered("a", 0);
        assert_eq!(keys(&q.due(t, 1)), [("b".into(), 0)]);
        q.delivered("b", 0);
        assert_eq!(keys(&q.due(t, 1)), [("c".into(), 0)]);
        q.delivered("c", 0);
        assert_eq!(keys(&q.due(t, 1)), [("a".into(), 1)]);
    }

    #[test]
    fn removal_while_in_flight_drops_the_lane_without_retry() {
        let mut q = DeliveryQueue::new(BACKOFF);
        let t = Instant::now();
        q.insert(n("a", 0));
        assert_eq!(q.due(t, 10).len(), 1);
        q.remove("a", 0);
        assert_eq!(q.failed("a", 0, t), 0);
        assert_eq!(q.pending(), 0);
        assert_eq!(q.in_flight(), 0);
        assert_eq!(q.next_retry(), None);
        // A result for something unknown is ignored.
        q.delivered("zzz", 3);
        assert_eq!(q.failed("zzz", 3, t), 0);
    }

    #[test]
    fn a_dropped_lane_sends_nothing_more() {
        let mut q = DeliveryQueue::new(BACKOFF);
        let t = Instant::now();
        for seq in 0..3 {
            q.insert(n("a", seq));
        }
        q.insert(n("b", 0));
        assert_eq!(q.due(t, 10).len(), 2);
        q.drop_lane("a", 0);
        assert_eq!(q.in_flight(), 1);
        assert_eq!(q.pending(), 1);
        q.delivered("b", 0);
        assert!(q.due(t, 10).is_empty());
    }
}
