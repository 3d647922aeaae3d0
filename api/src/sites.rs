//! The site registry: join tokens, agents joining and heart-beating, and sites with their
//! readiness.
//!
//! A site is Ready exactly while its liveness record (`/mecfed/v1/siteleases/<site>`) exists.
//! That record is attached to a store lease the agent keeps alive through heartbeats, so when
//! an agent stops, the record vanishes with the lease and the site reads NotReady within the
//! lease TTL, with no controller involved.

use std::{collections::HashSet, time::Duration};

use axum::{
    Extension, Json,
    extract::{FromRequest, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
};
use mecfed_core::{App, AppId, Instance, InstanceId, Placement, Site, SiteId, SiteStatus};
use mecfed_store::{
    LeaseId, Store, StoreError,
    typed::{Resource, TypedError},
};
pub use mecfed_wire::site::{
    Assignment, Assignments, CreateJoinToken, Heartbeat, HeartbeatResponse, InstanceReport,
    JoinResponse, JoinTokenCreated,
};
use serde::{Deserialize, Serialize};

use crate::{
    ApiError, ApiState,
    auth::{Principal, scopes},
    util::{now_unix, random_hex, sha256_hex},
};

/// How long an agent lets an instance stop before it kills it (the agent's default grace
/// period), announced in MEC 011 termination notifications as `maxGracefulTimeout`.
pub const AGENT_STOP_GRACE_SECONDS: u32 = 10;

/// Default lifetime of a join token.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest lifetime of a join token.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A JSON body whose rejection is a `ProblemDetails`.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct JsonBody<T>(pub(crate) T);

/// A join token as stored: the secret only as its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinToken {
    /// Public part of the token.
    pub id: String,
    /// Hex SHA-256 of the secret part.
    pub secret_sha256: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// What it is for.
    #[serde(default)]
    pub description: String,
}

impl Resource for JoinToken {
    const KIND: &'static str = "jointokens";
    fn id(&self) -> String {
        self.id.clone()
    }
}

/// A site's liveness record, attached to the lease its agent keeps alive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteLease {
    /// The site.
    pub site: SiteId,
    /// Lease the record is attached to.
    pub lease: LeaseId,
    /// Hex SHA-256 of the credential the agent heart-beats with.
    pub credential_sha256: String,
}

impl Resource for SiteLease {
    const KIND: &'static str = "siteleases";
    fn id(&self) -> String {
        self.site.to_string()
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))
}

fn site_id(raw: &str) -> Result<SiteId, ApiError> {
    Ok(SiteId::new(raw)?)
}

// === handlers ===

pub(crate) async fn create_join_token<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    p.require(scopes::ADMIN)?;
    // An empty body means all defaults.
    let req: CreateJoinToken = if body.iter().all(u8::is_ascii_whitespace) {
        CreateJoinToken::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?
    };
    let ttl = req
        .ttl_seconds
        .map_or(DEFAULT_TOKEN_TTL, Duration::from_secs);
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(ApiError::BadRequest(format!(
            "invalid ttlSeconds: must be between 1 and {}",
            MAX_TOKEN_TTL.as_secs()
        )));
    }
    let id = random_hex(4);
    let secret = random_hex(16);
    let token = JoinToken {
        id: id.clone(),
        secret_sha256: sha256_hex(&secret),
        expires_at: now_unix() + ttl.as_secs(),
        description: req.description.unwrap_or_default(),
    };
    st.store.create(&token).await?;
    Ok((
        StatusCode::CREATED,
        Json(JoinTokenCreated {
            token: format!("{id}.{secret}"),
            id,
            expires_at: token.expires_at,
        }),
    ))
}

async fn check_join_token<S: Store>(st: &ApiState<S>, token: &str) -> Result<(), ApiError> {
    let denied = || ApiError::Unauthorized("invalid or expired join token".into());
    let (id, secret) = token.split_once('.').ok_or_else(denied)?;
    if id.is_empty() || id.contains('/') {
        return Err(denied());
    }
    let stored = st.store.get::<JoinToken>(id).await?.ok_or_else(denied)?;
    // Comparing digests, not secrets: timing reveals nothing usable about the secret.
    if stored.value.secret_sha256 != sha256_hex(secret) || stored.value.expires_at <= now_unix() {
        return Err(denied());
    }
    Ok(())
}

pub(crate) async fn join<S: Store>(
    State(st): State<ApiState<S>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    JsonBody(mut site): JsonBody<Site>,
) -> Result<Json<JoinResponse>, ApiError> {
    let id = site_id(&raw)?;
    check_join_token(&st, bearer(&headers)?).await?;
    if site.id != id {
        return Err(ApiError::BadRequest(format!(
            "invalid id: body says {:?}, path says {:?}",
            site.id.as_str(),
            id.as_str()
        )));
    }
    site.validate()?;
    site.status = SiteStatus::NotReady; // derived from the liveness record on every read
    let lease = st.store.store().lease_grant(st.site_lease_ttl).await?;
    st.store.put(&site).await?;
    let credential = random_hex(16);
    st.store
        .put_leased(
            &SiteLease {
                site: id.clone(),
                lease,
                credential_sha256: sha256_hex(&credential),
            },
            lease,
        )
        .await?;
    tracing::info!(site = %id, lease, "site joined");
    let ttl = st.site_lease_ttl.as_secs();
    Ok(Json(JoinResponse {
        lease_id: lease,
        ttl_seconds: ttl,
        heartbeat_seconds: (ttl / 3).max(1),
        site_credential: credential,
    }))
}

/// Checks a site's bearer credential against its live lease record.
async fn check_site<S: Store>(
    st: &ApiState<S>,
    id: &SiteId,
    headers: &HeaderMap,
) -> Result<SiteLease, ApiError> {
    let credential = bearer(headers)?;
    let live = st
        .store
        .get::<SiteLease>(id.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("site {id} holds no live lease; join again")))?;
    if live.value.credential_sha256 != sha256_hex(credential) {
        return Err(ApiError::Unauthorized("invalid site credential".into()));
    }
    Ok(live.value)
}

pub(crate) async fn assignments<S: Store>(
    State(st): State<ApiState<S>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Assignments>, ApiError> {
    let id = site_id(&raw)?;
    check_site(&st, &id, &headers).await?;
    let (placements, revision) = st.store.list::<Placement>().await?;
    let mut out = Vec::new();
    for p in placements
        .into_iter()
        .map(|v| v.value)
        .filter(|p| p.site == id)
    {
        let Some(app) = st.store.get::<App>(p.app.as_str()).await? else {
            continue; // placed app deleted; its placement goes with it later
        };
        for i in 0..p.replicas {
            match InstanceId::new(format!("{}-{}-{i}", p.app, p.site)) {
                Ok(instance_id) => out.push(Assignment {
                    mec_client_secret: st.auth.instance_secret(&instance_id),
                    instance_id,
                    app: app.value.clone(),
                }),
                Err(e) => tracing::warn!(error = %e, "instance id too long; skipped"),
            }
        }
    }
    out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    Ok(Json(Assignments {
        revision,
        assignments: out,
    }))
}

pub(crate) async fn report_instance<S: Store>(
    State(st): State<ApiState<S>>,
    Path((raw_site, raw_instance)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(report): JsonBody<InstanceReport>,
) -> Result<StatusCode, ApiError> {
    let site = site_id(&raw_site)?;
    let id = InstanceId::new(raw_instance)?;
    check_site(&st, &site, &headers).await?;
    let app = st.store.get::<App>(report.app.as_str()).await?;
    let state = crate::mec::app_support::gate_report(
        &st.store,
        app.as_ref().map(|a| &a.value),
        report.state,
        &id,
        report.pid,
    )
    .await?;
    let instance = Instance {
        id: id.clone(),
        app: report.app,
        site,
        state,
        endpoint: report.endpoint,
        pid: report.pid,
        sessions: report.sessions,
    };
    // Termination and adjacency notifications follow from the instance engine.
    let current = st.store.get::<Instance>(id.as_str()).await?;
    if current.as_ref().map(|c| &c.value) != Some(&instance) {
        st.store.put(&instance).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn forget_instance<S: Store>(
    State(st): State<ApiState<S>>,
    Path((raw_site, raw_instance)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let site = site_id(&raw_site)?;
    let id = InstanceId::new(raw_instance)?;
    check_site(&st, &site, &headers).await?;
    if let Some(current) = st.store.get::<Instance>(id.as_str()).await?
        && current.value.site == site
    {
        st.store
            .delete::<Instance>(id.as_str(), Some(current.revision))
            .await?;
        crate::mec::app_support::forget_instance(&st.store, &id).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub(crate) struct LogQuery {
    tail: Option<u64>,
}

/// Fetches an instance's log from the agent of its site.
pub(crate) async fn instance_logs<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    axum::extract::Query(q): axum::extract::Query<LogQuery>,
) -> Result<axum::response::Response, ApiError> {
    if !p.has(scopes::ADMIN) {
        p.require(scopes::APPS)?;
    }
    let id = InstanceId::new(raw)?;
    let not_found = || ApiError::NotFound(format!("instance {id} not found"));
    let instance = st
        .store
        .get::<Instance>(id.as_str())
        .await?
        .ok_or_else(not_found)?;
    if !p.is_operator() {
        let app = st.store.get::<App>(instance.value.app.as_str()).await?;
        if !app.is_some_and(|a| p.owns(&a.value.developer, &a.value.id)) {
            return Err(not_found());
        }
    }
    let site = st
        .store
        .get::<Site>(instance.value.site.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("site {} not found", instance.value.site)))?;
    let agent = site.value.agent_endpoint.ok_or_else(|| {
        ApiError::NotFound(format!("site {} has no reachable agent", site.value.id))
    })?;
    let url = format!(
        "http://{agent}/logs/{id}?tail={}",
        q.tail.unwrap_or(64 << 10)
    );
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| ApiError::Unavailable(StoreError::Unavailable(Box::new(e))))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = resp
        .bytes()
        .await
        .map_err(|e| ApiError::Unavailable(StoreError::Unavailable(Box::new(e))))?;
    if !status.is_success() {
        return Err(ApiError::NotFound(
            String::from_utf8_lossy(&body).into_owned(),
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// Instances: all of them for the operator, a developer's own for a developer.
pub(crate) async fn list_instances<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Vec<Instance>>, ApiError> {
    if !p.has(scopes::ADMIN) {
        p.require(scopes::APPS)?;
    }
    let (all, _) = st.store.list::<Instance>().await?;
    let all = all.into_iter().map(|v| v.value);
    if p.is_operator() {
        return Ok(Json(all.collect()));
    }
    let (apps, _) = st.store.list::<App>().await?;
    let mine: HashSet<AppId> = apps
        .into_iter()
        .map(|a| a.value)
        .filter(|a| p.owns(&a.developer, &a.id))
        .map(|a| a.id)
        .collect();
    Ok(Json(all.filter(|i| mine.contains(&i.app)).collect()))
}

pub(crate) async fn heartbeat<S: Store>(
    State(st): State<ApiState<S>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    JsonBody(hb): JsonBody<Heartbeat>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let id = site_id(&raw)?;
    let gone = || ApiError::NotFound(format!("site {id} holds no live lease; join again"));
    let live = check_site(&st, &id, &headers).await?;
    if live.lease != hb.lease_id {
        return Err(ApiError::Conflict(format!(
            "lease {} is not the site's current lease",
            hb.lease_id
        )));
    }
    let ttl = match st.store.store().lease_keep_alive(hb.lease_id).await {
        Ok(ttl) => ttl,
        Err(StoreError::LeaseNotFound(_)) => return Err(gone()),
        Err(e) => return Err(e.into()),
    };
    if let Some(usage) = hb.usage
        && let Some(current) = st.store.get::<Site>(id.as_str()).await?
        && current.value.usage != usage
    {
        let mut site = current.value;
        site.usage = usage;
        match st.store.update(&site, current.revision).await {
            // A concurrent change wins; the next heartbeat reports usage again.
            Ok(_) | Err(TypedError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(HeartbeatResponse {
        ttl_seconds: ttl.as_secs(),
    }))
}

/// Every site, with its status as its lease says.
pub(crate) async fn sites_with_status<S: Store>(
    store: &mecfed_store::typed::Typed<S>,
) -> Result<Vec<Site>, ApiError> {
    let (sites, _) = store.list::<Site>().await?;
    let (live, _) = store.list::<SiteLease>().await?;
    let live: HashSet<SiteId> = live.into_iter().map(|l| l.value.site).collect();
    Ok(sites
        .into_iter()
        .map(|v| {
            let ready = live.contains(&v.value.id);
            with_status(v.value, ready)
        })
        .collect())
}

pub(crate) async fn list_sites<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Vec<Site>>, ApiError> {
    p.require(scopes::ADMIN)?;
    Ok(Json(sites_with_status(&st.store).await?))
}

pub(crate) async fn get_site<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<Site>, ApiError> {
    p.require(scopes::ADMIN)?;
    let id = site_id(&raw)?;
    let site = st
        .store
        .get::<Site>(id.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("site {id} not found")))?;
    let live = st.store.get::<SiteLease>(id.as_str()).await?.is_some();
    Ok(Json(with_status(site.value, live)))
}

fn with_status(mut site: Site, live: bool) -> Site {
    site.status = if live {
        SiteStatus::Ready
    } else {
        SiteStatus::NotReady
    };
    site
}
