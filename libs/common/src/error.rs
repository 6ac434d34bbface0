//! RFC 9457 problem details: the one error shape every Portico response uses.
//!
//! Services keep their own error enum and convert it into a [`Problem`]; the
//! request pipeline ([`crate::http::pipeline`]) fills in `request_id` and turns
//! any non-problem error response (router 404/405, body limit 413, timeouts)
//! into a problem as well, so clients only ever parse one error format.

use axum::{
    Json,
    extract::{FromRequest, Request, rejection::JsonRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
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
        }
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

    /// 500 with a fixed, cause-free detail: callers log the cause themselves.
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
                Problem::validation(vec![field_error_from_serde(&err.body_text())])
            }
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Problem::payload_too_large("the request body exceeds the limit")
            }
            other => {
                Problem::bad_request(format!("the body could not be read: {}", other.body_text()))
            }
        }
    }
}

/// Turns serde's message ("missing field `email` at line 1 column 2") into a
/// field error naming the field when serde named it.
fn field_error_from_serde(message: &str) -> FieldError {
    // axum prefixes the serde error with a fixed sentence; keep serde's part.
    let serde_part = message.split_once(": ").map_or(message, |(_, rest)| rest);
    let field = serde_part
        .split_once("missing field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(name, _)| name)
        .or_else(|| {
            // "fieldname: invalid type ..." comes from a nested path.
            serde_part
                .split_once(": ")
                .map(|(path, _)| path)
                .filter(|p| !p.contains(' ') && !p.is_empty())
        })
        .unwrap_or("body");
    let text = serde_part
        .rsplit_once(" at line ")
        .map_or(serde_part, |(msg, _)| msg);
    FieldError::new(field, text)
}

/// `Json<T>` whose rejections are [`Problem`]s (400/415/422/413).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(Problem::from(rejection)),
        }
    }
}

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

    #[test]
    fn missing_field_names_the_field() {
        let err = field_error_from_serde(
            "Failed to deserialize the JSON body into the target type: missing field `email` at line 1 column 2",
        );
        assert_eq!(err.field, "email");
        assert_eq!(err.message, "missing field `email`");
    }

    #[test]
    fn nested_path_names_the_field() {
        let err = field_error_from_serde(
            "Failed to deserialize the JSON body into the target type: password: invalid type: integer `3`, expected a string at line 1 column 40",
        );
        assert_eq!(err.field, "password");
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
