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

    /// Also unready while an engine of `health` is dead; the detail names each.
    #[must_use]
    pub fn with_health(mut self, health: crate::Health) -> Self {
        let inner = self.ready.clone();
        self.ready = Arc::new(move || {
            let inner = inner.clone();
            let health = health.clone();
            Box::pin(async move {
                let store = inner().await?;
                let engines = health.check()?;
                Ok(format!("{store}; {engines}"))
            })
        });
        self
    }
}

/// Largest log tail served at once.
const MAX_LOG_TAIL: u64 = 1 << 20;

#[derive(serde::Deserialize)]
struct TailQuery {
    tail: Option<u64>,
}

/// `GET /logs/{instance}?tail=BYTES` on a site agent: the end of an instance's log file in
/// `log_dir` (64 KiB by default, at most 1 MiB).
pub fn instance_logs_router(log_dir: std::path::PathBuf) -> Router {
    Router::new()
        .route("/logs/{instance}", get(instance_log))
        .with_state(log_dir)
}

async fn instance_log(
    State(dir): State<std::path::PathBuf>,
    axum::extract::Path(instance): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<TailQuery>,
) -> Response {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    if mecfed_core::InstanceId::new(instance.as_str()).is_err() {
        return ProblemDetails::new(StatusCode::BAD_REQUEST, "invalid instance id").into_response();
    }
    let tail = q.tail.unwrap_or(64 << 10).min(MAX_LOG_TAIL);
    let path = dir.join(format!("{instance}.log"));
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => {
            return ProblemDetails::not_found(format!("no log for instance {instance} here"))
                .into_response();
        }
    };
    let len = file.metadata().await.map_or(0, |m| m.len());
    let mut buf = Vec::new();
    let read = async {
        file.seek(std::io::SeekFrom::Start(len.saturating_sub(tail)))
            .await?;
        file.take(tail).read_to_end(&mut buf).await
    };
    if let Err(e) = read.await {
        return ProblemDetails::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the log: {e}"),
        )
        .into_response();
    }
    let mut resp = buf.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
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
