//! The router as a client sees it: one embedded store per test, requests through
//! `oneshot`, error bodies checked to be ProblemDetails.
#![allow(dead_code, unreachable_pub)]

use axum::{
    Router,
    body::Body,
    http::{Request, header},
};
use http_body_util::BodyExt;
use mecfed_api::{ApiState, Auth, HttpMetrics, Principal, router};
use mecfed_store::EmbeddedStore;
use serde_json::Value;
use tower::ServiceExt;

pub struct Api {
    pub app: Router,
    pub store: EmbeddedStore,
    /// The platform's token signer, to mint tokens for any principal.
    pub auth: Auth,
    /// An operator access token.
    pub admin: String,
    _dir: tempfile::TempDir,
}

pub fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap();
    let metrics = HttpMetrics::register(&prometheus::Registry::new(), "api").unwrap();
    let state = ApiState::new(store.clone(), metrics);
    let auth = state.auth.clone();
    let (admin, _) = auth.issue(&Principal::operator());
    Api {
        app: router(state),
        store,
        auth,
        admin,
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
        let body = body.map(|v| ("application/json", v.to_string()));
        let (status, _, v) = self.send(method, uri, bearer, body).await;
        (status, v)
    }

    /// A request with a body of any media type; answers the headers too.
    pub async fn send(
        &self,
        method: &str,
        uri: &str,
        bearer: Option<&str>,
        body: Option<(&str, String)>,
    ) -> (u16, axum::http::HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some((media_type, text)) => {
                req = req.header(header::CONTENT_TYPE, media_type);
                Body::from(text)
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
            let camara = uri.starts_with("/edge-application-management/")
                || uri.starts_with("/simple-edge-discovery/");
            let want = if camara {
                "application/json"
            } else {
                "application/problem+json"
            };
            assert_eq!(
                resp.headers()[header::CONTENT_TYPE],
                want,
                "errors are ProblemDetails (ETSI, mecfed) or ErrorInfo (CAMARA)"
            );
        }
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, headers, v)
    }

    pub async fn token(&self) -> String {
        let (s, v) = self
            .call("POST", "/mecfed/v1/join-tokens", Some(&self.admin), None)
            .await;
        assert_eq!(s, 201, "{v}");
        v["token"].as_str().unwrap().to_string()
    }
}

impl Api {
    /// A request as the operator.
    pub async fn request(&self, method: &str, uri: &str, body: Option<Value>) -> (u16, Value) {
        let admin = self.admin.clone();
        self.call(method, uri, Some(&admin), body).await
    }

    /// A token for developer `id` with every developer scope.
    pub fn developer_token(&self, id: &str) -> String {
        let id = mecfed_core::DeveloperId::new(id).unwrap();
        self.auth.issue(&Principal::developer(id)).0
    }
}
