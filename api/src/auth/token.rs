//! `POST /oauth2/token` (RFC 6749 §4.4, client credentials) and the discovery documents
//! (`/.well-known/openid-configuration`, `/.well-known/jwks.json`).

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use mecfed_core::{App, DeveloperId, Instance, InstanceId};
use mecfed_store::Store;
use serde::{Deserialize, Serialize};

use super::{Developer, OperatorClient, Principal, RateLimit, Role, scopes};
use crate::{ApiError, ApiState, util};

/// How fast one client id may ask for tokens (slows down secret guessing).
const TOKEN_RATE: RateLimit = RateLimit {
    per_second: 5,
    burst: 20,
};

#[derive(Debug, Default, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

#[derive(Debug, Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    scope: String,
}

/// An RFC 6749 §5.2 error.
pub(crate) struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    fn invalid_client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        )
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        // Store trouble: log it through ApiError's own rendering rules, answer generically.
        let status = e.status();
        if status.is_server_error() {
            tracing::warn!(error = %e, "token endpoint");
        }
        Self::new(status, "server_error", e.public_message())
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(serde_json::json!({
                "error": self.error,
                "error_description": self.description,
            })),
        )
            .into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="mecfed""#),
            );
        }
        resp
    }
}

/// Client id and secret from HTTP Basic (RFC 6749 §2.3.1, form-urlencoded halves).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
            .ok()
            .and_then(|mut v| v.pop())
            .map(|(_, v)| v)
    };
    Some((unescape(id)?, unescape(secret)?))
}

/// The principal `client_id` authenticates as with `secret`, before scope narrowing.
async fn authenticate_client<S: Store>(
    st: &ApiState<S>,
    client_id: &str,
    secret: &str,
) -> Result<Principal, OAuthError> {
    let secret_ok = |stored: &str| util::sha256_hex(secret) == stored;
    if client_id == "operator" || client_id.starts_with("operator.") {
        let name = client_id.strip_prefix("operator.").unwrap_or("admin");
        if name.is_empty() || name.contains('/') {
            return Err(OAuthError::invalid_client());
        }
        let doc = st
            .store
            .get::<OperatorClient>(name)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(OAuthError::invalid_client)?;
        if !secret_ok(&doc.value.secret_sha256) {
            return Err(OAuthError::invalid_client());
        }
        return Ok(Principal {
            client_id: client_id.to_string(),
            ..Principal::operator()
        });
    }
    if let Some(raw) = client_id.strip_prefix("dev.") {
        let id = DeveloperId::new(raw).map_err(|_| OAuthError::invalid_client())?;
        let dev = st
            .store
            .get::<Developer>(id.as_str())
            .await
            .map_err(ApiError::from)?
            .ok_or_else(OAuthError::invalid_client)?
            .value;
        if !secret_ok(&dev.secret_sha256) {
            return Err(OAuthError::invalid_client());
        }
        return Ok(Principal {
            scopes: dev.scopes,
            rate: dev.rate_limit,
            ..Principal::developer(dev.id)
        });
    }
    if let Some(raw) = client_id.strip_prefix("inst.") {
        let id = InstanceId::new(raw).map_err(|_| OAuthError::invalid_client())?;
        if !st.auth.check_instance_secret(&id, secret) {
            return Err(OAuthError::invalid_client());
        }
        // The instance must still exist (be placed) and its app must have a developer.
        let inst = st
            .store
            .get::<Instance>(id.as_str())
            .await
            .map_err(ApiError::from)?
            .ok_or_else(OAuthError::invalid_client)?
            .value;
        let app = st
            .store
            .get::<App>(inst.app.as_str())
            .await
            .map_err(ApiError::from)?
            .ok_or_else(OAuthError::invalid_client)?
            .value;
        return Ok(Principal {
            client_id: client_id.to_string(),
            role: Role::Instance,
            developer: Some(app.developer),
            app: Some(app.id),
            instance: Some(id),
            scopes: scopes::INSTANCE.iter().map(|s| (*s).to_string()).collect(),
            rate: RateLimit::INSTANCE,
        });
    }
    Err(OAuthError::invalid_client())
}

pub(crate) async fn issue_token<S: Store>(
    State(st): State<ApiState<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, OAuthErrorResponse> {
    let form_ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_ok {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        )
        .into());
    }
    let req: TokenRequest = serde_urlencoded::from_bytes(&body).map_err(|e| {
        OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("invalid form: {e}"),
        )
    })?;
    match req.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(other) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type {other:?} is not supported; use client_credentials"),
            )
            .into());
        }
        None => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is missing",
            )
            .into());
        }
    }
    let (client_id, secret) = match (
        basic_credentials(&headers),
        req.client_id,
        req.client_secret,
    ) {
        (Some(basic), None, None) => basic,
        (None, Some(id), Some(secret)) => (id, secret),
        (Some(_), _, _) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "give the client credentials either in the Authorization header or in the body",
            )
            .into());
        }
        _ => return Err(OAuthError::invalid_client().into()),
    };
    if let Err(wait) = st
        .rate_limiter
        .check(&format!("token:{client_id}"), TOKEN_RATE)
    {
        return Err(OAuthErrorResponse::TooMany(wait));
    }
    let mut principal = authenticate_client(&st, &client_id, &secret).await?;
    if let Some(asked) = req.scope.as_deref() {
        let asked: Vec<&str> = asked.split_whitespace().collect();
        if let Some(bad) = asked.iter().find(|s| !principal.has(s)) {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                format!("scope {bad:?} is not granted to this client"),
            )
            .into());
        }
        if !asked.is_empty() {
            principal.scopes = asked.into_iter().map(String::from).collect();
        }
    }
    let (token, ttl) = st.auth.issue(&principal);
    let mut resp = Json(TokenResponse {
        access_token: token,
        token_type: "Bearer",
        expires_in: ttl,
        scope: principal.scopes.join(" "),
    })
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// An OAuth error, or a 429.
pub(crate) enum OAuthErrorResponse {
    OAuth(OAuthError),
    TooMany(std::time::Duration),
}

impl From<OAuthError> for OAuthErrorResponse {
    fn from(e: OAuthError) -> Self {
        Self::OAuth(e)
    }
}

impl IntoResponse for OAuthErrorResponse {
    fn into_response(self) -> Response {
        match self {
            Self::OAuth(e) => e.into_response(),
            Self::TooMany(wait) => ApiError::TooManyRequests(wait).into_response(),
        }
    }
}

pub(crate) async fn jwks<S: Store>(State(st): State<ApiState<S>>) -> Json<serde_json::Value> {
    Json(st.auth.jwks())
}

pub(crate) async fn openid_configuration<S: Store>(
    headers: HeaderMap,
    State(_): State<ApiState<S>>,
) -> Json<serde_json::Value> {
    // The issuer's address as the caller reached it.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let base = format!("http://{host}");
    Json(serde_json::json!({
        "issuer": super::keys::ISSUER,
        "token_endpoint": format!("{base}/oauth2/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "scopes_supported": scopes::DEVELOPER,
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
    }))
}
