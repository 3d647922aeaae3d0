//! OAuth client credentials, developer accounts, scopes, tenant isolation and rate limits,
//! through the router.

mod support;

use axum::{
    body::Body,
    http::{Request, header},
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::api;
use tower::ServiceExt;

/// POSTs a form to the token endpoint; status, body and headers.
async fn token_request(
    api: &support::Api,
    form: &str,
    basic: Option<&str>,
) -> (u16, Value, axum::http::HeaderMap) {
    let mut req = Request::builder()
        .method("POST")
        .uri("/oauth2/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(b) = basic {
        req = req.header(header::AUTHORIZATION, format!("Basic {b}"));
    }
    let resp = api
        .app
        .clone()
        .oneshot(req.body(Body::from(form.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap(), headers)
}

async fn create_developer(api: &support::Api, id: &str, provider: &str) -> (String, String) {
    let (s, v) = api
        .request(
            "POST",
            "/mecfed/v1/developers",
            Some(json!({"id": id, "appProvider": provider})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    (
        v["clientId"].as_str().unwrap().to_string(),
        v["clientSecret"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn developers_get_tokens_with_their_credentials_only() {
    let api = api();
    let (id, secret) = create_developer(&api, "studio", "StudioOne").await;
    assert_eq!(id, "dev.studio");
    let (s, v, h) = token_request(
        &api,
        &format!("grant_type=client_credentials&client_id={id}&client_secret={secret}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    let token = v["access_token"].as_str().unwrap().to_string();
    // The token works: the developer's (empty) instance list.
    let (s, list) = api
        .call("GET", "/mecfed/v1/instances", Some(&token), None)
        .await;
    assert_eq!(s, 200, "{list}");
    // ...but not on operator endpoints.
    let (s, p) = api
        .call("GET", "/mecfed/v1/sites", Some(&token), None)
        .await;
    assert_eq!(s, 403, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("mecfed:admin"));

    // HTTP Basic works too, and a narrowed scope is honoured.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let (s, v, _) = token_request(
        &api,
        "grant_type=client_credentials&scope=simple-edge-discovery:read",
        Some(&basic),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["scope"], "simple-edge-discovery:read");
    let narrow = v["access_token"].as_str().unwrap().to_string();
    let (s, _) = api
        .call("GET", "/mecfed/v1/instances", Some(&narrow), None)
        .await;
    assert_eq!(s, 403);

    // Wrong secret, unknown client, scope not granted, other grant type.
    let (s, v, h) = token_request(
        &api,
        &format!("grant_type=client_credentials&client_id={id}&client_secret=nope"),
        None,
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    assert!(h.contains_key(header::WWW_AUTHENTICATE));
    let (s, v, _) = token_request(
        &api,
        "grant_type=client_credentials&client_id=dev.ghost&client_secret=x",
        None,
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    let (s, v, _) = token_request(
        &api,
        &format!(
            "grant_type=client_credentials&client_id={id}&client_secret={secret}&scope=mecfed:admin"
        ),
        None,
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_scope")));
    let (s, v, _) = token_request(&api, "grant_type=password&username=a&password=b", None).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    // Rotating the secret retires the old one.
    let (s, v) = api
        .request("POST", "/mecfed/v1/developers/studio/secret", None)
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _, _) = token_request(
        &api,
        &format!("grant_type=client_credentials&client_id={id}&client_secret={secret}"),
        None,
    )
    .await;
    assert_eq!(s, 401);
    let fresh = v["clientSecret"].as_str().unwrap();
    let (s, _, _) = token_request(
        &api,
        &format!("grant_type=client_credentials&client_id={id}&client_secret={fresh}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn every_request_needs_a_valid_token() {
    let api = api();
    for (method, uri) in [
        ("GET", "/mecfed/v1/sites"),
        ("GET", "/mecfed/v1/apps"),
        ("POST", "/mecfed/v1/join-tokens"),
        ("GET", "/mecfed/v1/developers"),
        ("GET", "/mecfed/v1/ues"),
    ] {
        let (s, _) = api.call(method, uri, None, None).await;
        assert_eq!(s, 401, "{method} {uri}");
        let (s, _) = api.call(method, uri, Some("not-a-jwt"), None).await;
        assert_eq!(s, 401, "{method} {uri}");
    }
    // A token signed by another platform's key is refused.
    let (foreign, _) = mecfed_api::Auth::ephemeral().issue(&mecfed_api::Principal::operator());
    let (s, _) = api
        .call("GET", "/mecfed/v1/sites", Some(&foreign), None)
        .await;
    assert_eq!(s, 401);
    // Open: version, discovery documents.
    let (s, _) = api.call("GET", "/mecfed/v1/version", None, None).await;
    assert_eq!(s, 200);
    let (s, jwks) = api.call("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    let (s, oidc) = api
        .call("GET", "/.well-known/openid-configuration", None, None)
        .await;
    assert_eq!(s, 200);
    assert!(
        oidc["token_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/oauth2/token")
    );
}

#[tokio::test]
async fn developer_accounts_validate_and_keep_what_is_stored() {
    let api = api();
    create_developer(&api, "studio", "StudioOne").await;
    let (s, v) = api
        .request(
            "POST",
            "/mecfed/v1/developers",
            Some(json!({"id": "studio", "appProvider": "StudioOne"})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = api
        .request(
            "POST",
            "/mecfed/v1/developers",
            Some(json!({"id": "other", "appProvider": "StudioOne"})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    for (body, field) in [
        (json!({"id": "x", "appProvider": "short"}), "appProvider"),
        (
            json!({"id": "x", "appProvider": "XStudioOne", "scopes": ["mecfed:admin"]}),
            "scopes",
        ),
        (
            json!({"id": "x", "appProvider": "XStudioOne", "rateLimit": {"perSecond": 0, "burst": 1}}),
            "rateLimit",
        ),
        (json!({"id": "bad/id", "appProvider": "XStudioOne"}), "id"),
    ] {
        let (s, v) = api
            .request("POST", "/mecfed/v1/developers", Some(body))
            .await;
        assert_eq!(s, 400, "{v}");
        assert!(v["detail"].as_str().unwrap().contains(field), "{v}");
    }
    let (_, list) = api.request("GET", "/mecfed/v1/developers", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("secretSha256").is_none(), "no secret shown");
    // A developer cannot manage developers.
    let dev = api.developer_token("studio");
    let (s, _) = api
        .call("GET", "/mecfed/v1/developers", Some(&dev), None)
        .await;
    assert_eq!(s, 403);
    let (s, _) = api
        .request("DELETE", "/mecfed/v1/developers/studio", None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = api
        .request("DELETE", "/mecfed/v1/developers/studio", None)
        .await;
    assert_eq!(s, 204, "idempotent");
}

#[tokio::test]
async fn tenants_never_see_each_others_apps() {
    let api = api();
    let mut app = serde_json::to_value(support_app("arena", "alpha")).unwrap();
    let alpha = api.developer_token("alpha");
    let beta = api.developer_token("beta");
    let (s, v) = api
        .call(
            "PUT",
            "/mecfed/v1/apps/arena",
            Some(&alpha),
            Some(app.clone()),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // Beta sees nothing of it, and cannot overwrite, re-own or delete it.
    let (_, list) = api.call("GET", "/mecfed/v1/apps", Some(&beta), None).await;
    assert_eq!(list, json!([]));
    for uri in [
        "/mecfed/v1/apps/arena",
        "/mecfed/v1/apps/arena/policy",
        "/mecfed/v1/apps/arena/qos",
        "/mecfed/v1/apps/arena/runtime",
        "/mecfed/v1/apps/arena/explain",
    ] {
        let (s, _) = api.call("GET", uri, Some(&beta), None).await;
        assert_eq!(s, 404, "{uri}");
    }
    app["developer"] = json!("beta");
    let (s, _) = api
        .call(
            "PUT",
            "/mecfed/v1/apps/arena",
            Some(&beta),
            Some(app.clone()),
        )
        .await;
    assert_eq!(s, 404);
    // Beta may not onboard an app in alpha's name either.
    app["developer"] = json!("alpha");
    app["id"] = json!("other");
    let (s, _) = api
        .call("PUT", "/mecfed/v1/apps/other", Some(&beta), Some(app))
        .await;
    assert_eq!(s, 403);
    let (s, _) = api
        .call("DELETE", "/mecfed/v1/apps/arena", Some(&beta), None)
        .await;
    assert_eq!(s, 204, "idempotent and silent");
    let (s, v) = api
        .call("GET", "/mecfed/v1/apps/arena", Some(&alpha), None)
        .await;
    assert_eq!(
        (s, v["developer"].as_str()),
        (200, Some("alpha")),
        "untouched"
    );
    // The operator sees it.
    let (_, list) = api.request("GET", "/mecfed/v1/apps", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let api = api();
    let (s, _) = api
        .request(
            "POST",
            "/mecfed/v1/developers",
            Some(json!({"id": "slow", "appProvider": "SlowStudio", "rateLimit": {"perSecond": 1, "burst": 3}})),
        )
        .await;
    assert_eq!(s, 201);
    let (_, v) = api
        .request("POST", "/mecfed/v1/developers/slow/secret", None)
        .await;
    let secret = v["clientSecret"].as_str().unwrap();
    let (_, v, _) = token_request(
        &api,
        &format!("grant_type=client_credentials&client_id=dev.slow&client_secret={secret}"),
        None,
    )
    .await;
    let token = v["access_token"].as_str().unwrap();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let req = Request::builder()
            .uri("/mecfed/v1/instances")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let resp = api.app.clone().oneshot(req).await.unwrap();
        statuses.push(resp.status().as_u16());
        if let Some(v) = resp.headers().get(header::RETRY_AFTER) {
            retry_after = Some(v.to_str().unwrap().to_string());
        }
    }
    // A burst of 3, then refused: the test runs well within the second a token takes.
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert_eq!(statuses[3], 429, "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // Other clients are not affected.
    let (s, _) = api.request("GET", "/mecfed/v1/instances", None).await;
    assert_eq!(s, 200);
}

fn support_app(id: &str, developer: &str) -> mecfed_core::App {
    use mecfed_core::*;
    App {
        id: AppId::new(id).unwrap(),
        developer: DeveloperId::new(developer).unwrap(),
        name: "Arena".into(),
        version: "1".into(),
        artefact: Artefact::Process {
            command: "/bin/true".into(),
            args: vec![],
            env: Default::default(),
        },
        ports: vec![],
        resources: Resources::parse("cpu=100m,memory=64Mi").unwrap(),
        readiness: None,
        load: None,
        qos: AppQos {
            latency_budget_ms: 20,
            five_qi: None,
            max_sessions_per_instance: 10,
            demand_areas: vec![],
        },
        stateful: false,
        zones: None,
        pins: Default::default(),
    }
}
