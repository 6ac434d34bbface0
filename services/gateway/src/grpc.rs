//! gRPC clients get gRPC errors: a problem the gateway makes itself (no
//! route, no token, rate limited, no replica, timed out) is answered to a
//! gRPC request as a trailers-only response — HTTP 200 with `grpc-status`
//! and `grpc-message` — which is what gRPC libraries read, instead of a
//! problem+json body they cannot. A gRPC upstream's own answers, trailers
//! included, pass through untouched.

use axum::{body::Body, response::Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use portico_common::error::Problem;

/// Whether the request is gRPC (`application/grpc`, `application/grpc+proto`…).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status code for a problem the gateway made.
pub fn status_code(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 | 414 | 431 => 3,  // INVALID_ARGUMENT
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 | 405 | 501 => 12, // UNIMPLEMENTED
        413 | 429 => 8,        // RESOURCE_EXHAUSTED
        502 | 503 => 14,       // UNAVAILABLE
        504 => 4,              // DEADLINE_EXCEEDED
        500 => 13,             // INTERNAL
        _ => 2,                // UNKNOWN
    }
}

/// The answer to a gRPC request: a problem the gateway made becomes a
/// gRPC status; anything else passes as it is.
pub fn as_grpc_status(response: Response) -> Response {
    let Some(problem) = response.extensions().get::<Problem>().cloned() else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    parts.headers.insert(
        "grpc-status",
        HeaderValue::from(status_code(problem.status_code())),
    );
    if let Ok(message) = HeaderValue::from_str(&percent_encode(&problem.detail)) {
        parts.headers.insert("grpc-message", message);
    }
    Response::from_parts(parts, Body::empty())
}

/// `grpc-message` encoding: printable ASCII except `%` as is, every other
/// byte of the UTF-8 as `%XX`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded_outside_printable_ascii() {
        assert_eq!(percent_encode("no replica"), "no replica");
        assert_eq!(percent_encode("100% é"), "100%25 %C3%A9");
        assert_eq!(percent_encode("a\nb"), "a%0Ab");
    }

    #[test]
    fn the_gateways_statuses_map_to_the_grpc_codes_clients_act_on() {
        for (http, grpc) in [
            (401, 16),
            (403, 7),
            (404, 12),
            (429, 8),
            (503, 14),
            (502, 14),
            (504, 4),
        ] {
            assert_eq!(
                status_code(StatusCode::from_u16(http).unwrap()),
                grpc,
                "{http}"
            );
        }
    }

    #[test]
    fn only_grpc_content_types_are_grpc() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_grpc(&headers));
    }
}
