//! The one subscription engine behind every ETSI MEC family's subscriptions (MEC 011, and the
//! location, radio and mobility APIs as they land).
//!
//! A [`Subscription`] is stored under `/mecfed/v1/subscriptions/<id>`; every notification
//! for it goes into a durable outbox, `/mecfed/v1/notifications/<id>/<seq>`, written in the
//! same transaction that advances the subscription's sequence counter ([`enqueue`]), so the
//! outbox order is the order events happened in. The [`Notifier`] (run by `mecfed up`, on
//! the elected leader only) delivers each subscription's outbox in order, one notification
//! in flight per subscription, retrying with exponential back-off until the callback answers
//! 2xx, and only then deletes it: at least once, in order, across restarts. A subscription
//! with an `expiryDeadline` is removed at the deadline, after an expiry notification queued
//! behind what was already pending.
//!
//! Architecture Invariant: handlers never call callbacks themselves; they only write to the
//! outbox. Delivery decisions (which head is due, back-off) are IO-free ([`queue`]).

pub mod queue;
pub(crate) mod rest;
mod worker;

use mecfed_core::{DeveloperId, InstanceId};
use mecfed_store::{
    Compare, Store, Txn, TxnOp,
    typed::{self, Resource, Typed, Versioned},
};
use serde::{Deserialize, Serialize};

pub use rest::SubscriptionView;
pub use worker::{
    LEADER_KEY, Notifier, NotifierConfig, NotifyMetrics, SYSTEM_BUNDLE, pem_roots, system_roots,
};

use crate::ApiError;

/// Most notifications waiting for one subscription; beyond it new ones are dropped (and
/// logged), so that a dead callback cannot grow the store without bound.
pub const MAX_PENDING_PER_SUBSCRIPTION: u64 = 10_000;

/// A subscription of any family, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subscription {
    /// Subscription id (a UUID).
    pub id: String,
    /// The family, e.g. `mec011.appTermination` (metrics label, routing of events).
    pub family: String,
    /// The spec's `subscriptionType`.
    pub subscription_type: String,
    /// The tenant; `None` for the operator's own subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer: Option<DeveloperId>,
    /// The app instance the subscription belongs to, for per-application resources
    /// (MEC 011) or when an instance subscribed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceId>,
    /// Where notifications go (`callbackReference`).
    pub callback: String,
    /// Path of the subscription resource, e.g. `/mec_app_support/v1/applications/i/subscriptions/<id>`.
    pub href: String,
    /// The subscription as the client gave it (normalised, without `_links`).
    pub body: serde_json::Value,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_deadline: Option<u64>,
    /// The notification sent at expiry, when the family defines one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_notification: Option<serde_json::Value>,
    /// Sequence number of the next notification.
    pub next_seq: u64,
    /// When it was created, seconds since the Unix epoch.
    #[serde(default)]
    pub created_at: u64,
    /// How its notifications are sent, when not as plain JSON without credentials.
    #[serde(default, skip_serializing_if = "Delivery::is_plain")]
    pub delivery: Delivery,
}

/// How a subscription's notifications are POSTed: the content type and the credential the
/// subscriber gave for its sink (CAMARA `sinkCredential`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delivery {
    /// The body's media type; `application/json` when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Sent as `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<String>,
}

impl Delivery {
    fn is_plain(&self) -> bool {
        self == &Self::default()
    }
}

impl Resource for Subscription {
    const KIND: &'static str = "subscriptions";
    fn id(&self) -> String {
        self.id.clone()
    }
}

/// A notification waiting for delivery; self-contained, so that it is delivered even once
/// its subscription expired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Notification {
    /// The subscription.
    pub subscription: String,
    /// Position in the subscription's outbox.
    pub seq: u64,
    /// The subscription's family.
    pub family: String,
    /// Where it goes.
    pub callback: String,
    /// The JSON body POSTed.
    pub body: serde_json::Value,
    /// When it was queued, milliseconds since the Unix epoch.
    pub enqueued_at_ms: u64,
    /// How it is sent.
    #[serde(default, skip_serializing_if = "Delivery::is_plain")]
    pub delivery: Delivery,
}

impl Resource for Notification {
    const KIND: &'static str = "notifications";
    fn id(&self) -> String {
        notification_id(&self.subscription, self.seq)
    }
}

/// Outbox ids sort by sequence: the subscription, then the zero-padded number.
fn notification_id(subscription: &str, seq: u64) -> String {
    format!("{subscription}/{seq:020}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::Internal(Box::new(e)))
}

impl Subscription {
    /// The subscription as its API answers it: the stored body with an absolute
    /// `_links.self`, in the object `wrapper`.
    pub fn answer(&self, wrapper: &str, headers: &axum::http::HeaderMap) -> serde_json::Value {
        let mut body = self.body.clone();
        body["_links"] =
            serde_json::json!({"self": {"href": crate::util::location(headers, &self.href)}});
        serde_json::json!({ wrapper: body })
    }

    /// Its entry in a subscription list: absolute `href` and `subscriptionType`.
    pub fn link(&self, headers: &axum::http::HeaderMap) -> serde_json::Value {
        serde_json::json!({
            "href": crate::util::location(headers, &self.href),
            "subscriptionType": self.subscription_type,
        })
    }

    fn notification(&self, seq: u64, body: serde_json::Value) -> Notification {
        Notification {
            subscription: self.id.clone(),
            seq,
            family: self.family.clone(),
            callback: self.callback.clone(),
            body,
            enqueued_at_ms: now_ms(),
            delivery: self.delivery.clone(),
        }
    }
}

/// Stores a new subscription, with `test` (a test notification) first in its outbox when
/// given, in one transaction.
pub async fn create<S: Store>(
    store: &Typed<S>,
    sub: Subscription,
    test: Option<serde_json::Value>,
) -> Result<Subscription, ApiError> {
    let first = Emit {
        bodies: test.into_iter().collect(),
        end: false,
    };
    let (sub, guard, ops) = create_ops(sub, first)?;
    let resp = store
        .store()
        .txn(Txn::new().when([guard]).and_then(ops))
        .await?;
    if !resp.succeeded {
        return Err(ApiError::Conflict(format!(
            "subscription {} already exists",
            sub.id
        )));
    }
    Ok(sub)
}

/// The writes that create subscription `sub` with `first` at the head of its outbox (and,
/// when `first.end`, end it at once: only the notifications are written), and the guard
/// that it does not exist yet; for handlers that write the subscription in one transaction
/// with what it is about. Returns the subscription as written.
pub(crate) fn create_ops(
    mut sub: Subscription,
    first: Emit,
) -> Result<(Subscription, Compare, Vec<TxnOp>), ApiError> {
    let key = typed::key::<Subscription>(&sub.id);
    sub.next_seq = 0;
    let mut ops = Vec::with_capacity(first.bodies.len() + 1);
    for body in first.bodies {
        let n = sub.notification(sub.next_seq, body);
        sub.next_seq += 1;
        ops.push(TxnOp::put(typed::key::<Notification>(&n.id()), json(&n)?));
    }
    if !first.end {
        ops.insert(0, TxnOp::put(key.clone(), json(&sub)?));
    }
    Ok((sub, Compare::absent(key), ops))
}

/// What [`enqueue`] or [`emit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued, the first at this sequence number.
    Queued(u64),
    /// Nothing to queue.
    Nothing,
    /// The subscription is gone.
    Gone,
    /// Its outbox is full ([`MAX_PENDING_PER_SUBSCRIPTION`]).
    Full,
}

/// What [`emit`] queues for a subscription, decided on its current state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Emit {
    /// Notification bodies, queued in this order.
    pub bodies: Vec<serde_json::Value>,
    /// Whether the subscription ends after them (it is deleted; they are still delivered).
    pub end: bool,
}

/// Queues `body` for subscription `id`, behind everything queued for it before.
pub async fn enqueue<S: Store>(
    store: &Typed<S>,
    id: &str,
    body: serde_json::Value,
) -> Result<Enqueued, ApiError> {
    emit(store, id, |_| Emit {
        bodies: vec![body.clone()],
        end: false,
    })
    .await
}

/// Lets `decide` look at subscription `id` (and change its body, say to remember what it
/// last reported), then queues what it returns, in one transaction with the change: a
/// concurrent or repeated producer never reports one change twice.
pub async fn emit<S: Store>(
    store: &Typed<S>,
    id: &str,
    mut decide: impl FnMut(&mut Subscription) -> Emit,
) -> Result<Enqueued, ApiError> {
    loop {
        let Some(Versioned {
            value: mut sub,
            revision,
        }) = store.get::<Subscription>(id).await?
        else {
            return Ok(Enqueued::Gone);
        };
        let emit = decide(&mut sub);
        if emit.bodies.is_empty() && !emit.end {
            return Ok(Enqueued::Nothing);
        }
        let pending = pending(store, id, sub.next_seq).await?;
        if pending + emit.bodies.len() as u64 > MAX_PENDING_PER_SUBSCRIPTION {
            return Ok(Enqueued::Full);
        }
        let first = sub.next_seq;
        let (guard, ops) = emit_ops(&mut sub, revision, emit)?;
        let txn = Txn::new().when([guard]).and_then(ops);
        if store.store().txn(txn).await?.succeeded {
            return Ok(Enqueued::Queued(first));
        }
        // The subscription changed meanwhile (another event, an update): read it again.
    }
}

/// The writes that queue `emit` for `sub`, read at `revision`: the subscription with its
/// sequence advanced (deleted when `emit.end`) and one outbox entry per body, in order, and
/// the guard that the subscription is still as read. `sub` becomes what is written. For
/// producers that write their own state in the same transaction (the UE-event engine).
pub(crate) fn emit_ops(
    sub: &mut Subscription,
    revision: mecfed_store::Revision,
    emit: Emit,
) -> Result<(Compare, Vec<TxnOp>), ApiError> {
    let key = typed::key::<Subscription>(&sub.id);
    let mut ops = Vec::with_capacity(emit.bodies.len() + 1);
    ops.push(TxnOp::Delete(key.clone()));
    for body in emit.bodies {
        let n = sub.notification(sub.next_seq, body);
        sub.next_seq += 1;
        ops.push(TxnOp::put(typed::key::<Notification>(&n.id()), json(&n)?));
    }
    if !emit.end {
        ops[0] = TxnOp::put(key.clone(), json(sub)?);
    }
    Ok((Compare::mod_revision(key, revision), ops))
}

/// How many notifications wait for subscription `id`, whose next sequence number is
/// `next_seq`: one read of the outbox's head (the outbox is contiguous, delivered from the
/// front), not a listing.
pub(crate) async fn pending<S: Store>(
    store: &Typed<S>,
    id: &str,
    next_seq: u64,
) -> Result<u64, ApiError> {
    let page = store.store().range(&outbox_prefix(id), None, 1).await?;
    Ok(page
        .kvs
        .first()
        .and_then(|kv| worker::outbox_seq(&kv.key))
        .map_or(0, |head| next_seq.saturating_sub(head)))
}

fn outbox_prefix(id: &str) -> Vec<u8> {
    let mut p = typed::kind_prefix::<Notification>();
    p.extend_from_slice(id.as_bytes());
    p.push(b'/');
    p
}

/// Keys of the notifications pending for subscription `id`, oldest first.
async fn pending_keys<S: Store>(store: &Typed<S>, id: &str) -> Result<Vec<Vec<u8>>, ApiError> {
    let prefix = outbox_prefix(id);
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.store().range(&prefix, after.as_deref(), 500).await?;
        out.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        if !page.more {
            return Ok(out);
        }
        after = page.kvs.last().map(|kv| kv.key.clone());
    }
}

/// Replaces subscription `current` by the client's new version (its callback, expiry and
/// body), unless it changed since it was read (412).
pub async fn replace<S: Store>(
    store: &Typed<S>,
    current: Versioned<Subscription>,
    callback: Option<&str>,
    expiry: (Option<u64>, Option<serde_json::Value>),
    body: &impl Serialize,
) -> Result<Subscription, ApiError> {
    let mut next = current.value;
    next.callback = callback.unwrap_or_default().to_string();
    (next.expiry_deadline, next.expiry_notification) = expiry;
    next.body = serde_json::to_value(body).map_err(|e| ApiError::Internal(Box::new(e)))?;
    store
        .update(&next, current.revision)
        .await
        .map_err(|e| match e {
            typed::TypedError::Conflict { .. } => ApiError::PreconditionFailed(
                "the subscription changed meanwhile; read it again".into(),
            ),
            e => e.into(),
        })?;
    Ok(next)
}

/// Deletes subscription `id` and what is still pending for it (nothing more is delivered).
/// Returns whether it existed.
pub async fn remove<S: Store>(store: &Typed<S>, id: &str) -> Result<bool, ApiError> {
    let existed = store.delete::<Subscription>(id, None).await?;
    for chunk in pending_keys(store, id).await?.chunks(100) {
        let ops: Vec<TxnOp> = chunk.iter().cloned().map(TxnOp::Delete).collect();
        store.store().txn(Txn::new().and_then(ops)).await?;
    }
    Ok(existed)
}

/// Ends a subscription whose deadline passed: deletes it and queues its expiry notification
/// behind what is pending, in one transaction guarded by `revision`. Returns false when the
/// subscription changed meanwhile (the caller looks again).
pub async fn expire<S: Store>(
    store: &Typed<S>,
    sub: &Versioned<Subscription>,
) -> Result<bool, ApiError> {
    let key = typed::key::<Subscription>(&sub.value.id);
    let mut ops = vec![TxnOp::Delete(key.clone())];
    if let Some(body) = &sub.value.expiry_notification {
        let n = sub.value.notification(sub.value.next_seq, body.clone());
        ops.push(TxnOp::put(typed::key::<Notification>(&n.id()), json(&n)?));
    }
    let txn = Txn::new()
        .when([Compare::mod_revision(key, sub.revision)])
        .and_then(ops);
    Ok(store.store().txn(txn).await?.succeeded)
}

/// The subscriptions of `family`.
pub async fn of_family<S: Store>(
    store: &Typed<S>,
    family: &str,
) -> Result<Vec<Subscription>, ApiError> {
    let (all, _) = store.list::<Subscription>().await?;
    Ok(all
        .into_iter()
        .map(|v| v.value)
        .filter(|s| s.family == family)
        .collect())
}

/// Queues `body` for each of `subs`; a subscription that went meanwhile is skipped, a full
/// outbox is logged and counted by the caller's metrics.
pub async fn fan_out<S: Store>(
    store: &Typed<S>,
    subs: &[Subscription],
    body: impl Fn(&Subscription) -> serde_json::Value,
) -> Result<(), ApiError> {
    for s in subs {
        if enqueue(store, &s.id, body(s)).await? == Enqueued::Full {
            tracing::warn!(subscription = %s.id, callback = %s.callback,
                "notification dropped: the subscription's outbox is full");
        }
    }
    Ok(())
}

/// Checks a `callbackReference`: an absolute `http` or `https` URI with a host (`https`
/// servers are verified against the notifier's [`NotifierConfig::roots`]).
pub fn validate_callback(uri: &str, field: &str) -> Result<(), ApiError> {
    let bad = |why: &str| Err(ApiError::BadRequest(format!("invalid {field}: {why}")));
    let Ok(parsed) = uri.parse::<axum::http::Uri>() else {
        return bad("not a URI");
    };
    match parsed.scheme_str() {
        Some("http" | "https") => {}
        _ => return bad("must be an absolute http or https URI"),
    }
    if parsed.host().is_none_or(str::is_empty) {
        return bad("has no host");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_ids_sort_by_sequence() {
        let mut ids: Vec<String> = [10u64, 9, 100, 0]
            .iter()
            .map(|s| notification_id("s", *s))
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            [
                "s/".to_string() + &format!("{:020}", 0),
                notification_id("s", 9),
                notification_id("s", 10),
                notification_id("s", 100)
            ]
        );
    }

    #[test]
    fn callbacks_are_absolute_http_uris() {
        assert!(validate_callback("http://127.0.0.1:9/cb", "callbackReference").is_ok());
        assert!(validate_callback("http://app.example/notify?x=1", "callbackReference").is_ok());
        assert!(validate_callback("https://app.example/n", "callbackReference").is_ok());
        for bad in ["", "/relative", "ftp://h/x", "http://", "not a uri"] {
            let e = validate_callback(bad, "callbackReference").unwrap_err();
            assert!(e.to_string().contains("callbackReference"), "{bad}: {e}");
        }
    }
}
