//! The API's error type: every failure becomes a `ProblemDetails` here, once.

use axum::{
    extract::rejection::JsonRejection,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use mecfed_core::ValidationError;
use mecfed_store::{StoreError, typed::TypedError};

use crate::ProblemDetails;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON for the operation, or a value is invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such resource (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the stored state (409).
    #[error("{0}")]
    Conflict(String),
    /// The request is well formed but cannot be processed (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The caller is over its rate limit; retry after the duration (429).
    #[error("rate limit reached; retry in {} s", .0.as_secs().max(1))]
    TooManyRequests(std::time::Duration),
    /// A precondition (`If-Match`) failed (412).
    #[error("{0}")]
    PreconditionFailed(String),
    /// A request the framework refused with its own status (413 body too large, 415 not JSON).
    #[error("{1}")]
    Rejected(StatusCode, String),
    /// Valid, but not something this platform does (501).
    #[error("{0}")]
    NotImplemented(String),
    /// The state store cannot be reached (503).
    #[error("state store unavailable")]
    Unavailable(#[source] StoreError),
    /// Anything else (500); logged once, not shown to the client.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        match e.status() {
            s @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => {
                Self::Rejected(s, e.body_text())
            }
            _ => Self::BadRequest(e.body_text()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            Self::Unavailable(e)
        } else {
            Self::Internal(Box::new(e))
        }
    }
}

impl From<TypedError> for ApiError {
    fn from(e: TypedError) -> Self {
        match e {
            TypedError::NotFound { .. } => Self::NotFound(e.to_string()),
            TypedError::AlreadyExists { .. } | TypedError::Conflict { .. } => {
                Self::Conflict(e.to_string())
            }
            TypedError::Store(s) => s.into(),
            other => Self::Internal(Box::new(other)),
        }
    }
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Rejected(s, _) => *s,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told; server-side failures are logged here, once, and described
    /// generically.
    pub fn public_message(&self) -> String {
        match self {
            Self::Unavailable(e) => tracing::warn!(error = %e, "store unavailable"),
            Self::Internal(e) => {
                tracing::error!(error = %e, source = ?e.source(), "internal error");
            }
            _ => {}
        }
        self.to_string()
    }

    /// Headers the status calls for: `Retry-After` on 429, `WWW-Authenticate` on 401.
    pub(crate) fn add_headers(&self, headers: &mut axum::http::HeaderMap) {
        use axum::http::{HeaderValue, header};
        match self {
            Self::TooManyRequests(wait) => {
                // Whole seconds, rounded up: a client retrying then finds a token.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            Self::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="mecfed""#),
                );
            }
            _ => {}
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = ProblemDetails::new(status, self.public_message()).into_response();
        self.add_headers(resp.headers_mut());
        resp
    }
}
