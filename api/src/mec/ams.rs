//! ETSI MEC 021 2.2.1 Application Mobility Service (`/amsi/v1`, the vendored file's server
//! path): registrations of app instances and the devices they serve (with their
//! `contextTransferState`), `deregister_task`, adjacent app instances, and the two
//! subscription types with their notifications, delivered by the
//! [subscription engine](crate::notify).
//!
//! - A registration is its tenant's; `serviceConsumerId.appInstanceId` must be one of the
//!   caller's instances (a running instance registers itself). `expiryTime` seconds after
//!   it is accepted the registration is gone (0: never).
//! - A device's `contextTransferState` moving to 1 (USER_CONTEXT_TRANSFER_COMPLETED) in a
//!   `PUT` is the instance saying the user's context reached its target: subscribers hear
//!   `INTERHOST_MOVEOUT_COMPLETED`. `INTERHOST_MOVEOUT_TRIGGERED` and `_FAILED` come from the
//!   mobility service through [`mobility_procedure`].
//! - Adjacent app instances are the other running instances of the same app (`appDId` is
//!   the app id), with their endpoints and sites as MEC hosts; an instance becoming Ready or
//!   going away notifies the `AdjacentAppInfoSubscription`s of its app's other instances.
//! - Notifications are POSTed in the form of the file's `/user_defined_notification`
//!   (`{"MobilityProcedureNotification": {...}}`, named by type), whose schema, unlike the
//!   subscriptions' callback, names the notification types.

use axum::{
    Extension, Json,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use mecfed_core::{App, DeveloperId, Instance, InstanceId, InstanceState};
use mecfed_store::{
    Store,
    typed::{Resource, Typed},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::instance_for;
use crate::{
    ApiError, ApiState,
    auth::{Principal, scopes},
    notify::{self, Subscription},
    util::now_unix,
};

/// Path prefix of MEC 021.
pub const AMS_ROOT: &str = "/amsi/v1";
/// Family of mobility-procedure subscriptions.
pub const MOBILITY_PROCEDURE: &str = "mec021.mobilityProcedure";
/// Family of adjacent-app-info subscriptions.
pub const ADJACENT_APP_INFO: &str = "mec021.adjacentAppInfo";

fn now_ts() -> Value {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    json!({"seconds": d.as_secs(), "nanoSeconds": d.subsec_nanos()})
}

// === registrations ===

/// `ServiceConsumerId`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceConsumerId {
    /// The registering instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_instance_id: Option<String>,
    /// The registering MEC platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mep_id: Option<String>,
}

/// `DeviceInformation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceInformation {
    /// The device (`AssociateId`: a string in the vendored file, MEC 012's object elsewhere;
    /// both are taken).
    pub associate_id: Value,
    /// `{"appMobilityServiceLevel": 1..3}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_mobility_service_level: Option<Value>,
    /// 0 NOT_TRANSFERRED (default), 1 USER_CONTEXT_TRANSFER_COMPLETED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_transfer_state: Option<u8>,
}

/// `RegistrationInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrationInfo {
    /// Assigned by the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_mobility_service_id: Option<String>,
    /// Who registers.
    pub service_consumer_id: ServiceConsumerId,
    /// The devices it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_information: Option<Vec<DeviceInformation>>,
    /// Seconds until the registration expires; 0: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_time: Option<u32>,
}

/// The key of an `AssociateId` for comparisons: its value (`10.0.0.1`), whichever form it
/// came in.
pub fn associate_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(m) => m.get("value").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl RegistrationInfo {
    fn check(&self) -> Result<(), ApiError> {
        let bad = |f: &str, why: &str| Err(ApiError::BadRequest(format!("invalid {f}: {why}")));
        if self.service_consumer_id.app_instance_id.is_none() {
            return bad(
                "serviceConsumerId.appInstanceId",
                "required (the instance that registers)",
            );
        }
        for (i, d) in self.device_information.iter().flatten().enumerate() {
            if associate_key(&d.associate_id).is_none() {
                return bad(
                    &format!("deviceInformation[{i}].associateId"),
                    "a non-empty string or {\"type\", \"value\"}",
                );
            }
            if let Some(l) = &d.app_mobility_service_level {
                let level = l.get("appMobilityServiceLevel").and_then(Value::as_u64);
                if !level.is_some_and(|v| (1..=3).contains(&v)) {
                    return bad(
                        &format!("deviceInformation[{i}].appMobilityServiceLevel"),
                        "{\"appMobilityServiceLevel\": 1, 2 or 3}",
                    );
                }
            }
            if d.context_transfer_state.is_some_and(|s| s > 1) {
                return bad(
                    &format!("deviceInformation[{i}].contextTransferState"),
                    "0 or 1",
                );
            }
        }
        Ok(())
    }
}

/// A registration as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AmsRegistration {
    /// `appMobilityServiceId`.
    pub id: String,
    /// Its tenant (`None`: the operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer: Option<DeveloperId>,
    /// The registering instance.
    pub instance: InstanceId,
    /// As registered.
    pub info: RegistrationInfo,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl Resource for AmsRegistration {
    const KIND: &'static str = "amsregistrations";
    fn id(&self) -> String {
        self.id.clone()
    }
}

impl AmsRegistration {
    fn answer(&self) -> RegistrationInfo {
        let mut info = self.info.clone();
        info.app_mobility_service_id = Some(self.id.clone());
        info
    }

    fn live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

/// Devices whose `contextTransferState` went from not transferred to completed (IO-free).
pub fn transfers_completed(before: &RegistrationInfo, after: &RegistrationInfo) -> Vec<Value> {
    let state_of = |info: &RegistrationInfo, key: &str| {
        info.device_information
            .iter()
            .flatten()
            .find(|d| associate_key(&d.associate_id).as_deref() == Some(key))
            .map_or(0, |d| d.context_transfer_state.unwrap_or(0))
    };
    after
        .device_information
        .iter()
        .flatten()
        .filter(|d| d.context_transfer_state == Some(1))
        .filter(|d| associate_key(&d.associate_id).is_some_and(|k| state_of(before, &k) == 0))
        .map(|d| d.associate_id.clone())
        .collect()
}

/// Parses a MEC 009 attribute filter, `(op,path,value[,value...])` joined by `;`, and
/// checks `doc` against it: `eq`, `neq`, `in`, `nin`, `cont`, `ncont` on string or number
/// attributes; a path goes through arrays (any element may match). IO-free.
pub fn matches_filter(doc: &Value, filter: &str) -> Result<bool, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "invalid filter: {filter:?} is not (op,attribute,value)"
        ))
    };
    for clause in filter.split(';').filter(|c| !c.trim().is_empty()) {
        let inner = clause
            .trim()
            .strip_prefix('(')
            .and_then(|c| c.strip_suffix(')'))
            .ok_or_else(bad)?;
        let mut parts = inner.split(',');
        let (Some(op), Some(path)) = (parts.next(), parts.next()) else {
            return Err(bad());
        };
        let wanted: Vec<&str> = parts.collect();
        if wanted.is_empty() {
            return Err(bad());
        }
        let mut found = Vec::new();
        collect(doc, &path.split('/').collect::<Vec<_>>(), &mut found);
        let text: Vec<String> = found
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        let any = |f: &dyn Fn(&str) -> bool| text.iter().any(|t| f(t));
        let ok = match op {
            "eq" => any(&|t| t == wanted[0]),
            "neq" => !any(&|t| t == wanted[0]),
            "in" => any(&|t| wanted.contains(&t)),
            "nin" => !any(&|t| wanted.contains(&t)),
            "cont" => any(&|t| wanted.iter().any(|w| t.contains(w))),
            "ncont" => !any(&|t| wanted.iter().any(|w| t.contains(w))),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "invalid filter: operator {op} is none of eq, neq, in, nin, cont, ncont"
                )));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn collect<'a>(v: &'a Value, path: &[&str], out: &mut Vec<&'a Value>) {
    match (v, path.split_first()) {
        (Value::Array(items), _) => items.iter().for_each(|i| collect(i, path, out)),
        (_, None) => out.push(v),
        (Value::Object(m), Some((head, rest))) => {
            if let Some(next) = m.get(*head) {
                collect(next, rest, out);
            }
        }
        _ => {}
    }
}

/// The MEC 009 selector parameters every AMS list accepts; all attributes are always
/// answered, which `all_fields` asks for and the others may narrow, so they change nothing.
const SELECTORS: &[&str] = &["all_fields", "fields", "exclude_fields", "exclude_default"];

fn filter_param(raw: Option<&str>, known: &[&str]) -> Result<Option<String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))?;
    let mut filter = None;
    for (k, v) in pairs {
        match k.as_str() {
            "filter" => filter = Some(v),
            k if SELECTORS.contains(&k) || known.contains(&k) => {}
            other => {
                return Err(ApiError::BadRequest(format!(
                    "invalid query: unknown parameter {other}"
                )));
            }
        }
    }
    Ok(filter)
}

fn owns_registration(p: &Principal, r: &AmsRegistration) -> bool {
    p.is_operator()
        || (r.developer.is_some()
            && r.developer == p.developer
            && p.instance.as_ref().is_none_or(|i| *i == r.instance))
}

async fn registration<S: Store>(
    st: &ApiState<S>,
    p: &Principal,
    id: &str,
) -> Result<mecfed_store::typed::Versioned<AmsRegistration>, ApiError> {
    st.store
        .get::<AmsRegistration>(id)
        .await?
        .filter(|r| owns_registration(p, &r.value) && r.value.live(now_unix()))
        .ok_or_else(|| ApiError::NotFound(format!("app mobility service {id} not found")))
}

/// The tenant of the instance a registration names, after checking the caller may act for
/// it.
async fn consumer<S: Store>(
    st: &ApiState<S>,
    p: &Principal,
    info: &RegistrationInfo,
) -> Result<(Instance, Option<DeveloperId>), ApiError> {
    let raw = info
        .service_consumer_id
        .app_instance_id
        .as_deref()
        .unwrap_or_default();
    let inst = instance_for(&st.store, p, raw).await.map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid serviceConsumerId.appInstanceId: no instance {raw} of yours"
        ))
    })?;
    let developer = st
        .store
        .get::<App>(inst.value.app.as_str())
        .await?
        .map(|a| a.value.developer);
    Ok((inst.value, developer))
}

pub(crate) async fn list_registrations<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<RegistrationInfo>>, ApiError> {
    p.require(scopes::MEC_AMS)?;
    let filter = filter_param(q.as_deref(), &[])?;
    let (all, _) = st.store.list::<AmsRegistration>().await?;
    let now = now_unix();
    let mut out = Vec::new();
    for r in all.into_iter().map(|v| v.value) {
        if !owns_registration(&p, &r) || !r.live(now) {
            continue;
        }
        let answer = r.answer();
        let doc = serde_json::to_value(&answer).map_err(|e| ApiError::Internal(Box::new(e)))?;
        if filter
            .as_deref()
            .map_or(Ok(true), |f| matches_filter(&doc, f))?
        {
            out.push(answer);
        }
    }
    Ok(Json(out))
}

pub(crate) async fn create_registration<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    crate::sites::JsonBody(body): crate::sites::JsonBody<Value>,
) -> Result<Response, ApiError> {
    p.require(scopes::MEC_AMS)?;
    let mut info: RegistrationInfo = super::unwrap_body(body, &["RegistrationInfo"])?;
    if info.app_mobility_service_id.is_some() {
        return Err(ApiError::BadRequest(
            "invalid appMobilityServiceId: assigned by the platform, leave it out".into(),
        ));
    }
    info.check()?;
    let (inst, developer) = consumer(&st, &p, &info).await?;
    // The initial registration starts every device at NOT_TRANSFERRED.
    for d in info.device_information.iter_mut().flatten() {
        d.context_transfer_state = Some(0);
    }
    let reg = AmsRegistration {
        id: uuid::Uuid::new_v4().to_string(),
        developer,
        instance: inst.id,
        expires_at: info
            .expiry_time
            .filter(|t| *t > 0)
            .map(|t| now_unix() + u64::from(t)),
        info,
    };
    st.store.create(&reg).await?;
    let path = format!("{AMS_ROOT}/app_mobility_services/{}", reg.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, crate::util::location(&headers, &path))],
        Json(json!({"RegistrationInfo": reg.answer()})),
    )
        .into_response())
}

pub(crate) async fn get_registration<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_AMS)?;
    let r = registration(&st, &p, &id).await?.value;
    Ok(Json(json!({"RegistrationInfo": r.answer()})))
}

pub(crate) async fn put_registration<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    crate::sites::JsonBody(body): crate::sites::JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_AMS)?;
    let current = registration(&st, &p, &id).await?;
    let mut info: RegistrationInfo = super::unwrap_body(body, &["RegistrationInfo"])?;
    if info
        .app_mobility_service_id
        .as_deref()
        .is_some_and(|i| i != id)
    {
        return Err(ApiError::BadRequest(
            "invalid appMobilityServiceId: differs from the path".into(),
        ));
    }
    info.check()?;
    if info.service_consumer_id.app_instance_id.as_deref() != Some(current.value.instance.as_str())
    {
        return Err(ApiError::BadRequest(
            "invalid serviceConsumerId.appInstanceId: a registration keeps its instance".into(),
        ));
    }
    info.app_mobility_service_id = None;
    let completed = transfers_completed(&current.value.info, &info);
    let mut next = current.value.clone();
    next.expires_at = match info.expiry_time {
        Some(0) => None,
        Some(t) => Some(now_unix() + u64::from(t)),
        None => current.value.expires_at,
    };
    next.info = info;
    st.store
        .update(&next, current.revision)
        .await
        .map_err(|e| match e {
            mecfed_store::typed::TypedError::Conflict { .. } => ApiError::PreconditionFailed(
                "the registration changed meanwhile; read it again".into(),
            ),
            e => e.into(),
        })?;
    if !completed.is_empty() {
        mobility_procedure(&st.store, &next.instance, &completed, 2, None).await?;
    }
    Ok(Json(json!({"RegistrationInfo": next.answer()})))
}

pub(crate) async fn delete_registration<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require(scopes::MEC_AMS)?;
    registration(&st, &p, &id).await?;
    st.store.delete::<AmsRegistration>(&id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn deregister_task<S: Store>(
    state: State<ApiState<S>>,
    p: Extension<Principal>,
    id: Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_registration(state, p, id).await
}

// === adjacent app instances ===

/// The `AdjacentAppInstanceInfo` of `inst` of app `app`.
fn adjacent_info(inst: &Instance, registered: Option<&InstanceId>) -> Value {
    let link = inst
        .endpoint
        .as_deref()
        .and_then(|e| e.rsplit_once(':'))
        .and_then(|(h, p)| Some(json!({"host": h, "port": p.parse::<u16>().ok()?})));
    let mut v = json!({
        "appInstanceId": inst.id,
        "appDId": inst.app,
        "appInstanceCommLink": [{"ipAddresses": link.into_iter().collect::<Vec<_>>()}],
        "mecHostInformation": {"hostName": inst.site, "hostId": {"siteId": inst.site}},
    });
    if let Some(r) = registered {
        v["registeredInstanceId"] = json!(r);
    }
    v
}

/// The running instances adjacent to the caller: the other Ready instances of its app (an
/// instance), or of its tenant's apps.
async fn adjacent<S: Store>(store: &Typed<S>, p: &Principal) -> Result<Vec<Value>, ApiError> {
    let (instances, _) = store.list::<Instance>().await?;
    let (apps, _) = store.list::<App>().await?;
    let mut out = Vec::new();
    for inst in instances.into_iter().map(|v| v.value) {
        if inst.state != InstanceState::Ready || p.instance.as_ref() == Some(&inst.id) {
            continue;
        }
        let Some(app) = apps.iter().find(|a| a.value.id == inst.app) else {
            continue;
        };
        if p.owns(&app.value.developer, &app.value.id) {
            out.push(adjacent_info(&inst, p.instance.as_ref()));
        }
    }
    Ok(out)
}

pub(crate) async fn adjacent_app_instances<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<Value>>, ApiError> {
    p.require(scopes::MEC_AMS)?;
    let filter = filter_param(q.as_deref(), &[])?;
    let mut out = Vec::new();
    for v in adjacent(&st.store, &p).await? {
        if filter
            .as_deref()
            .map_or(Ok(true), |f| matches_filter(&v, f))?
        {
            out.push(v);
        }
    }
    Ok(Json(out))
}

// === subscriptions ===

/// `FilterCriteria` of either subscription type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AmsFilter {
    /// The registering instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_instance_id: Option<String>,
    /// Devices (mobility procedures only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associate_id: Option<Vec<Value>>,
    /// Statuses (mobility procedures only); 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobility_status: Option<Vec<u8>>,
}

/// `MobilityProcedureSubscription` or `AdjacentAppInfoSubscription`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AmsSubscription {
    /// The type.
    pub subscription_type: String,
    /// Where notifications go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_reference: Option<String>,
    /// A test notification on creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_test_notification: Option<bool>,
    /// Refused when it asks for a websocket.
    #[serde(default, skip_serializing)]
    pub websock_notif_config: Option<Value>,
    /// Answered by the platform.
    #[serde(rename = "_links", default, skip_serializing)]
    pub links: Option<Value>,
    /// What to report.
    pub filter_criteria: AmsFilter,
    /// Expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_deadline: Option<super::location::model::TimeStamp>,
}

const TYPES: [(&str, &str, &str); 2] = [
    (
        "MobilityProcedureSubscription",
        MOBILITY_PROCEDURE,
        "mobility_proc",
    ),
    (
        "AdjacentAppInfoSubscription",
        ADJACENT_APP_INFO,
        "adj_app_info",
    ),
];

impl AmsSubscription {
    fn check(&mut self, now: u64) -> Result<&'static str, ApiError> {
        let bad = |f: &str, why: &str| Err(ApiError::BadRequest(format!("invalid {f}: {why}")));
        let Some((_, family, _)) = TYPES.iter().find(|t| t.0 == self.subscription_type) else {
            return bad(
                "subscriptionType",
                "MobilityProcedureSubscription or AdjacentAppInfoSubscription",
            );
        };
        match &self.callback_reference {
            Some(cb) => notify::validate_callback(cb, "callbackReference")?,
            None => {
                return bad(
                    "callbackReference",
                    "required (websocket delivery is not offered)",
                );
            }
        }
        self.websock_notif_config = None;
        if let Some(d) = self.expiry_deadline {
            d.check_deadline(now, "expiryDeadline")?;
        }
        let f = &mut self.filter_criteria;
        if *family == ADJACENT_APP_INFO {
            if f.associate_id.is_some() || f.mobility_status.is_some() {
                return bad(
                    "filterCriteria",
                    "an AdjacentAppInfoSubscription filters on appInstanceId only",
                );
            }
            if f.app_instance_id.is_none() {
                return bad("filterCriteria.appInstanceId", "required");
            }
        } else {
            for (i, s) in f.mobility_status.iter().flatten().enumerate() {
                if !(1..=3).contains(s) {
                    return bad(&format!("filterCriteria.mobilityStatus[{i}]"), "1, 2 or 3");
                }
            }
            for (i, a) in f.associate_id.iter().flatten().enumerate() {
                if associate_key(a).is_none() {
                    return bad(
                        &format!("filterCriteria.associateId[{i}]"),
                        "a device identifier",
                    );
                }
            }
            f.mobility_status.get_or_insert_with(|| vec![1]);
        }
        Ok(family)
    }
}

fn owns_subscription(p: &Principal, s: &Subscription) -> bool {
    (s.family == MOBILITY_PROCEDURE || s.family == ADJACENT_APP_INFO)
        && (p.is_operator()
            || (s.developer.is_some()
                && s.developer == p.developer
                && (p.instance.is_none() || s.instance == p.instance)))
}

fn answer(s: &Subscription, headers: &HeaderMap) -> Value {
    s.answer(&s.subscription_type, headers)
}

async fn owned<S: Store>(
    st: &ApiState<S>,
    p: &Principal,
    id: &str,
) -> Result<mecfed_store::typed::Versioned<Subscription>, ApiError> {
    st.store
        .get::<Subscription>(id)
        .await?
        .filter(|s| owns_subscription(p, &s.value))
        .ok_or_else(|| ApiError::NotFound(format!("subscription {id} not found")))
}

fn expiry(sub: &AmsSubscription, href: &str) -> Option<Value> {
    let d = sub.expiry_deadline?;
    let ts = json!({"seconds": d.seconds, "nanoSeconds": d.nano_seconds});
    Some(json!({"ExpiryNotification": {
        "notificationType": "ExpiryNotification",
        "timeStamp": ts,
        "_links": {"subscription": {"href": href}},
        "expiryDeadline": ts,
    }}))
}

async fn check_filter_instance<S: Store>(
    st: &ApiState<S>,
    p: &Principal,
    sub: &AmsSubscription,
) -> Result<(), ApiError> {
    if let Some(id) = &sub.filter_criteria.app_instance_id {
        instance_for(&st.store, p, id).await.map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid filterCriteria.appInstanceId: no instance {id} of yours"
            ))
        })?;
    }
    Ok(())
}

const WRAPPERS: &[&str] = &[
    "MobilityProcedureSubscription",
    "AdjacentAppInfoSubscription",
];

pub(crate) async fn list_subscriptions<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_AMS)?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))?;
    let mut families = Vec::new();
    for (k, v) in pairs {
        if k != "subscriptiontype" {
            return Err(ApiError::BadRequest(format!(
                "invalid query: unknown parameter {k}"
            )));
        }
        let t = TYPES.iter().find(|t| t.2 == v).ok_or_else(|| {
            ApiError::BadRequest("invalid subscriptiontype: mobility_proc or adj_app_info".into())
        })?;
        families.push(t.1);
    }
    let (all, _) = st.store.list::<Subscription>().await?;
    let subs: Vec<Value> = all
        .into_iter()
        .map(|v| v.value)
        .filter(|s| owns_subscription(&p, s))
        .filter(|s| families.is_empty() || families.contains(&s.family.as_str()))
        .map(|s| s.link(&headers))
        .collect();
    Ok(Json(json!({"SubscriptionLinkList": {"_links": {
        "self": {"href": crate::util::location(&headers, &format!("{AMS_ROOT}/subscriptions"))},
        "subscription": subs,
    }}})))
}

pub(crate) async fn create_subscription<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    crate::sites::JsonBody(body): crate::sites::JsonBody<Value>,
) -> Result<Response, ApiError> {
    p.require(scopes::MEC_AMS)?;
    let mut sub: AmsSubscription = super::unwrap_body(body, WRAPPERS)?;
    let family = sub.check(now_unix())?;
    check_filter_instance(&st, &p, &sub).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let href = format!("{AMS_ROOT}/subscriptions/{id}");
    let test = (sub.request_test_notification == Some(true)).then(|| {
        json!({"TestNotification": {
            "notificationType": "TestNotification",
            "_links": {"subscription": {"href": href}},
        }})
    });
    let stored = notify::create(
        &st.store,
        Subscription {
            id,
            family: family.into(),
            subscription_type: sub.subscription_type.clone(),
            developer: p.developer.clone(),
            instance: p.instance.clone(),
            callback: sub.callback_reference.clone().unwrap_or_default(),
            href: href.clone(),
            body: serde_json::to_value(&sub).map_err(|e| ApiError::Internal(Box::new(e)))?,
            expiry_deadline: sub.expiry_deadline.map(|d| d.seconds),
            expiry_notification: expiry(&sub, &href),
            next_seq: 0,
            created_at: now_unix(),
            delivery: notify::Delivery::default(),
        },
        test,
    )
    .await?;
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
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_AMS)?;
    Ok(Json(answer(&owned(&st, &p, &id).await?.value, &headers)))
}

pub(crate) async fn put_subscription<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    crate::sites::JsonBody(body): crate::sites::JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_AMS)?;
    let current = owned(&st, &p, &id).await?;
    let mut sub: AmsSubscription = super::unwrap_body(body, WRAPPERS)?;
    let family = sub.check(now_unix())?;
    if family != current.value.family {
        return Err(ApiError::BadRequest(format!(
            "invalid subscriptionType: the subscription is a {}",
            current.value.subscription_type
        )));
    }
    check_filter_instance(&st, &p, &sub).await?;
    let expiry = (
        sub.expiry_deadline.map(|d| d.seconds),
        expiry(&sub, &current.value.href),
    );
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
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require(scopes::MEC_AMS)?;
    owned(&st, &p, &id).await?;
    notify::remove(&st.store, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// === events ===

/// Whether a mobility-procedure filter passes an event of `status` for `devices` registered
/// by `instance` (IO-free).
pub fn procedure_passes(
    f: &AmsFilter,
    instance: &InstanceId,
    devices: &[Value],
    status: u8,
) -> bool {
    let inst = f
        .app_instance_id
        .as_deref()
        .is_none_or(|i| i == instance.as_str());
    let st = f
        .mobility_status
        .as_ref()
        .is_none_or(|s| s.contains(&status));
    let keys: Vec<String> = devices.iter().filter_map(associate_key).collect();
    let dev = f.associate_id.as_ref().is_none_or(|ids| {
        ids.is_empty()
            || ids
                .iter()
                .filter_map(associate_key)
                .any(|k| keys.contains(&k))
    });
    inst && st && dev
}

/// Queues `MobilityProcedureNotification`s: `devices` served by `instance` are moving out
/// (1 TRIGGERED), have moved (2 COMPLETED) or could not (3 FAILED), to `target` when known.
/// Called on context-transfer completion here and by the mobility service.
pub async fn mobility_procedure<S: Store>(
    store: &Typed<S>,
    instance: &InstanceId,
    devices: &[Value],
    status: u8,
    target: Option<&Instance>,
) -> Result<(), ApiError> {
    let tenant = match store.get::<Instance>(instance.as_str()).await? {
        Some(i) => store
            .get::<App>(i.value.app.as_str())
            .await?
            .map(|a| a.value.developer),
        None => None,
    };
    let subs: Vec<Subscription> = notify::of_family(store, MOBILITY_PROCEDURE)
        .await?
        .into_iter()
        .filter(|s| s.developer.is_none() || s.developer == tenant)
        .filter(|s| {
            serde_json::from_value::<AmsSubscription>(s.body.clone())
                .is_ok_and(|a| procedure_passes(&a.filter_criteria, instance, devices, status))
        })
        .collect();
    let target_info = target.map(|t| {
        let info = adjacent_info(t, None);
        json!({"appInstanceId": t.id, "commInterface": info["appInstanceCommLink"][0]})
    });
    notify::fan_out(store, &subs, |s| {
        let mut n = json!({
            "notificationType": "MobilityProcedureNotification",
            "timeStamp": now_ts(),
            "associateId": devices,
            "mobilityStatus": status,
            "_links": {"subscription": {"href": s.href}},
        });
        if let Some(t) = &target_info {
            n["targetAppInfo"] = t.clone();
        }
        json!({"MobilityProcedureNotification": n})
    })
    .await
}

/// The `AdjacentAppInfoNotification` of subscription `sub`: the instances of its watcher's
/// app that are Ready, `ready`, other than the watcher itself.
pub(crate) fn adjacent_notification<'a>(
    sub: &Subscription,
    watcher: &str,
    ready: impl Iterator<Item = &'a Instance>,
) -> Value {
    let adjacent: Vec<Value> = ready
        .filter(|i| i.id.as_str() != watcher)
        .map(|i| {
            let info = adjacent_info(i, None);
            json!({"appInstanceId": i.id, "commInterface": [info["appInstanceCommLink"][0]]})
        })
        .collect();
    json!({"AdjacentAppInfoNotification": {
        "notificationType": "AdjacentAppInfoNotification",
        "timeStamp": now_ts(),
        "adjacentAppInfo": adjacent,
        "_links": {"subscription": {"href": sub.href}},
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(states: &[(&str, u8)]) -> RegistrationInfo {
        RegistrationInfo {
            app_mobility_service_id: None,
            service_consumer_id: ServiceConsumerId {
                app_instance_id: Some("i".into()),
                mep_id: None,
            },
            device_information: Some(
                states
                    .iter()
                    .map(|(a, s)| DeviceInformation {
                        associate_id: json!(a),
                        app_mobility_service_level: None,
                        context_transfer_state: Some(*s),
                    })
                    .collect(),
            ),
            expiry_time: None,
        }
    }

    #[test]
    fn completed_transfers_are_the_devices_that_moved_to_state_1() {
        let before = reg(&[("10.0.0.1", 0), ("10.0.0.2", 0), ("10.0.0.3", 1)]);
        let after = reg(&[
            ("10.0.0.1", 1),
            ("10.0.0.2", 0),
            ("10.0.0.3", 1),
            ("10.0.0.4", 1),
        ]);
        assert_eq!(
            transfers_completed(&before, &after),
            [json!("10.0.0.1"), json!("10.0.0.4")]
        );
        assert!(transfers_completed(&after, &after).is_empty());
    }

    #[test]
    fn mec009_filters() {
        let doc = json!({"serviceConsumerId": {"appInstanceId": "a-1"},
            "deviceInformation": [{"associateId": "10.0.0.1"}, {"associateId": "10.0.0.2"}],
            "expiryTime": 30});
        let m = |f: &str| matches_filter(&doc, f).unwrap();
        assert!(m("(eq,serviceConsumerId/appInstanceId,a-1)"));
        assert!(!m("(eq,serviceConsumerId/appInstanceId,a-2)"));
        assert!(m("(eq,deviceInformation/associateId,10.0.0.2)"));
        assert!(m(
            "(in,serviceConsumerId/appInstanceId,x,a-1);(eq,expiryTime,30)"
        ));
        assert!(!m(
            "(in,serviceConsumerId/appInstanceId,x,a-1);(neq,expiryTime,30)"
        ));
        assert!(m("(cont,serviceConsumerId/appInstanceId,a-)"));
        assert!(m("(nin,deviceInformation/associateId,10.0.0.9)"));
        for bad in ["eq,x,y", "(eq,x)", "(gt,x,1)"] {
            assert!(matches_filter(&doc, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn procedure_filters() {
        let i = InstanceId::new("a-1").unwrap();
        let dev = [json!("10.0.0.1")];
        let f = AmsFilter {
            app_instance_id: Some("a-1".into()),
            associate_id: Some(vec![json!({"type": 1, "value": "10.0.0.1"})]),
            mobility_status: Some(vec![1]),
        };
        assert!(procedure_passes(&f, &i, &dev, 1));
        assert!(!procedure_passes(&f, &i, &dev, 2));
        assert!(!procedure_passes(
            &f,
            &InstanceId::new("a-2").unwrap(),
            &dev,
            1
        ));
        assert!(!procedure_passes(&f, &i, &[json!("10.0.0.2")], 1));
        assert!(procedure_passes(&AmsFilter::default(), &i, &dev, 3));
    }
}
