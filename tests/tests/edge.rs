//! Bad input through the gateway against the real system: the right
//! problem, and nothing reaches or changes behind the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use portico_e2e::System;
use portico_testkit::Backend;
use serde_json::{Value, json};

use portico_testkit::http::assert_problem;

/// `token` re-issued as `alg: none`: same key id, same claims, no signature.
fn alg_none_copy(token: &str) -> String {
    use portico_testkit::issuer::{alg_none_token, claims_of, header_of};
    alg_none_token(header_of(token)["kid"].as_str().unwrap(), &claims_of(token))
}

async fn user_reads(system: &System) -> u64 {
    let mut total = 0;
    for user in &system.users {
        total += user.request_count(&system.client, "/v1/users/me").await;
    }
    total
}

#[tokio::test]
async fn invalid_bearer_tokens_are_refused_at_the_gateway_without_reaching_a_replica() {
    let system = System::start(Backend::Sqlite).await;
    let registered = system.register("edge@example.com").await;
    let good = registered["access_token"].as_str().unwrap();
    let tampered = portico_testkit::issuer::tampered(good, &uuid::Uuid::now_v7().to_string());
    // The real key id and claims, only the algorithm changed.
    let unsigned = alg_none_copy(good);
    let before = user_reads(&system).await;

    for token in [
        None,
        Some("not-a-jwt"),
        Some(tampered.as_str()),
        Some(unsigned.as_str()),
    ] {
        let mut request = system.client.get(system.url("/v1/users/me"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_problem(response, 401).await;
    }

    assert_eq!(
        user_reads(&system).await,
        before,
        "a refused request reached a user replica"
    );
}

#[tokio::test]
async fn internal_api_and_unknown_routes_are_404_through_the_gateway() {
    let system = System::start(Backend::Sqlite).await;
    for path in ["/internal/users", "/internal", "/nope", "/v1/usersx"] {
        let response = system
            .client
            .post(system.url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_problem(response, 404).await;
    }
    let created = system.users[0]
        .request_count(&system.client, "/internal/users")
        .await
        + system.users[1]
            .request_count(&system.client, "/internal/users")
            .await;
    assert_eq!(created, 0);
}

#[tokio::test]
async fn malformed_registrations_are_answered_by_auth_with_problems() {
    let system = System::start(Backend::Sqlite).await;
    let url = system.url("/v1/auth/register");

    let response = system
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400).await;

    let response = system
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_problem(response, 415).await;

    let response = system
        .client
        .post(&url)
        .json(&json!({"email": "bad", "password": "short", "display_name": ""}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 422).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "password", "display_name"]);

    let big = "x".repeat(70 * 1024);
    let response = system
        .client
        .post(&url)
        .json(&json!({"email": "a@b.io", "password": big, "display_name": "A"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 413).await;

    // Nothing above created an account: the address is still free.
    let response = system
        .client
        .post(&url)
        .json(&json!({"email": "a@b.io", "password": "correct horse battery", "display_name": "A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn api_reference_and_public_document_are_served_by_the_gateway() {
    let system = System::start(Backend::Sqlite).await;
    let document: Value = system
        .client
        .get(system.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/v1/auth/register",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/users/me",
        "/.well-known/jwks.json",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the public document"
        );
    }
    assert!(!paths.keys().any(|p| p.starts_with("/internal")));

    let response = system
        .client
        .get(system.url("/docs/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("swagger"));
}
