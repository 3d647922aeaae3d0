//! The router as a client sees it: one embedded store per test, requests through
//! `oneshot`, error bodies checked to be ProblemDetails.
#![allow(dead_code, unreachable_pub)]

use axum::{
    Router,
    body::Body,
    http::{Request, header},
};
use http_body_util::BodyExt;
use mecfed_api::{ApiState, HttpMetrics, router};
use mecfed_store::EmbeddedStore;
use serde_json::Value;
use tower::ServiceExt;

pub struct Api {
    pub app: Router,
    pub store: EmbeddedStore,
    _dir: tempfile::TempDir,
}

pub fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap();
    let metrics = HttpMetrics::register(&prometheus::Registry::new(), "api").unwrap();
    Api {
        app: router(ApiState::new(store.clone(), metrics)),
        store,
        _dir: dir,
    }
}

impl Api {
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        if status >= 400 {
            assert_eq!(
                resp.headers()[header::CONTENT_TYPE],
                "application/problem+json",
                "errors are ProblemDetails"
            );
        }
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, v)
    }

    pub async fn token(&self) -> String {
        let (s, v) = self
            .call("POST", "/mecfed/v1/join-tokens", None, None)
            .await;
        assert_eq!(s, 201, "{v}");
        v["token"].as_str().unwrap().to_string()
    }
}

impl Api {
    /// A request without credentials.
    pub async fn request(&self, method: &str, uri: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, uri, None, body).await
    }
}
