//! mecfed's HTTP surface: the REST router ([`router`]) and the admin router
//! ([`admin_router`]: `/live`, `/ready`, `/metrics`), built by functions so that tests drive
//! them with `oneshot` and only end-to-end tests bind ports.
//!
//! Architecture Invariant: this is the only crate that knows about axum (and, later, tonic).
//! Errors leave it as RFC 7807 `ProblemDetails` (`application/problem+json`) on the ETSI MEC
//! and mecfed APIs and as CAMARA `ErrorInfo` on the CAMARA APIs.
//!
//! Every request is authorised ([`auth`]): agents with their join token or site credential,
//! everyone else with a bearer access token from `POST /oauth2/token`. Only the version, the
//! token endpoint and its discovery documents are open.

mod admin;
mod apps;
pub mod auth;
pub mod camara;
pub mod engine;
mod error;
mod health;
pub mod mec;
mod metrics;
pub mod notify;
pub mod openapi;
mod problem;
pub mod sites;
mod ues;
mod util;

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderMap, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
};
use mecfed_store::{Store, typed::Typed};
use serde::Serialize;

pub use admin::{AdminState, ReadyProbe, admin_router, instance_logs_router};
pub use apps::AppRuntime;
pub use auth::{Auth, Principal, RateLimiter};
pub use error::ApiError;
pub use health::Health;
pub use metrics::HttpMetrics;
pub use problem::ProblemDetails;

/// Largest request body accepted (413 above it).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Default TTL of a site's lease: a site whose agent stops is NotReady within it.
pub const DEFAULT_SITE_LEASE_TTL: Duration = Duration::from_secs(10);

/// What the REST router needs.
#[derive(Clone)]
pub struct ApiState<S> {
    /// The state store.
    pub store: Typed<S>,
    /// HTTP request metrics.
    pub http_metrics: HttpMetrics,
    /// TTL of site leases.
    pub site_lease_ttl: Duration,
    /// The operator this platform belongs to (scores its sites first in explanations).
    pub home_operator: Option<mecfed_core::OperatorId>,
    /// Signs and verifies access tokens.
    pub auth: Auth,
    /// Per-client request rates.
    pub rate_limiter: RateLimiter,
}

impl<S: Store> ApiState<S> {
    /// State over `store` with default settings and an in-memory signing key (tests; `up`
    /// uses the store's key, [`Auth::load_or_create`]).
    pub fn new(store: S, http_metrics: HttpMetrics) -> Self {
        Self {
            store: Typed::new(store),
            http_metrics,
            site_lease_ttl: DEFAULT_SITE_LEASE_TTL,
            home_operator: None,
            auth: Auth::ephemeral(),
            rate_limiter: RateLimiter::default(),
        }
    }
}

/// The build's identity, `GET /mecfed/v1/version`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// Crate version.
    pub version: &'static str,
    /// API version prefix.
    pub api_version: &'static str,
}

/// The version this build reports.
pub const VERSION: VersionInfo = VersionInfo {
    version: env!("CARGO_PKG_VERSION"),
    api_version: "v1",
};

async fn version() -> Json<VersionInfo> {
    Json(VERSION)
}

async fn not_found(req: Request) -> Response {
    let e = ApiError::NotFound("no such resource".into());
    if camara::is_camara_path(req.uri().path()) {
        camara::CamaraError::from(e).into_response()
    } else {
        e.into_response()
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Authenticates the bearer access token, applies the client's rate limit and hands the
/// [`Principal`] to the handler.
async fn authenticate<S: Store>(
    State(st): State<ApiState<S>>,
    mut req: Request,
    next: Next,
) -> Response {
    let camara = camara::is_camara_path(req.uri().path());
    let fail = |e: ApiError| {
        if camara {
            camara::CamaraError::from(e).into_response()
        } else {
            e.into_response()
        }
    };
    let Some(token) = bearer(req.headers()) else {
        return fail(ApiError::Unauthorized(auth::AuthError::Missing.to_string()));
    };
    let principal = match st.auth.verify(token) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = ?e, "access token refused");
            return fail(ApiError::Unauthorized(e.to_string()));
        }
    };
    if let Err(wait) = st.rate_limiter.check(&principal.client_id, principal.rate) {
        return fail(ApiError::TooManyRequests(wait));
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The REST router served on the API listener.
pub fn router<S: Store>(state: ApiState<S>) -> Router {
    let metrics = state.http_metrics.clone();
    // Open: the version, the token endpoint and its discovery documents.
    let open = Router::new()
        .route("/mecfed/v1/version", get(version))
        .route("/openapi.json", get(openapi::serve))
        .route("/oauth2/token", post(auth::issue_token::<S>))
        .route(
            "/.well-known/openid-configuration",
            get(auth::openid_configuration::<S>),
        )
        .route("/.well-known/jwks.json", get(auth::jwks::<S>));
    // Site agents: their join token or site credential, checked by the handlers.
    let agents = Router::new()
        .route("/mecfed/v1/sites/{site_id}/join", post(sites::join::<S>))
        .route(
            "/mecfed/v1/sites/{site_id}/heartbeat",
            put(sites::heartbeat::<S>),
        )
        .route(
            "/mecfed/v1/sites/{site_id}/assignments",
            get(sites::assignments::<S>),
        )
        .route(
            "/mecfed/v1/sites/{site_id}/instances/{instance_id}",
            put(sites::report_instance::<S>).delete(sites::forget_instance::<S>),
        );
    // Everything else: a bearer access token.
    let eam = camara::EAM_ROOT;
    let authenticated = Router::new()
        .route(
            "/mecfed/v1/join-tokens",
            post(sites::create_join_token::<S>),
        )
        .route("/mecfed/v1/sites", get(sites::list_sites::<S>))
        .route("/mecfed/v1/sites/{site_id}", get(sites::get_site::<S>))
        .route(
            "/mecfed/v1/developers",
            get(auth::list_developers::<S>).post(auth::create_developer::<S>),
        )
        .route(
            "/mecfed/v1/developers/{developer_id}",
            get(auth::get_developer::<S>).delete(auth::delete_developer::<S>),
        )
        .route(
            "/mecfed/v1/developers/{developer_id}/secret",
            post(auth::rotate_secret::<S>),
        )
        .route("/mecfed/v1/ues", get(ues::list_ues::<S>))
        .route(
            "/mecfed/v1/ues/{ue_id}",
            get(ues::get_ue::<S>)
                .put(ues::put_ue::<S>)
                .delete(ues::delete_ue::<S>),
        )
        .route("/mecfed/v1/instances", get(sites::list_instances::<S>))
        .route("/mecfed/v1/subscriptions", get(notify::rest::list::<S>))
        .route(
            "/mecfed/v1/subscriptions/{subscription_id}",
            delete(notify::rest::delete::<S>),
        )
        .route("/mecfed/v1/apps", get(apps::list_apps::<S>))
        .route(
            "/mecfed/v1/apps/{app_id}",
            get(apps::get_app::<S>)
                .put(apps::put_app::<S>)
                .delete(apps::delete_app::<S>),
        )
        .route(
            "/mecfed/v1/apps/{app_id}/policy",
            get(apps::get_policy::<S>).put(apps::put_policy::<S>),
        )
        .route(
            "/mecfed/v1/apps/{app_id}/schedule",
            get(apps::get_schedule::<S>),
        )
        .route(
            "/mecfed/v1/apps/{app_id}/explain",
            get(apps::explain_app::<S>),
        )
        .route("/mecfed/v1/placements", get(apps::list_placements::<S>))
        .route(
            "/mecfed/v1/apps/{app_id}/qos",
            get(apps::get_qos::<S>).put(apps::put_qos::<S>),
        )
        .route(
            "/mecfed/v1/apps/{app_id}/runtime",
            get(apps::get_runtime::<S>).put(apps::put_runtime::<S>),
        )
        .route(
            "/mecfed/v1/apps/{app_id}/mec-rules",
            get(apps::get_mec_rules::<S>).put(apps::put_mec_rules::<S>),
        )
        .route(
            "/mecfed/v1/instances/{instance_id}/logs",
            get(sites::instance_logs::<S>),
        )
        .route(
            &format!("{eam}/apps"),
            get(camara::eam::list_apps::<S>).post(camara::eam::submit_app::<S>),
        )
        .route(
            &format!("{eam}/apps/{{app_id}}"),
            get(camara::eam::get_app::<S>).delete(camara::eam::delete_app::<S>),
        )
        .route(
            &format!("{eam}/appinstances"),
            get(camara::lifecycle::list_instances::<S>)
                .post(camara::lifecycle::create_instance::<S>),
        )
        .route(
            &format!("{eam}/appinstances/{{app_instance_id}}"),
            delete(camara::lifecycle::delete_instance::<S>),
        )
        .route(
            &format!("{eam}/deployments"),
            get(camara::lifecycle::list_deployments::<S>)
                .post(camara::lifecycle::create_deployment::<S>),
        )
        .route(
            &format!("{eam}/deployments/{{app_deployment_id}}"),
            delete(camara::lifecycle::delete_deployment::<S>)
                .patch(camara::lifecycle::patch_deployment::<S>),
        )
        .route(
            &format!("{eam}/edge-cloud-zones"),
            get(camara::eam::list_zones::<S>),
        )
        .route(
            &format!("{eam}/clusters"),
            get(camara::eam::list_clusters::<S>),
        )
        .merge(mec_app_support::<S>())
        .merge(mec_service_mgmt::<S>())
        .merge(mec_location::<S>())
        .merge(mec_rni::<S>())
        .merge(mec_ams::<S>())
        .route(
            &format!("{}/retrieve-closest-edge-cloud-zone", camara::SED_ROOT),
            post(camara::sed::retrieve_closest::<S>),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            authenticate::<S>,
        ));
    Router::new()
        .merge(open)
        .merge(agents)
        .merge(authenticated)
        .with_state(state)
        .fallback(not_found)
        .method_not_allowed_fallback(|| async {
            ProblemDetails::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this resource",
            )
        })
        .layer(middleware::from_fn(camara_correlator))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(metrics, metrics::track))
}

/// MEC 011 application support (authenticated by the caller's router).
fn mec_app_support<S: Store>() -> Router<ApiState<S>> {
    use mec::{
        app_support as a,
        subscriptions::{self as subs, AppTerminationSubscription as AppTermination},
    };
    use mecfed_core::mec_rules::{DnsRule, TrafficRule};
    let root = mec::APP_SUPPORT_ROOT;
    let app = format!("{root}/applications/{{app_instance_id}}");
    Router::new()
        .route(&format!("{root}/registrations"), post(a::register::<S>))
        .route(
            &format!("{root}/registrations/{{app_instance_id}}"),
            get(a::get_registration::<S>)
                .put(a::put_registration::<S>)
                .delete(a::delete_registration::<S>),
        )
        .route(&format!("{app}/confirm_ready"), post(a::confirm_ready::<S>))
        .route(
            &format!("{app}/confirm_termination"),
            post(a::confirm_termination::<S>),
        )
        .route(
            &format!("{app}/traffic_rules"),
            get(a::list_rules::<TrafficRule, S>),
        )
        .route(
            &format!("{app}/traffic_rules/{{traffic_rule_id}}"),
            get(a::get_rule::<TrafficRule, S>).put(a::put_rule::<TrafficRule, S>),
        )
        .route(
            &format!("{app}/dns_rules"),
            get(a::list_rules::<DnsRule, S>),
        )
        .route(
            &format!("{app}/dns_rules/{{dns_rule_id}}"),
            get(a::get_rule::<DnsRule, S>).put(a::put_rule::<DnsRule, S>),
        )
        .route(
            &format!("{app}/subscriptions"),
            get(subs::list::<AppTermination, S>).post(subs::create::<AppTermination, S>),
        )
        .route(
            &format!("{app}/subscriptions/{{subscription_id}}"),
            get(subs::get::<AppTermination, S>).delete(subs::delete::<AppTermination, S>),
        )
        .route(&format!("{root}/timing/timing_caps"), get(a::timing_caps))
        .route(&format!("{root}/timing/current_time"), get(a::current_time))
}

/// MEC 011 service management (authenticated by the caller's router).
fn mec_service_mgmt<S: Store>() -> Router<ApiState<S>> {
    use mec::{
        service_mgmt as m,
        subscriptions::{self as subs, SerAvailabilitySubscription as SerAvailability},
    };
    let root = m::SERVICE_MGMT_ROOT;
    let app = format!("{root}/applications/{{app_instance_id}}");
    Router::new()
        .route(&format!("{root}/services"), get(m::list_services::<S>))
        .route(
            &format!("{root}/services/{{service_id}}"),
            get(m::get_service::<S>),
        )
        .route(&format!("{root}/transports"), get(m::transports::<S>))
        .route(
            &format!("{app}/services"),
            get(m::list_app_services::<S>).post(m::create_service::<S>),
        )
        .route(
            &format!("{app}/services/{{service_id}}"),
            get(m::get_app_service::<S>)
                .put(m::put_app_service::<S>)
                .delete(m::delete_app_service::<S>),
        )
        .route(
            &format!("{app}/subscriptions"),
            get(subs::list::<SerAvailability, S>).post(subs::create::<SerAvailability, S>),
        )
        .route(
            &format!("{app}/subscriptions/{{subscription_id}}"),
            get(subs::get::<SerAvailability, S>).delete(subs::delete::<SerAvailability, S>),
        )
        .route(
            &format!("{root}/liveness/{{service_id}}"),
            get(m::get_liveness::<S>).patch(m::patch_liveness::<S>),
        )
}

/// MEC 021 application mobility (authenticated by the caller's router).
fn mec_ams<S: Store>() -> Router<ApiState<S>> {
    use mec::ams as a;
    let root = a::AMS_ROOT;
    let one = format!("{root}/app_mobility_services/{{app_mobility_service_id}}");
    Router::new()
        .route(
            &format!("{root}/app_mobility_services"),
            get(a::list_registrations::<S>).post(a::create_registration::<S>),
        )
        .route(
            &one,
            get(a::get_registration::<S>)
                .put(a::put_registration::<S>)
                .delete(a::delete_registration::<S>),
        )
        .route(
            &format!("{one}/deregister_task"),
            post(a::deregister_task::<S>),
        )
        .route(
            &format!("{root}/queries/adjacent_app_instances"),
            get(a::adjacent_app_instances::<S>),
        )
        .route(
            &format!("{root}/subscriptions"),
            get(a::list_subscriptions::<S>).post(a::create_subscription::<S>),
        )
        .route(
            &format!("{root}/subscriptions/{{subscription_id}}"),
            get(a::get_subscription::<S>)
                .put(a::put_subscription::<S>)
                .delete(a::delete_subscription::<S>),
        )
}

/// MEC 012 radio network information (authenticated by the caller's router).
fn mec_rni<S: Store>() -> Router<ApiState<S>> {
    use mec::rni as r;
    let root = r::RNI_ROOT;
    Router::new()
        .route(&format!("{root}/queries/rab_info"), get(r::rab_info::<S>))
        .route(&format!("{root}/queries/plmn_info"), get(r::plmn_info::<S>))
        .route(
            &format!("{root}/queries/layer2_meas"),
            get(r::layer2_meas::<S>),
        )
        .route(
            &format!("{root}/subscriptions"),
            get(r::list_subscriptions::<S>).post(r::create_subscription::<S>),
        )
        .route(
            &format!("{root}/subscriptions/{{subscription_id}}"),
            get(r::get_subscription::<S>)
                .put(r::put_subscription::<S>)
                .delete(r::delete_subscription::<S>),
        )
}

/// MEC 013 location (authenticated by the caller's router).
fn mec_location<S: Store>() -> Router<ApiState<S>> {
    use mec::location as l;
    let root = l::LOCATION_ROOT;
    let zone = format!("{root}/queries/zones/{{zone_id}}");
    let subs = format!("{root}/subscriptions/{{collection}}");
    Router::new()
        .route(&format!("{root}/queries/users"), get(l::query_users::<S>))
        .route(&format!("{root}/queries/zones"), get(l::query_zones::<S>))
        .route(&zone, get(l::query_zone::<S>))
        .route(
            &format!("{zone}/accessPoints"),
            get(l::query_access_points::<S>),
        )
        .route(
            &format!("{zone}/accessPoints/{{access_point_id}}"),
            get(l::query_access_point::<S>),
        )
        .route(
            &format!("{root}/queries/distance"),
            get(l::query_distance::<S>),
        )
        .route(
            &subs,
            get(l::list_subscriptions::<S>).post(l::create_subscription::<S>),
        )
        .route(
            &format!("{subs}/{{subscription_id}}"),
            get(l::get_subscription::<S>)
                .put(l::put_subscription::<S>)
                .delete(l::delete_subscription::<S>),
        )
}

/// `x-correlator` handling on CAMARA paths only.
async fn camara_correlator(req: Request, next: Next) -> Response {
    if camara::is_camara_path(req.uri().path()) {
        camara::correlator(req, next).await
    } else {
        next.run(req).await
    }
}

/// The key recording that the records stored before reservations existed have been
/// reserved, so that a start does it once per store, not on every start.
const RESERVED_MARK: &str = "/mecfed/v1/migrations/reservations";

/// Reserves what records written before reservations existed hold (UE identities, CAMARA
/// app names, zones and deployment names), once per store: later writers reserve in their
/// own transactions. Idempotent; a start interrupted half-way does it again.
pub async fn reserve_existing<S: Store>(store: &Typed<S>) -> Result<(), ApiError> {
    if store.store().get(RESERVED_MARK.as_bytes()).await?.is_some() {
        return Ok(());
    }
    ues::reserve_identities(store).await?;
    camara::eam::reserve_names(store).await?;
    store
        .store()
        .put(RESERVED_MARK.as_bytes(), b"1", None)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{body::Body, http::Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app() -> (Router, prometheus::Registry) {
        let registry = prometheus::Registry::new();
        let http_metrics = HttpMetrics::register(&registry, "api").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = mecfed_store::EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap();
        // The directory may go: the open database file stays usable until dropped.
        drop(dir);
        (router(ApiState::new(store, http_metrics)), registry)
    }

    async fn call(app: Router, method: &str, uri: &str) -> (u16, String, String) {
        let resp = app
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        (status, ct, body)
    }

    #[tokio::test]
    async fn version_answers() {
        let (app, _) = app();
        let (status, ct, body) = call(app, "GET", "/mecfed/v1/version").await;
        assert_eq!(status, 200);
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["apiVersion"], "v1");
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_are_problem_details() {
        let (app, registry) = app();
        let (status, ct, body) = call(app.clone(), "GET", "/nope").await;
        assert_eq!(status, 404);
        assert_eq!(ct, "application/problem+json");
        let p: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(p["status"], 404);
        assert_eq!(p["title"], "Not Found");
        let (status, ct, _) = call(app, "DELETE", "/mecfed/v1/version").await;
        assert_eq!(status, 405);
        assert_eq!(ct, "application/problem+json");
        // Unmatched routes are counted under a bounded label, not the raw path.
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(text.contains(r#"route="unmatched""#), "{text}");
        assert!(!text.contains("/nope"));
    }
}
