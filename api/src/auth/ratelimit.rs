//! Per-client rate limiting: a token bucket per OAuth client, refilled continuously.
//!
//! The decision ([`Bucket::take`]) is pure and takes the time as an argument; the limiter
//! keeps one bucket per client behind a mutex and forgets clients idle for a while.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// How fast a client may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once after idling.
    pub burst: u32,
}

impl RateLimit {
    /// Default for developers.
    pub const DEVELOPER: Self = Self {
        per_second: 50,
        burst: 100,
    };
    /// Default for app instances.
    pub const INSTANCE: Self = Self {
        per_second: 20,
        burst: 40,
    };
    /// The operator.
    pub const OPERATOR: Self = Self {
        per_second: 1_000,
        burst: 2_000,
    };
}

/// One client's bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    tokens: f64,
    /// Seconds (on the limiter's clock) of the last refill.
    at: f64,
}

impl Bucket {
    fn full(limit: RateLimit, now: f64) -> Self {
        Self {
            tokens: f64::from(limit.burst.max(1)),
            at: now,
        }
    }

    /// Takes one token at `now`; when none is left, how long until one is.
    fn take(&mut self, limit: RateLimit, now: f64) -> Result<(), Duration> {
        let rate = f64::from(limit.per_second.max(1));
        let cap = f64::from(limit.burst.max(1));
        self.tokens = (self.tokens + (now - self.at).max(0.0) * rate).min(cap);
        self.at = now.max(self.at);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

/// Clients idle this long are forgotten (their bucket would be full again anyway).
const IDLE_FORGET: f64 = 600.0;

/// Buckets of every client seen recently.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    inner: Arc<Mutex<Limiter>>,
    epoch: tokio::time::Instant,
}

#[derive(Debug, Default)]
struct Limiter {
    buckets: HashMap<String, Bucket>,
    last_sweep: f64,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            epoch: tokio::time::Instant::now(),
        }
    }
}

impl RateLimiter {
    /// Takes one request of `client` under `limit`; `Err(retry_after)` when over it.
    pub fn check(&self, client: &str, limit: RateLimit) -> Result<(), Duration> {
        let now = self.epoch.elapsed().as_secs_f64();
        self.check_at(client, limit, now)
    }

    fn check_at(&self, client: &str, limit: RateLimit, now: f64) -> Result<(), Duration> {
        let mut l = self.inner.lock();
        if now - l.last_sweep > IDLE_FORGET {
            l.buckets.retain(|_, b| now - b.at < IDLE_FORGET);
            l.last_sweep = now;
        }
        if let Some(b) = l.buckets.get_mut(client) {
            return b.take(limit, now);
        }
        let mut b = Bucket::full(limit, now);
        let r = b.take(limit, now);
        l.buckets.insert(client.to_string(), b);
        r
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.inner.lock().buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: RateLimit = RateLimit {
        per_second: 2,
        burst: 3,
    };

    #[test]
    fn burst_then_refill_at_the_rate() {
        let r = RateLimiter::default();
        for _ in 0..3 {
            r.check_at("a", L, 0.0).unwrap();
        }
        let wait = r.check_at("a", L, 0.0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another client has its own bucket.
        r.check_at("b", L, 0.0).unwrap();
        // Half a second later one token is back, not two.
        r.check_at("a", L, 0.5).unwrap();
        assert!(r.check_at("a", L, 0.5).is_err());
        // Long idle refills only up to the burst.
        for _ in 0..3 {
            r.check_at("a", L, 100.0).unwrap();
        }
        assert!(r.check_at("a", L, 100.0).is_err());
    }

    #[test]
    fn idle_clients_are_forgotten() {
        let r = RateLimiter::default();
        r.check_at("a", L, 0.0).unwrap();
        r.check_at("b", L, 500.0).unwrap();
        assert_eq!(r.tracked(), 2);
        r.check_at("c", L, 700.0).unwrap();
        // "a" idled past the limit; "b" did not.
        assert_eq!(r.tracked(), 2);
    }

    #[test]
    fn time_going_backwards_does_not_mint_tokens() {
        let mut b = Bucket::full(L, 10.0);
        for _ in 0..3 {
            b.take(L, 10.0).unwrap();
        }
        assert!(b.take(L, 5.0).is_err());
        assert!(b.take(L, 10.0).is_err());
    }
}
