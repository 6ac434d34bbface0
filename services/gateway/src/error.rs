//! The gateway's one error type. Like Pingora's, it says who failed — the
//! client, the upstream, or us — and each variant documents its status.

use axum::response::{IntoResponse, Response};
use portico_common::{Problem, jwt::VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// 400: a path the gateway refuses to interpret (dot segments, encoded
    /// slashes).
    #[error("ambiguous path")]
    AmbiguousPath,
    /// 401 (or 503 when keys cannot be fetched): bearer token refused at the edge.
    #[error("unauthenticated: {0}")]
    Unauthenticated(#[from] VerifyError),
    /// 403: a valid token without the role the route requires.
    #[error("the route requires the role `{0}`")]
    Forbidden(String),
    /// 403: a CORS preflight from an origin, or for a method or header, the
    /// route does not allow.
    #[error("cross-origin request not allowed")]
    CorsRefused,
    /// 404: no route matches the request.
    #[error("no route matches")]
    NoRoute,
    /// 413: body over the route's (or the proxy's) `max_body_bytes`.
    #[error("body too large")]
    BodyTooLarge,
    /// 408: the client did not send its body within the route's timeout.
    #[error("body not received in time")]
    BodyTimeout,
    /// 400: the client's body could not be read.
    #[error("body unreadable: {0}")]
    BodyUnreadable(String),
    /// 501: a WebSocket over HTTP/2 (extended CONNECT) on a route whose
    /// upstream speaks HTTP/2, which cannot be asked for an HTTP/1.1
    /// upgrade.
    #[error("upstream `{0}` cannot take a WebSocket over HTTP/2")]
    WebSocketOverHttp2(String),
    /// 429: over the route's rate limit; retry after the given seconds.
    #[error("rate limited")]
    RateLimited {
        retry_after_secs: u32,
        headers: http::HeaderMap,
    },
    /// 503: the upstream's limits on requests in flight and queued are
    /// reached (circuit breaking).
    #[error("upstream `{0}` is at its limit of requests")]
    Overloaded(String),
    /// 503: no replica of the upstream accepted a connection.
    #[error("upstream `{0}` has no reachable replica")]
    NoReplica(String),
    /// 502: a replica failed mid-request.
    #[error("upstream `{upstream}` failed: {cause}")]
    BadGateway { upstream: String, cause: String },
    /// 504: the upstream did not answer within the route's timeout.
    #[error("upstream `{0}` timed out")]
    Timeout(String),
}

impl From<GatewayError> for Problem {
    fn from(err: GatewayError) -> Self {
        use axum::http::StatusCode;
        let problem = match &err {
            GatewayError::AmbiguousPath => {
                Problem::bad_request("the path contains dot segments or encoded separators")
            }
            GatewayError::Unauthenticated(verify) => return verify.to_problem(),
            GatewayError::Forbidden(_) => {
                Problem::forbidden("this route requires a role your token does not carry")
            }
            GatewayError::CorsRefused => Problem::new(
                StatusCode::FORBIDDEN,
                "cors-refused",
                "this route does not allow that origin, method or header across origins",
            ),
            GatewayError::NoRoute => return Problem::not_found("no resource at this path"),
            GatewayError::BodyTooLarge => {
                Problem::payload_too_large("the request body exceeds the gateway's limit")
            }
            GatewayError::BodyTimeout => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request body was not received in time",
            ),
            GatewayError::BodyUnreadable(_) => {
                Problem::bad_request("the request body could not be read")
            }
            GatewayError::RateLimited {
                retry_after_secs, ..
            } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "too many requests; retry after the time given",
            )
            .retry_after(*retry_after_secs),
            GatewayError::Overloaded(_) => {
                Problem::service_unavailable("the service is at capacity; retry shortly")
                    .retry_after(1)
            }
            GatewayError::NoReplica(_) => {
                Problem::service_unavailable("the service is unavailable; retry shortly")
                    .retry_after(1)
            }
            GatewayError::WebSocketOverHttp2(_) => Problem::new(
                StatusCode::NOT_IMPLEMENTED,
                "websocket-over-http2-unsupported",
                "this route takes WebSockets over HTTP/1.1 only",
            ),
            GatewayError::BadGateway { .. } => Problem::new(
                StatusCode::BAD_GATEWAY,
                "bad-gateway",
                "the service failed to answer",
            ),
            GatewayError::Timeout(_) => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "the service did not answer in time",
            ),
        };
        // Who failed and why, for the one log line the pipeline writes.
        problem.with_cause(err)
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let extra = match &self {
            GatewayError::RateLimited { headers, .. } => Some(headers.clone()),
            _ => None,
        };
        let mut response = Problem::from(self).into_response();
        if let Some(extra) = extra {
            response.headers_mut().extend(extra);
        }
        response
    }
}
