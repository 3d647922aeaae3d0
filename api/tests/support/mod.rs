//! The router as a client sees it: one embedded store per test, requests through
//! `oneshot`, error bodies checked to be ProblemDetails.
#![allow(dead_code, unreachable_pub)]

use axum::{
    Router,
    body::Body,
    http::{Request, header},
};
use http_body_util::BodyExt;
use mecfed_api::{ApiState, Auth, HttpMetrics, Principal, auth::Role, router};
use mecfed_core::{AppId, DeveloperId, Instance, InstanceId, InstanceState, SiteId};
use mecfed_store::{EmbeddedStore, typed::Typed};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Every notification in `store`'s outbox, in outbox order.
pub async fn outbox(store: &EmbeddedStore) -> Vec<mecfed_api::notify::Notification> {
    Typed::new(store.clone())
        .list::<mecfed_api::notify::Notification>()
        .await
        .unwrap()
        .0
        .into_iter()
        .map(|v| v.value)
        .collect()
}

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
    api_with(store, dir)
}

/// The router over `store` (which outlives it).
pub fn api_on(store: EmbeddedStore) -> Api {
    api_with(store, tempfile::tempdir().unwrap())
}

fn api_with(store: EmbeddedStore, dir: tempfile::TempDir) -> Api {
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
    /// Runs the engines until every change is turned into notifications.
    pub async fn settle(&self) {
        let store = Typed::new(self.store.clone());
        mecfed_api::engine::ue::UeEvents::new(store.clone())
            .settle()
            .await
            .unwrap();
        mecfed_api::engine::instance::InstanceEvents::new(store.clone())
            .settle()
            .await
            .unwrap();
        mecfed_api::camara::zones::ZoneSync::new(store)
            .settle()
            .await
            .unwrap();
    }

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
        self.send_with(method, uri, bearer, &[], body).await
    }

    /// A JSON request with extra headers (e.g. `If-Match`).
    pub async fn call_with(
        &self,
        method: &str,
        uri: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, axum::http::HeaderMap, Value) {
        let body = body.map(|v| ("application/json", v.to_string()));
        self.send_with(method, uri, bearer, headers, body).await
    }

    /// A request with extra headers and a body of any media type.
    pub async fn send_with(
        &self,
        method: &str,
        uri: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<(&str, String)>,
    ) -> (u16, axum::http::HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
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

// === a MEC world: alpha's arena with two instances ===

pub const INST: &str = "arena-cork-a-0";

pub fn arena(developer: &str) -> Value {
    json!({
        "id": "arena", "developer": developer, "name": "Arena", "version": "1",
        "artefact": {"kind": "process", "command": "arena"},
        "ports": [{"name": "game", "port": 0, "protocol": "UDP"}],
        "resources": {"cpuMillicores": 500, "memoryBytes": 134217728, "sessionSlots": 50},
        "readiness": {"kind": "mecConfirmReady"},
        "qos": {"latencyBudgetMs": 15, "maxSessionsPerInstance": 50, "demandAreas": []}
    })
}

pub fn instance_token(api: &Api, id: &str) -> String {
    let p = Principal {
        client_id: format!("inst.{id}"),
        role: Role::Instance,
        developer: Some(DeveloperId::new("alpha").unwrap()),
        app: Some(AppId::new("arena").unwrap()),
        instance: Some(InstanceId::new(id).unwrap()),
        scopes: mecfed_api::auth::scopes::INSTANCE
            .iter()
            .map(|s| s.to_string())
            .collect(),
        rate: mecfed_api::auth::RateLimit::INSTANCE,
    };
    api.auth.issue(&p).0
}

/// Alpha's arena with one instance running in Cork (reported Starting, pid 42) and a
/// second one; beta, another tenant.
pub async fn world() -> (Api, String, String, String) {
    let api = api();
    let alpha = api.developer_token("alpha");
    let beta = api.developer_token("beta");
    let (s, v) = api
        .call(
            "PUT",
            "/mecfed/v1/apps/arena",
            Some(&alpha),
            Some(arena("alpha")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let typed = Typed::new(api.store.clone());
    for (id, pid) in [(INST, 42), ("arena-cork-a-1", 43)] {
        typed
            .put(&Instance {
                id: InstanceId::new(id).unwrap(),
                app: AppId::new("arena").unwrap(),
                site: SiteId::new("cork-a").unwrap(),
                state: InstanceState::Starting,
                endpoint: Some("10.0.0.1:4000".into()),
                pid: Some(pid),
                sessions: None,
            })
            .await
            .unwrap();
    }
    let me = instance_token(&api, INST);
    (api, alpha, beta, me)
}
