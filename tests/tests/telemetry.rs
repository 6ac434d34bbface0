//! Trace context and span export across real processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, routing::post};
use portico_e2e::System;
use portico_testkit::{Backend, eventually};
use serde_json::json;

async fn register(system: &System) -> String {
    system.register("trace@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_client_trace_id_reaches_the_user_service_through_the_gateway() {
    let system = System::start(Backend::Sqlite).await;
    let token = register(&system).await;
    let trace_id = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");

    let response = system
        .client
        .get(system.url("/v1/users/me"))
        .bearer_auth(&token)
        .header("traceparent", &traceparent)
        .header("x-request-id", "trace-e2e-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "trace-e2e-1");

    // Log lines are written as the response goes out; poll for them.
    eventually(
        Duration::from_secs(10),
        "the trace id in the gateway and user logs",
        || {
            let gateway = system.gateway.log();
            let users: String = system.users.iter().map(|u| u.log()).collect();
            let seen = [gateway, users].iter().all(|log| {
                log.lines()
                    .any(|line| line.contains(&trace_id) && line.contains("trace-e2e-1"))
            });
            async move { seen.then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn auth_passes_trace_context_and_request_id_on_to_the_user_service() {
    let system = System::start(Backend::Sqlite).await;
    let trace_id = format!("{:032x}", uuid::Uuid::new_v4().as_u128());

    let response = system
        .client
        .post(system.url("/v1/auth/register"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .header("x-request-id", "trace-e2e-register")
        .json(&json!({"email": "hop@example.com", "password": "correct horse battery", "display_name": "H"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // gateway → auth (hyper) → user (reqwest): the profile creation on the
    // user service is logged under the client's trace and request id.
    eventually(
        Duration::from_secs(10),
        "the internal call logged with the trace id",
        || {
            let users: String = system.users.iter().map(|u| u.log()).collect();
            let seen = users.lines().any(|line| {
                line.contains("/internal/users")
                    && line.contains(&trace_id)
                    && line.contains("trace-e2e-register")
            });
            async move { seen.then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn spans_are_exported_over_otlp_when_an_endpoint_is_configured() {
    // A stand-in OpenTelemetry collector (a third party) that counts exports.
    let exports = Arc::new(AtomicUsize::new(0));
    let counter = exports.clone();
    let collector = Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let counter = counter.clone();
            async move {
                if !body.is_empty() {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await.unwrap() });

    let mut system = System::start_with(
        Backend::Sqlite,
        &[("gateway", "TELEMETRY__OTLP_ENDPOINT", endpoint.as_str())],
    )
    .await;
    let response = system
        .client
        .get(system.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Stopping flushes the batch exporter.
    let status = system.gateway.terminate().await;
    assert!(status.success(), "{}", system.logs());
    assert!(
        exports.load(Ordering::SeqCst) >= 1,
        "no span export reached the collector:\n{}",
        system.logs()
    );
}

/// The gateway's `route` label is the operation's path template from the
/// services' own OpenAPI documents; an undocumented path keeps its route's
/// prefix, so the label set stays as small as the API.
#[tokio::test]
async fn gateway_metrics_name_each_operation_by_its_template() {
    let system = System::start(Backend::Sqlite).await;
    let token = register(&system).await;
    let gateway_count = |route: &'static str| {
        let system = &system;
        async move { system.gateway.request_count(&system.client, route).await }
    };
    // The gateway learns the operations in the background at start.
    eventually(
        Duration::from_secs(20),
        "/v1/users/me labelled as its own operation",
        || async {
            let response = system
                .client
                .get(system.url("/v1/users/me"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            (gateway_count("/v1/users/me").await > 0).then_some(())
        },
    )
    .await;

    // Registration may have been counted before the operations were known.
    let before_login = gateway_count("/v1/auth/login").await;
    let before_prefix = gateway_count("/v1/auth").await;
    let login = system
        .client
        .post(system.url("/v1/auth/login"))
        .json(&json!({"email": "trace@example.com", "password": "not the password at all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 401);
    for _ in 0..2 {
        let ended = system
            .client
            .delete(system.url(&format!("/v1/auth/sessions/{}", uuid::Uuid::now_v7())))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(ended.status(), 404);
    }
    let unknown = system
        .client
        .get(system.url("/v1/auth/no-such-operation"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    assert_eq!(gateway_count("/v1/auth/login").await, before_login + 1);
    assert_eq!(gateway_count("/v1/auth/sessions/{id}").await, 2);
    assert_eq!(
        gateway_count("/v1/auth").await,
        before_prefix + 1,
        "an undocumented path is counted under its route's prefix"
    );
}
