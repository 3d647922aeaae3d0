//! Apps and their placement, mecfed's own API beside CAMARA's: the whole app document
//! (`PUT /mecfed/v1/apps/{appId}`), and the documented extensions that attach what CAMARA's
//! `AppManifest` has no place for to any app, CAMARA-submitted ones included:
//! - `PUT /mecfed/v1/apps/{appId}/qos`: latency budget, demand areas, sessions per instance;
//! - `PUT /mecfed/v1/apps/{appId}/policy`: the placement policy (affinity, spread, failover);
//! - `PUT /mecfed/v1/apps/{appId}/runtime`: a process's arguments and environment, readiness
//!   and load probes;
//! - `PUT /mecfed/v1/apps/{appId}/mec-rules`: the ETSI MEC 011 traffic and DNS rules of its
//!   instances;
//!
//! plus the scheduler's placements, schedule and per-site explanation. The operator sees every
//! app; a developer (scope `mecfed:apps`) only its own, and others' answer 404.

use std::collections::BTreeMap;

use axum::{
    Extension, Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::IntoResponse,
};
use mecfed_core::{App, AppId, AppQos, Artefact, LoadProbe, Placement, PlacementPolicy, Probe};
use mecfed_scheduler::{
    AppPolicy, AppSchedule, Explanation, Scheduler, World, autoscale::with_demand,
    controller::unix_now, explain,
};
use mecfed_store::{Store, typed::Versioned};
use serde::{Deserialize, Serialize};

use crate::{
    ApiError, ApiState,
    auth::{Principal, scopes},
    mec::app_support::AppMecRules,
    sites::JsonBody,
};

fn app_id(raw: &str) -> Result<AppId, ApiError> {
    Ok(AppId::new(raw)?)
}

/// The operator's scope or the developer extension's.
fn require_apps(p: &Principal) -> Result<(), ApiError> {
    if p.has(scopes::ADMIN) {
        return Ok(());
    }
    p.require(scopes::APPS)
}

/// App `raw` if the caller may see it; 404 otherwise, whether or not it exists.
async fn visible_app<S: Store>(
    st: &ApiState<S>,
    p: &Principal,
    raw: &str,
) -> Result<Versioned<App>, ApiError> {
    require_apps(p)?;
    let id = app_id(raw)?;
    st.store
        .get::<App>(id.as_str())
        .await?
        .filter(|a| p.owns(&a.value.developer, &a.value.id))
        .ok_or_else(|| ApiError::NotFound(format!("app {id} not found")))
}

pub(crate) async fn put_app<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    JsonBody(app): JsonBody<App>,
) -> Result<impl IntoResponse, ApiError> {
    require_apps(&p)?;
    let id = app_id(&raw)?;
    if app.id != id {
        return Err(ApiError::BadRequest(format!(
            "invalid id: body says {:?}, path says {:?}",
            app.id.as_str(),
            id.as_str()
        )));
    }
    if !p.owns(&app.developer, &app.id) {
        return Err(ApiError::Forbidden(
            "developer is not consistent with the access token".into(),
        ));
    }
    app.validate()?;
    let current = st.store.get::<App>(id.as_str()).await?;
    if let Some(c) = &current
        && !p.owns(&c.value.developer, &c.value.id)
    {
        // Another tenant's: as if it did not exist, and untouched.
        return Err(ApiError::NotFound(format!("app {id} not found")));
    }
    let existed = current.is_some();
    let mut app = app;
    if let Some(c) = &current
        && st
            .store
            .get::<crate::camara::eam::CamaraApp>(id.as_str())
            .await?
            .is_some()
    {
        // A CAMARA app's deployed zones and pins are its app instances' (camara::lifecycle).
        app.zones = c.value.zones.clone();
        app.pins = c.value.pins.clone();
    }
    st.store.put(&app).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(app)))
}

pub(crate) async fn list_apps<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Vec<App>>, ApiError> {
    require_apps(&p)?;
    let (apps, _) = st.store.list::<App>().await?;
    Ok(Json(
        apps.into_iter()
            .map(|v| v.value)
            .filter(|a| p.owns(&a.developer, &a.id))
            .collect(),
    ))
}

pub(crate) async fn get_app<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<App>, ApiError> {
    Ok(Json(visible_app(&st, &p, &raw).await?.value))
}

/// Deletes an app, its policy and its CAMARA app instances and deployments; the scheduler then
/// removes its placements. Idempotent:
/// an app that is not there (or not the caller's) answers 204 and nothing changes.
pub(crate) async fn delete_app<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let app = match visible_app(&st, &p, &raw).await {
        Ok(a) => a,
        Err(ApiError::NotFound(_)) => return Ok(StatusCode::NO_CONTENT),
        Err(e) => return Err(e),
    };
    let id = app.value.id.as_str();
    crate::camara::lifecycle::forget_app(&st.store, &app.value.id).await?;
    st.store.delete::<AppPolicy>(id, None).await?;
    st.store.delete::<App>(id, Some(app.revision)).await?;
    st.store
        .delete::<crate::camara::eam::CamaraApp>(id, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn put_policy<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    JsonBody(policy): JsonBody<PlacementPolicy>,
) -> Result<Json<PlacementPolicy>, ApiError> {
    let app = visible_app(&st, &p, &raw).await?;
    policy.validate()?;
    st.store
        .put(&AppPolicy {
            app: app.value.id,
            policy: policy.clone(),
        })
        .await?;
    Ok(Json(policy))
}

pub(crate) async fn get_policy<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<PlacementPolicy>, ApiError> {
    let app = visible_app(&st, &p, &raw).await?;
    Ok(Json(
        st.store
            .get::<AppPolicy>(app.value.id.as_str())
            .await?
            .map(|v| v.value.policy)
            .unwrap_or_default(),
    ))
}

pub(crate) async fn get_qos<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<AppQos>, ApiError> {
    Ok(Json(visible_app(&st, &p, &raw).await?.value.qos))
}

/// Sets an app's QoS; validated as part of the app, written only if the app did not change
/// meanwhile (409 otherwise).
pub(crate) async fn put_qos<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    JsonBody(qos): JsonBody<AppQos>,
) -> Result<Json<AppQos>, ApiError> {
    let cur = visible_app(&st, &p, &raw).await?;
    let mut app = cur.value;
    app.qos = qos.clone();
    app.validate()?;
    st.store.update(&app, cur.revision).await?;
    Ok(Json(qos))
}

/// How an app's instances run, beyond the artefact: the documented extension for what
/// CAMARA's `AppManifest` cannot say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppRuntime {
    /// Process arguments (`{host}` and `{port:NAME}` are filled in by the agent).
    #[serde(default)]
    pub args: Vec<String>,
    /// Process environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Readiness check; none: a started instance is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Probe>,
    /// Session load probe, for autoscaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadProbe>,
    /// Whether sessions carry state that must move on relocation.
    #[serde(default)]
    pub stateful: bool,
}

fn runtime_of(app: &App) -> AppRuntime {
    let (args, env) = match &app.artefact {
        Artefact::Process { args, env, .. } => (args.clone(), env.clone()),
        Artefact::Container { .. } => (Vec::new(), BTreeMap::new()),
    };
    AppRuntime {
        args,
        env,
        readiness: app.readiness.clone(),
        load: app.load.clone(),
        stateful: app.stateful,
    }
}

pub(crate) async fn get_runtime<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<AppRuntime>, ApiError> {
    Ok(Json(runtime_of(&visible_app(&st, &p, &raw).await?.value)))
}

pub(crate) async fn put_runtime<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    JsonBody(rt): JsonBody<AppRuntime>,
) -> Result<Json<AppRuntime>, ApiError> {
    let cur = visible_app(&st, &p, &raw).await?;
    let mut app = cur.value;
    match &mut app.artefact {
        Artefact::Process { args, env, .. } => {
            args.clone_from(&rt.args);
            env.clone_from(&rt.env);
        }
        Artefact::Container { .. } => {
            if !rt.args.is_empty() || !rt.env.is_empty() {
                return Err(ApiError::BadRequest(
                    "invalid args: arguments and environment apply to process artefacts only"
                        .into(),
                ));
            }
        }
    }
    if rt.args.len() > 256 || rt.env.len() > 256 {
        return Err(ApiError::BadRequest(
            "invalid args: at most 256 arguments and 256 variables".into(),
        ));
    }
    app.readiness.clone_from(&rt.readiness);
    app.load.clone_from(&rt.load);
    app.stateful = rt.stateful;
    app.validate()?;
    st.store.update(&app, cur.revision).await?;
    Ok(Json(runtime_of(&app)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlacementQuery {
    app: Option<String>,
}

pub(crate) async fn list_placements<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Query(q): Query<PlacementQuery>,
) -> Result<Json<Vec<Placement>>, ApiError> {
    require_apps(&p)?;
    let app = q.app.as_deref().map(app_id).transpose()?;
    let (apps, _) = st.store.list::<App>().await?;
    let visible: std::collections::HashSet<AppId> = apps
        .into_iter()
        .map(|a| a.value)
        .filter(|a| p.owns(&a.developer, &a.id))
        .map(|a| a.id)
        .collect();
    let (all, _) = st.store.list::<Placement>().await?;
    Ok(Json(
        all.into_iter()
            .map(|v| v.value)
            .filter(|pl| visible.contains(&pl.app))
            .filter(|pl| app.as_ref().is_none_or(|a| &pl.app == a))
            .collect(),
    ))
}

pub(crate) async fn get_schedule<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<AppSchedule>, ApiError> {
    let id = visible_app(&st, &p, &raw).await?.value.id;
    st.store
        .get::<AppSchedule>(id.as_str())
        .await?
        .map(|v| Json(v.value))
        .ok_or_else(|| ApiError::NotFound(format!("app {id} has not been scheduled")))
}

/// Decides the app against the store's current state and explains every site (nothing is
/// written).
pub(crate) async fn explain_app<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<Explanation>, ApiError> {
    let id = visible_app(&st, &p, &raw).await?.value.id;
    let world = World::load(&st.store).await?;
    let app = world
        .apps
        .iter()
        .find(|a| a.value.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("app {id} not found")))?;
    let snap = world.snapshot(unix_now(), st.home_operator.as_ref());
    let policy = world.policy_of(&id);
    // The autoscaler's demand, where the last decision was made for one.
    let app = match world.schedules.get(&id) {
        Some(s) if !s.value.demand.is_empty() => {
            let n: Vec<u32> = app
                .value
                .qos
                .demand_areas
                .iter()
                .map(|a| s.value.demand.get(&a.name).copied().unwrap_or(0))
                .collect();
            with_demand(&app.value, &n)
        }
        _ => app.value.clone(),
    };
    Ok(Json(explain(&Scheduler::default(), &snap, &app, &policy)))
}

/// The app's ETSI MEC 011 traffic and DNS rules, which every instance reads through
/// `mec_app_support` (as an AppD declares them).
pub(crate) async fn get_mec_rules<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<AppMecRules>, ApiError> {
    let app = visible_app(&st, &p, &raw).await?.value;
    let rules = st
        .store
        .get::<AppMecRules>(app.id.as_str())
        .await?
        .map(|v| v.value)
        .unwrap_or_default();
    Ok(Json(AppMecRules {
        app: Some(app.id),
        ..rules
    }))
}

pub(crate) async fn put_mec_rules<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    JsonBody(rules): JsonBody<AppMecRules>,
) -> Result<Json<AppMecRules>, ApiError> {
    let app = visible_app(&st, &p, &raw).await?.value;
    if rules.app.as_ref().is_some_and(|a| a != &app.id) {
        return Err(ApiError::BadRequest(
            "invalid app: differs from the path".into(),
        ));
    }
    rules.validate()?;
    let rules = AppMecRules {
        app: Some(app.id),
        ..rules
    };
    st.store.put(&rules).await?;
    Ok(Json(rules))
}
