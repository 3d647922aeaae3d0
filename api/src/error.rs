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
    /// No such resource (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the stored state (409).
    #[error("{0}")]
    Conflict(String),
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
        Self::BadRequest(e.body_text())
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail) = match &self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            Self::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.clone()),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            Self::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
            Self::Unavailable(e) => {
                tracing::warn!(error = %e, "store unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, self.to_string())
            }
            Self::Internal(e) => {
                tracing::error!(error = %e, source = ?e.source(), "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, self.to_string())
            }
        };
        ProblemDetails::new(status, detail).into_response()
    }
}
