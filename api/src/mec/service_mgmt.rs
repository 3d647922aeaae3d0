//! MEC 011 3.1.1 service management (`/mec_service_mgmt/v1`): services offered by running
//! instances, their discovery with the query filters of the spec, transports and liveness.
//!
//! An instance registers what it offers (`POST /applications/{appInstanceId}/services`), gets
//! a `serInstanceId` and, when it asks for a `livenessInterval`, a liveness resource the
//! platform allocates (`/mec_service_mgmt/v1/liveness/{serInstanceId}`, in
//! `_links.liveness`; the spec's `/resource_uri_allocated_by_MEC_platform` is that
//! placeholder). A service whose provider misses two intervals of heartbeats is answered as
//! `SUSPENDED` until the next one. Discovery (`GET /services`) lists the services of the
//! caller's own tenant; others' stay unseen. Replacing a service (`PUT`) is guarded by its
//! entity tag (`If-Match`, 412 when stale).

use axum::{
    Extension, Json,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use mecfed_core::{App, AppId, DeveloperId, InstanceId};
use mecfed_store::{
    Store,
    typed::{Resource, Typed},
};
use serde::{Deserialize, Serialize};

use super::{
    MecBody, Wrapped, check_if_match, etag_header, etag_of, instance_for,
    subscriptions::{ServiceChange, service_changed},
};
use crate::{
    ApiError, ApiState,
    auth::{Principal, scopes},
    util::now_unix,
};

/// Path prefix of MEC 011 service management.
pub const SERVICE_MGMT_ROOT: &str = "/mec_service_mgmt/v1";

/// The one transport the platform offers: REST over HTTP/1.1, OAuth 2.0 bearer tokens.
pub const REST_TRANSPORT_ID: &str = "rest-http";

const STATES: &[&str] = &["ACTIVE", "INACTIVE", "SUSPENDED"];
const SERIALIZERS: &[&str] = &["JSON", "XML", "PROTOBUF3"];
const LOCALITIES: &[&str] = &[
    "MEC_SYSTEM",
    "MEC_HOST",
    "NFVI_POP",
    "ZONE",
    "ZONE_GROUP",
    "NFVI_NODE",
];

/// `CategoryRef`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CategoryRef {
    /// Reference of the catalogue.
    pub href: String,
    /// Category id.
    pub id: String,
    /// Category name.
    pub name: String,
    /// Category version.
    pub version: String,
}

/// `ServiceInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceInfo {
    /// Assigned by the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ser_instance_id: Option<String>,
    /// Service name.
    pub ser_name: String,
    /// Category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ser_category: Option<CategoryRef>,
    /// Service version.
    pub version: String,
    /// `ACTIVE`, `INACTIVE` or `SUSPENDED`.
    pub state: String,
    /// A transport the platform offers (`GET /transports`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_id: Option<String>,
    /// The provider's own transport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_info: Option<serde_json::Value>,
    /// `JSON`, `XML` or `PROTOBUF3`.
    pub serializer: String,
    /// Where the service may be consumed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_of_locality: Option<String>,
    /// Only apps on the same host may consume it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed_local_only: Option<bool>,
    /// Runs on the host of the caller (answered by the platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_local: Option<bool>,
    /// Heartbeat interval, seconds; 0 or absent: no liveness tracking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_interval: Option<u32>,
    /// Links (answered by the platform).
    #[serde(rename = "_links", default, skip_serializing_if = "Option::is_none")]
    pub links: Option<serde_json::Value>,
}

impl Wrapped for ServiceInfo {
    const WRAPPER: &'static str = "ServiceInfo";
}

fn one_of(v: &str, allowed: &[&str], field: &str) -> Result<(), ApiError> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid {field}: must be one of {}",
            allowed.join(", ")
        )))
    }
}

impl ServiceInfo {
    fn validate(&self) -> Result<(), ApiError> {
        let bad = |f: &str, why: &str| Err(ApiError::BadRequest(format!("invalid {f}: {why}")));
        if self.ser_name.trim().is_empty() || self.ser_name.len() > 256 {
            return bad("serName", "1 to 256 characters");
        }
        if self.version.trim().is_empty() || self.version.len() > 64 {
            return bad("version", "1 to 64 characters");
        }
        one_of(&self.state, STATES, "state")?;
        one_of(&self.serializer, SERIALIZERS, "serializer")?;
        if let Some(l) = &self.scope_of_locality {
            one_of(l, LOCALITIES, "scopeOfLocality")?;
        }
        match (&self.transport_id, &self.transport_info) {
            (Some(_), Some(_)) => bad("transportId", "give transportId or transportInfo, not both"),
            (None, None) => bad("transportId", "transportId or transportInfo is required"),
            (Some(t), None) if t != REST_TRANSPORT_ID => bad(
                "transportId",
                "not a transport of this platform (GET /transports)",
            ),
            (None, Some(v)) if !v.is_object() => bad("transportInfo", "must be an object"),
            _ => Ok(()),
        }
    }
}

/// A service as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MecService {
    /// `serInstanceId`.
    pub id: String,
    /// The providing instance.
    pub instance: InstanceId,
    /// Its app.
    pub app: AppId,
    /// Its tenant.
    pub developer: DeveloperId,
    /// The service as registered (without the platform's links).
    pub info: ServiceInfo,
    /// Last heartbeat (or registration), seconds since the Unix epoch.
    pub heartbeat_at: u64,
}

impl Resource for MecService {
    const KIND: &'static str = "mecservices";
    fn id(&self) -> String {
        self.id.clone()
    }
}

/// The state a service is answered with at `now`: `SUSPENDED` once its provider missed two
/// heartbeat intervals (IO-free).
pub fn live_state(info: &ServiceInfo, heartbeat_at: u64, now: u64) -> String {
    match info.liveness_interval {
        Some(i) if i > 0 && now.saturating_sub(heartbeat_at) > 2 * u64::from(i) => {
            "SUSPENDED".into()
        }
        _ => info.state.clone(),
    }
}

impl MecService {
    fn answer(&self, caller: Option<&InstanceId>) -> ServiceInfo {
        let mut info = self.info.clone();
        info.ser_instance_id = Some(self.id.clone());
        info.state = live_state(&self.info, self.heartbeat_at, now_unix());
        info.is_local = Some(caller == Some(&self.instance));
        let mut links = serde_json::json!({
            "self": {"href": format!("{SERVICE_MGMT_ROOT}/services/{}", self.id)}
        });
        if self.info.liveness_interval.unwrap_or(0) > 0 {
            links["liveness"] =
                serde_json::json!({"href": format!("{SERVICE_MGMT_ROOT}/liveness/{}", self.id)});
        }
        info.links = Some(links);
        info
    }
}

// === queries ===

/// The query filters of `GET /services`; `ser_instance_id`, `ser_name` and
/// `ser_category_id` exclude each other. Lists are repeated keys or comma-separated.
#[derive(Debug, Default, PartialEq)]
pub struct ServiceFilter {
    ids: Vec<String>,
    names: Vec<String>,
    category: Option<String>,
    locality: Option<String>,
    local_only: Option<bool>,
    is_local: Option<bool>,
}

fn boolean(v: &str, field: &str) -> Result<bool, ApiError> {
    v.parse()
        .map_err(|_| ApiError::BadRequest(format!("invalid {field}: true or false")))
}

impl ServiceFilter {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))?;
        let mut f = Self::default();
        for (k, v) in pairs {
            let list = || v.split(',').map(str::to_string).filter(|s| !s.is_empty());
            match k.as_str() {
                "ser_instance_id" => f.ids.extend(list()),
                "ser_name" => f.names.extend(list()),
                "ser_category_id" => f.category = Some(v),
                "scope_of_locality" => {
                    one_of(&v, LOCALITIES, "scope_of_locality")?;
                    f.locality = Some(v);
                }
                "consumed_local_only" => f.local_only = Some(boolean(&v, &k)?),
                "is_local" => f.is_local = Some(boolean(&v, &k)?),
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "invalid query: unknown parameter {other}"
                    )));
                }
            }
        }
        let exclusive = usize::from(!f.ids.is_empty())
            + usize::from(!f.names.is_empty())
            + usize::from(f.category.is_some());
        if exclusive > 1 {
            return Err(ApiError::BadRequest(
                "invalid query: ser_instance_id, ser_name and ser_category_id exclude each \
                 other"
                    .into(),
            ));
        }
        Ok(f)
    }

    /// Whether `s` (as answered) passes.
    pub fn matches(&self, s: &ServiceInfo) -> bool {
        let id = s.ser_instance_id.as_deref().unwrap_or_default();
        (self.ids.is_empty() || self.ids.iter().any(|i| i == id))
            && (self.names.is_empty() || self.names.contains(&s.ser_name))
            && self
                .category
                .as_ref()
                .is_none_or(|c| s.ser_category.as_ref().is_some_and(|sc| &sc.id == c))
            && self
                .locality
                .as_ref()
                .is_none_or(|l| s.scope_of_locality.as_ref() == Some(l))
            && self
                .local_only
                .is_none_or(|b| s.consumed_local_only.unwrap_or(false) == b)
            && self.is_local.is_none_or(|b| s.is_local == Some(b))
    }
}

// === handlers ===

/// Services the caller may see: its tenant's (the operator: all).
async fn visible<S: Store>(store: &Typed<S>, p: &Principal) -> Result<Vec<MecService>, ApiError> {
    let (all, _) = store.list::<MecService>().await?;
    Ok(all
        .into_iter()
        .map(|v| v.value)
        .filter(|s| p.in_tenant(&s.developer))
        .collect())
}

fn list_answer(services: Vec<MecService>, p: &Principal, f: &ServiceFilter) -> Vec<ServiceInfo> {
    let mut out: Vec<ServiceInfo> = services
        .iter()
        .map(|s| s.answer(p.instance.as_ref()))
        .filter(|s| f.matches(s))
        .collect();
    out.sort_by(|a, b| {
        a.ser_name
            .cmp(&b.ser_name)
            .then_with(|| a.ser_instance_id.cmp(&b.ser_instance_id))
    });
    out
}

pub(crate) async fn list_services<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<ServiceInfo>>, ApiError> {
    p.require(scopes::MEC_SERVICE_MGMT)?;
    let f = ServiceFilter::parse(q.as_deref())?;
    Ok(Json(list_answer(visible(&st.store, &p).await?, &p, &f)))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("service {id} not found"))
}

fn with_etag(s: &ServiceInfo, status: StatusCode) -> Response {
    let tag = etag_of(s);
    (
        status,
        [(header::ETAG, etag_header(&tag))],
        Json(serde_json::json!({ "ServiceInfo": s })),
    )
        .into_response()
}

pub(crate) async fn get_service<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    p.require(scopes::MEC_SERVICE_MGMT)?;
    let s = visible(&st.store, &p)
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| not_found(&id))?;
    Ok(with_etag(&s.answer(p.instance.as_ref()), StatusCode::OK))
}

pub(crate) async fn list_app_services<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<ServiceInfo>>, ApiError> {
    p.require(scopes::MEC_SERVICE_MGMT)?;
    let inst = instance_for(&st.store, &p, &raw).await?.value;
    let f = ServiceFilter::parse(q.as_deref())?;
    let mine = visible(&st.store, &p)
        .await?
        .into_iter()
        .filter(|s| s.instance == inst.id)
        .collect();
    Ok(Json(list_answer(mine, &p, &f)))
}

pub(crate) async fn create_service<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    MecBody(mut info): MecBody<ServiceInfo>,
) -> Result<Response, ApiError> {
    p.require(scopes::MEC_SERVICE_MGMT)?;
    let inst = instance_for(&st.store, &p, &raw).await?.value;
    if info.ser_instance_id.is_some() {
        return Err(ApiError::BadRequest(
            "invalid serInstanceId: assigned by the platform, leave it out".into(),
        ));
    }
    info.validate()?;
    let app = st
        .store
        .get::<App>(inst.app.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("application instance {raw} not found")))?
        .value;
    info.links = None;
    info.is_local = None;
    let svc = MecService {
        id: uuid::Uuid::new_v4().to_string(),
        instance: inst.id.clone(),
        app: app.id,
        developer: app.developer,
        info,
        heartbeat_at: now_unix(),
    };
    st.store.create(&svc).await?;
    service_changed(
        &st.store,
        &svc.developer,
        &svc.answer(None),
        ServiceChange::Added,
    )
    .await?;
    let path = format!(
        "{SERVICE_MGMT_ROOT}/applications/{}/services/{}",
        inst.id, svc.id
    );
    let mut resp = with_etag(&svc.answer(p.instance.as_ref()), StatusCode::CREATED);
    resp.headers_mut().insert(
        header::LOCATION,
        crate::util::location(&headers, &path)
            .parse()
            .map_err(|_| ApiError::BadRequest("invalid Host header".into()))?,
    );
    Ok(resp)
}

async fn provided<S: Store>(
    store: &Typed<S>,
    p: &Principal,
    raw: &str,
    id: &str,
) -> Result<(mecfed_store::typed::Versioned<MecService>, InstanceId), ApiError> {
    let inst = instance_for(store, p, raw).await?.value;
    let svc = store
        .get::<MecService>(id)
        .await?
        .filter(|s| s.value.instance == inst.id)
        .ok_or_else(|| not_found(id))?;
    Ok((svc, inst.id))
}

pub(crate) async fn get_app_service<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path((raw, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    p.require(scopes::MEC_SERVICE_MGMT)?;
    let (svc, _) = provided(&st.store, &p, &raw, &id).await?;
    Ok(with_etag(
        &svc.value.answer(p.instance.as_ref()),
        StatusCode::OK,
    ))
}

pub(crate) async fn put_app_service<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path((raw, id)): Path<(String, String)>,
    headers: HeaderMap,
    MecBody(mut info): MecBody<ServiceInfo>,
) -> Result<Response, ApiError> {
    p.require(scopes::MEC_SERVICE_MGMT)?;
    let (svc, _) = provided(&st.store, &p, &raw, &id).await?;
    check_if_match(&headers, &etag_of(&svc.value.answer(p.instance.as_ref())))?;
    if info.ser_instance_id.as_deref().is_some_and(|s| s != id) {
        return Err(ApiError::BadRequest(
            "invalid serInstanceId: differs from the path".into(),
        ));
    }
    info.validate()?;
    info.ser_instance_id = None;
    info.links = None;
    info.is_local = None;
    let before = svc.value.answer(None);
    let mut next = svc.value;
    next.info = info;
    next.heartbeat_at = now_unix();
    st.store
        .update(&next, svc.revision)
        .await
        .map_err(|e| match e {
            mecfed_store::typed::TypedError::Conflict { .. } => {
                ApiError::PreconditionFailed("the service changed meanwhile; read it again".into())
            }
            e => e.into(),
        })?;
    let after = next.answer(None);
    if let Some(change) = ServiceChange::of_update(&before, &after) {
        service_changed(&st.store, &next.developer, &after, change).await?;
    }
    Ok(with_etag(&next.answer(p.instance.as_ref()), StatusCode::OK))
}

pub(crate) async fn delete_app_service<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path((raw, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    p.require(scopes::MEC_SERVICE_MGMT)?;
    let (svc, _) = provided(&st.store, &p, &raw, &id).await?;
    removed(&st.store, &svc.value).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn transports<S: Store>(
    State(_): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    p.require(scopes::MEC_SERVICE_MGMT)?;
    let token = crate::util::location(&headers, "/oauth2/token");
    Ok(Json(serde_json::json!([{
        "id": REST_TRANSPORT_ID,
        "name": "REST",
        "description": "REST over HTTP/1.1 with OAuth 2.0 bearer tokens",
        "type": "REST_HTTP",
        "protocol": "HTTP",
        "version": "1.1",
        "endpoint": {"uris": [crate::util::location(&headers, "/")]},
        "security": {"oAuth2Info": {
            "grantTypes": "OAUTH2_CLIENT_CREDENTIALS",
            "tokenEndpoint": token
        }}
    }])))
}

/// `ServiceLivenessUpdate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LivenessUpdate {
    state: String,
}

impl Wrapped for LivenessUpdate {
    const WRAPPER: &'static str = "ServiceLivenessUpdate";
}

async fn own_service<S: Store>(
    store: &Typed<S>,
    p: &Principal,
    id: &str,
) -> Result<mecfed_store::typed::Versioned<MecService>, ApiError> {
    let svc = store
        .get::<MecService>(id)
        .await?
        .filter(|s| s.value.info.liveness_interval.unwrap_or(0) > 0)
        .ok_or_else(|| not_found(id))?;
    instance_for(store, p, svc.value.instance.as_str())
        .await
        .map_err(|_| not_found(id))?;
    Ok(svc)
}

pub(crate) async fn get_liveness<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    p.require(scopes::MEC_SERVICE_MGMT)?;
    let svc = own_service(&st.store, &p, &id).await?.value;
    Ok(Json(serde_json::json!({"ServiceLivenessInfo": {
        "state": live_state(&svc.info, svc.heartbeat_at, now_unix()),
        "timeStamp": {"seconds": svc.heartbeat_at, "nanoSeconds": 0},
        "interval": svc.info.liveness_interval.unwrap_or(0),
    }})))
}

pub(crate) async fn patch_liveness<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    MecBody(body): MecBody<LivenessUpdate>,
) -> Result<StatusCode, ApiError> {
    p.require(scopes::MEC_SERVICE_MGMT)?;
    if body.state != "ACTIVE" {
        return Err(ApiError::BadRequest(
            "invalid state: a heartbeat says ACTIVE".into(),
        ));
    }
    let svc = own_service(&st.store, &p, &id).await?;
    let mut next = svc.value;
    next.heartbeat_at = now_unix();
    // A concurrent heartbeat or update moved it: that one counts as well.
    match st.store.update(&next, svc.revision).await {
        Ok(_) | Err(mecfed_store::typed::TypedError::Conflict { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Drops the services `instance` provides (it is gone).
pub(crate) async fn forget_provider<S: Store>(
    store: &Typed<S>,
    instance: &InstanceId,
) -> Result<(), ApiError> {
    let (all, _) = store.list::<MecService>().await?;
    for s in all.into_iter().filter(|s| &s.value.instance == instance) {
        removed(store, &s.value).await?;
    }
    Ok(())
}

/// Deletes a service and tells the subscribers of its tenant.
async fn removed<S: Store>(store: &Typed<S>, svc: &MecService) -> Result<(), ApiError> {
    if store.delete::<MecService>(&svc.id, None).await? {
        service_changed(
            store,
            &svc.developer,
            &svc.answer(None),
            ServiceChange::Removed,
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> ServiceInfo {
        ServiceInfo {
            ser_instance_id: Some(format!("id-{name}")),
            ser_name: name.into(),
            ser_category: None,
            version: "1".into(),
            state: "ACTIVE".into(),
            transport_id: Some(REST_TRANSPORT_ID.into()),
            transport_info: None,
            serializer: "JSON".into(),
            scope_of_locality: Some("MEC_HOST".into()),
            consumed_local_only: Some(true),
            is_local: Some(false),
            liveness_interval: Some(10),
            links: None,
        }
    }

    #[test]
    fn filters_parse_lists_and_refuse_exclusive_pairs() {
        let f = ServiceFilter::parse(Some("ser_name=a,b&ser_name=c&is_local=false")).unwrap();
        assert!(f.matches(&info("b")) && f.matches(&info("c")) && !f.matches(&info("d")));
        let f = ServiceFilter::parse(Some("scope_of_locality=ZONE")).unwrap();
        assert!(!f.matches(&info("a")));
        let f =
            ServiceFilter::parse(Some("consumed_local_only=true&ser_instance_id=id-a")).unwrap();
        assert!(f.matches(&info("a")) && !f.matches(&info("b")));
        for bad in [
            "ser_name=a&ser_instance_id=x",
            "is_local=maybe",
            "scope_of_locality=PLANET",
            "colour=blue",
        ] {
            assert!(ServiceFilter::parse(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            ServiceFilter::parse(None).unwrap(),
            ServiceFilter::default()
        );
    }

    #[test]
    fn services_missing_two_heartbeats_are_suspended() {
        let s = info("a");
        assert_eq!(live_state(&s, 100, 120), "ACTIVE");
        assert_eq!(live_state(&s, 100, 121), "SUSPENDED");
        let mut quiet = s.clone();
        quiet.liveness_interval = None;
        assert_eq!(live_state(&quiet, 0, 1_000_000), "ACTIVE");
    }

    #[test]
    fn services_name_exactly_one_known_transport() {
        info("a").validate().unwrap();
        let mut s = info("a");
        s.transport_id = Some("carrier-pigeon".into());
        assert!(s.validate().is_err());
        s.transport_id = None;
        assert!(s.validate().is_err());
        s.transport_info = Some(serde_json::json!({"id": "own"}));
        s.validate().unwrap();
        s.state = "SEE_DESCRIPTION".into();
        assert!(s.validate().is_err());
    }
}
