//! The CAMARA APIs: Edge Application Management 0.1.0-alpha.1 ([`eam`]) and Simple Edge
//! Discovery 2.0.1 ([`sed`]), with CAMARA's `ErrorInfo` errors and `x-correlator` echo.

pub mod eam;
pub(crate) mod ids;
pub mod lifecycle;
pub mod sed;
pub mod status;
pub mod zones;

use axum::{
    Json,
    extract::Request,
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use crate::ApiError;

/// Path prefix of Edge Application Management.
pub const EAM_ROOT: &str = "/edge-application-management/v0.1alpha1";
/// Path prefix of Simple Edge Discovery.
pub const SED_ROOT: &str = "/simple-edge-discovery/v2";

/// Whether `path` belongs to a CAMARA API (whose errors are `ErrorInfo`).
pub fn is_camara_path(path: &str) -> bool {
    path.starts_with(EAM_ROOT) || path.starts_with(SED_ROOT)
}

/// CAMARA's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// HTTP status.
    pub status: u16,
    /// CAMARA error code, e.g. `INVALID_ARGUMENT`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// An error of a CAMARA operation: a status, a CAMARA code and a message.
#[derive(Debug)]
pub struct CamaraError {
    inner: ApiError,
    code: Option<&'static str>,
}

impl CamaraError {
    /// An error with an explicit CAMARA `code` (e.g. `IDENTIFIER_NOT_FOUND`).
    pub fn coded(inner: ApiError, code: &'static str) -> Self {
        Self {
            inner,
            code: Some(code),
        }
    }

    /// The generic CAMARA code of a status.
    fn default_code(status: StatusCode) -> &'static str {
        match status.as_u16() {
            400 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            409 => "ALREADY_EXISTS",
            410 => "GONE",
            412 => "FAILED_PRECONDITION",
            422 => "UNPROCESSABLE_ENTITY",
            429 => "TOO_MANY_REQUESTS",
            501 => "NOT_IMPLEMENTED",
            503 => "UNAVAILABLE",
            _ => "INTERNAL",
        }
    }
}

impl From<ApiError> for CamaraError {
    fn from(inner: ApiError) -> Self {
        Self { inner, code: None }
    }
}

impl From<mecfed_core::ValidationError> for CamaraError {
    fn from(e: mecfed_core::ValidationError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<mecfed_store::typed::TypedError> for CamaraError {
    fn from(e: mecfed_store::typed::TypedError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for CamaraError {
    fn into_response(self) -> Response {
        let status = self.inner.status();
        let body = ErrorInfo {
            status: status.as_u16(),
            code: self
                .code
                .unwrap_or_else(|| Self::default_code(status))
                .to_string(),
            message: self.inner.public_message(),
        };
        let mut resp = (status, Json(body)).into_response();
        self.inner.add_headers(resp.headers_mut());
        resp
    }
}

/// Checks the CAMARA `XCorrelator` pattern `^[a-zA-Z0-9-_:;.\/<>{}]{0,256}$`.
fn valid_correlator(v: &str) -> bool {
    v.len() <= 256
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:;./<>{}".contains(&b))
}

/// Middleware of the CAMARA routes: refuses a malformed `x-correlator` and echoes a valid
/// one on every answer, errors included.
pub(crate) async fn correlator(req: Request, next: Next) -> Response {
    let given = req.headers().get("x-correlator").cloned();
    if let Some(v) = &given
        && !v.to_str().is_ok_and(valid_correlator)
    {
        return CamaraError::from(ApiError::BadRequest(
            "invalid x-correlator header: at most 256 of a-z A-Z 0-9 - _ : ; . / < > { }".into(),
        ))
        .into_response();
    }
    let mut resp = next.run(req).await;
    if let Some(v) = given {
        resp.headers_mut().insert("x-correlator", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlators_follow_the_camara_pattern() {
        assert!(valid_correlator("b4333c46-49c0-4f62-80d7-f0ef930f1c46"));
        assert!(valid_correlator(""));
        assert!(valid_correlator("a:b;c.d/e<f>{g}_h"));
        assert!(!valid_correlator("has space"));
        assert!(!valid_correlator("quote\""));
        assert!(!valid_correlator(&"a".repeat(257)));
    }
}
