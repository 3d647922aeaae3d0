//! ETSI MEC 013 3.1.1 Location API (`/location/v2`, the vendored file's server path):
//! queries of users, zones, access points and distance, and the six subscription types with
//! their notifications, delivered by the [subscription engine](crate::notify).
//!
//! The data come from the UE network context table (`/mecfed/v1/ues`, fed by the gateway or,
//! until it lands, by the operator and tests) and the sites' zones and access points
//! ([`model`]). A developer and its instances see a UE only when the UE's `sharedWith` names
//! the developer (the subscriber's consent); zone and access-point user counts are
//! aggregates of every UE. A subscription is its tenant's: others get 404.
//!
//! Notifications of UE moves come from the UE engine ([`crate::engine::ue`]); periodic reports by
//! [`Reporter`]. Not offered: websocket delivery (refused with 400 unless a callback is also
//! given), `reportingCtrl.minimumInterval` and `maximumFrequency` (accepted, not enforced;
//! `maximumCount` is), and zone-status notifications on access points' operation status.

pub mod model;
mod reporter;

use axum::{
    Extension, Json,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use mecfed_core::{GeoPoint, Ue};
use mecfed_store::{Store, typed::Typed};
use serde_json::{Value, json};

pub use model::{Directory, Kind, LocationSubscription};
pub use reporter::{LEADER_KEY as REPORTER_LEADER_KEY, Reporter};

use crate::{
    ApiError, ApiState,
    auth::{Principal, scopes},
    notify::{self, Subscription},
    util::now_unix,
};

/// Path prefix of MEC 013.
pub const LOCATION_ROOT: &str = "/location/v2";

pub(crate) fn now() -> (u64, u32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

/// Whether `p` may hear of `ue`.
fn sees(p: &Principal, ue: &Ue) -> bool {
    p.is_operator()
        || p.developer
            .as_ref()
            .is_some_and(|d| ue.shared_with.contains(d))
}

/// Whether the tenant of `sub` may hear of `ue`.
pub(crate) fn tenant_sees(sub: &Subscription, ue: &Ue) -> bool {
    match &sub.developer {
        None => true,
        Some(d) => ue.shared_with.contains(d),
    }
}

async fn directory<S: Store>(store: &Typed<S>) -> Result<Directory, ApiError> {
    Ok(Directory::new(
        &crate::sites::sites_with_status(store).await?,
    ))
}

async fn ues<S: Store>(store: &Typed<S>) -> Result<Vec<Ue>, ApiError> {
    let (all, _) = store.list::<Ue>().await?;
    Ok(all.into_iter().map(|v| v.value).collect())
}

/// The query's pairs; list parameters repeat or are comma-separated.
fn query(raw: Option<&str>, known: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))?;
    let mut out = Vec::new();
    for (k, v) in pairs {
        if !known.contains(&k.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "invalid query: unknown parameter {k}"
            )));
        }
        out.extend(
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| (k.clone(), s.to_string())),
        );
    }
    Ok(out)
}

fn values<'a>(q: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    q.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

// === queries ===

pub(crate) async fn query_users<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_LOCATION)?;
    let q = query(raw.as_deref(), &["zoneId", "accessPointId", "address"])?;
    let (zones, aps, addrs) = (
        values(&q, "zoneId"),
        values(&q, "accessPointId"),
        values(&q, "address"),
    );
    for a in &addrs {
        model::check_address(a, "address")?;
    }
    let dir = directory(&st.store).await?;
    let all = ues(&st.store).await?;
    let now = now();
    let mut users = Vec::new();
    for ue in all.iter().filter(|u| sees(&p, u)) {
        let Some(place) = dir.place(ue) else { continue };
        if (zones.is_empty() || zones.contains(&place.zone))
            && (aps.is_empty() || aps.contains(&place.access_point))
            && (addrs.is_empty() || addrs.iter().any(|a| model::names(a, ue)))
        {
            users.push(model::user_info(ue, &place, now));
        }
    }
    if users.is_empty() && !addrs.is_empty() {
        return Err(ApiError::NotFound(
            "no located user with that address".into(),
        ));
    }
    Ok(Json(json!({"userList": {
        "resourceURL": format!("{LOCATION_ROOT}/queries/users"),
        "user": users,
    }})))
}

pub(crate) async fn query_zones<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_LOCATION)?;
    let q = query(raw.as_deref(), &["zoneId"])?;
    let wanted = values(&q, "zoneId");
    let dir = directory(&st.store).await?;
    let counts = model::Counts::of(&dir, &ues(&st.store).await?);
    let zones: Vec<Value> = dir
        .zones()
        .filter(|z| wanted.is_empty() || wanted.contains(z))
        .map(|z| model::zone_info(&dir, z, &counts))
        .collect();
    Ok(Json(json!({"zoneList": {
        "resourceURL": format!("{LOCATION_ROOT}/queries/zones"),
        "zone": zones,
    }})))
}

fn no_zone(z: &str) -> ApiError {
    ApiError::NotFound(format!("zone {z} not found"))
}

pub(crate) async fn query_zone<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(zone): Path<String>,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_LOCATION)?;
    let dir = directory(&st.store).await?;
    if !dir.has_zone(&zone) {
        return Err(no_zone(&zone));
    }
    let counts = model::Counts::of(&dir, &ues(&st.store).await?);
    Ok(Json(
        json!({"zoneInfo": model::zone_info(&dir, &zone, &counts)}),
    ))
}

/// The access points of `zone` as answered, filtered by id when `ids` is not empty.
async fn access_points<S: Store>(
    store: &Typed<S>,
    zone: &str,
    ids: &[&str],
) -> Result<Vec<Value>, ApiError> {
    let dir = directory(store).await?;
    if !dir.has_zone(zone) {
        return Err(no_zone(zone));
    }
    let all = ues(store).await?;
    let counts = model::Counts::of(&dir, &all);
    let users: Vec<&Ue> = all.iter().collect();
    Ok(dir
        .access_points(zone)
        .into_iter()
        .filter(|a| ids.is_empty() || ids.contains(&a.id.as_str()))
        .map(|a| {
            let n = counts.ap.get(&a.id).copied().unwrap_or(0);
            model::access_point_info(a, &users, n)
        })
        .collect())
}

pub(crate) async fn query_access_points<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(zone): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_LOCATION)?;
    let q = query(raw.as_deref(), &["accessPointId"])?;
    let aps = access_points(&st.store, &zone, &values(&q, "accessPointId")).await?;
    Ok(Json(json!({"accessPointList": {
        "zoneId": zone,
        "accessPoint": aps,
        "resourceURL": format!("{LOCATION_ROOT}/queries/zones/{zone}/accessPoints"),
    }})))
}

pub(crate) async fn query_access_point<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path((zone, ap)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_LOCATION)?;
    let info = access_points(&st.store, &zone, &[&ap])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NotFound(format!("access point {ap} not found in zone {zone}")))?;
    Ok(Json(json!({"accessPointInfo": info})))
}

pub(crate) async fn query_distance<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_LOCATION)?;
    let q = query(
        raw.as_deref(),
        &["address", "latitude", "longitude", "location"],
    )?;
    let addrs = values(&q, "address");
    let number = |key: &str| -> Result<Option<f64>, ApiError> {
        match values(&q, key).as_slice() {
            [] => Ok(None),
            [v] => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::BadRequest(format!("invalid {key}: a number"))),
            _ => Err(ApiError::BadRequest(format!("invalid {key}: given twice"))),
        }
    };
    // `location` as the spec's object parameter: `latitude` and `longitude` (form style), or
    // `location=lat,lon`.
    let loc = values(&q, "location");
    let (lat, lon) = match loc.as_slice() {
        [] => (number("latitude")?, number("longitude")?),
        [a, b] => (a.parse().ok(), b.parse().ok()),
        _ => {
            return Err(ApiError::BadRequest(
                "invalid location: latitude,longitude".into(),
            ));
        }
    };
    let target = match (lat, lon) {
        (Some(la), Some(lo)) => Some(
            GeoPoint::new(la, lo)
                .map_err(|e| ApiError::BadRequest(format!("invalid location: {}", e.reason)))?,
        ),
        (None, None) => None,
        _ => {
            return Err(ApiError::BadRequest(
                "invalid location: give both latitude and longitude".into(),
            ));
        }
    };
    match (addrs.len(), target.is_some()) {
        (1, true) | (2, false) => {}
        _ => {
            return Err(ApiError::BadRequest(
                "invalid address: one address with a location, or two addresses".into(),
            ));
        }
    }
    for a in &addrs {
        model::check_address(a, "address")?;
    }
    let dir = directory(&st.store).await?;
    let all = ues(&st.store).await?;
    let locate = |a: &str| {
        all.iter()
            .find(|u| model::names(a, u) && sees(&p, u))
            .and_then(|u| dir.place(u))
            .map(|pl| pl.location)
            .ok_or_else(|| ApiError::NotFound(format!("no located user with address {a}")))
    };
    let from = locate(addrs[0])?;
    let to = match target {
        Some(t) => t,
        None => locate(addrs[1])?,
    };
    Ok(Json(json!({"terminalDistance": {
        "distance": from.distance_m(&to).round() as u64,
        "timestamp": model::timestamp(now()),
    }})))
}

// === subscriptions ===

fn collection(raw: &str) -> Result<&'static str, ApiError> {
    ["users", "zones", "area", "distance"]
        .into_iter()
        .find(|c| *c == raw)
        .ok_or_else(|| ApiError::NotFound(format!("no subscriptions collection {raw}")))
}

/// A subscription body: wrapped (`{"userAreaSubscription": {...}}`) or not.
fn parse_body(v: Value) -> Result<LocationSubscription, ApiError> {
    let wrappers: Vec<String> = model::KINDS.iter().map(|k| k.wrapper()).collect();
    let wrappers: Vec<&str> = wrappers.iter().map(String::as_str).collect();
    super::unwrap_body(v, &wrappers)
}

/// The subscription as answered: wrapped, with `_links.self`.
fn answer(sub: &Subscription, headers: &HeaderMap) -> Value {
    let kind = Kind::of_family(&sub.family).expect("a location family");
    sub.answer(&kind.wrapper(), headers)
}

/// Whether `p` owns `sub`: its tenant's (an instance: its own).
fn owns(p: &Principal, sub: &Subscription) -> bool {
    if p.is_operator() {
        return true;
    }
    if p.instance.is_some() && sub.instance != p.instance {
        return false;
    }
    sub.developer.is_some() && sub.developer == p.developer
}

async fn owned<S: Store>(
    st: &ApiState<S>,
    p: &Principal,
    coll: &str,
    id: &str,
) -> Result<mecfed_store::typed::Versioned<Subscription>, ApiError> {
    st.store
        .get::<Subscription>(id)
        .await?
        .filter(|s| {
            Kind::of_family(&s.value.family).is_some_and(|k| k.collection() == coll)
                && owns(p, &s.value)
        })
        .ok_or_else(|| ApiError::NotFound(format!("subscription {id} not found")))
}

pub(crate) async fn list_subscriptions<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_LOCATION)?;
    let coll = collection(&raw)?;
    let known: &[&str] = if coll == "users" {
        &["subscription_type", "address"]
    } else {
        &["subscription_type"]
    };
    let q = query(q.as_deref(), known)?;
    let types = values(&q, "subscription_type");
    for t in &types {
        if !model::KINDS
            .iter()
            .any(|k| k.collection() == coll && k.query_name() == *t)
        {
            return Err(ApiError::BadRequest(format!(
                "invalid subscription_type: {t} names no subscription of /subscriptions/{coll}"
            )));
        }
    }
    let addrs = values(&q, "address");
    let (all, _) = st.store.list::<Subscription>().await?;
    let subs: Vec<Value> = all
        .into_iter()
        .map(|v| v.value)
        .filter(|s| owns(&p, s))
        .filter_map(|s| {
            let k = Kind::of_family(&s.family)?;
            let addr = s.body.get("address").and_then(Value::as_str);
            (k.collection() == coll
                && (types.is_empty() || types.contains(&k.query_name()))
                && (addrs.is_empty() || addr.is_some_and(|a| addrs.contains(&a))))
            .then(|| s.link(&headers))
        })
        .collect();
    Ok(Json(json!({"notificationSubscriptionList": {
        "resourceURL": {"href": crate::util::location(&headers, &format!("{LOCATION_ROOT}/subscriptions/{coll}"))},
        "subscription": subs,
    }})))
}

fn test_notification(href: &str) -> Value {
    json!({"testNotification": {
        "notificationType": "TestNotification",
        "_links": {"self": {"href": href}, "subscription": {"href": href}},
    }})
}

pub(crate) async fn create_subscription<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    crate::sites::JsonBody(body): crate::sites::JsonBody<Value>,
) -> Result<Response, ApiError> {
    p.require(scopes::MEC_LOCATION)?;
    let coll = collection(&raw)?;
    let mut sub = parse_body(body)?;
    let dir = directory(&st.store).await?;
    let kind = sub.check(coll, now_unix(), &dir)?;
    let id = uuid::Uuid::new_v4().to_string();
    let href = format!("{LOCATION_ROOT}/subscriptions/{coll}/{id}");
    let test = (sub.request_test_notification == Some(true)).then(|| test_notification(&href));
    let stored = notify::create(
        &st.store,
        Subscription {
            id,
            family: kind.family(),
            subscription_type: kind.type_name().into(),
            developer: p.developer.clone(),
            instance: p.instance.clone(),
            callback: sub.callback_reference.clone().unwrap_or_default(),
            href: href.clone(),
            body: serde_json::to_value(&sub).map_err(|e| ApiError::Internal(Box::new(e)))?,
            expiry_deadline: sub.expiry_deadline.map(|d| d.seconds),
            expiry_notification: None,
            next_seq: 0,
            created_at: now_unix(),
            delivery: notify::Delivery::default(),
        },
        test,
    )
    .await?;
    // A distance subscription with checkImmediate reports at once if its criteria hold.
    if kind == Kind::UserDistance && sub.check_immediate == Some(true) {
        let all = ues(&st.store).await?;
        let w = model::World {
            dir: &dir,
            ues: &model::Listed(&all),
        };
        if let Some(e) = model::distance_event(&sub, &w, &|u| tenant_sees(&stored, u), now()) {
            queue(&st.store, &stored, e, false).await?;
        }
    }
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, crate::util::location(&headers, &href))],
        Json(answer(&stored, &headers)),
    )
        .into_response())
}

pub(crate) async fn get_subscription<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path((raw, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_LOCATION)?;
    let coll = collection(&raw)?;
    Ok(Json(answer(
        &owned(&st, &p, coll, &id).await?.value,
        &headers,
    )))
}

pub(crate) async fn put_subscription<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path((raw, id)): Path<(String, String)>,
    headers: HeaderMap,
    crate::sites::JsonBody(body): crate::sites::JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_LOCATION)?;
    let coll = collection(&raw)?;
    let current = owned(&st, &p, coll, &id).await?;
    let mut sub = parse_body(body)?;
    let kind = sub.check(coll, now_unix(), &directory(&st.store).await?)?;
    if kind.family() != current.value.family {
        return Err(ApiError::BadRequest(format!(
            "invalid subscriptionType: the subscription is a {}",
            current.value.subscription_type
        )));
    }
    let expiry = (sub.expiry_deadline.map(|d| d.seconds), None);
    let next = notify::replace(
        &st.store,
        current,
        sub.callback_reference.as_deref(),
        expiry,
        &sub,
    )
    .await?;
    Ok(Json(answer(&next, &headers)))
}

pub(crate) async fn delete_subscription<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path((raw, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    p.require(scopes::MEC_LOCATION)?;
    let coll = collection(&raw)?;
    owned(&st, &p, coll, &id).await?;
    notify::remove(&st.store, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// === events ===

/// What `sub` (as stored now) queues for `events`: their bodies, stamped at `now`, up to and
/// including one that ends it (a one-time subscription's first, the `maximumCount`th, or the
/// last periodic report when `last`).
pub(crate) fn emission(
    sub: &Subscription,
    events: Vec<model::Event>,
    last: bool,
    now: (u64, u32),
) -> notify::Emit {
    let parsed: Option<LocationSubscription> = serde_json::from_value(sub.body.clone()).ok();
    emission_of(sub, parsed.as_ref(), events, last, now)
}

/// [`emission`] for a subscription already parsed (`parsed`: its body).
pub(crate) fn emission_of(
    sub: &Subscription,
    parsed: Option<&LocationSubscription>,
    events: Vec<model::Event>,
    last: bool,
    now: (u64, u32),
) -> notify::Emit {
    let max = parsed
        .and_then(|s| s.reporting_ctrl)
        .and_then(|r| r.maximum_count)
        .filter(|m| *m > 0);
    let tests = u64::from(parsed.and_then(|s| s.request_test_notification) == Some(true));
    let one_time = parsed.is_some_and(model::one_time);
    let mut out = notify::Emit::default();
    for (seq, e) in (sub.next_seq + 1..).zip(events) {
        let mut body = e.body;
        body["timeStamp"] = model::timestamp(now);
        body["_links"] = json!({"self": {"href": sub.href}, "subscription": {"href": sub.href}});
        out.bodies.push(json!({ e.wrapper: body }));
        if one_time || max.is_some_and(|m| seq - tests.min(seq) >= u64::from(m)) {
            out.end = true;
            return out;
        }
    }
    out.end = last && !out.bodies.is_empty();
    out
}

/// Queues `e` for `sub`; the last report and the end of the subscription are one write, and
/// what is queued is still delivered.
async fn queue<S: Store>(
    store: &Typed<S>,
    sub: &Subscription,
    e: model::Event,
    last: bool,
) -> Result<(), ApiError> {
    let at = now();
    notify::emit(store, &sub.id, |current| {
        emission(current, vec![e.clone()], last, at)
    })
    .await?;
    Ok(())
}
