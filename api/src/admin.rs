//! The admin listener: liveness, readiness and Prometheus metrics.

use std::time::Duration;

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

/// How long `/ready` waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// What the admin router needs.
#[derive(Clone)]
pub struct AdminState<S> {
    /// The store whose health decides readiness.
    pub store: S,
    /// Every metric of the process.
    pub registry: Registry,
}

/// `/live` (the process runs), `/ready` (the store answers) and `/metrics`.
pub fn admin_router<S: Store>(state: AdminState<S>) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok\n" }))
        .route("/ready", get(ready::<S>))
        .route("/metrics", get(metrics::<S>))
        .with_state(state)
}

async fn ready<S: Store>(State(st): State<AdminState<S>>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, st.store.current_revision()).await {
        Ok(Ok(rev)) => format!("ok (store revision {rev})\n").into_response(),
        Ok(Err(e)) => ProblemDetails::new(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"))
            .into_response(),
        Err(_) => ProblemDetails::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store did not answer within {READY_TIMEOUT:?}"),
        )
        .into_response(),
    }
}

async fn metrics<S: Store>(State(st): State<AdminState<S>>) -> Response {
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
        let app = admin_router(AdminState { store, registry });
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
