//! HTTP request metrics, labelled by route template (never by raw path or ids).

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// `mecfed_<listener>_http_requests_total{method,route,status}` and
/// `mecfed_<listener>_http_request_duration_seconds{method,route}`.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    /// Creates the metrics for the listener named `listener` (`api`, `admin`).
    pub fn register(registry: &Registry, listener: &str) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                format!("mecfed_{listener}_http_requests_total"),
                "HTTP requests served",
            ),
            &["method", "route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                format!("mecfed_{listener}_http_request_duration_seconds"),
                "HTTP request latency",
            )
            .buckets(vec![
                0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
            ]),
            &["method", "route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }
}

/// Middleware recording one request.
pub(crate) async fn track(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let timer = m
        .duration
        .with_label_values(&[&method, &route])
        .start_timer();
    let resp = next.run(req).await;
    timer.observe_duration();
    m.requests
        .with_label_values(&[&method, &route, resp.status().as_str()])
        .inc();
    resp
}
