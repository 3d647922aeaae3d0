//! MEC 011 3.1.1 application support (`/mec_app_support/v1`): registrations, `confirm_ready`,
//! `confirm_termination`, traffic and DNS rules, and timing.
//!
//! `confirm_ready` is what an app whose readiness is [`Probe::MecConfirmReady`] is counted
//! Ready by: its agent reports it running, the platform holds it at Starting until the
//! instance confirms, and a confirmation lasts until the process fails or restarts (its pid
//! changes).
//!
//! Traffic and DNS rules are declared per app through the mecfed extension
//! (`PUT /mecfed/v1/apps/{appId}/mec-rules`, as an AppD would declare them); each instance
//! reads them here and may replace its own copy of one (typically to switch it `ACTIVE` or
//! `INACTIVE`), guarded by the rule's entity tag (`If-Match`, 412 when stale). The gateway
//! enforces the `ACTIVE` ones.

use std::collections::BTreeMap;

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use mecfed_core::{
    App, AppId, Instance, InstanceId, InstanceState, Probe,
    mec_rules::{DnsRule, TrafficRule},
};
use mecfed_store::{
    Store,
    typed::{Resource, Typed, TypedError},
};
use serde::{Deserialize, Serialize};

use super::{
    APP_SUPPORT_ROOT, MecBody, Wrapped, check_if_match, etag_header, etag_of, instance_for,
};
use crate::{
    ApiError, ApiState,
    auth::{Principal, scopes},
};

// === registrations ===

/// `AppInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppInfo {
    /// Name of the application.
    pub app_name: String,
    /// Its provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_provider: Option<String>,
    /// `CategoryRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_category: Option<serde_json::Value>,
    /// Application descriptor id.
    #[serde(rename = "appDId", default, skip_serializing_if = "Option::is_none")]
    pub app_d_id: Option<String>,
    /// The instance (filled in by the platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_instance_id: Option<String>,
    /// `EndPointInfo` of the application server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<serde_json::Value>,
    /// Services it requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_service_required: Option<Vec<serde_json::Value>>,
    /// Services it may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_service_optional: Option<Vec<serde_json::Value>>,
    /// Features it requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_feature_required: Option<Vec<serde_json::Value>>,
    /// Features it may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_feature_optional: Option<Vec<serde_json::Value>>,
    /// Instantiated by the MEC management (true for every mecfed instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_ins_by_mec: Option<bool>,
    /// EAS profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_profile: Option<serde_json::Value>,
}

impl Wrapped for AppInfo {
    const WRAPPER: &'static str = "AppInfo";
}

/// A registration as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MecRegistration {
    /// The instance.
    pub instance: InstanceId,
    /// What it registered.
    pub app_info: AppInfo,
}

impl Resource for MecRegistration {
    const KIND: &'static str = "mecregistrations";
    fn id(&self) -> String {
        self.instance.to_string()
    }
}

fn wrapped<T: Serialize>(name: &str, v: &T) -> serde_json::Value {
    serde_json::json!({ name: v })
}

/// The instance an `AppInfo` is for: the calling instance's own, or the one it names.
async fn registrant<S: Store>(
    store: &Typed<S>,
    p: &Principal,
    info: &AppInfo,
) -> Result<Instance, ApiError> {
    if info.app_name.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "invalid appName: must not be empty".into(),
        ));
    }
    let raw = match (&p.instance, &info.app_instance_id) {
        (Some(own), Some(named)) if own.as_str() != named => {
            return Err(ApiError::BadRequest(
                "invalid appInstanceId: not the calling instance".into(),
            ));
        }
        (Some(own), _) => own.to_string(),
        (None, Some(named)) => named.clone(),
        (None, None) => {
            return Err(ApiError::BadRequest(
                "invalid appInstanceId: required unless an instance registers itself".into(),
            ));
        }
    };
    Ok(instance_for(store, p, &raw).await?.value)
}

pub(crate) async fn register<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    MecBody(mut info): MecBody<AppInfo>,
) -> Result<Response, ApiError> {
    p.require(scopes::MEC_APP_SUPPORT)?;
    let inst = registrant(&st.store, &p, &info).await?;
    info.app_instance_id = Some(inst.id.to_string());
    info.is_ins_by_mec = Some(true);
    st.store
        .put(&MecRegistration {
            instance: inst.id.clone(),
            app_info: info.clone(),
        })
        .await?;
    let path = format!("{APP_SUPPORT_ROOT}/registrations/{}", inst.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, crate::util::location(&headers, &path))],
        Json(wrapped("AppInfo", &info)),
    )
        .into_response())
}

async fn registration<S: Store>(
    store: &Typed<S>,
    id: &InstanceId,
) -> Result<MecRegistration, ApiError> {
    Ok(store
        .get::<MecRegistration>(id.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("instance {id} is not registered")))?
        .value)
}

pub(crate) async fn get_registration<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    p.require(scopes::MEC_APP_SUPPORT)?;
    let inst = instance_for(&st.store, &p, &raw).await?.value;
    let reg = registration(&st.store, &inst.id).await?;
    Ok(Json(wrapped("AppInfo", &reg.app_info)))
}

pub(crate) async fn put_registration<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    MecBody(mut info): MecBody<AppInfo>,
) -> Result<StatusCode, ApiError> {
    p.require(scopes::MEC_APP_SUPPORT)?;
    let inst = instance_for(&st.store, &p, &raw).await?.value;
    if info
        .app_instance_id
        .as_deref()
        .is_some_and(|named| named != inst.id.as_str())
    {
        return Err(ApiError::BadRequest(
            "invalid appInstanceId: differs from the path".into(),
        ));
    }
    if info.app_name.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "invalid appName: must not be empty".into(),
        ));
    }
    registration(&st.store, &inst.id).await?;
    info.app_instance_id = Some(inst.id.to_string());
    info.is_ins_by_mec = Some(true);
    st.store
        .put(&MecRegistration {
            instance: inst.id,
            app_info: info,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn delete_registration<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require(scopes::MEC_APP_SUPPORT)?;
    let inst = instance_for(&st.store, &p, &raw).await?.value;
    registration(&st.store, &inst.id).await?;
    st.store
        .delete::<MecRegistration>(inst.id.as_str(), None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// === readiness and termination ===

/// `AppReadyConfirmation`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AppReadyConfirmation {
    indication: String,
}

impl Wrapped for AppReadyConfirmation {
    const WRAPPER: &'static str = "AppReadyConfirmation";
}

/// An instance's `confirm_ready`, for the process it was running as then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadyConfirmation {
    /// The instance.
    pub instance: InstanceId,
    /// Its process id when it confirmed, if its agent had reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When, seconds since the Unix epoch.
    pub at: u64,
}

impl Resource for ReadyConfirmation {
    const KIND: &'static str = "mecready";
    fn id(&self) -> String {
        self.instance.to_string()
    }
}

/// What the platform records for an instance its agent reports in `reported`, given its
/// app's readiness and its confirmation (IO-free). An app that confirms readiness itself is
/// held at Starting until a confirmation for the reported process exists.
pub fn gated_state(
    reported: InstanceState,
    pid: Option<u32>,
    readiness: Option<&Probe>,
    confirmation: Option<&ReadyConfirmation>,
) -> InstanceState {
    if readiness != Some(&Probe::MecConfirmReady) || reported != InstanceState::Ready {
        return reported;
    }
    let confirmed = confirmation.is_some_and(|c| c.pid.is_none() || pid.is_none() || c.pid == pid);
    if confirmed {
        InstanceState::Ready
    } else {
        InstanceState::Starting
    }
}

/// Applies [`gated_state`] to an agent's report: the state to store, and whether the
/// confirmation on record is stale and goes (the process failed or is another one).
pub(crate) async fn gate_report<S: Store>(
    store: &Typed<S>,
    app: Option<&App>,
    reported: InstanceState,
    id: &InstanceId,
    pid: Option<u32>,
) -> Result<InstanceState, ApiError> {
    let readiness = app.and_then(|a| a.readiness.as_ref());
    if readiness != Some(&Probe::MecConfirmReady) {
        return Ok(reported);
    }
    let conf = store.get::<ReadyConfirmation>(id.as_str()).await?;
    let stale = conf.as_ref().is_some_and(|c| {
        reported == InstanceState::Failed
            || (c.value.pid.is_some() && pid.is_some() && c.value.pid != pid)
    });
    if stale {
        store.delete::<ReadyConfirmation>(id.as_str(), None).await?;
        return Ok(gated_state(reported, pid, readiness, None));
    }
    Ok(gated_state(
        reported,
        pid,
        readiness,
        conf.as_ref().map(|c| &c.value),
    ))
}

/// Drops what the platform keeps for an instance that is gone: its registration, readiness
/// confirmation, rule copies and the services it provides.
pub(crate) async fn forget_instance<S: Store>(
    store: &Typed<S>,
    id: &InstanceId,
) -> Result<(), ApiError> {
    store.delete::<ReadyConfirmation>(id.as_str(), None).await?;
    store.delete::<MecRegistration>(id.as_str(), None).await?;
    store.delete::<InstanceMecRules>(id.as_str(), None).await?;
    super::service_mgmt::forget_provider(store, id).await
}

pub(crate) async fn confirm_ready<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    MecBody(body): MecBody<AppReadyConfirmation>,
) -> Result<StatusCode, ApiError> {
    p.require(scopes::MEC_APP_SUPPORT)?;
    if body.indication != "READY" {
        return Err(ApiError::BadRequest(
            "invalid indication: must be READY".into(),
        ));
    }
    let inst = instance_for(&st.store, &p, &raw).await?;
    st.store
        .put(&ReadyConfirmation {
            instance: inst.value.id.clone(),
            pid: inst.value.pid,
            at: crate::util::now_unix(),
        })
        .await?;
    // A running instance held at Starting for want of this confirmation is Ready now.
    let mut current = inst;
    loop {
        if !matches!(
            current.value.state,
            InstanceState::Pending | InstanceState::Starting
        ) {
            break;
        }
        let mut next = current.value.clone();
        next.state = InstanceState::Ready;
        match st.store.update(&next, current.revision).await {
            Ok(_) => break,
            Err(TypedError::Conflict { .. }) => {
                match st.store.get::<Instance>(next.id.as_str()).await? {
                    Some(c) => current = c,
                    None => break,
                }
            }
            Err(TypedError::NotFound { .. }) => break,
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(instance = %current.value.id, "instance confirmed ready");
    Ok(StatusCode::NO_CONTENT)
}

/// `AppTerminationConfirmation`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AppTerminationConfirmation {
    operation_action: String,
}

impl Wrapped for AppTerminationConfirmation {
    const WRAPPER: &'static str = "AppTerminationConfirmation";
}

pub(crate) async fn confirm_termination<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    MecBody(body): MecBody<AppTerminationConfirmation>,
) -> Result<StatusCode, ApiError> {
    p.require(scopes::MEC_APP_SUPPORT)?;
    if !["STOPPING", "TERMINATING"].contains(&body.operation_action.as_str()) {
        return Err(ApiError::BadRequest(
            "invalid operationAction: must be STOPPING or TERMINATING".into(),
        ));
    }
    let inst = instance_for(&st.store, &p, &raw).await?.value;
    if inst.state != InstanceState::Terminating {
        return Err(ApiError::Conflict(format!(
            "instance {} is not being terminated",
            inst.id
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

// === traffic and DNS rules ===

/// An app's declared traffic and DNS rules (the mecfed extension
/// `/mecfed/v1/apps/{appId}/mec-rules`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppMecRules {
    /// The app (filled in from the path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppId>,
    /// Traffic rules of every instance.
    #[serde(default)]
    pub traffic_rules: Vec<TrafficRule>,
    /// DNS rules of every instance.
    #[serde(default)]
    pub dns_rules: Vec<DnsRule>,
}

impl Resource for AppMecRules {
    const KIND: &'static str = "appmecrules";
    fn id(&self) -> String {
        self.app
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    }
}

impl AppMecRules {
    /// Every rule valid, rule ids unique per kind.
    pub fn validate(&self) -> Result<(), mecfed_core::ValidationError> {
        let mut ids = std::collections::BTreeSet::new();
        for (i, r) in self.traffic_rules.iter().enumerate() {
            let field = format!("trafficRules[{i}]");
            r.validate().map_err(|e| e.within(&field))?;
            if !ids.insert(r.traffic_rule_id.as_str()) {
                return Err(mecfed_core::ValidationError::new(
                    format!("{field}.trafficRuleId"),
                    "repeated",
                ));
            }
        }
        ids.clear();
        for (i, r) in self.dns_rules.iter().enumerate() {
            let field = format!("dnsRules[{i}]");
            r.validate().map_err(|e| e.within(&field))?;
            if !ids.insert(r.dns_rule_id.as_str()) {
                return Err(mecfed_core::ValidationError::new(
                    format!("{field}.dnsRuleId"),
                    "repeated",
                ));
            }
        }
        Ok(())
    }
}

/// One instance's replacements of its app's rules, by rule id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceMecRules {
    /// The instance.
    pub instance: Option<InstanceId>,
    /// Replaced traffic rules.
    #[serde(default)]
    pub traffic: BTreeMap<String, TrafficRule>,
    /// Replaced DNS rules.
    #[serde(default)]
    pub dns: BTreeMap<String, DnsRule>,
}

impl Resource for InstanceMecRules {
    const KIND: &'static str = "instancemecrules";
    fn id(&self) -> String {
        self.instance
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    }
}

/// The rules in force for an instance: its app's, each replaced by the instance's own copy
/// where it has one (IO-free).
pub fn effective_rules(app: &AppMecRules, own: &InstanceMecRules) -> AppMecRules {
    AppMecRules {
        app: app.app.clone(),
        traffic_rules: app
            .traffic_rules
            .iter()
            .map(|r| own.traffic.get(&r.traffic_rule_id).unwrap_or(r).clone())
            .collect(),
        dns_rules: app
            .dns_rules
            .iter()
            .map(|r| own.dns.get(&r.dns_rule_id).unwrap_or(r).clone())
            .collect(),
    }
}

/// The instance's rules in force and its replacements (with their revision, if stored).
async fn rules_of<S: Store>(
    store: &Typed<S>,
    inst: &Instance,
) -> Result<(AppMecRules, InstanceMecRules, Option<u64>), ApiError> {
    let app = store
        .get::<AppMecRules>(inst.app.as_str())
        .await?
        .map(|v| v.value)
        .unwrap_or_default();
    let own = store.get::<InstanceMecRules>(inst.id.as_str()).await?;
    let revision = own.as_ref().map(|v| v.revision);
    let own = own.map(|v| v.value).unwrap_or_else(|| InstanceMecRules {
        instance: Some(inst.id.clone()),
        ..InstanceMecRules::default()
    });
    Ok((effective_rules(&app, &own), own, revision))
}

/// Stores an instance's replacements at `revision` (created when `None`); a concurrent
/// change is a conflict the caller retries.
async fn save_own<S: Store>(
    store: &Typed<S>,
    own: &InstanceMecRules,
    revision: Option<u64>,
) -> Result<bool, ApiError> {
    let r = match revision {
        Some(rev) => store.update(own, rev).await.map(|_| ()),
        None => store.create(own).await.map(|_| ()),
    };
    match r {
        Ok(()) => Ok(true),
        Err(TypedError::Conflict { .. } | TypedError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What the traffic-rule and DNS-rule resources share: where a kind of rule sits in an
/// app's rules and in an instance's replacements, and how it names itself.
pub(crate) trait MecRule:
    Clone + Serialize + serde::de::DeserializeOwned + Wrapped + Send + 'static
{
    /// e.g. `traffic rule`.
    const WHAT: &'static str;
    /// The id field, e.g. `trafficRuleId`.
    const ID_FIELD: &'static str;
    /// The rule's id.
    fn rule_id(&self) -> &str;
    /// Field-by-field checks.
    fn check(&self) -> Result<(), mecfed_core::ValidationError>;
    /// The rules of this kind in force.
    fn of(rules: &AppMecRules) -> &[Self];
    /// An instance's replacements of this kind.
    fn own(own: &mut InstanceMecRules) -> &mut BTreeMap<String, Self>;
}

impl Wrapped for TrafficRule {
    const WRAPPER: &'static str = "TrafficRule";
}

impl MecRule for TrafficRule {
    const WHAT: &'static str = "traffic rule";
    const ID_FIELD: &'static str = "trafficRuleId";
    fn rule_id(&self) -> &str {
        &self.traffic_rule_id
    }
    fn check(&self) -> Result<(), mecfed_core::ValidationError> {
        self.validate()
    }
    fn of(rules: &AppMecRules) -> &[Self] {
        &rules.traffic_rules
    }
    fn own(own: &mut InstanceMecRules) -> &mut BTreeMap<String, Self> {
        &mut own.traffic
    }
}

impl Wrapped for DnsRule {
    const WRAPPER: &'static str = "DnsRule";
}

impl MecRule for DnsRule {
    const WHAT: &'static str = "DNS rule";
    const ID_FIELD: &'static str = "dnsRuleId";
    fn rule_id(&self) -> &str {
        &self.dns_rule_id
    }
    fn check(&self) -> Result<(), mecfed_core::ValidationError> {
        self.validate()
    }
    fn of(rules: &AppMecRules) -> &[Self] {
        &rules.dns_rules
    }
    fn own(own: &mut InstanceMecRules) -> &mut BTreeMap<String, Self> {
        &mut own.dns
    }
}

fn find_rule<'a, R: MecRule>(rules: &'a AppMecRules, id: &str) -> Result<&'a R, ApiError> {
    R::of(rules)
        .iter()
        .find(|r| r.rule_id() == id)
        .ok_or_else(|| ApiError::NotFound(format!("{} {id} not found", R::WHAT)))
}

fn with_etag<T: Serialize>(name: &str, v: &T) -> Response {
    let tag = etag_of(v);
    ([(header::ETAG, etag_header(&tag))], Json(wrapped(name, v))).into_response()
}

/// `GET .../traffic_rules` and `GET .../dns_rules`.
pub(crate) async fn list_rules<R: MecRule, S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<Vec<R>>, ApiError> {
    p.require(scopes::MEC_APP_SUPPORT)?;
    let inst = instance_for(&st.store, &p, &raw).await?.value;
    Ok(Json(R::of(&rules_of(&st.store, &inst).await?.0).to_vec()))
}

/// `GET .../traffic_rules/{id}` and `GET .../dns_rules/{id}`, with the rule's entity tag.
pub(crate) async fn get_rule<R: MecRule, S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path((raw, rule)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    p.require(scopes::MEC_APP_SUPPORT)?;
    let inst = instance_for(&st.store, &p, &raw).await?.value;
    let (rules, _, _) = rules_of(&st.store, &inst).await?;
    Ok(with_etag(R::WRAPPER, find_rule::<R>(&rules, &rule)?))
}

/// `PUT .../traffic_rules/{id}` and `PUT .../dns_rules/{id}`: the instance's own copy of the
/// rule, under `If-Match`.
pub(crate) async fn put_rule<R: MecRule, S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path((raw, rule)): Path<(String, String)>,
    headers: HeaderMap,
    MecBody(body): MecBody<R>,
) -> Result<Response, ApiError> {
    p.require(scopes::MEC_APP_SUPPORT)?;
    let inst = instance_for(&st.store, &p, &raw).await?.value;
    if body.rule_id() != rule {
        return Err(ApiError::BadRequest(format!(
            "invalid {}: differs from the path",
            R::ID_FIELD
        )));
    }
    body.check()?;
    loop {
        let (rules, mut own, revision) = rules_of(&st.store, &inst).await?;
        check_if_match(&headers, &etag_of(find_rule::<R>(&rules, &rule)?))?;
        R::own(&mut own).insert(rule.clone(), body.clone());
        if save_own(&st.store, &own, revision).await? {
            return Ok(with_etag(R::WRAPPER, &body));
        }
    }
}

// === timing ===

fn now_parts() -> (u64, u32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

pub(crate) async fn timing_caps(
    Extension(p): Extension<Principal>,
) -> Result<Json<serde_json::Value>, ApiError> {
    p.require(scopes::MEC_APP_SUPPORT)?;
    let (s, ns) = now_parts();
    // The platform's clock is the host's; it offers no NTP server or PTP master of its own.
    Ok(Json(serde_json::json!({
        "TimingCaps": {
            "timeStamp": [{"seconds": [s], "nanoSeconds": [ns]}],
            "ntpServers": [],
            "ptpMasters": [],
        }
    })))
}

pub(crate) async fn current_time(
    Extension(p): Extension<Principal>,
) -> Result<Json<serde_json::Value>, ApiError> {
    p.require(scopes::MEC_APP_SUPPORT)?;
    let (s, ns) = now_parts();
    Ok(Json(serde_json::json!({
        "CurrentTime": {
            "seconds": s,
            "nanoSeconds": ns,
            // The host clock is not known to be locked to UTC.
            "timeSourceStatus": "NONTRACEABLE",
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceState::*;

    fn conf(pid: Option<u32>) -> ReadyConfirmation {
        ReadyConfirmation {
            instance: InstanceId::new("i-1").unwrap(),
            pid,
            at: 0,
        }
    }

    #[test]
    fn confirming_apps_are_ready_only_when_their_process_confirmed() {
        let gate = Some(&Probe::MecConfirmReady);
        assert_eq!(gated_state(Ready, Some(7), gate, None), Starting);
        assert_eq!(
            gated_state(Ready, Some(7), gate, Some(&conf(Some(7)))),
            Ready
        );
        assert_eq!(
            gated_state(Ready, Some(8), gate, Some(&conf(Some(7)))),
            Starting
        );
        assert_eq!(gated_state(Ready, Some(8), gate, Some(&conf(None))), Ready);
        assert_eq!(
            gated_state(Failed, Some(7), gate, Some(&conf(Some(7)))),
            Failed
        );
        // Other apps: as reported.
        assert_eq!(gated_state(Ready, None, None, None), Ready);
        let tcp = Probe::Tcp { port: "p".into() };
        assert_eq!(gated_state(Ready, None, Some(&tcp), None), Ready);
    }

    #[test]
    fn instance_copies_replace_the_apps_rules_by_id() {
        let rule = |id: &str, state: &str| DnsRule {
            dns_rule_id: id.into(),
            domain_name: "a.example".into(),
            ip_address_type: "IP_V4".into(),
            ip_address: "10.0.0.1".into(),
            ttl: None,
            state: state.into(),
        };
        let app = AppMecRules {
            app: None,
            traffic_rules: vec![],
            dns_rules: vec![rule("a", "ACTIVE"), rule("b", "ACTIVE")],
        };
        let mut own = InstanceMecRules::default();
        own.dns.insert("b".into(), rule("b", "INACTIVE"));
        own.dns.insert("gone".into(), rule("gone", "ACTIVE"));
        let eff = effective_rules(&app, &own);
        let states: Vec<&str> = eff.dns_rules.iter().map(|r| r.state.as_str()).collect();
        assert_eq!(states, ["ACTIVE", "INACTIVE"]);
    }
}
