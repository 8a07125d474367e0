//! Why a request was refused, as the API contract writes it:
//! `{"error": {"code": "...", "message": "..."}}` with the matching HTTP
//! status. Store failures are logged and answered without their internal
//! text.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use vigil_store::StoreError;

/// A parameter that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {parameter}: {reason}")]
pub struct BadParameter {
    pub parameter: String,
    pub reason: String,
}

impl BadParameter {
    pub fn new(parameter: impl Into<String>, reason: impl Into<String>) -> Self {
        BadParameter {
            parameter: parameter.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, or one the API does not know.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A known token asking for what its role does not allow.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    BadParameter(#[from] BadParameter),
    #[error("{0}")]
    NotFound(String),
    /// What the request would change is not in a state that allows it.
    #[error("{0}")]
    Conflict(String),
    /// The answer would pass a configured limit (named by its key).
    #[error("{limit}: {message}")]
    Limit {
        limit: &'static str,
        message: String,
    },
    #[error("the store is unavailable; retry later")]
    Unavailable,
    #[error("internal error; the API's log has the details")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadParameter(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Limit { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::BadParameter(_) => "bad_parameter",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Limit { .. } => "limit_exceeded",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "store read failed");
        if error.is_retryable() {
            ApiError::Unavailable
        } else {
            ApiError::Internal
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.code(), "message": self.to_string()});
        if let ApiError::BadParameter(bad) = &self {
            body["parameter"] = json!(bad.parameter);
        }
        if let ApiError::Limit { limit, .. } = &self {
            body["limit"] = json!(limit);
        }
        (self.status(), Json(json!({ "error": body }))).into_response()
    }
}
