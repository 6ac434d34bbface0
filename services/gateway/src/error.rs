//! The gateway's one error type. Like Pingora's, it says who failed — the
//! client, the upstream, or us — and each variant documents its status.

use axum::response::{IntoResponse, Response};
use portico_common::{Problem, auth::VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// 400: a path the gateway refuses to interpret (dot segments, encoded
    /// slashes).
    #[error("ambiguous path")]
    AmbiguousPath,
    /// 401 (or 503 when keys cannot be fetched): bearer token refused at the edge.
    #[error("unauthenticated: {0}")]
    Unauthenticated(#[from] VerifyError),
    /// 413: body over `proxy.max_body_bytes`.
    #[error("body too large")]
    BodyTooLarge,
    /// 408: the client did not send its body within the route's timeout.
    #[error("body not received in time")]
    BodyTimeout,
    /// 400: the client's body could not be read.
    #[error("body unreadable: {0}")]
    BodyUnreadable(String),
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

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        use axum::http::StatusCode;
        match &self {
            Self::AmbiguousPath => {
                Problem::bad_request("the path contains dot segments or encoded separators")
            }
            Self::Unauthenticated(err) => {
                tracing::info!(reason = %err, "bearer token refused at the edge");
                err.to_problem()
            }
            Self::BodyTooLarge => {
                Problem::payload_too_large("the request body exceeds the gateway's limit")
            }
            Self::BodyTimeout => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request body was not received in time",
            ),
            Self::BodyUnreadable(cause) => {
                tracing::info!(%cause, "request body unreadable");
                Problem::bad_request("the request body could not be read")
            }
            Self::NoReplica(upstream) => {
                tracing::warn!(%upstream, "no reachable replica");
                Problem::service_unavailable("the service is unavailable; retry shortly")
            }
            Self::BadGateway { upstream, cause } => {
                tracing::warn!(%upstream, %cause, "upstream failed");
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "bad-gateway",
                    "the service failed to answer",
                )
            }
            Self::Timeout(upstream) => {
                tracing::warn!(%upstream, "upstream timed out");
                Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "the service did not answer in time",
                )
            }
        }
        .into_response()
    }
}
