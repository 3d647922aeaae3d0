//! The delivery shell around [`DeliveryQueue`]: reads the outbox, follows it with a watch,
//! POSTs each due notification to its callback, deletes it once the callback answered 2xx,
//! and ends subscriptions at their `expiryDeadline`. Only the elected leader delivers.

use std::{collections::BTreeMap, time::Duration};

use mecfed_store::{
    Election, EventKind, Store, Watcher,
    typed::{self, Resource, Typed},
};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use tokio::{sync::mpsc, time::Instant};

use super::{
    Notification, Subscription, now_ms,
    queue::{Backoff, DeliveryQueue},
};

/// The key the delivering process holds.
pub const LEADER_KEY: &[u8] = b"/mecfed/v1/leaders/notifier";

/// How notifications are delivered.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// Waits between attempts of one notification.
    pub backoff: Backoff,
    /// Time allowed for one callback request.
    pub timeout: Duration,
    /// A notification still undelivered this long after it was queued is dropped.
    pub give_up_after: Duration,
    /// Most callback requests at once.
    pub max_in_flight: usize,
    /// TTL of the delivery leadership.
    pub leader_ttl: Duration,
    /// The certificate authorities `https` callbacks are verified against (see
    /// [`system_roots`] and [`pem_roots`]); none: every `https` callback fails.
    pub roots: Vec<reqwest::Certificate>,
}

/// Where Debian (and most distributions) keep the system's trusted CAs as one PEM bundle.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The system's trusted CAs ([`SYSTEM_BUNDLE`]); none when it is missing or unreadable.
pub fn system_roots() -> Vec<reqwest::Certificate> {
    pem_roots(std::path::Path::new(SYSTEM_BUNDLE)).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no system CA bundle: https callbacks need --callback-ca");
        Vec::new()
    })
}

/// The certificates of the PEM bundle at `path`.
pub fn pem_roots(path: &std::path::Path) -> std::io::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    if certs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: no certificate in the file", path.display()),
        ));
    }
    Ok(certs)
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            backoff: Backoff {
                first: Duration::from_millis(500),
                max: Duration::from_secs(60),
            },
            timeout: Duration::from_secs(5),
            give_up_after: Duration::from_secs(24 * 3600),
            max_in_flight: 64,
            leader_ttl: Duration::from_secs(10),
            roots: Vec::new(),
        }
    }
}

/// Delivery metrics, `mecfed_notifications_*`.
#[derive(Debug, Clone)]
pub struct NotifyMetrics {
    delivered: IntCounterVec,
    failed_attempts: IntCounterVec,
    dropped: IntCounterVec,
    expired: IntCounter,
    pending: IntGauge,
    latency: HistogramVec,
    leader: IntGauge,
}

impl NotifyMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["family"]);
        let m = Self {
            delivered: counter(
                "mecfed_notifications_delivered_total",
                "Notifications a callback accepted",
            )?,
            failed_attempts: counter(
                "mecfed_notification_attempts_failed_total",
                "Callback requests that failed and will be retried",
            )?,
            dropped: counter(
                "mecfed_notifications_dropped_total",
                "Notifications given up after the retry horizon",
            )?,
            expired: IntCounter::new(
                "mecfed_subscriptions_expired_total",
                "Subscriptions ended by their expiryDeadline",
            )?,
            pending: IntGauge::new(
                "mecfed_notifications_pending",
                "Notifications waiting for delivery",
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "mecfed_notification_delivery_seconds",
                    "From queued to accepted by the callback",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0,
                ]),
                &["family"],
            )?,
            leader: IntGauge::new(
                "mecfed_notifier_leader",
                "1 while this process delivers notifications",
            )?,
        };
        registry.register(Box::new(m.delivered.clone()))?;
        registry.register(Box::new(m.failed_attempts.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.expired.clone()))?;
        registry.register(Box::new(m.pending.clone()))?;
        registry.register(Box::new(m.latency.clone()))?;
        registry.register(Box::new(m.leader.clone()))?;
        Ok(m)
    }
}

/// What became of one attempt.
#[derive(Debug)]
enum Outcome {
    Delivered,
    /// The callback answered 410 Gone: the subscriber wants no more; the subscription and
    /// its outbox are deleted.
    Gone,
    Failed(String),
}

/// Delivers the outbox; see the module docs.
pub struct Notifier<S> {
    store: Typed<S>,
    client: reqwest::Client,
    config: NotifierConfig,
    metrics: Option<NotifyMetrics>,
}

/// What a leader keeps while it delivers.
struct Live {
    queue: DeliveryQueue,
    deadlines: BTreeMap<String, u64>,
    outbox: Watcher,
    subscriptions: Watcher,
}

fn unix_now() -> u64 {
    now_ms() / 1000
}

/// The `(subscription, seq)` of an outbox key.
fn outbox_entry(key: &[u8]) -> Option<(String, u64)> {
    let rest = key.strip_prefix(typed::kind_prefix::<Notification>().as_slice())?;
    let (sub, seq) = std::str::from_utf8(rest).ok()?.rsplit_once('/')?;
    Some((sub.to_string(), seq.parse().ok()?))
}

/// The sequence number of an outbox key.
pub(super) fn outbox_seq(key: &[u8]) -> Option<u64> {
    outbox_entry(key).map(|(_, seq)| seq)
}

fn subscription_id(key: &[u8]) -> Option<String> {
    let rest = key.strip_prefix(typed::kind_prefix::<Subscription>().as_slice())?;
    Some(String::from_utf8_lossy(rest).into_owned())
}

/// The next event of `w`; never, without a watch.
async fn next_event(
    w: Option<&mut Watcher>,
) -> Option<Result<mecfed_store::Event, mecfed_store::StoreError>> {
    match w {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

impl<S: Store> Notifier<S> {
    /// A notifier over `store`; fails when the TLS client cannot be built.
    pub fn new(store: Typed<S>, config: NotifierConfig) -> Result<Self, reqwest::Error> {
        let mut client = reqwest::Client::builder()
            .user_agent(concat!("mecfed/", env!("CARGO_PKG_VERSION")))
            .https_only(false)
            .tls_built_in_root_certs(false);
        for root in &config.roots {
            client = client.add_root_certificate(root.clone());
        }
        Ok(Self {
            store,
            client: client.build()?,
            config,
            metrics: None,
        })
    }

    /// Records metrics in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: NotifyMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    async fn load(&self) -> Result<Live, mecfed_store::typed::TypedError> {
        let mut queue = DeliveryQueue::new(self.config.backoff);
        let (pending, rev) = self.store.list::<Notification>().await?;
        for n in pending {
            queue.insert(n.value);
        }
        let (subs, srev) = self.store.list::<Subscription>().await?;
        let deadlines = subs
            .into_iter()
            .filter_map(|s| Some((s.value.id.clone(), s.value.expiry_deadline?)))
            .collect();
        let outbox = self
            .store
            .store()
            .watch(&typed::kind_prefix::<Notification>(), rev + 1)
            .await?;
        let subscriptions = self
            .store
            .store()
            .watch(&typed::kind_prefix::<Subscription>(), srev + 1)
            .await?;
        Ok(Live {
            queue,
            deadlines,
            outbox,
            subscriptions,
        })
    }

    /// Delivers while this process leads ([`LEADER_KEY`]), until `shutdown` resolves; the
    /// leadership is given up on shutdown.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut election = Election::new(
            self.store.store().clone(),
            LEADER_KEY,
            format!("pid-{}-{nanos:08x}", std::process::id()),
            self.config.leader_ttl,
        );
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Notification, Outcome)>();
        let mut live: Option<Live> = None;
        let mut campaign_at = Instant::now();
        loop {
            if Instant::now() >= campaign_at {
                let leading = match election.campaign().await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "notifier: leader election failed");
                        false
                    }
                };
                campaign_at = Instant::now() + self.config.leader_ttl / 3;
                if leading != live.is_some() {
                    tracing::info!(id = election.id(), leading, "notifier leadership");
                    if let Some(m) = &self.metrics {
                        m.leader.set(i64::from(leading));
                    }
                }
                if !leading {
                    live = None;
                } else if live.is_none() {
                    match self.load().await {
                        Ok(l) => live = Some(l),
                        Err(e) => tracing::warn!(error = %e, "notifier: cannot read the outbox"),
                    }
                }
            }
            if let Some(l) = live.as_mut() {
                self.expire_due(l).await;
                let room = self
                    .config
                    .max_in_flight
                    .saturating_sub(l.queue.in_flight());
                for n in l.queue.due(Instant::now(), room) {
                    self.spawn_delivery(n, done_tx.clone());
                }
                if let Some(m) = &self.metrics {
                    m.pending
                        .set(i64::try_from(l.queue.pending()).unwrap_or(i64::MAX));
                }
            }
            let mut wake = campaign_at;
            if let Some(l) = &live {
                if let Some(t) = l.queue.next_retry() {
                    wake = wake.min(t);
                }
                if let Some(d) = l.deadlines.values().min() {
                    // The campaign wakes the loop every ttl/3 anyway: a far deadline only
                    // needs to not overflow the clock.
                    let secs = d.saturating_sub(unix_now()).min(3600);
                    wake = wake.min(Instant::now() + Duration::from_secs(secs));
                }
            }
            let (outbox, subscriptions) = match live.as_mut() {
                Some(l) => (Some(&mut l.outbox), Some(&mut l.subscriptions)),
                None => (None, None),
            };
            tokio::select! {
                () = &mut shutdown => {
                    if let Err(e) = election.resign().await {
                        tracing::warn!(error = %e, "notifier: cannot resign the leadership");
                    }
                    return;
                }
                ev = next_event(outbox) => self.on_outbox_event(&mut live, ev),
                ev = next_event(subscriptions) => Self::on_subscription_event(&mut live, ev),
                Some((n, outcome)) = done_rx.recv() => self.on_outcome(&mut live, n, outcome),
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn on_outbox_event(
        &self,
        live: &mut Option<Live>,
        ev: Option<Result<mecfed_store::Event, mecfed_store::StoreError>>,
    ) {
        let Some(l) = live.as_mut() else { return };
        match ev {
            Some(Ok(ev)) => match ev.kind {
                EventKind::Put => match serde_json::from_slice::<Notification>(&ev.kv.value) {
                    Ok(n) => l.queue.insert(n),
                    Err(e) => tracing::warn!(error = %e, "notifier: undecodable notification"),
                },
                EventKind::Delete => {
                    if let Some((sub, seq)) = outbox_entry(&ev.kv.key) {
                        l.queue.remove(&sub, seq);
                    }
                }
            },
            other => {
                tracing::warn!(error = ?other.and_then(Result::err), "notifier: outbox watch ended; reading it again");
                *live = None;
            }
        }
    }

    fn on_subscription_event(
        live: &mut Option<Live>,
        ev: Option<Result<mecfed_store::Event, mecfed_store::StoreError>>,
    ) {
        let Some(l) = live.as_mut() else { return };
        match ev {
            Some(Ok(ev)) => {
                let Some(id) = subscription_id(&ev.kv.key) else {
                    return;
                };
                let deadline = match ev.kind {
                    EventKind::Put => serde_json::from_slice::<Subscription>(&ev.kv.value)
                        .ok()
                        .and_then(|s| s.expiry_deadline),
                    EventKind::Delete => None,
                };
                match deadline {
                    Some(d) => l.deadlines.insert(id, d),
                    None => l.deadlines.remove(&id),
                };
            }
            other => {
                tracing::warn!(error = ?other.and_then(Result::err), "notifier: subscription watch ended; reading again");
                *live = None;
            }
        }
    }

    fn on_outcome(&self, live: &mut Option<Live>, n: Notification, outcome: Outcome) {
        let m = self.metrics.as_ref();
        match outcome {
            Outcome::Delivered => {
                if let Some(m) = m {
                    m.delivered.with_label_values(&[&n.family]).inc();
                    let ms = now_ms().saturating_sub(n.enqueued_at_ms);
                    m.latency
                        .with_label_values(&[&n.family])
                        .observe(ms as f64 / 1000.0);
                }
                if let Some(l) = live.as_mut() {
                    l.queue.delivered(&n.subscription, n.seq);
                }
            }
            Outcome::Gone => {
                // Not a drop (the subscriber ended it), so not counted as one.
                tracing::info!(subscription = %n.subscription, callback = %n.callback,
                    "callback answered 410 Gone: subscription ended");
                // Its outbox is deleted; its lane goes at once, before the watch tells.
                if let Some(l) = live.as_mut() {
                    l.queue.drop_lane(&n.subscription, n.seq);
                }
            }
            Outcome::Failed(why) => {
                let age = Duration::from_millis(now_ms().saturating_sub(n.enqueued_at_ms));
                if age >= self.config.give_up_after {
                    tracing::warn!(subscription = %n.subscription, seq = n.seq, callback = %n.callback,
                        error = %why, age = ?age, "notification given up");
                    if let Some(m) = m {
                        m.dropped.with_label_values(&[&n.family]).inc();
                    }
                    let store = self.store.clone();
                    let id = n.id();
                    tokio::spawn(async move {
                        if let Err(e) = store.delete::<Notification>(&id, None).await {
                            tracing::warn!(error = %e, "notifier: cannot drop a notification");
                        }
                    });
                    if let Some(l) = live.as_mut() {
                        l.queue.delivered(&n.subscription, n.seq);
                    }
                    return;
                }
                if let Some(m) = m {
                    m.failed_attempts.with_label_values(&[&n.family]).inc();
                }
                let failures = live.as_mut().map_or(0, |l| {
                    l.queue.failed(&n.subscription, n.seq, Instant::now())
                });
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::info!(subscription = %n.subscription, seq = n.seq, callback = %n.callback,
                        error = %why, failures, "notification not delivered; retrying");
                }
            }
        }
    }

    /// POSTs `n`; on a 2xx answer deletes it from the outbox, then reports.
    fn spawn_delivery(
        &self,
        n: Notification,
        done: mpsc::UnboundedSender<(Notification, Outcome)>,
    ) {
        let client = self.client.clone();
        let store = self.store.clone();
        let timeout = self.config.timeout;
        let attempt = n.clone();
        let watcher = done.clone();
        let task = tokio::spawn(async move {
            let n = attempt;
            let mut req = client.post(&n.callback).timeout(timeout).header(
                reqwest::header::CONTENT_TYPE,
                n.delivery
                    .content_type
                    .as_deref()
                    .unwrap_or("application/json"),
            );
            if let Some(token) = &n.delivery.bearer {
                req = req.bearer_auth(token);
            }
            let body = serde_json::to_vec(&n.body).unwrap_or_default();
            let sent = req.body(body).send().await;
            let outcome = match sent {
                Ok(r) if r.status() == reqwest::StatusCode::GONE => {
                    match super::remove(&store, &n.subscription).await {
                        Ok(_) => Outcome::Gone,
                        Err(e) => Outcome::Failed(format!("410 Gone, not removed: {e}")),
                    }
                }
                Ok(r) if r.status().is_success() => {
                    match store.delete::<Notification>(&n.id(), None).await {
                        Ok(_) => Outcome::Delivered,
                        // Delivered, but still in the outbox: it goes again (at least once).
                        Err(e) => Outcome::Failed(format!("delivered, not removed: {e}")),
                    }
                }
                Ok(r) => Outcome::Failed(format!("callback answered {}", r.status())),
                Err(e) => Outcome::Failed(e.to_string()),
            };
            let _ = done.send((n, outcome));
        });
        // A delivery that panics fails that one attempt, with its reason; its subscription
        // retries with back-off and every other lane goes on.
        tokio::spawn(async move {
            if let Err(e) = task.await
                && e.is_panic()
            {
                let _ = watcher.send((n, Outcome::Failed("the delivery task panicked".into())));
            }
        });
    }

    /// Ends the subscriptions whose deadline passed.
    async fn expire_due(&self, l: &mut Live) {
        let now = unix_now();
        let due: Vec<String> = l
            .deadlines
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let ended = match self.store.get::<Subscription>(&id).await {
                Ok(Some(s)) if s.value.expiry_deadline.is_some_and(|d| d <= now) => {
                    super::expire(&self.store, &s).await.map(Some)
                }
                // Gone, or its deadline moved: the watch keeps the map right.
                Ok(_) => Ok(None),
                Err(e) => Err(crate::ApiError::from(e)),
            };
            match ended.map(|e| e.map(|done| done.then_some(()))) {
                Ok(None) => {
                    l.deadlines.remove(&id);
                }
                Ok(Some(Some(()))) => {
                    l.deadlines.remove(&id);
                    tracing::info!(subscription = %id, "subscription expired");
                    if let Some(m) = &self.metrics {
                        m.expired.inc();
                    }
                }
                Ok(Some(None)) => {} // changed meanwhile: tried again next time
                Err(e) => {
                    tracing::warn!(subscription = %id, error = %e, "notifier: cannot expire");
                    // Try again in a second rather than at once.
                    l.deadlines.insert(id, now + 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_keys_parse_back() {
        let n = Notification {
            subscription: "3f2a".into(),
            seq: 42,
            family: "f".into(),
            callback: "http://h/".into(),
            body: serde_json::Value::Null,
            enqueued_at_ms: 0,
            delivery: Default::default(),
        };
        let key = typed::key::<Notification>(&n.id());
        assert_eq!(outbox_entry(&key), Some(("3f2a".into(), 42)));
        assert_eq!(outbox_entry(b"/other/x/1"), None);
        let key = typed::key::<Subscription>("abc");
        assert_eq!(subscription_id(&key).as_deref(), Some("abc"));
    }
}
