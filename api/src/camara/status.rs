//! CAMARA status callbacks: the `subscriptionRequest` of `POST /appinstances` and
//! `POST /deployments`, an implicit subscription to the status of what is created.
//!
//! Each becomes a [`Subscription`] of the one engine (family [`Target::family`]), with
//! CloudEvents 1.0 bodies POSTed as `application/cloudevents+json` and the sink's access
//! token as a bearer credential. The elected [`StatusReporter`] compares, once a second, the
//! status of every subscribed app instance with the last one it reported (kept in the
//! subscription, and updated in the same transaction that queues the event, so no change is
//! reported twice or lost across leaders) and queues an
//! `app-instance-status-change` (one event per POST) or `app-deployment-status-change` (an
//! array per POST, one event per changed member). A `subscription-ended` event closes the
//! subscription when its `subscriptionExpireTime` passes, after `subscriptionMaxEvents`
//! events, or when the app instance or deployment is deleted. When the access token expires
//! first, the subscription ends then, silently: nothing could be delivered with it.
//!
//! The decisions ([`SubscriptionRequest::check`], [`step`]) are IO-free.

use std::{collections::BTreeMap, time::Duration};

use mecfed_core::ValidationError;
use mecfed_store::{Compare, Store, TxnOp, typed::Typed};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    CamaraError, EAM_ROOT, ids,
    lifecycle::{CamaraDeployment, CamaraInstance, World},
};
use crate::{
    ApiError,
    auth::Principal,
    notify::{self, Delivery, Emit, Subscription},
    util::now_unix,
};

/// Event type of an app instance's status change.
pub const INSTANCE_STATUS_CHANGE: &str =
    "org.camaraproject.edge-application-management.v0.app-instance-status-change";
/// Event type of a deployment member's status change.
pub const DEPLOYMENT_STATUS_CHANGE: &str =
    "org.camaraproject.edge-application-management.v0.app-deployment-status-change";
/// Event type of the end of a subscription.
pub const SUBSCRIPTION_ENDED: &str =
    "org.camaraproject.edge-application-management.v0.subscription-ended";

/// The key the reporting process holds.
pub const LEADER_KEY: &[u8] = b"/mecfed/v1/leaders/camara-status";

const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// What a status subscription follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One app instance.
    Instance,
    /// The app instances of a deployment.
    Deployment,
}

impl Target {
    /// The subscription family.
    pub const fn family(self) -> &'static str {
        match self {
            Self::Instance => "camara.eam.appInstanceStatus",
            Self::Deployment => "camara.eam.appDeploymentStatus",
        }
    }

    /// Its status-change event type.
    pub const fn status_type(self) -> &'static str {
        match self {
            Self::Instance => INSTANCE_STATUS_CHANGE,
            Self::Deployment => DEPLOYMENT_STATUS_CHANGE,
        }
    }

    fn of_family(family: &str) -> Option<Self> {
        [Self::Instance, Self::Deployment]
            .into_iter()
            .find(|t| t.family() == family)
    }

    fn source(self, id: &str) -> String {
        match self {
            Self::Instance => format!("{EAM_ROOT}/appinstances/{id}"),
            Self::Deployment => format!("{EAM_ROOT}/deployments/{id}"),
        }
    }

    /// One POST's body: a deployment's callback takes an array of events.
    fn body(self, events: Vec<Value>) -> Vec<Value> {
        match self {
            Self::Instance => events,
            Self::Deployment if events.is_empty() => Vec::new(),
            Self::Deployment => vec![Value::Array(events)],
        }
    }
}

// === the request (IO-free) ===

/// `SubscriptionRequest`, as the client sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionRequest {
    /// Where events go; `https` only, as the schema's pattern demands.
    pub sink: String,
    /// The credential to present to the sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_credential: Option<SinkCredential>,
    /// The one event type wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    /// Expiry, event budget, initial event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<SubscriptionConfig>,
}

/// `SinkCredential` (`ACCESSTOKEN`, the only type, as `AccessTokenCredential`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SinkCredential {
    /// `ACCESSTOKEN`.
    pub credential_type: String,
    /// The token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// When it expires (RFC 3339 with a time zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_expires_utc: Option<String>,
    /// `bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_type: Option<String>,
}

/// `SubscriptionConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Event-specific details; this API defines none, so any object.
    pub subscription_detail: serde_json::Map<String, Value>,
    /// When the subscription ends (RFC 3339 with a time zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_expire_time: Option<String>,
    /// Most status events before the subscription ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_max_events: Option<i64>,
    /// Report the current status at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_event: Option<bool>,
}

/// A checked [`SubscriptionRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The sink.
    pub sink: String,
    /// Its bearer token.
    pub bearer: Option<String>,
    /// When the token expires, seconds since the Unix epoch.
    pub token_expires: Option<u64>,
    /// Whether status events are wanted (`false`: only `subscription-ended`).
    pub status_events: bool,
    /// `subscriptionExpireTime`, seconds since the Unix epoch.
    pub expires: Option<u64>,
    /// `subscriptionMaxEvents`.
    pub max_events: Option<u32>,
    /// `initialEvent`.
    pub initial_event: bool,
}

impl Plan {
    /// When the subscription ends by time, and whether that end is announced (not when the
    /// token expires first: it could not be delivered).
    fn deadline(&self) -> Option<(u64, bool)> {
        match (self.expires, self.token_expires) {
            (Some(e), Some(t)) if t < e => Some((t, false)),
            (Some(e), _) => Some((e, true)),
            (None, Some(t)) => Some((t, false)),
            (None, None) => None,
        }
    }
}

fn bad(field: &str, reason: &str) -> ValidationError {
    ValidationError::new(format!("subscriptionRequest.{field}"), reason)
}

/// Parses an RFC 3339 time with a time zone, at most 64 characters, into Unix seconds.
fn instant(raw: &str, field: &str) -> Result<u64, ValidationError> {
    if raw.len() > 64 {
        return Err(bad(field, "at most 64 characters"));
    }
    let t: jiff::Timestamp = raw
        .parse()
        .map_err(|_| bad(field, "must be an RFC 3339 date-time with a time zone"))?;
    u64::try_from(t.as_second()).map_err(|_| bad(field, "must be after 1970"))
}

impl SubscriptionRequest {
    /// Checks the request for `target` at Unix time `now`, naming the offending field.
    pub fn check(&self, target: Target, now: u64) -> Result<Plan, ValidationError> {
        if self.sink.len() > 2048 {
            return Err(bad("sink", "at most 2048 characters"));
        }
        if !self.sink.starts_with("https://") {
            return Err(bad("sink", "must be an https URI"));
        }
        notify::validate_callback(&self.sink, "subscriptionRequest.sink")
            .map_err(|_| bad("sink", "must be an absolute https URI with a host"))?;
        let (bearer, token_expires) = match &self.sink_credential {
            None => (None, None),
            Some(c) => {
                if c.credential_type != "ACCESSTOKEN" {
                    return Err(bad("sinkCredential.credentialType", "must be ACCESSTOKEN"));
                }
                let token = c
                    .access_token
                    .as_deref()
                    .ok_or_else(|| bad("sinkCredential.accessToken", "is required"))?;
                if token.is_empty() || token.len() > 8192 {
                    return Err(bad(
                        "sinkCredential.accessToken",
                        "must have 1 to 8192 characters",
                    ));
                }
                // A header value: visible ASCII only.
                if !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(bad(
                        "sinkCredential.accessToken",
                        "must be printable ASCII without spaces",
                    ));
                }
                if c.access_token_type.as_deref() != Some("bearer") {
                    return Err(bad("sinkCredential.accessTokenType", "must be bearer"));
                }
                let raw = c
                    .access_token_expires_utc
                    .as_deref()
                    .ok_or_else(|| bad("sinkCredential.accessTokenExpiresUtc", "is required"))?;
                let exp = instant(raw, "sinkCredential.accessTokenExpiresUtc")?;
                if exp <= now {
                    return Err(bad(
                        "sinkCredential.accessTokenExpiresUtc",
                        "is in the past",
                    ));
                }
                (Some(token.to_string()), Some(exp))
            }
        };
        let status_events = match self.types.as_deref() {
            None => true,
            Some([t]) if t == target.status_type() => true,
            Some([t]) if t == SUBSCRIPTION_ENDED => false,
            Some([t]) if t == INSTANCE_STATUS_CHANGE || t == DEPLOYMENT_STATUS_CHANGE => {
                return Err(bad(
                    "types[0]",
                    &format!("this resource reports {}", target.status_type()),
                ));
            }
            Some([_]) => return Err(bad("types[0]", "unknown event type")),
            Some(_) => return Err(bad("types", "must have exactly one event type")),
        };
        let mut plan = Plan {
            sink: self.sink.clone(),
            bearer,
            token_expires,
            status_events,
            expires: None,
            max_events: None,
            initial_event: false,
        };
        if let Some(c) = &self.config {
            if let Some(raw) = &c.subscription_expire_time {
                let e = instant(raw, "config.subscriptionExpireTime")?;
                if e <= now {
                    return Err(bad("config.subscriptionExpireTime", "is in the past"));
                }
                plan.expires = Some(e);
            }
            if let Some(m) = c.subscription_max_events {
                plan.max_events = Some(
                    u32::try_from(m)
                        .ok()
                        .filter(|m| (1..=i32::MAX as u32).contains(m))
                        .ok_or_else(|| {
                            bad("config.subscriptionMaxEvents", "must be 1 to 2147483647")
                        })?,
                );
            }
            plan.initial_event = c.initial_event == Some(true);
        }
        Ok(plan)
    }

    /// The request as kept for display: without the access token.
    fn redacted(&self) -> Self {
        let mut r = self.clone();
        if let Some(c) = &mut r.sink_credential
            && c.access_token.is_some()
        {
            c.access_token = Some("(redacted)".into());
        }
        r
    }
}

// === the events (IO-free) ===

/// What a status subscription remembers, in its [`Subscription::body`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct State {
    /// The request, without its token.
    pub request: SubscriptionRequest,
    /// The app instance or deployment id.
    pub target: String,
    /// Whether status events are sent.
    pub status_events: bool,
    /// `subscriptionMaxEvents`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_events: Option<u32>,
    /// Status events queued so far.
    pub sent: u32,
    /// The status last reported per app instance (or found at creation, without an
    /// initial event).
    pub last: BTreeMap<String, String>,
}

/// What an app instance of the target is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `appId`.
    pub app_id: String,
    /// `edgeCloudZoneId`.
    pub zone_id: String,
    /// Its CAMARA status.
    pub status: &'static str,
}

/// Builds a CloudEvent.
fn cloud_event(ty: &str, source: &str, time: u64, data: Value) -> Value {
    let time = jiff::Timestamp::from_second(i64::try_from(time).unwrap_or(i64::MAX))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    json!({
        "id": Uuid::new_v4().to_string(),
        "source": source,
        "type": ty,
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "time": time.to_string(),
        "data": data,
    })
}

/// The `subscription-ended` event of subscription `sub` on `target` `id`.
pub fn ended_event(
    target: Target,
    sub: &str,
    id: &str,
    reason: &str,
    description: &str,
    time: u64,
) -> Value {
    let key = match target {
        Target::Instance => "appInstanceId",
        Target::Deployment => "appDeploymentId",
    };
    cloud_event(
        SUBSCRIPTION_ENDED,
        &target.source(id),
        time,
        json!({
            "subscriptionId": sub,
            key: id,
            "terminationReason": reason,
            "terminationDescription": description,
        }),
    )
}

/// One reporting step for subscription `sub` on `target`: the POST bodies to queue for the
/// members' statuses `now` (`None`: the target is gone), with `state` updated, and whether
/// the subscription ends.
pub fn step(
    target: Target,
    sub: &str,
    state: &mut State,
    now: Option<&BTreeMap<String, Member>>,
    time: u64,
) -> Emit {
    let Some(members) = now else {
        let what = match target {
            Target::Instance => "the app instance was deleted",
            Target::Deployment => "the deployment was deleted",
        };
        return Emit {
            bodies: target.body(vec![ended_event(
                target,
                sub,
                &state.target,
                "SUBSCRIPTION_DELETED",
                what,
                time,
            )]),
            end: true,
        };
    };
    state.last.retain(|id, _| members.contains_key(id));
    let mut events = Vec::new();
    for (id, m) in members {
        if state.last.get(id).map(String::as_str) == Some(m.status) {
            continue;
        }
        state.last.insert(id.clone(), m.status.to_string());
        if !state.status_events {
            continue;
        }
        let mut data = json!({
            "subscriptionId": sub,
            "appInstanceId": id,
            "appId": m.app_id,
            "edgeCloudZoneId": m.zone_id,
            "status": m.status,
        });
        if target == Target::Deployment {
            data["appDeploymentId"] = json!(state.target);
        }
        events.push(cloud_event(
            target.status_type(),
            &target.source(&state.target),
            time,
            data,
        ));
    }
    let room = state
        .max_events
        .map_or(usize::MAX, |m| m.saturating_sub(state.sent) as usize);
    events.truncate(room);
    state.sent = state
        .sent
        .saturating_add(u32::try_from(events.len()).unwrap_or(u32::MAX));
    let end = state.max_events.is_some_and(|m| state.sent >= m) && !events.is_empty();
    let mut bodies = target.body(events);
    if end {
        bodies.extend(target.body(vec![ended_event(
            target,
            sub,
            &state.target,
            "MAX_EVENTS_REACHED",
            "subscriptionMaxEvents events were sent",
            time,
        )]));
    }
    Emit { bodies, end }
}

// === IO ===

/// The writes that create the status subscription `id` of `target` `target_id` for the
/// checked request, with its initial event when asked (`members` are the statuses now),
/// and their guard: the caller writes them in one transaction with the target itself, so
/// that a target never exists without the subscription asked with it, nor the subscription
/// without its initial event.
#[allow(clippy::too_many_arguments)]
pub(super) fn subscription_ops(
    p: &Principal,
    id: &str,
    target: Target,
    target_id: &str,
    request: &SubscriptionRequest,
    plan: Plan,
    members: &BTreeMap<String, Member>,
) -> Result<(Compare, Vec<TxnOp>), ApiError> {
    let now = now_unix();
    let mut state = State {
        request: request.redacted(),
        target: target_id.to_string(),
        status_events: plan.status_events,
        max_events: plan.max_events,
        sent: 0,
        last: BTreeMap::new(),
    };
    let first = if plan.initial_event {
        step(target, id, &mut state, Some(members), now)
    } else {
        state.last = members
            .iter()
            .map(|(i, m)| (i.clone(), m.status.to_string()))
            .collect();
        Emit::default()
    };
    let deadline = plan.deadline();
    let sub = Subscription {
        id: id.to_string(),
        family: target.family().to_string(),
        subscription_type: if plan.status_events {
            target.status_type()
        } else {
            SUBSCRIPTION_ENDED
        }
        .to_string(),
        developer: p.developer.clone(),
        instance: None,
        callback: plan.sink.clone(),
        href: target.source(target_id),
        body: serde_json::to_value(&state).map_err(|e| ApiError::Internal(Box::new(e)))?,
        expiry_deadline: deadline.map(|(t, _)| t),
        expiry_notification: deadline.filter(|(_, told)| *told).and_then(|(t, _)| {
            target
                .body(vec![ended_event(
                    target,
                    id,
                    target_id,
                    "SUBSCRIPTION_EXPIRED",
                    "subscriptionExpireTime was reached",
                    t,
                )])
                .pop()
        }),
        next_seq: 0,
        created_at: now,
        delivery: Delivery {
            content_type: Some(CLOUDEVENTS_JSON.into()),
            bearer: plan.bearer,
        },
    };
    let (_, guard, ops) = notify::create_ops(sub, first)?;
    Ok((guard, ops))
}

/// Ends subscription `id` because its target was deleted.
pub(super) async fn target_deleted<S: Store>(store: &Typed<S>, id: &str) -> Result<(), ApiError> {
    advance(store, id, None).await
}

/// One step of subscription `id` against the members' statuses `now`.
async fn advance<S: Store>(
    store: &Typed<S>,
    id: &str,
    now: Option<&BTreeMap<String, Member>>,
) -> Result<(), ApiError> {
    let time = now_unix();
    notify::emit(store, id, |sub| {
        let Some(target) = Target::of_family(&sub.family) else {
            return Emit::default();
        };
        let Ok(mut state) = serde_json::from_value::<State>(sub.body.clone()) else {
            return Emit::default();
        };
        let e = step(target, &sub.id, &mut state, now, time);
        if let Ok(body) = serde_json::to_value(&state) {
            sub.body = body;
        }
        e
    })
    .await?;
    Ok(())
}

/// The members of `target` `id` with their statuses; `None` when it is gone.
pub(super) fn members(
    world: &World,
    target: Target,
    id: &str,
    records: &[CamaraInstance],
    deployments: &[CamaraDeployment],
) -> Option<BTreeMap<String, Member>> {
    let mine: Vec<&CamaraInstance> = match target {
        Target::Instance => records.iter().filter(|r| r.id == id).collect(),
        Target::Deployment => {
            deployments.iter().find(|d| d.id == id)?;
            records
                .iter()
                .filter(|r| r.deployment.as_deref() == Some(id))
                .collect()
        }
    };
    if target == Target::Instance && mine.is_empty() {
        return None;
    }
    Some(
        mine.into_iter()
            .map(|r| {
                (
                    r.id.clone(),
                    Member {
                        app_id: ids::app_uuid(&r.app).to_string(),
                        zone_id: ids::zone_uuid(&r.zone).to_string(),
                        status: world.status(r),
                    },
                )
            })
            .collect(),
    )
}

/// Queues the status changes of every status subscription; see the module docs.
pub struct StatusReporter<S> {
    store: Typed<S>,
    leader_ttl: Duration,
}

impl<S: Store> StatusReporter<S> {
    /// A reporter over `store`.
    pub fn new(store: Typed<S>) -> Self {
        Self {
            store,
            leader_ttl: Duration::from_secs(10),
        }
    }

    /// Reports once a second while this process leads, until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let this = &self;
        crate::util::each_second_as_leader(
            self.store.store().clone(),
            LEADER_KEY,
            self.leader_ttl,
            "camara status reporter",
            shutdown,
            || async move {
                if let Err(e) = this.report().await {
                    tracing::warn!(error = ?e, "camara status reporter: pass failed");
                }
            },
        )
        .await;
    }

    /// One pass over every status subscription.
    pub async fn report(&self) -> Result<(), CamaraError> {
        let (all, _) = self.store.list::<Subscription>().await?;
        let subs: Vec<(Target, Subscription)> = all
            .into_iter()
            .filter_map(|s| Target::of_family(&s.value.family).map(|t| (t, s.value)))
            .collect();
        if subs.is_empty() {
            return Ok(());
        }
        let world = World::load(&self.store).await?;
        let (records, _) = self.store.list::<CamaraInstance>().await?;
        let records: Vec<CamaraInstance> = records.into_iter().map(|r| r.value).collect();
        let (deployments, _) = self.store.list::<CamaraDeployment>().await?;
        let deployments: Vec<CamaraDeployment> = deployments.into_iter().map(|d| d.value).collect();
        for (target, sub) in subs {
            let Ok(state) = serde_json::from_value::<State>(sub.body.clone()) else {
                continue;
            };
            let now = members(&world, target, &state.target, &records, &deployments);
            advance(&self.store, &sub.id, now.as_ref()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn request(v: Value) -> SubscriptionRequest {
        serde_json::from_value(v).unwrap()
    }

    fn full() -> SubscriptionRequest {
        request(json!({
            "sink": "https://studio.example/events",
            "sinkCredential": {
                "credentialType": "ACCESSTOKEN",
                "accessToken": "tok-123",
                "accessTokenExpiresUtc": "2027-03-01T00:00:00+01:00",
                "accessTokenType": "bearer"
            },
            "types": [INSTANCE_STATUS_CHANGE],
            "config": {
                "subscriptionDetail": {},
                "subscriptionExpireTime": "2027-02-01T00:00:00Z",
                "subscriptionMaxEvents": 3,
                "initialEvent": true
            }
        }))
    }

    #[test]
    fn a_full_request_becomes_a_plan() {
        let plan = full().check(Target::Instance, NOW).unwrap();
        assert_eq!(plan.sink, "https://studio.example/events");
        assert_eq!(plan.bearer.as_deref(), Some("tok-123"));
        assert_eq!(plan.expires, Some(1_801_440_000));
        assert_eq!(plan.token_expires, Some(1_803_855_600));
        assert_eq!(plan.max_events, Some(3));
        assert!(plan.status_events && plan.initial_event);
        // The subscription expires before the token: the end is announced.
        assert_eq!(plan.deadline(), Some((1_801_440_000, true)));
        let minimal = request(json!({"sink": "https://h/"}))
            .check(Target::Deployment, NOW)
            .unwrap();
        assert!(minimal.status_events && minimal.bearer.is_none() && minimal.deadline().is_none());
    }

    #[test]
    fn bad_requests_name_their_field() {
        let field = |r: SubscriptionRequest, t: Target| r.check(t, NOW).unwrap_err().field;
        let mut r = full();
        r.sink = "http://studio.example/".into();
        assert_eq!(field(r, Target::Instance), "subscriptionRequest.sink");
        let mut r = full();
        r.types = Some(vec![DEPLOYMENT_STATUS_CHANGE.into()]);
        assert_eq!(field(r, Target::Instance), "subscriptionRequest.types[0]");
        let mut r = full();
        r.types = Some(vec![]);
        assert_eq!(field(r, Target::Instance), "subscriptionRequest.types");
        let mut r = full();
        r.sink_credential.as_mut().unwrap().access_token_type = None;
        assert_eq!(
            field(r, Target::Instance),
            "subscriptionRequest.sinkCredential.accessTokenType"
        );
        let mut r = full();
        r.sink_credential.as_mut().unwrap().access_token_expires_utc =
            Some("2027-03-01T00:00:00".into());
        assert_eq!(
            field(r, Target::Instance),
            "subscriptionRequest.sinkCredential.accessTokenExpiresUtc"
        );
        let mut r = full();
        r.config.as_mut().unwrap().subscription_expire_time = Some("2020-01-01T00:00:00Z".into());
        assert_eq!(
            field(r, Target::Instance),
            "subscriptionRequest.config.subscriptionExpireTime"
        );
        let mut r = full();
        r.config.as_mut().unwrap().subscription_max_events = Some(0);
        assert_eq!(
            field(r, Target::Instance),
            "subscriptionRequest.config.subscriptionMaxEvents"
        );
        // Only subscription-ended is a valid choice too.
        let mut r = full();
        r.types = Some(vec![SUBSCRIPTION_ENDED.into()]);
        assert!(!r.check(Target::Instance, NOW).unwrap().status_events);
    }

    #[test]
    fn a_token_expiring_first_ends_the_subscription_silently() {
        let mut r = full();
        r.sink_credential.as_mut().unwrap().access_token_expires_utc =
            Some("2027-01-20T00:00:00Z".into());
        let plan = r.check(Target::Instance, NOW).unwrap();
        assert_eq!(plan.deadline(), Some((1_800_403_200, false)));
    }

    fn state(max: Option<u32>) -> State {
        State {
            request: request(json!({"sink": "https://h/"})),
            target: "t1".into(),
            status_events: true,
            max_events: max,
            sent: 0,
            last: BTreeMap::new(),
        }
    }

    fn members(statuses: &[(&str, &'static str)]) -> BTreeMap<String, Member> {
        statuses
            .iter()
            .map(|(id, s)| {
                (
                    id.to_string(),
                    Member {
                        app_id: "a".into(),
                        zone_id: "z".into(),
                        status: s,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn only_changes_are_reported_and_the_budget_ends_it() {
        let mut st = state(Some(2));
        let e = step(
            Target::Instance,
            "s",
            &mut st,
            Some(&members(&[("t1", "instantiating")])),
            NOW,
        );
        assert_eq!(e.bodies.len(), 1);
        assert!(!e.end);
        assert_eq!(e.bodies[0]["type"], INSTANCE_STATUS_CHANGE);
        assert_eq!(e.bodies[0]["data"]["status"], "instantiating");
        assert_eq!(e.bodies[0]["specversion"], "1.0");
        let same = step(
            Target::Instance,
            "s",
            &mut st,
            Some(&members(&[("t1", "instantiating")])),
            NOW,
        );
        assert_eq!(same, Emit::default());
        let e = step(
            Target::Instance,
            "s",
            &mut st,
            Some(&members(&[("t1", "ready")])),
            NOW,
        );
        assert!(e.end);
        assert_eq!(e.bodies.len(), 2);
        assert_eq!(e.bodies[1]["type"], SUBSCRIPTION_ENDED);
        assert_eq!(
            e.bodies[1]["data"]["terminationReason"],
            "MAX_EVENTS_REACHED"
        );
    }

    #[test]
    fn a_deployment_reports_its_changed_members_in_one_array() {
        let mut st = state(None);
        st.last.insert("m1".into(), "ready".into());
        st.last.insert("gone".into(), "ready".into());
        let e = step(
            Target::Deployment,
            "s",
            &mut st,
            Some(&members(&[
                ("m1", "ready"),
                ("m2", "instantiating"),
                ("m3", "failed"),
            ])),
            NOW,
        );
        assert_eq!(e.bodies.len(), 1);
        let events = e.bodies[0].as_array().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["data"]["appInstanceId"], "m2");
        assert_eq!(events[1]["data"]["appDeploymentId"], "t1");
        assert!(!st.last.contains_key("gone"));
        let ended = step(Target::Deployment, "s", &mut st, None, NOW);
        assert!(ended.end);
        assert_eq!(
            ended.bodies[0][0]["data"]["terminationReason"],
            "SUBSCRIPTION_DELETED"
        );
    }

    #[test]
    fn an_ended_only_subscription_tracks_but_does_not_report() {
        let mut st = state(Some(1));
        st.status_events = false;
        let e = step(
            Target::Instance,
            "s",
            &mut st,
            Some(&members(&[("t1", "ready")])),
            NOW,
        );
        assert_eq!(e, Emit::default());
        assert_eq!(st.last["t1"], "ready");
    }

    #[test]
    fn the_token_is_not_kept_in_the_state() {
        let r = full().redacted();
        assert_eq!(
            r.sink_credential.unwrap().access_token.as_deref(),
            Some("(redacted)")
        );
    }
}
