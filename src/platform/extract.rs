//! Request extractors that turn every malformed input into the product's JSON errors.
//!
//! `Json<T>` replaces actix's own so that a body error names the JSON path that failed
//! (`roles[1]: invalid type…`), distinguishes syntax (400) from shape (422), refuses bodies over
//! the configured limit (413) and never echoes a submitted value back: a mistyped password must
//! not come back in an error message.

use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};

/// The request body limit in force for an app (from `server.body_limit_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// How long reading a request body may take in all (`server.body_read_timeout_seconds`): a
/// client that trickles its body is cut off with 408 instead of holding a worker's connection.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub std::time::Duration);

/// Used where no `BodyReadTimeout` is configured.
pub const DEFAULT_BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The request's body under its app's size limit and read timeout.
pub async fn read_body(req: &HttpRequest, payload: &mut Payload) -> Result<web::Bytes, ApiError> {
    let limit = req.app_data::<BodyLimit>().map_or(1 << 20, |l| l.0);
    let timeout = req.app_data::<BodyReadTimeout>().map_or(DEFAULT_BODY_READ_TIMEOUT, |t| t.0);
    read_limited_within(payload, limit, timeout).await
}

/// A JSON request body, deserialised with errors that follow the product's error contract.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req.app_data::<BodyLimit>().map_or(1 << 20, |l| l.0);
        let timeout = req.app_data::<BodyReadTimeout>().map_or(DEFAULT_BODY_READ_TIMEOUT, |t| t.0);
        let content_type_ok = is_json_content_type(req);
        let declared_too_large = declared_length(req).is_some_and(|len| len > limit);
        let mut payload = payload.take();
        Box::pin(async move {
            if !content_type_ok {
                return Err(ApiError::from_code(ErrorCode::UnsupportedMediaType));
            }
            if declared_too_large {
                return Err(too_large(limit));
            }
            let body = read_limited_within(&mut payload, limit, timeout).await?;
            parse_json(&body).map(Json)
        })
    }
}

/// An optional JSON body: an empty body is `None`; anything else must be valid JSON of `T`
/// (actix's `Option<Json<T>>` would silently turn a malformed body into `None`).
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req.app_data::<BodyLimit>().map_or(1 << 20, |l| l.0);
        let timeout = req.app_data::<BodyReadTimeout>().map_or(DEFAULT_BODY_READ_TIMEOUT, |t| t.0);
        let content_type_ok = is_json_content_type(req);
        let mut payload = payload.take();
        Box::pin(async move {
            let body = read_limited_within(&mut payload, limit, timeout).await?;
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalJson(None));
            }
            if !content_type_ok {
                return Err(ApiError::from_code(ErrorCode::UnsupportedMediaType));
            }
            parse_json(&body).map(|value| OptionalJson(Some(value)))
        })
    }
}

/// Parses a JSON document, mapping syntax errors to 400 and shape errors to 422 naming the path.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut deserializer);
    let value = result.map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let reason = describe_without_values(&inner.to_string());
                if path == "." {
                    ApiError::new(ErrorCode::ValidationFailed, reason.clone())
                        .with_details(serde_json::json!({ "reason": reason }))
                } else {
                    ApiError::validation(&path, reason)
                }
            }
            _ => ApiError::new(ErrorCode::MalformedJson, format!("malformed JSON: {inner}"))
                .with_details(serde_json::json!({ "line": inner.line(), "column": inner.column() })),
        }
    })?;
    deserializer
        .end()
        .map_err(|inner| ApiError::new(ErrorCode::MalformedJson, format!("malformed JSON: {inner}")))?;
    Ok(value)
}

/// serde's data errors quote the offending value (`invalid type: string "hunter2", expected…`).
/// Keep the kind of value and what was expected, drop the value itself.
fn describe_without_values(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let kind = rest.split([' ', ',']).next().unwrap_or("value");
            let expected = rest.find(", expected").map_or("", |at| &rest[at..]);
            return format!("{prefix}{kind}{expected}");
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let expected = rest.find(", expected").map_or("", |at| &rest[at..]);
        return format!("unknown variant{expected}");
    }
    message.to_string()
}

fn is_json_content_type(req: &HttpRequest) -> bool {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn too_large(limit: usize) -> ApiError {
    ApiError::from_code(ErrorCode::PayloadTooLarge).with_details(serde_json::json!({ "limitBytes": limit }))
}

/// Reads a body, stopping as soon as it exceeds `limit` (chunked uploads included).
pub async fn read_limited(payload: &mut Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    read_limited_within(payload, limit, DEFAULT_BODY_READ_TIMEOUT).await
}

/// Reads the whole body: 413 past `limit` bytes, 408 when it takes longer than `timeout`.
pub async fn read_limited_within(
    payload: &mut Payload,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<web::Bytes, ApiError> {
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(payload_error)?;
            if body.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| Err(ApiError::from_code(ErrorCode::RequestTimeout)))
}

fn payload_error(err: PayloadError) -> ApiError {
    match err {
        PayloadError::Overflow => ApiError::from_code(ErrorCode::PayloadTooLarge),
        other => ApiError::new(ErrorCode::BadRequest, format!("could not read the request body: {other}")),
    }
}

/// A page size from a query string: `default` when absent, 400 outside 1..=`max`.
pub fn page_limit(requested: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let limit = requested.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::new(ErrorCode::BadRequest, format!("limit must be between 1 and {max}")))
    }
}

/// Query-string errors: 400 naming the parameter problem (values are not echoed).
pub fn query_error(err: actix_web::error::QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let reason = describe_without_values(&err.to_string());
    ApiError::new(ErrorCode::BadRequest, format!("invalid query string: {reason}")).into()
}

/// Path-segment errors (e.g. a non-numeric id): 404, as the resource cannot exist.
pub fn path_error(_err: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::from_code(ErrorCode::NotFound).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Login {
        username: String,
        password: String,
        roles: Option<Vec<String>>,
    }

    #[test]
    fn syntax_errors_are_400_with_the_parser_reason() {
        let err = parse_json::<Login>(br#"{"username": "a","#).unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedJson);
        assert!(err.message.contains("EOF"), "{}", err.message);
        let err = parse_json::<Login>(br#"{"username": "a", "password": "p"} trailing"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedJson);
    }

    #[test]
    fn shape_errors_are_422_naming_the_path_without_the_value() {
        let err = parse_json::<Login>(br#"{"username": "a", "password": 123456789}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationFailed);
        assert_eq!(err.details["field"], "password");
        assert!(!err.message.contains("123456789"), "{}", err.message);
        assert!(err.message.contains("expected a string"), "{}", err.message);

        let err = parse_json::<Login>(br#"{"username":"a","password":"p","roles":["x",7]}"#).unwrap_err();
        assert_eq!(err.details["field"], "roles[1]");

        let err = parse_json::<Login>(br#"{"username": "a"}"#).unwrap_err();
        assert!(err.message.contains("missing field `password`"), "{}", err.message);

        let err = parse_json::<Login>(br#"{"username":"a","password":"p","admin":true}"#).unwrap_err();
        assert!(err.message.contains("unknown field `admin`"), "{}", err.message);
    }

    #[test]
    fn page_limits_default_and_refuse_out_of_range() {
        assert_eq!(page_limit(None, 50, 200).unwrap(), 50);
        assert_eq!(page_limit(Some(200), 50, 200).unwrap(), 200);
        for bad in [0, -1, 201] {
            assert_eq!(page_limit(Some(bad), 50, 200).unwrap_err().code, ErrorCode::BadRequest);
        }
    }

    #[test]
    fn secrets_in_string_values_are_not_echoed() {
        let err = parse_json::<u32>(br#""hunter2-secret""#).unwrap_err();
        assert!(!err.message.contains("hunter2"), "{}", err.message);
        assert_eq!(
            describe_without_values("invalid type: string \"s3cret\", expected u32 at line 1 column 9"),
            "invalid type: string, expected u32"
        );
    }
}
