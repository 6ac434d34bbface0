//! RFC 9457 problem details: the one error shape every Portico response uses.
//!
//! Services keep their own error enum and convert it into a [`Problem`]; the
//! request pipeline ([`crate::http::pipeline`]) fills in `request_id` and turns
//! any non-problem error response (router 404/405, body limit 413, timeouts)
//! into a problem as well, so clients only ever parse one error format.

use axum::{
    Json,
    extract::{
        FromRequest,
        rejection::{JsonDataError, JsonRejection},
    },
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Prefix of the `type` URI of problems Portico defines.
const TYPE_PREFIX: &str = "urn:portico:problem:";

/// One invalid field of a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// Name of the offending field (`body` when the field cannot be named).
    pub field: String,
    /// What is wrong with it, in words a client developer can act on.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:portico:problem:validation",
    "title": "Unprocessable Content",
    "status": 422,
    "detail": "the request body has invalid fields",
    "request_id": "0195f3c2-8f1e-7c2a-9d1b-4b7c1f3e2a10",
    "errors": [{"field": "email", "message": "must be a valid email address"}]
}))]
pub struct Problem {
    /// URI identifying the problem type.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem type (the HTTP reason phrase).
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// Explanation specific to this occurrence.
    pub detail: String,
    /// The `x-request-id` of the request, for correlating with logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Field-level errors (validation problems only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The internal cause, for the log line the pipeline writes once per
    /// request. Never serialised: clients see `detail` only.
    #[serde(skip)]
    #[schema(ignore)]
    pub cause: Option<String>,
    /// Seconds a client should wait before retrying (`Retry-After`).
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after_secs: Option<u32>,
}

impl Problem {
    /// A problem with the given status; `kind` names the problem type.
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Self {
            problem_type: format!("{TYPE_PREFIX}{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            request_id: None,
            errors: Vec::new(),
            cause: None,
            retry_after_secs: None,
        }
    }

    /// Attaches the internal cause: logged once by the pipeline, never sent.
    #[must_use]
    pub fn with_cause(mut self, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// Asks the client to retry after `secs` seconds (`Retry-After`).
    #[must_use]
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed-request", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", detail)
    }

    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            detail,
        )
    }

    /// 422 with one entry per invalid field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut problem = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "the request body has invalid fields",
        );
        problem.errors = errors;
        problem
    }

    /// 500 with a fixed, cause-free detail; attach the cause with
    /// [`Self::with_cause`] so the pipeline logs it.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an unexpected error occurred; it has been logged",
        )
    }

    pub fn service_unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service-unavailable",
            detail,
        )
    }

    /// A generic problem for a bare status (used to normalise responses
    /// produced by layers and the router that carry no problem body).
    pub fn from_status(status: StatusCode) -> Self {
        let (kind, detail) = match status {
            StatusCode::NOT_FOUND => ("not-found", "no resource at this path"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method-not-allowed",
                "this method is not allowed on this path",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => {
                ("payload-too-large", "the request body exceeds the limit")
            }
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
                ("timeout", "the request took too long to process")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported-media-type",
                "this content type is not supported here",
            ),
            s if s.is_server_error() => ("internal", "an unexpected error occurred"),
            _ => ("error", "the request could not be processed"),
        };
        Self::new(status, kind, detail)
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Renders the problem, request id included when known.
    pub fn to_response(&self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: tell the client which scheme to use.
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // The pipeline reads this back to add the request id without parsing.
        response.extensions_mut().insert(self.clone());
        response
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        self.to_response()
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                Problem::unsupported_media_type("expected `content-type: application/json`")
            }
            JsonRejection::JsonSyntaxError(err) => {
                Problem::bad_request(format!("the body is not valid JSON: {}", err.body_text()))
            }
            JsonRejection::JsonDataError(err) => {
                Problem::validation(vec![field_error_from_data_error(&err)])
            }
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Problem::payload_too_large("the request body exceeds the limit")
            }
            other => Problem::bad_request("the request body could not be read")
                .with_cause(other.body_text()),
        }
    }
}

/// The serde error behind axum's rejection, with the path to the field.
type PathError = serde_path_to_error::Error<serde_json::Error>;

/// Names the offending field from the path serde reports, and keeps serde's
/// message without its position suffix.
fn field_error_from_data_error(err: &JsonDataError) -> FieldError {
    use std::error::Error as _;
    // axum wraps the `serde_path_to_error` error in its own error type.
    let path_error = err
        .source()
        .and_then(|axum_error| axum_error.source())
        .and_then(|inner| inner.downcast_ref::<PathError>());
    match path_error {
        Some(path_error) => field_error(&path_error.path().to_string(), path_error.inner()),
        None => FieldError::new("body", err.body_text()),
    }
}

fn field_error(path: &str, err: &serde_json::Error) -> FieldError {
    let text = err.to_string();
    // serde_json appends " at line L column C"; the position is noise here.
    let message = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(message, _)| message);
    // Missing and unknown fields are reported against their parent object
    // (path `.`); serde names the field in backticks.
    let named_in_message = || {
        ["missing field `", "unknown field `"]
            .iter()
            .find_map(|lead| message.strip_prefix(lead))
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name)
    };
    let field = if path.is_empty() || path == "." {
        named_in_message().unwrap_or("body")
    } else {
        path
    };
    FieldError::new(field, message)
}

/// `Json<T>` whose rejections are [`Problem`]s (400/415/422/413).
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(Json), rejection(Problem))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// Collects field errors so a client learns every invalid field at once.
#[derive(Debug, Default)]
pub struct Validation {
    errors: Vec<FieldError>,
}

impl Validation {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the value when parsing succeeded; records the error otherwise.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(message) => {
                self.errors.push(FieldError::new(field, message));
                None
            }
        }
    }

    /// `Ok(())` when nothing was recorded, else a 422 problem.
    pub fn finish(self) -> Result<(), Problem> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Problem::validation(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // only deserialised
    struct Login {
        email: String,
        password: String,
    }

    fn field_error_for(body: &str) -> FieldError {
        let mut deserializer = serde_json::Deserializer::from_str(body);
        let err = serde_path_to_error::deserialize::<_, Login>(&mut deserializer).unwrap_err();
        field_error(&err.path().to_string(), err.inner())
    }

    #[test]
    fn missing_field_names_the_field() {
        let err = field_error_for(r#"{"password": "x"}"#);
        assert_eq!(err.field, "email");
        assert_eq!(err.message, "missing field `email`");
    }

    #[test]
    fn wrong_type_names_the_field_from_the_path() {
        let err = field_error_for(r#"{"email": "a@b.io", "password": 3}"#);
        assert_eq!(err.field, "password");
        assert!(
            err.message.starts_with("invalid type: integer `3`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn unknown_field_is_named() {
        let err = field_error_for(r#"{"email": "a@b.io", "password": "x", "admin": true}"#);
        assert_eq!(err.field, "admin");
    }

    #[tokio::test]
    async fn the_extractor_turns_a_data_error_into_a_422_naming_the_field() {
        use axum::body::Body;
        let request = axum::http::Request::post("/")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"email": 1, "password": "x"}"#))
            .unwrap();
        let problem = ApiJson::<Login>::from_request(request, &())
            .await
            .unwrap_err();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors[0].field, "email");
    }

    #[tokio::test]
    async fn retry_after_becomes_a_header_and_the_cause_stays_out_of_the_body() {
        use http_body_util::BodyExt;
        let response = Problem::service_unavailable("busy")
            .retry_after(2)
            .with_cause("database is locked")
            .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&bytes);
        assert!(body.contains("busy") && !body.contains("locked"), "{body}");
    }

    #[test]
    fn unauthorized_problem_carries_www_authenticate() {
        let response = Problem::unauthorized("no token").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn validation_collects_every_field() {
        let mut v = Validation::new();
        let a: Option<u8> = v.check("a", Err("bad a".into()));
        let b = v.check("b", Ok(2u8));
        let c: Option<u8> = v.check("c", Err("bad c".into()));
        assert_eq!((a, b, c), (None, Some(2), None));
        let problem = v.finish().unwrap_err();
        assert_eq!(problem.status, 422);
        let fields: Vec<_> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["a", "c"]);
    }
}
