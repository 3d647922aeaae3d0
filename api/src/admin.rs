//! The admin listener: liveness, readiness and Prometheus metrics.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use mecfed_store::Store;
use prometheus::{Encoder, Registry, TextEncoder};

use crate::ProblemDetails;

/// How long `/ready` waits for its probe.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// A readiness check: `Ok(detail)` when ready, `Err(reason)` when not.
pub type ReadyProbe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// What the admin router needs.
#[derive(Clone)]
pub struct AdminState {
    /// Decides `/ready`.
    pub ready: ReadyProbe,
    /// Every metric of the process.
    pub registry: Registry,
}

impl AdminState {
    /// Ready while `store` answers.
    pub fn for_store<S: Store>(store: S, registry: Registry) -> Self {
        let ready: ReadyProbe = Arc::new(move || {
            let store = store.clone();
            Box::pin(async move {
                store
                    .current_revision()
                    .await
                    .map(|rev| format!("store revision {rev}"))
                    .map_err(|e| format!("store: {e}"))
            })
        });
        Self { ready, registry }
    }
}

/// `/live` (the process runs), `/ready` (the probe passes) and `/metrics`.
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn ready(State(st): State<AdminState>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, (st.ready)()).await {
        Ok(Ok(detail)) => format!("ok ({detail})\n").into_response(),
        Ok(Err(reason)) => {
            ProblemDetails::new(StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
        }
        Err(_) => ProblemDetails::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("readiness check did not answer within {READY_TIMEOUT:?}"),
        )
        .into_response(),
    }
}

async fn metrics(State(st): State<AdminState>) -> Response {
    let encoder = TextEncoder::new();
    let mut buf = Vec::new();
    if let Err(e) = encoder.encode(&st.registry.gather(), &mut buf) {
        tracing::error!(error = %e, "encoding metrics failed");
        return ProblemDetails::new(StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed")
            .into_response();
    }
    let mut resp = buf.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use mecfed_store::{EmbeddedStore, Metered, StoreMetrics};
    use tower::ServiceExt;

    #[tokio::test]
    async fn ready_and_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new();
        let store = Metered::new(
            EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap(),
            StoreMetrics::register(&registry).unwrap(),
        );
        store.put(b"/k", b"v", None).await.unwrap();
        let app = admin_router(AdminState::for_store(store, registry));
        let get = |uri: &str| {
            axum::http::Request::builder()
                .uri(uri)
                .body(Body::empty())
                .unwrap()
        };
        let resp = app.clone().oneshot(get("/ready")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let resp = app.clone().oneshot(get("/metrics")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains(r#"mecfed_store_operation_duration_seconds_count{op="put"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"mecfed_store_operation_duration_seconds_count{op="current_revision"} 1"#
            )
        );
        assert_eq!(app.oneshot(get("/live")).await.unwrap().status(), 200);
    }
}
