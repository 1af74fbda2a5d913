//! The one place that decides the HTTP status and error body of every error.
//!
//! Every error answer, 404 and 405 included, is
//! `{"error": {"code": "...", "message": "...", "field": ...}}`.

use crate::actors::AppError;
use serde_json::json;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

/// An error as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The body is not JSON, or not the JSON this route takes (400).
    BadRequest {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    Unauthorized,
    NotFound {
        code: &'static str,
        message: String,
    },
    MethodNotAllowed {
        allow: &'static str,
    },
    Conflict {
        code: &'static str,
        message: String,
    },
    PayloadTooLarge {
        limit: u64,
    },
    UnsupportedMediaType,
    /// Same idempotency key, another body.
    IdempotencyMismatch,
    Overloaded {
        message: String,
        retry_after: u64,
    },
    NotReady,
    NoSpace(String),
    StorageFailed(String),
    Internal(String),
}

impl ApiError {
    /// A 400 for one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: "INVALID_FIELD",
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    /// A 400 for a query or header that is not understood.
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
            field: None,
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, String, Option<String>) {
        match self {
            ApiError::BadRequest {
                code,
                message,
                field,
            } => (
                StatusCode::BAD_REQUEST,
                code,
                message.clone(),
                field.clone(),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "a valid \"Authorization: Bearer <key>\" header is required".into(),
                None,
            ),
            ApiError::NotFound { code, message } => {
                (StatusCode::NOT_FOUND, code, message.clone(), None)
            }
            ApiError::MethodNotAllowed { allow } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                format!("this route allows {allow}"),
                None,
            ),
            ApiError::Conflict { code, message } => {
                (StatusCode::CONFLICT, code, message.clone(), None)
            }
            ApiError::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                format!("the request body is larger than {limit} bytes"),
                None,
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "the request body must be application/json".into(),
                None,
            ),
            ApiError::IdempotencyMismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                "this Idempotency-Key was used with a different request body".into(),
                None,
            ),
            ApiError::Overloaded { message, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "OVERLOADED",
                message.clone(),
                None,
            ),
            ApiError::NotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "NOT_READY",
                "durasaga is recovering or shutting down; retry shortly".into(),
                None,
            ),
            ApiError::NoSpace(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "STORAGE_FULL",
                m.clone(),
                None,
            ),
            ApiError::StorageFailed(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "STORAGE_FAILED",
                m.clone(),
                None,
            ),
            ApiError::Internal(m) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                m.clone(),
                None,
            ),
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The full HTTP answer.
    pub fn into_response(self) -> Response {
        let (status, code, message, field) = self.parts();
        let body = json!({"error": {"code": code, "message": message, "field": field}});
        let mut resp = super::handlers::json_response(status, &body);
        let h = resp.headers_mut();
        match &self {
            ApiError::MethodNotAllowed { allow } => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Overloaded { retry_after, .. } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::NotReady | ApiError::NoSpace(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            ApiError::Unauthorized => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::NotFound(what) => ApiError::NotFound {
                code: match what {
                    "customer" => "CUSTOMER_NOT_FOUND",
                    "order" => "ORDER_NOT_FOUND",
                    "saga" => "SAGA_NOT_FOUND",
                    "dead letter" => "DEAD_LETTER_NOT_FOUND",
                    _ => "NOT_FOUND",
                },
                message: format!("{what} not found"),
            },
            AppError::Conflict { code, message } => ApiError::Conflict { code, message },
            AppError::Overloaded(message) => ApiError::Overloaded {
                message,
                retry_after: 1,
            },
            AppError::NotReady => ApiError::NotReady,
            AppError::IdempotencyMismatch => ApiError::IdempotencyMismatch,
            AppError::NoSpace(m) => ApiError::NoSpace(m),
            AppError::StorageFailed(m) => ApiError::StorageFailed(m),
            AppError::Internal(m) => {
                tracing::error!(error = %m, "internal error answered with 500");
                ApiError::Internal(m)
            }
        }
    }
}
