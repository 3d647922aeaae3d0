//! CAMARA Edge Application Management: app instances (one zone) and deployments (several
//! zones), handed to the scheduler.
//!
//! An app instance asks for the app to run in one Edge Cloud Zone; a deployment asks for it
//! in several and owns one app instance per zone. Either is stored as a record
//! (`camarainstances/<appInstanceId>`, `camaradeployments/<appDeploymentId>`), and the app's
//! deployed zones ([`App::zones`]) are the union of its app instances' zones: the scheduler
//! places at least one mecfed instance in each of them, more where the app's demand and
//! policy ask, and none elsewhere. A zone holds at most one app instance of an app (409
//! `ALREADY_EXISTS`).
//!
//! What CAMARA reports for an app instance is read from the mecfed instances the scheduler
//! placed in its zone: `ready` once one is Ready (its endpoint is the access point),
//! `instantiating` while they start, `failed` when they fail or the zone has no Ready site,
//! `terminating` while they stop.
//!
//! `kubernetesClusterRef(s)` pins an app instance to Kubernetes sites of its zone
//! ([`App::pins`]): the scheduler then places it on those sites only. A `subscriptionRequest`
//! asks for status-change callbacks, CloudEvents delivered by the subscription engine
//! ([`super::status`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
};
use mecfed_core::{
    App, AppId, Instance, InstanceState, Site, SiteId, SiteKind, SiteStatus, ValidationError,
    ZoneId,
};
use mecfed_store::{
    Compare, Store, Txn, TxnOp,
    typed::{self, KEY_ROOT, Resource, Typed},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    CamaraError, EAM_ROOT,
    eam::{CamaraApp, CamaraJson, ensure, find_app, valid_name},
    ids,
    status::{self, Plan, SubscriptionRequest, Target},
};
use crate::{
    ApiError, ApiState,
    auth::{Principal, scopes},
};

/// Most items a CAMARA list answers (the schemas' `maxItems`).
const MAX_ITEMS: usize = 100;

// === records ===

/// An app instance: the app wanted in one zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CamaraInstance {
    /// `AppInstanceId` (UUID v4).
    pub id: String,
    /// `AppInstanceName`.
    pub name: String,
    /// The app.
    pub app: AppId,
    /// The zone.
    pub zone: ZoneId,
    /// The deployment that owns it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The Kubernetes sites it is pinned to (`kubernetesClusterRef`); empty: any site of
    /// the zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<SiteId>,
    /// Its status-change subscription (`subscriptionRequest`), if it has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
}

impl Resource for CamaraInstance {
    const KIND: &'static str = "camarainstances";
    fn id(&self) -> String {
        self.id.clone()
    }
}

/// A deployment: its zones are those of the app instances it owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CamaraDeployment {
    /// `AppDeploymentId` (UUID v4).
    pub id: String,
    /// `AppDeploymentName`.
    pub name: String,
    /// The app.
    pub app: AppId,
    /// Its status-change subscription (`subscriptionRequest`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
}

impl Resource for CamaraDeployment {
    const KIND: &'static str = "camaradeployments";
    fn id(&self) -> String {
        self.id.clone()
    }
}

// === answers ===

/// `AccessEndpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessEndpoint {
    /// Port.
    pub port: u16,
    /// Host name, when the endpoint is not an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<String>,
    /// IPv4 addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_addresses: Option<Vec<String>>,
    /// IPv6 addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_addresses: Option<Vec<String>>,
}

/// `AppInstanceInfo.componentEndpointInfo[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentEndpoint {
    /// The network interface.
    pub interface_id: String,
    /// Where clients reach it.
    pub access_points: AccessEndpoint,
}

/// `AppInstanceInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppInstanceInfo {
    /// `AppInstanceName`.
    pub name: String,
    /// `AppId`.
    pub app_id: String,
    /// `AppInstanceId`.
    pub app_instance_id: String,
    /// `AppProvider`.
    pub app_provider: String,
    /// `ready`, `instantiating`, `failed`, `terminating` or `unknown`.
    pub status: String,
    /// Where clients reach it, once ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_endpoint_info: Option<Vec<ComponentEndpoint>>,
    /// The cluster running it, when that is a Kubernetes site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_cluster_ref: Option<String>,
    /// `EdgeCloudZoneId`.
    pub edge_cloud_zone_id: String,
}

/// `AppDeploymentInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppDeploymentInfo {
    /// `AppDeploymentName`.
    pub app_deployment_name: String,
    /// `AppDeploymentId`.
    pub app_deployment_id: String,
    /// `AppId`.
    pub app_id: String,
    /// Its zones.
    pub edge_cloud_zones: Vec<String>,
    /// Its app instances.
    pub app_instances: Vec<String>,
}

// === the status of an app instance (IO-free) ===

/// The CAMARA status of an app instance from the states of the mecfed instances in its zone
/// and whether a site of the zone is Ready.
pub fn instance_status(
    states: impl IntoIterator<Item = InstanceState>,
    zone_active: bool,
) -> &'static str {
    let seen: Vec<InstanceState> = states.into_iter().collect();
    let has = |s: InstanceState| seen.contains(&s);
    if has(InstanceState::Ready) {
        "ready"
    } else if has(InstanceState::Pending) || has(InstanceState::Starting) {
        "instantiating"
    } else if has(InstanceState::Failed) || !zone_active {
        "failed"
    } else if has(InstanceState::Terminating) {
        "terminating"
    } else {
        // Wanted, not placed yet: the scheduler's next pass places it.
        "instantiating"
    }
}

/// The access point of an instance endpoint `host:port`.
pub fn access_endpoint(endpoint: &str) -> Option<AccessEndpoint> {
    let addr: Result<std::net::SocketAddr, _> = endpoint.parse();
    if let Ok(a) = addr {
        let ip = a.ip().to_string();
        let v4 = a.is_ipv4();
        return Some(AccessEndpoint {
            port: a.port(),
            fqdn: None,
            ipv4_addresses: v4.then(|| vec![ip.clone()]),
            ipv6_addresses: (!v4).then(|| vec![ip]),
        });
    }
    let (host, port) = endpoint.rsplit_once(':')?;
    Some(AccessEndpoint {
        port: port.parse().ok()?,
        fqdn: (!host.is_empty()).then(|| host.to_string()),
        ipv4_addresses: None,
        ipv6_addresses: None,
    })
    .filter(|a| a.fqdn.is_some())
}

/// What the status of app instances is read from: every site and mecfed instance.
pub(super) struct World {
    sites: HashMap<SiteId, Site>,
    active_zones: BTreeSet<ZoneId>,
    instances: Vec<Instance>,
}

impl World {
    pub(super) async fn load<S: Store>(store: &Typed<S>) -> Result<Self, CamaraError> {
        let sites = crate::sites::sites_with_status(store).await?;
        let active_zones = sites
            .iter()
            .filter(|s| s.status == SiteStatus::Ready)
            .map(|s| s.zone.clone())
            .collect();
        let (instances, _) = store.list::<Instance>().await?;
        Ok(Self {
            sites: sites.into_iter().map(|s| (s.id.clone(), s)).collect(),
            active_zones,
            instances: instances.into_iter().map(|v| v.value).collect(),
        })
    }

    /// The zone with CAMARA id `uuid`.
    fn zone(&self, uuid: Uuid) -> Option<ZoneId> {
        self.sites
            .values()
            .map(|s| &s.zone)
            .find(|z| ids::zone_uuid(z) == uuid)
            .cloned()
    }

    fn region_of(&self, zone: &ZoneId) -> Option<&str> {
        self.sites
            .values()
            .find(|s| &s.zone == zone)
            .map(|s| s.region.as_str())
    }

    /// The Kubernetes site with CAMARA cluster id `uuid`.
    fn cluster(&self, uuid: Uuid) -> Option<&Site> {
        self.sites
            .values()
            .find(|s| s.kind == SiteKind::Kubernetes && ids::cluster_uuid(&s.id) == uuid)
    }

    /// The mecfed instances serving app instance `rec`, by id.
    fn serving(&self, rec: &CamaraInstance) -> Vec<(&Instance, &Site)> {
        let mut here: Vec<(&Instance, &Site)> = self
            .instances
            .iter()
            .filter(|i| i.app == rec.app)
            .filter_map(|i| self.sites.get(&i.site).map(|s| (i, s)))
            .filter(|(_, s)| s.zone == rec.zone)
            .filter(|(_, s)| rec.clusters.is_empty() || rec.clusters.contains(&s.id))
            .collect();
        here.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        here
    }

    /// The CAMARA status of app instance `rec`.
    pub(super) fn status(&self, rec: &CamaraInstance) -> &'static str {
        instance_status(
            self.serving(rec).iter().map(|(i, _)| i.state),
            self.active_zones.contains(&rec.zone),
        )
    }

    fn info(&self, rec: &CamaraInstance, app: &App, provider: &str) -> AppInstanceInfo {
        let here = self.serving(rec);
        let status = self.status(rec);
        let serving = here
            .iter()
            .find(|(i, _)| i.state == InstanceState::Ready)
            .or(here.first());
        let endpoint = serving
            .filter(|(i, _)| i.state == InstanceState::Ready)
            .and_then(|(i, _)| i.endpoint.as_deref())
            .and_then(access_endpoint)
            .zip(app.ports.first())
            .map(|(access_points, port)| {
                vec![ComponentEndpoint {
                    interface_id: port.name.clone(),
                    access_points,
                }]
            });
        let cluster = serving
            .filter(|(_, s)| s.kind == SiteKind::Kubernetes)
            .map(|(_, s)| ids::cluster_uuid(&s.id).to_string());
        AppInstanceInfo {
            name: rec.name.clone(),
            app_id: ids::app_uuid(&rec.app).to_string(),
            app_instance_id: rec.id.clone(),
            app_provider: provider.to_string(),
            status: status.to_string(),
            component_endpoint_info: endpoint,
            kubernetes_cluster_ref: cluster,
            edge_cloud_zone_id: ids::zone_uuid(&rec.zone).to_string(),
        }
    }
}

// === store helpers ===

/// An app's deployed zones and pins as its app instances `records` ask: the union of their
/// zones, and per zone the union of their clusters (IO-free; [`super::zones`] writes it).
pub(crate) fn zones_of<'a>(
    records: impl IntoIterator<Item = &'a CamaraInstance>,
) -> (Vec<ZoneId>, BTreeMap<ZoneId, Vec<SiteId>>) {
    let mut zones: BTreeSet<ZoneId> = BTreeSet::new();
    let mut pins: BTreeMap<ZoneId, Vec<SiteId>> = BTreeMap::new();
    for r in records {
        if !r.clusters.is_empty() {
            pins.entry(r.zone.clone())
                .or_default()
                .extend(r.clusters.iter().cloned());
        }
        zones.insert(r.zone.clone());
    }
    (zones.into_iter().collect(), pins)
}

/// The key reserving zone `zone` for the one app instance of app `app` there:
/// `/mecfed/v1/camarazones/<app>/<zone>`, holding the app instance's id.
pub(crate) fn zone_key(app: &AppId, zone: &ZoneId) -> Vec<u8> {
    format!("{KEY_ROOT}camarazones/{app}/{zone}").into_bytes()
}

/// The key reserving a deployment name within an app:
/// `/mecfed/v1/camaradeploymentnames/<app>/<hex SHA-256 of the name>`.
pub(crate) fn deployment_name_key(app: &AppId, name: &str) -> Vec<u8> {
    let digest = crate::util::sha256_hex(name);
    format!("{KEY_ROOT}camaradeploymentnames/{app}/{digest}").into_bytes()
}

/// The writes of one CAMARA request, committed as one guarded transaction.
#[derive(Default)]
struct Batch {
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
}

impl Batch {
    fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
        serde_json::to_vec(v).map_err(|e| ApiError::Internal(Box::new(e)))
    }

    /// Creates `doc`, which must not exist.
    fn create<R: Resource>(&mut self, doc: &R) -> Result<(), ApiError> {
        let key = typed::key::<R>(&doc.id());
        self.compares.push(Compare::absent(key.clone()));
        self.ops.push(TxnOp::put(key, Self::json(doc)?));
        Ok(())
    }

    /// Replaces `doc`.
    fn put<R: Resource>(&mut self, doc: &R) -> Result<(), ApiError> {
        self.ops
            .push(TxnOp::put(typed::key::<R>(&doc.id()), Self::json(doc)?));
        Ok(())
    }

    /// Deletes document `id` of kind `R`.
    fn delete<R: Resource>(&mut self, id: &str) {
        self.ops.push(TxnOp::Delete(typed::key::<R>(id)));
    }

    /// Takes `key` for `holder`; the batch fails when someone holds it.
    fn reserve(&mut self, key: Vec<u8>, holder: &str) {
        self.compares.push(Compare::absent(key.clone()));
        self.ops.push(TxnOp::put(key, holder));
    }

    /// Gives `key` up.
    fn release(&mut self, key: Vec<u8>) {
        self.ops.push(TxnOp::Delete(key));
    }

    /// Adds a guard and writes made elsewhere.
    fn extend(&mut self, guard: Compare, ops: Vec<TxnOp>) {
        self.compares.push(guard);
        self.ops.extend(ops);
    }

    /// Commits; `false` when a guard failed (nothing was written).
    async fn commit<S: Store>(self, store: &Typed<S>) -> Result<bool, ApiError> {
        let txn = Txn::new().when(self.compares).and_then(self.ops);
        Ok(store.store().txn(txn).await?.succeeded)
    }
}

/// Who holds `key`, if anyone.
async fn holder<S: Store>(store: &Typed<S>, key: &[u8]) -> Result<Option<String>, ApiError> {
    Ok(store
        .store()
        .get(key)
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// Deletes every app instance and deployment of `app` (the app itself is being deleted).
pub(crate) async fn forget_app<S: Store>(store: &Typed<S>, app: &AppId) -> Result<(), ApiError> {
    let (records, _) = store.list::<CamaraInstance>().await?;
    for r in records.into_iter().filter(|r| &r.value.app == app) {
        store.delete::<CamaraInstance>(&r.value.id, None).await?;
    }
    let (deployments, _) = store.list::<CamaraDeployment>().await?;
    for d in deployments.into_iter().filter(|d| &d.value.app == app) {
        store.delete::<CamaraDeployment>(&d.value.id, None).await?;
    }
    Ok(())
}

async fn records_of<S: Store>(
    store: &Typed<S>,
    app: &AppId,
) -> Result<Vec<CamaraInstance>, CamaraError> {
    let (all, _) = store.list::<CamaraInstance>().await?;
    let mut v: Vec<CamaraInstance> = all
        .into_iter()
        .map(|r| r.value)
        .filter(|r| &r.app == app)
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    Ok(v)
}

fn name_field(field: &str, name: &str) -> Result<(), ValidationError> {
    ensure(
        valid_name(name),
        field,
        "must match ^[A-Za-z][A-Za-z0-9_]{1,63}$",
    )
}

fn zone_not_found(raw: &str) -> CamaraError {
    ApiError::NotFound(format!("edge cloud zone {raw} not found")).into()
}

fn query<T>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, CamaraError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::BadRequest(e.body_text()).into())
}

// === app instances ===

/// The body of `POST /appinstances`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateInstance {
    name: String,
    app_id: String,
    edge_cloud_zone_id: String,
    #[serde(default)]
    kubernetes_cluster_ref: Option<String>,
    #[serde(default)]
    subscription_request: Option<SubscriptionRequest>,
}

/// The Kubernetes sites named by `refs` (field `field`), each in one of `zones`.
fn resolve_clusters(
    world: &World,
    refs: &[String],
    zones: &[ZoneId],
    field: &str,
) -> Result<Vec<(ZoneId, SiteId)>, CamaraError> {
    ensure(refs.len() <= MAX_ITEMS, field, "at most 100 clusters")?;
    let mut out: Vec<(ZoneId, SiteId)> = Vec::with_capacity(refs.len());
    for (i, raw) in refs.iter().enumerate() {
        let at = if refs.len() == 1 && !field.ends_with('s') {
            field.to_string()
        } else {
            format!("{field}[{i}]")
        };
        let u = ids::parse(&at, raw)?;
        let site = world.cluster(u).ok_or_else(|| {
            CamaraError::from(ApiError::NotFound(format!(
                "kubernetes cluster {raw} not found"
            )))
        })?;
        ensure(
            zones.contains(&site.zone),
            &at,
            "is a cluster of another edge cloud zone",
        )?;
        ensure(!out.iter().any(|(_, s)| s == &site.id), &at, "repeated")?;
        out.push((site.zone.clone(), site.id.clone()));
    }
    Ok(out)
}

/// The clusters of `pins` in `zone`.
fn clusters_in(pins: &[(ZoneId, SiteId)], zone: &ZoneId) -> Vec<SiteId> {
    pins.iter()
        .filter(|(z, _)| z == zone)
        .map(|(_, s)| s.clone())
        .collect()
}

/// Checks a `subscriptionRequest` before anything is stored.
fn plan(req: Option<&SubscriptionRequest>, target: Target) -> Result<Option<Plan>, CamaraError> {
    Ok(req
        .map(|r| r.check(target, crate::util::now_unix()))
        .transpose()?)
}

pub(crate) async fn create_instance<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    CamaraJson(body): CamaraJson<CreateInstance>,
) -> Result<impl IntoResponse, CamaraError> {
    p.require(scopes::EAM_INSTANCES_WRITE)?;
    name_field("name", &body.name)?;
    ids::parse("appId", &body.app_id)?;
    let zone_uuid = ids::parse("edgeCloudZoneId", &body.edge_cloud_zone_id)?;
    let plan = plan(body.subscription_request.as_ref(), Target::Instance)?;
    let (app, camara) = find_app(&st.store, &p, &body.app_id).await?;
    let world = World::load(&st.store).await?;
    let zone = world
        .zone(zone_uuid)
        .ok_or_else(|| zone_not_found(&body.edge_cloud_zone_id))?;
    let pins = resolve_clusters(
        &world,
        body.kubernetes_cluster_ref.as_slice(),
        std::slice::from_ref(&zone),
        "kubernetesClusterRef",
    )?;
    let taken = || {
        CamaraError::coded(
            ApiError::Conflict(format!(
                "application already instantiated in edge cloud zone {}",
                body.edge_cloud_zone_id
            )),
            "ALREADY_EXISTS",
        )
    };
    let rec = CamaraInstance {
        id: Uuid::new_v4().to_string(),
        name: body.name,
        app: app.id.clone(),
        clusters: clusters_in(&pins, &zone),
        zone,
        deployment: None,
        subscription: plan.as_ref().map(|_| Uuid::new_v4().to_string()),
    };
    // The record, its zone's reservation and its subscription with the initial event are
    // one write; the app's zones follow from the records ([`super::zones`]).
    let mut batch = Batch::default();
    batch.reserve(zone_key(&app.id, &rec.zone), &rec.id);
    batch.create(&rec)?;
    if let (Some(plan), Some(req), Some(sub)) = (
        plan,
        body.subscription_request.as_ref(),
        rec.subscription.as_deref(),
    ) {
        let now = status::members(
            &world,
            Target::Instance,
            &rec.id,
            std::slice::from_ref(&rec),
            &[],
        )
        .unwrap_or_default();
        let (guard, ops) =
            status::subscription_ops(&p, sub, Target::Instance, &rec.id, req, plan, &now)?;
        batch.extend(guard, ops);
    }
    if !batch.commit(&st.store).await? {
        return Err(taken());
    }
    let path = format!("{EAM_ROOT}/appinstances/{}", rec.id);
    let info = world.info(&rec, &app, &camara.manifest.app_provider);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, crate::util::location(&headers, &path))],
        Json(info),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct InstanceQuery {
    app_id: Option<String>,
    app_instance_id: Option<String>,
    region: Option<String>,
}

/// The caller's apps with their providers, by app id.
async fn visible<S: Store>(
    store: &Typed<S>,
    p: &Principal,
) -> Result<BTreeMap<AppId, (App, String)>, CamaraError> {
    Ok(super::eam::visible_apps(store, p)
        .await?
        .into_iter()
        .map(|(a, c): (App, CamaraApp)| (a.id.clone(), (a, c.manifest.app_provider)))
        .collect())
}

pub(crate) async fn list_instances<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    q: Result<Query<InstanceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AppInstanceInfo>>, CamaraError> {
    p.require(scopes::EAM_INSTANCES_READ)?;
    let q = query(q)?;
    let app = q
        .app_id
        .as_deref()
        .map(|a| ids::parse("appId", a))
        .transpose()?;
    let inst = q
        .app_instance_id
        .as_deref()
        .map(|a| ids::parse("appInstanceId", a))
        .transpose()?;
    if let Some(r) = &q.region {
        ensure(r.len() <= 64, "region", "at most 64 characters")?;
    }
    let apps = visible(&st.store, &p).await?;
    let world = World::load(&st.store).await?;
    let (records, _) = st.store.list::<CamaraInstance>().await?;
    let mut out: Vec<AppInstanceInfo> = records
        .into_iter()
        .map(|r| r.value)
        .filter(|r| app.is_none_or(|a| ids::app_uuid(&r.app) == a))
        .filter(|r| inst.is_none_or(|i| r.id == i.to_string()))
        .filter(|r| {
            q.region
                .as_deref()
                .is_none_or(|want| world.region_of(&r.zone) == Some(want))
        })
        .filter_map(|r| {
            let (a, provider) = apps.get(&r.app)?;
            Some(world.info(&r, a, provider))
        })
        .collect();
    out.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then_with(|| a.app_instance_id.cmp(&b.app_instance_id))
    });
    out.truncate(MAX_ITEMS);
    Ok(Json(out))
}

/// The caller's app instance with id `raw`; 404 for others' too.
async fn find_instance<S: Store>(
    store: &Typed<S>,
    p: &Principal,
    raw: &str,
) -> Result<CamaraInstance, CamaraError> {
    ids::parse("appInstanceId", raw)?;
    let not_found = || ApiError::NotFound(format!("app instance {raw} not found"));
    let rec = store
        .get::<CamaraInstance>(raw)
        .await?
        .ok_or_else(not_found)?
        .value;
    if !sees_app(store, p, &rec.app).await? {
        return Err(not_found().into());
    }
    Ok(rec)
}

pub(crate) async fn delete_instance<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<StatusCode, CamaraError> {
    p.require(scopes::EAM_INSTANCES_DELETE)?;
    let rec = find_instance(&st.store, &p, &raw).await?;
    let mut batch = Batch::default();
    batch.delete::<CamaraInstance>(&rec.id);
    batch.release(zone_key(&rec.app, &rec.zone));
    batch.commit(&st.store).await?;
    // The status reporter ends the subscription of a deleted target by itself; this only
    // tells it sooner.
    if let Some(sub) = &rec.subscription {
        status::target_deleted(&st.store, sub).await?;
    }
    Ok(StatusCode::ACCEPTED)
}

// === deployments ===

/// The body of `POST /deployments`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateDeployment {
    app_deployment_name: String,
    app_id: String,
    edge_cloud_zones: Vec<String>,
    #[serde(default)]
    kubernetes_cluster_refs: Option<Vec<String>>,
    #[serde(default)]
    subscription_request: Option<SubscriptionRequest>,
}

/// Parses and resolves a deployment's zone list: UUIDs, no repeats, at most 100, all known.
fn resolve_zones(world: &World, raw: &[String]) -> Result<Vec<ZoneId>, CamaraError> {
    ensure(
        raw.len() <= MAX_ITEMS,
        "edgeCloudZones",
        "at most 100 zones",
    )?;
    let mut seen = BTreeSet::new();
    let mut zones = Vec::with_capacity(raw.len());
    for (i, z) in raw.iter().enumerate() {
        let u = ids::parse(&format!("edgeCloudZones[{i}]"), z)?;
        ensure(seen.insert(u), &format!("edgeCloudZones[{i}]"), "repeated")?;
        zones.push(world.zone(u).ok_or_else(|| zone_not_found(z))?);
    }
    Ok(zones)
}

/// The name of the `n`th app instance of deployment `name` (within the 64 characters).
fn member_name(name: &str, n: usize) -> String {
    let suffix = format!("_{n}");
    let keep = 64 - suffix.len();
    format!("{}{suffix}", &name[..name.len().min(keep)])
}

fn member_number(name: &str) -> u64 {
    name.rsplit_once('_')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(u64::MAX)
}

fn deployment_info(d: &CamaraDeployment, records: &[CamaraInstance]) -> AppDeploymentInfo {
    let mut mine: Vec<&CamaraInstance> = records
        .iter()
        .filter(|r| r.deployment.as_deref() == Some(d.id.as_str()))
        .collect();
    // In the order they were asked for (members are numbered in that order).
    mine.sort_by_key(|r| member_number(&r.name));
    AppDeploymentInfo {
        app_deployment_name: d.name.clone(),
        app_deployment_id: d.id.clone(),
        app_id: ids::app_uuid(&d.app).to_string(),
        edge_cloud_zones: mine
            .iter()
            .map(|r| ids::zone_uuid(&r.zone).to_string())
            .collect(),
        app_instances: mine.iter().map(|r| r.id.clone()).collect(),
    }
}

/// Adds to `batch` the app instances of deployment `d` for `zones` (each zone reserved),
/// numbered after `first`, pinned to the clusters of `pins` in their zone; returns them.
fn add_members(
    batch: &mut Batch,
    d: &CamaraDeployment,
    zones: &[ZoneId],
    pins: &[(ZoneId, SiteId)],
    first: usize,
) -> Result<Vec<CamaraInstance>, ApiError> {
    let mut out = Vec::with_capacity(zones.len());
    for (i, zone) in zones.iter().enumerate() {
        let r = CamaraInstance {
            id: Uuid::new_v4().to_string(),
            name: member_name(&d.name, first + i + 1),
            app: d.app.clone(),
            zone: zone.clone(),
            deployment: Some(d.id.clone()),
            clusters: clusters_in(pins, zone),
            subscription: None,
        };
        batch.reserve(zone_key(&d.app, zone), &r.id);
        batch.create(&r)?;
        out.push(r);
    }
    Ok(out)
}

/// The first of `zones` whose reservation for app `app` someone other than `own` (a
/// deployment's members) holds.
async fn zone_taken<'a, S: Store>(
    store: &Typed<S>,
    app: &AppId,
    zones: &'a [ZoneId],
    own: &[&CamaraInstance],
) -> Result<Option<&'a ZoneId>, ApiError> {
    for z in zones {
        if let Some(h) = holder(store, &zone_key(app, z)).await?
            && !own.iter().any(|r| r.id == h)
        {
            return Ok(Some(z));
        }
    }
    Ok(None)
}

pub(crate) async fn create_deployment<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    CamaraJson(body): CamaraJson<CreateDeployment>,
) -> Result<impl IntoResponse, CamaraError> {
    p.require(scopes::EAM_DEPLOYMENTS_WRITE)?;
    name_field("appDeploymentName", &body.app_deployment_name)?;
    ids::parse("appId", &body.app_id)?;
    let plan = plan(body.subscription_request.as_ref(), Target::Deployment)?;
    let world = World::load(&st.store).await?;
    let zones = resolve_zones(&world, &body.edge_cloud_zones)?;
    let pins = resolve_clusters(
        &world,
        body.kubernetes_cluster_refs.as_deref().unwrap_or_default(),
        &zones,
        "kubernetesClusterRefs",
    )?;
    let (app, _) = find_app(&st.store, &p, &body.app_id).await?;
    let d = CamaraDeployment {
        id: Uuid::new_v4().to_string(),
        name: body.app_deployment_name,
        app: app.id.clone(),
        subscription: plan.as_ref().map(|_| Uuid::new_v4().to_string()),
    };
    // The deployment, its name's and zones' reservations, its members and its subscription
    // with the initial event are one write.
    let mut batch = Batch::default();
    batch.reserve(deployment_name_key(&app.id, &d.name), &d.id);
    batch.create(&d)?;
    let members = add_members(&mut batch, &d, &zones, &pins, 0)?;
    if let (Some(plan), Some(req), Some(sub)) = (
        plan,
        body.subscription_request.as_ref(),
        d.subscription.as_deref(),
    ) {
        let now = status::members(
            &world,
            Target::Deployment,
            &d.id,
            &members,
            std::slice::from_ref(&d),
        )
        .unwrap_or_default();
        let (guard, ops) =
            status::subscription_ops(&p, sub, Target::Deployment, &d.id, req, plan, &now)?;
        batch.extend(guard, ops);
    }
    if !batch.commit(&st.store).await? {
        if holder(&st.store, &deployment_name_key(&app.id, &d.name))
            .await?
            .is_some()
        {
            return Err(CamaraError::coded(
                ApiError::Conflict(format!("deployment {} already exists", d.name)),
                "ALREADY_EXISTS",
            ));
        }
        let z = zone_taken(&st.store, &app.id, &zones, &[])
            .await?
            .map_or_else(String::new, |z| ids::zone_uuid(z).to_string());
        return Err(CamaraError::coded(
            ApiError::Conflict(format!(
                "application already instantiated in edge cloud zone {z}"
            )),
            "ALREADY_EXISTS",
        ));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "appDeploymentId": d.id })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DeploymentQuery {
    app_id: Option<String>,
    app_deployment_id: Option<String>,
}

pub(crate) async fn list_deployments<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    q: Result<Query<DeploymentQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AppDeploymentInfo>>, CamaraError> {
    p.require(scopes::EAM_DEPLOYMENTS_READ)?;
    let q = query(q)?;
    let app = q
        .app_id
        .as_deref()
        .map(|a| ids::parse("appId", a))
        .transpose()?;
    let dep = q
        .app_deployment_id
        .as_deref()
        .map(|d| ids::parse("appDeploymentId", d))
        .transpose()?;
    let apps = visible(&st.store, &p).await?;
    let (deployments, _) = st.store.list::<CamaraDeployment>().await?;
    let (records, _) = st.store.list::<CamaraInstance>().await?;
    let records: Vec<CamaraInstance> = records.into_iter().map(|r| r.value).collect();
    let mut out: Vec<AppDeploymentInfo> = deployments
        .into_iter()
        .map(|d| d.value)
        .filter(|d| apps.contains_key(&d.app))
        .filter(|d| app.is_none_or(|a| ids::app_uuid(&d.app) == a))
        .filter(|d| dep.is_none_or(|want| d.id == want.to_string()))
        .map(|d| deployment_info(&d, &records))
        .collect();
    out.sort_by(|a, b| {
        a.app_deployment_name
            .cmp(&b.app_deployment_name)
            .then_with(|| a.app_deployment_id.cmp(&b.app_deployment_id))
    });
    out.truncate(MAX_ITEMS);
    Ok(Json(out))
}

/// The caller's deployment with id `raw`; 404 for others' too.
async fn find_deployment<S: Store>(
    store: &Typed<S>,
    p: &Principal,
    raw: &str,
) -> Result<CamaraDeployment, CamaraError> {
    Ok(find_deployment_versioned(store, p, raw).await?.0)
}

/// [`find_deployment`] with the record's revision.
async fn find_deployment_versioned<S: Store>(
    store: &Typed<S>,
    p: &Principal,
    raw: &str,
) -> Result<(CamaraDeployment, mecfed_store::Revision), CamaraError> {
    ids::parse("appDeploymentId", raw)?;
    let not_found = || ApiError::NotFound(format!("deployment {raw} not found"));
    let d = store
        .get::<CamaraDeployment>(raw)
        .await?
        .ok_or_else(not_found)?;
    if !sees_app(store, p, &d.value.app).await? {
        return Err(not_found().into());
    }
    Ok((d.value, d.revision))
}

/// Whether `p` may see CAMARA app `app`: two reads, whatever the number of apps.
async fn sees_app<S: Store>(
    store: &Typed<S>,
    p: &Principal,
    app: &AppId,
) -> Result<bool, CamaraError> {
    let Some(a) = store.get::<App>(app.as_str()).await? else {
        return Ok(false);
    };
    Ok(p.owns(&a.value.developer, &a.value.id)
        && store.get::<CamaraApp>(app.as_str()).await?.is_some())
}

pub(crate) async fn delete_deployment<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<StatusCode, CamaraError> {
    p.require(scopes::EAM_DEPLOYMENTS_DELETE)?;
    let d = find_deployment(&st.store, &p, &raw).await?;
    let mut batch = Batch::default();
    for r in records_of(&st.store, &d.app).await? {
        if r.deployment.as_deref() == Some(d.id.as_str()) {
            batch.delete::<CamaraInstance>(&r.id);
            batch.release(zone_key(&d.app, &r.zone));
        }
    }
    batch.delete::<CamaraDeployment>(&d.id);
    batch.release(deployment_name_key(&d.app, &d.name));
    batch.commit(&st.store).await?;
    // The status reporter ends the subscription of a deleted target by itself; this only
    // tells it sooner.
    if let Some(sub) = &d.subscription {
        status::target_deleted(&st.store, sub).await?;
    }
    Ok(StatusCode::ACCEPTED)
}

/// The merge patch of `PATCH /deployments/{id}` (RFC 7396): a field given replaces, `null`
/// would remove, which no field of a deployment allows.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DeploymentPatch {
    #[serde(default, deserialize_with = "present")]
    app_deployment_name: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    edge_cloud_zones: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    kubernetes_cluster_refs: Option<serde_json::Value>,
}

/// Keeps an explicit `null` as `Some(Value::Null)` (serde would make it `None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

fn is_merge_patch(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/merge-patch+json")
        })
}

pub(crate) async fn patch_deployment<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<AppDeploymentInfo>, CamaraError> {
    p.require(scopes::EAM_DEPLOYMENTS_UPDATE)?;
    if !is_merge_patch(&headers) {
        return Err(ApiError::Rejected(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be application/merge-patch+json".into(),
        )
        .into());
    }
    let patch: DeploymentPatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid merge patch: {e}")))?;
    let (mut d, revision) = find_deployment_versioned(&st.store, &p, &raw).await?;
    let name = match patch.app_deployment_name {
        None => None,
        Some(serde_json::Value::String(n)) => {
            name_field("appDeploymentName", &n)?;
            Some(n)
        }
        Some(_) => {
            return Err(ValidationError::new("appDeploymentName", "must be a string").into());
        }
    };
    let world = World::load(&st.store).await?;
    let zones = match patch.edge_cloud_zones {
        None => None,
        Some(v) => {
            let raw: Vec<String> = serde_json::from_value(v).map_err(|_| {
                ValidationError::new("edgeCloudZones", "must be an array of zone ids")
            })?;
            Some(resolve_zones(&world, &raw)?)
        }
    };
    let records = records_of(&st.store, &d.app).await?;
    let mine: Vec<&CamaraInstance> = records
        .iter()
        .filter(|r| r.deployment.as_deref() == Some(d.id.as_str()))
        .collect();
    // The pins after the patch: the new list against the zones after the patch; `null`
    // removes every pin; left out, each member keeps its own.
    let pins: Option<Vec<(ZoneId, SiteId)>> = match patch.kubernetes_cluster_refs {
        None => None,
        Some(serde_json::Value::Null) => Some(Vec::new()),
        Some(v) => {
            let raw: Vec<String> = serde_json::from_value(v).map_err(|_| {
                ValidationError::new("kubernetesClusterRefs", "must be an array of cluster ids")
            })?;
            let zones_after: Vec<ZoneId> = zones
                .clone()
                .unwrap_or_else(|| mine.iter().map(|r| r.zone.clone()).collect());
            Some(resolve_clusters(
                &world,
                &raw,
                &zones_after,
                "kubernetesClusterRefs",
            )?)
        }
    };
    // The whole patch is one write guarded by the deployment as read: the name's and the
    // zones' reservations move with it.
    let mut batch = Batch::default();
    batch.compares.push(Compare::mod_revision(
        typed::key::<CamaraDeployment>(&d.id),
        revision,
    ));
    let old_name = d.name.clone();
    if let Some(n) = name.filter(|n| *n != d.name) {
        batch.release(deployment_name_key(&d.app, &d.name));
        batch.reserve(deployment_name_key(&d.app, &n), &d.id);
        d.name = n;
        batch.put(&d)?;
    }
    let kept: Vec<&CamaraInstance> = mine
        .iter()
        .copied()
        .filter(|r| zones.as_ref().is_none_or(|z| z.contains(&r.zone)))
        .collect();
    let mut new_zones = Vec::new();
    if let Some(zones) = &zones {
        for r in &mine {
            if !zones.contains(&r.zone) {
                batch.delete::<CamaraInstance>(&r.id);
                batch.release(zone_key(&d.app, &r.zone));
            }
        }
        new_zones = zones
            .iter()
            .filter(|z| !mine.iter().any(|r| &r.zone == *z))
            .cloned()
            .collect();
        add_members(
            &mut batch,
            &d,
            &new_zones,
            pins.as_deref().unwrap_or_default(),
            mine.len(),
        )?;
    }
    if let Some(pins) = &pins {
        for r in kept {
            let clusters = clusters_in(pins, &r.zone);
            if clusters != r.clusters {
                let mut next = r.clone();
                next.clusters = clusters;
                batch.put(&next)?;
            }
        }
    }
    if !batch.commit(&st.store).await? {
        if d.name != old_name
            && holder(&st.store, &deployment_name_key(&d.app, &d.name))
                .await?
                .is_some_and(|h| h != d.id)
        {
            return Err(CamaraError::coded(
                ApiError::Conflict(format!("deployment {} already exists", d.name)),
                "ABORTED",
            ));
        }
        if let Some(z) = zone_taken(&st.store, &d.app, &new_zones, &mine).await? {
            return Err(CamaraError::coded(
                ApiError::Conflict(format!(
                    "edge cloud zone {} already has an instance of the application outside \
                     this deployment",
                    ids::zone_uuid(z)
                )),
                "ABORTED",
            ));
        }
        return Err(CamaraError::coded(
            ApiError::Conflict("the deployment changed meanwhile; read it again".into()),
            "ABORTED",
        ));
    }
    let (records, _) = st.store.list::<CamaraInstance>().await?;
    let records: Vec<CamaraInstance> = records.into_iter().map(|r| r.value).collect();
    Ok(Json(deployment_info(&d, &records)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceState::*;

    #[test]
    fn status_prefers_ready_then_starting_then_failure() {
        assert_eq!(instance_status([Failed, Ready], true), "ready");
        assert_eq!(instance_status([Pending, Failed], true), "instantiating");
        assert_eq!(instance_status([Starting], false), "instantiating");
        assert_eq!(instance_status([Failed], true), "failed");
        assert_eq!(instance_status([], false), "failed");
        assert_eq!(instance_status([Terminating], true), "terminating");
        assert_eq!(instance_status([], true), "instantiating");
    }

    #[test]
    fn endpoints_become_access_points() {
        let a = access_endpoint("10.0.0.7:4000").unwrap();
        assert_eq!(a.port, 4000);
        assert_eq!(a.ipv4_addresses, Some(vec!["10.0.0.7".to_string()]));
        assert!(a.fqdn.is_none() && a.ipv6_addresses.is_none());
        let a = access_endpoint("[fd00::1]:53").unwrap();
        assert_eq!(a.ipv6_addresses, Some(vec!["fd00::1".to_string()]));
        let a = access_endpoint("arena.edge.example:443").unwrap();
        assert_eq!(a.fqdn.as_deref(), Some("arena.edge.example"));
        assert!(access_endpoint("nohost").is_none());
        assert!(access_endpoint(":80").is_none());
        assert!(access_endpoint("h:99999").is_none());
    }

    #[test]
    fn member_names_stay_valid_names() {
        assert_eq!(member_name("prod", 3), "prod_3");
        let long = format!("a{}", "b".repeat(63));
        let n = member_name(&long, 12);
        assert_eq!(n.len(), 64);
        assert!(valid_name(&n) && n.ends_with("_12"));
    }

    #[test]
    fn an_apps_zones_and_pins_are_the_union_of_its_app_instances() {
        let z = |s: &str| ZoneId::new(s).unwrap();
        let rec = |zone: &str, clusters: &[&str]| CamaraInstance {
            id: Uuid::new_v4().to_string(),
            name: "x".into(),
            app: AppId::new("a1").unwrap(),
            zone: z(zone),
            deployment: None,
            clusters: clusters.iter().map(|c| SiteId::new(*c).unwrap()).collect(),
            subscription: None,
        };
        let records = [rec("z2", &[]), rec("z1", &["k1"]), rec("z1", &["k2"])];
        let (zones, pins) = zones_of(&records);
        assert_eq!(zones, [z("z1"), z("z2")]);
        assert_eq!(
            pins,
            BTreeMap::from([(
                z("z1"),
                vec![SiteId::new("k1").unwrap(), SiteId::new("k2").unwrap()]
            )])
        );
        assert_eq!(zones_of(&[]), (Vec::new(), BTreeMap::new()));
    }
}
