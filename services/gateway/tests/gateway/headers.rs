//! What the gateway adds to and removes from forwarded requests: internal
//! and spoofable headers out; request id and trace context through.

use http::StatusCode;

use crate::support::{Gateway, RecordingUpstream, gateway_with_user, request_id};

async fn gateway() -> (Gateway, RecordingUpstream) {
    gateway_with_user(|_| {}).await
}

/// A request span filtered out (say `RUST_LOG=warn`) has no trace context.
const NO_TRACEPARENT: &str =
    "no traceparent reached the upstream (does RUST_LOG disable info spans?)";

/// The trace id field of a W3C `traceparent` (`00-<trace>-<span>-<flags>`).
fn trace_id(traceparent: &str) -> &str {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[1].len(), 32, "{traceparent}");
    fields[1]
}

#[tokio::test]
async fn client_sent_internal_and_forwarding_headers_are_replaced() {
    let (gateway, user) = gateway().await;

    let response = gateway
        .client
        .get(gateway.url("/v1/users/me"))
        .header("x-portico-user-id", "0195f3c2-8f1e-7c2a-9d1b-4b7c1f3e2a10")
        .header("x-internal-role", "admin")
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .header("x-real-ip", "6.6.6.6")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let seen = user.last().headers;
    for gone in [
        "x-portico-user-id",
        "x-internal-role",
        "forwarded",
        "x-real-ip",
    ] {
        assert!(!seen.contains_key(gone), "{gone} reached the upstream");
    }
    let forwarded_for: Vec<_> = seen.get_all("x-forwarded-for").iter().collect();
    assert_eq!(forwarded_for, ["127.0.0.1"]);
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-custom"], "kept");
}

#[tokio::test]
async fn te_trailers_is_passed_on_as_grpc_servers_require() {
    let (gateway, user) = gateway().await;

    let response = gateway
        .client
        .get(gateway.url("/v1/users/me"))
        .header("te", "trailers")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(user.last().headers["te"], "trailers");
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (gateway, user) = gateway().await;

    let response = gateway
        .client
        .get(gateway.url("/v1/users/me"))
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("te", "gzip")
        .header("proxy-authorization", "Basic YWRhOmxvdmVsYWNl")
        .header("upgrade", "websocket")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let seen = user.last().headers;
    for gone in ["x-hop", "te", "proxy-authorization", "upgrade"] {
        assert!(!seen.contains_key(gone), "{gone} reached the upstream");
    }
}

#[tokio::test]
async fn a_client_request_id_is_echoed_and_forwarded() {
    let (gateway, user) = gateway().await;

    let response = gateway
        .client
        .get(gateway.url("/v1/users/me"))
        .header("x-request-id", "client-req-42")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(request_id(response.headers()), "client-req-42");
    assert_eq!(user.last().headers["x-request-id"], "client-req-42");
}

#[tokio::test]
async fn a_request_id_is_generated_when_absent_and_forwarded() {
    let (gateway, user) = gateway().await;

    let response = gateway.get("/v1/users/me").await;

    let id = request_id(response.headers());
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id} is not a UUID");
    assert_eq!(user.last().headers["x-request-id"], id.as_str());
}

#[tokio::test]
async fn an_unsafe_request_id_is_replaced_before_it_reaches_the_upstream() {
    let (gateway, user) = gateway().await;

    let response = gateway
        .client
        .get(gateway.url("/v1/users/me"))
        .header("x-request-id", "evil id\"<script>")
        .send()
        .await
        .unwrap();

    let id = request_id(response.headers());
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id} is not a UUID");
    assert_eq!(user.last().headers["x-request-id"], id.as_str());
}

#[tokio::test]
async fn a_traceparent_reaches_the_upstream() {
    let (gateway, user) = gateway().await;

    gateway.get("/v1/users/me").await;

    let seen = user.last().headers;
    let traceparent = seen
        .get("traceparent")
        .expect(NO_TRACEPARENT)
        .to_str()
        .unwrap();
    assert_ne!(trace_id(traceparent), "0".repeat(32));
}

#[tokio::test]
async fn a_client_traceparent_is_continued_not_copied() {
    let (gateway, user) = gateway().await;
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";

    gateway
        .client
        .get(gateway.url("/v1/users/me"))
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .header("tracestate", "congo=t61rcWkgMzE")
        .send()
        .await
        .unwrap();

    let seen = user.last().headers;
    let traceparent = seen
        .get("traceparent")
        .expect(NO_TRACEPARENT)
        .to_str()
        .unwrap();
    assert_eq!(trace_id(traceparent), client_trace);
    // The upstream's parent is the gateway's span, not the client's.
    assert!(!traceparent.contains(client_span), "{traceparent}");
    assert_eq!(seen["tracestate"], "congo=t61rcWkgMzE");
}
