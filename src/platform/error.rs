//! One error table for the whole product and one JSON shape for every error a client sees:
//! `{"errorCode": "...", "message": "...", "details": ...}`.
//!
//! Internal causes are logged with the request id and never sent to the client.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// The error table: each row is a code, its HTTP status, its stable machine name (what clients
/// branch on) and the message used when nothing more specific is known. Roles map their own
/// error enums into these codes; a new domain code is one more row.
macro_rules! error_table {
    ($($code:ident => ($status:ident, $name:literal, $message:literal),)*) => {
        /// Every error fountain returns, with its HTTP status and a stable machine name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($code,)*
        }

        impl ErrorCode {
            pub const fn status(self) -> StatusCode {
                match self {
                    $(Self::$code => StatusCode::$status,)*
                }
            }

            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$code => $name,)*
                }
            }

            /// A message fit for clients when nothing more specific is known.
            pub const fn default_message(self) -> &'static str {
                match self {
                    $(Self::$code => $message,)*
                }
            }
        }
    };
}

error_table! {
    MalformedJson => (BAD_REQUEST, "malformed_json", "the request body is not valid JSON"),
    BadRequest => (BAD_REQUEST, "bad_request", "the request is not valid"),
    Unauthorized => (UNAUTHORIZED, "unauthorized", "authentication is required"),
    Forbidden => (FORBIDDEN, "forbidden", "you are not allowed to do this"),
    MfaRequired => (FORBIDDEN, "mfa_required", "this requires a second factor: step up at /twofa/2fa/verify"),
    NotFound => (NOT_FOUND, "not_found", "no such resource"),
    MethodNotAllowed => (METHOD_NOT_ALLOWED, "method_not_allowed", "this method is not allowed on this resource"),
    RequestTimeout => (REQUEST_TIMEOUT, "request_timeout", "the request body did not arrive in time"),
    Conflict => (CONFLICT, "conflict", "the resource is in a conflicting state"),
    AlreadyExists => (CONFLICT, "already_exists", "the resource already exists"),
    VersionConflict => (CONFLICT, "version_conflict", "the resource changed since the version given"),
    LastAdmin => (CONFLICT, "last_admin", "this change would leave no enabled admin"),
    PayloadTooLarge => (PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is larger than allowed"),
    UnsupportedMediaType => (UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "the request body must be application/json"),
    ValidationFailed => (UNPROCESSABLE_ENTITY, "validation_failed", "the request failed validation"),
    RateLimited => (TOO_MANY_REQUESTS, "rate_limited", "too many requests"),
    Internal => (INTERNAL_SERVER_ERROR, "internal_error", "an internal error occurred"),
    BadGateway => (BAD_GATEWAY, "bad_gateway", "the upstream service is unavailable"),
    NotReady => (SERVICE_UNAVAILABLE, "not_ready", "the service is not ready"),
    AuditUnavailable => (SERVICE_UNAVAILABLE, "audit_unavailable", "the audit trail cannot be written, so nothing was done"),
    GatewayTimeout => (GATEWAY_TIMEOUT, "gateway_timeout", "the upstream service did not answer in time"),
    InsufficientStorage => (INSUFFICIENT_STORAGE, "insufficient_storage", "there is no room to store this change; nothing was written"),
}

impl ErrorCode {
    /// The code a bare status maps to, for errors raised below fountain (routing, actix itself).
    pub fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            408 => Self::RequestTimeout,
            409 => Self::Conflict,
            413 => Self::PayloadTooLarge,
            415 => Self::UnsupportedMediaType,
            422 => Self::ValidationFailed,
            429 => Self::RateLimited,
            502 => Self::BadGateway,
            503 => Self::NotReady,
            504 => Self::GatewayTimeout,
            507 => Self::InsufficientStorage,
            400..=499 => Self::BadRequest,
            _ => Self::Internal,
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `validation_failed`.
    #[schema(example = "validation_failed")]
    pub error_code: &'static str,
    /// Human-readable explanation; never contains secrets or internal causes.
    pub message: String,
    /// Structured context (the offending field, limits…), or null.
    #[schema(value_type = Object, nullable)]
    pub details: Value,
}

/// An error that renders as `ErrorBody` with the status of its code.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Value,
    /// Seconds a client should wait (sent as `Retry-After` on 429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: Value::Null, retry_after: None }
    }

    pub fn from_code(code: ErrorCode) -> Self {
        Self::new(code, code.default_message())
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// A 422 naming the field that failed, e.g. `validation("password", "must be 12+ characters")`.
    pub fn validation(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(ErrorCode::ValidationFailed, format!("{field}: {reason}"))
            .with_details(serde_json::json!({ "field": field, "reason": reason }))
    }

    /// A 500 whose cause is logged (with the request id) but not shown to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        log::error!(target: "fountain::error", "internal error: {cause}");
        Self::from_code(ErrorCode::Internal)
    }

    /// A 507: the database had no room for a change (its disk or quota is full), so the change
    /// was rolled back whole. Logged as an error: it lasts until an operator frees space.
    pub fn storage_full(cause: impl std::fmt::Display) -> Self {
        log::error!(target: "fountain::error", "storage full, change refused: {cause}");
        Self::from_code(ErrorCode::InsufficientStorage)
    }

    /// A 503 whose cause is logged but not shown to the client.
    pub fn unavailable(part: &str, cause: impl std::fmt::Display) -> Self {
        log::warn!(target: "fountain::error", "{part} unavailable: {cause}");
        Self::new(ErrorCode::NotReady, format!("{part} is unavailable"))
            .with_details(serde_json::json!({ "unavailable": part }))
            .with_retry_after(1)
    }
}

impl ApiError {
    /// A 503 for a request whose audit record cannot be written: the request is refused and
    /// its change rolled back, because nothing may happen that the audit trail does not show.
    /// The cause is logged, not shown.
    pub fn audit_unavailable(cause: impl std::fmt::Display) -> Self {
        log::error!(target: "fountain::audit", "request refused, its audit record cannot be written: {cause}");
        Self::from_code(ErrorCode::AuditUnavailable).with_retry_after(1)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.code.status());
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(ErrorBody {
            error_code: self.code.name(),
            message: self.message.clone(),
            details: self.details.clone(),
        })
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[test]
    fn every_code_round_trips_through_its_status() {
        let all = [
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::Conflict,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::ValidationFailed,
            ErrorCode::RateLimited,
            ErrorCode::BadGateway,
            ErrorCode::NotReady,
            ErrorCode::GatewayTimeout,
            ErrorCode::InsufficientStorage,
        ];
        for code in all {
            assert_eq!(ErrorCode::for_status(code.status()), code, "{}", code.name());
        }
        assert_eq!(ErrorCode::for_status(StatusCode::IM_A_TEAPOT), ErrorCode::BadRequest);
        assert_eq!(ErrorCode::for_status(StatusCode::NOT_IMPLEMENTED), ErrorCode::Internal);
    }

    #[test]
    fn rendered_error_has_the_contract_shape_and_retry_after() {
        let response = ApiError::validation("password", "must be at least 12 characters")
            .with_retry_after(7)
            .error_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "7");
        let bytes = response.into_body().try_into_bytes().unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["errorCode"], "validation_failed");
        assert_eq!(body["message"], "password: must be at least 12 characters");
        assert_eq!(body["details"]["field"], "password");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let response = ApiError::internal("disk /var/secret full").error_response();
        let bytes = response.into_body().try_into_bytes().unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(!text.contains("/var/secret"), "{text}");
        assert!(text.contains("internal_error"));
    }
}
