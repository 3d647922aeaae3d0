//! Apps and their placement: the operator-side onboarding endpoints (until the CAMARA app
//! API lands), the documented policy extension `PUT /mecfed/v1/apps/{appId}/policy`, the
//! scheduler's placements and its per-site explanation.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::IntoResponse,
};
use mecfed_core::{App, AppId, Placement, PlacementPolicy};
use mecfed_scheduler::{
    AppPolicy, AppSchedule, Explanation, Scheduler, World, autoscale::with_demand,
    controller::unix_now, explain,
};
use mecfed_store::Store;
use serde::Deserialize;

use crate::{ApiError, ApiState, sites::JsonBody};

fn app_id(raw: &str) -> Result<AppId, ApiError> {
    Ok(AppId::new(raw)?)
}

pub(crate) async fn put_app<S: Store>(
    State(st): State<ApiState<S>>,
    Path(raw): Path<String>,
    JsonBody(app): JsonBody<App>,
) -> Result<impl IntoResponse, ApiError> {
    let id = app_id(&raw)?;
    if app.id != id {
        return Err(ApiError::BadRequest(format!(
            "invalid id: body says {:?}, path says {:?}",
            app.id.as_str(),
            id.as_str()
        )));
    }
    app.validate()?;
    let existed = st.store.get::<App>(id.as_str()).await?.is_some();
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
) -> Result<Json<Vec<App>>, ApiError> {
    let (apps, _) = st.store.list::<App>().await?;
    Ok(Json(apps.into_iter().map(|v| v.value).collect()))
}

pub(crate) async fn get_app<S: Store>(
    State(st): State<ApiState<S>>,
    Path(raw): Path<String>,
) -> Result<Json<App>, ApiError> {
    let id = app_id(&raw)?;
    st.store
        .get::<App>(id.as_str())
        .await?
        .map(|v| Json(v.value))
        .ok_or_else(|| ApiError::NotFound(format!("app {id} not found")))
}

/// Deletes an app and its policy; the scheduler then removes its placements. Idempotent.
pub(crate) async fn delete_app<S: Store>(
    State(st): State<ApiState<S>>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = app_id(&raw)?;
    st.store.delete::<AppPolicy>(id.as_str(), None).await?;
    st.store.delete::<App>(id.as_str(), None).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn put_policy<S: Store>(
    State(st): State<ApiState<S>>,
    Path(raw): Path<String>,
    JsonBody(policy): JsonBody<PlacementPolicy>,
) -> Result<Json<PlacementPolicy>, ApiError> {
    let id = app_id(&raw)?;
    policy.validate()?;
    if st.store.get::<App>(id.as_str()).await?.is_none() {
        return Err(ApiError::NotFound(format!("app {id} not found")));
    }
    st.store
        .put(&AppPolicy {
            app: id,
            policy: policy.clone(),
        })
        .await?;
    Ok(Json(policy))
}

pub(crate) async fn get_policy<S: Store>(
    State(st): State<ApiState<S>>,
    Path(raw): Path<String>,
) -> Result<Json<PlacementPolicy>, ApiError> {
    let id = app_id(&raw)?;
    if st.store.get::<App>(id.as_str()).await?.is_none() {
        return Err(ApiError::NotFound(format!("app {id} not found")));
    }
    Ok(Json(
        st.store
            .get::<AppPolicy>(id.as_str())
            .await?
            .map(|v| v.value.policy)
            .unwrap_or_default(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlacementQuery {
    app: Option<String>,
}

pub(crate) async fn list_placements<S: Store>(
    State(st): State<ApiState<S>>,
    Query(q): Query<PlacementQuery>,
) -> Result<Json<Vec<Placement>>, ApiError> {
    let app = q.app.as_deref().map(app_id).transpose()?;
    let (all, _) = st.store.list::<Placement>().await?;
    Ok(Json(
        all.into_iter()
            .map(|v| v.value)
            .filter(|p| app.as_ref().is_none_or(|a| &p.app == a))
            .collect(),
    ))
}

pub(crate) async fn get_schedule<S: Store>(
    State(st): State<ApiState<S>>,
    Path(raw): Path<String>,
) -> Result<Json<AppSchedule>, ApiError> {
    let id = app_id(&raw)?;
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
    Path(raw): Path<String>,
) -> Result<Json<Explanation>, ApiError> {
    let id = app_id(&raw)?;
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
