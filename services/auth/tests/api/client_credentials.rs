//! `POST /v1/auth/token`: the client credentials grant, and the user
//! service accepting only tokens for its audience with its scope.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use portico_auth::domain::{audit::AuditKind, clients::ClientConfig};
use portico_testkit::{Backend, issuer::claims_of};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    audit::events_of_kind,
    helpers::{TestApp, on_both_backends},
};

const SECRET: &str = "billing-secret-6f1d2c9a8b7e4f30a1b2c3d4";

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Auth with one client, `billing`: audiences `portico-user` (default) and
/// `portico-audit`, scopes `users:read` and `users:write`.
async fn app_with_client(backend: Backend) -> TestApp {
    TestApp::spawn_with_config(backend, |config| {
        config.service_clients = BTreeMap::from([(
            "billing".to_owned(),
            ClientConfig {
                secret_sha256: sha256_hex(SECRET),
                audiences: vec!["portico-user".to_owned(), "portico-audit".to_owned()],
                scopes: vec!["users:read".to_owned(), "users:write".to_owned()],
            },
        )]);
    })
    .await
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form_body(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn token_request(
    app: &TestApp,
    authorization: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/v1/auth/token", app.api))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form_body(form));
    if let Some(authorization) = authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    request.send().await.unwrap()
}

/// Expects an RFC 6749 §5.2 error; returns its body.
async fn assert_oauth_error(response: reqwest::Response, status: StatusCode, error: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    if status == StatusCode::UNAUTHORIZED {
        assert!(
            response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string());
    assert!(body["request_id"].is_string());
    assert!(!body.to_string().contains(SECRET));
    body
}

async fn a_client_gets_a_token_for_its_default_audience_with_basic_auth(backend: Backend) {
    // Arrange
    let app = app_with_client(backend).await;

    // Act
    let response = token_request(
        &app,
        Some(&basic("billing", SECRET)),
        &[("grant_type", "client_credentials")],
    )
    .await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "users:read users:write");
    assert!(body["expires_in"].as_i64().unwrap() > 0);
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "service:billing");
    assert_eq!(claims["aud"], "portico-user");
    assert_eq!(claims["scope"], "users:read users:write");
    assert_eq!(claims["roles"], json!(["service"]));
    assert_eq!(claims.get("sid"), None);
    let issued = events_of_kind(&app, AuditKind::ClientTokenIssued).await;
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].actor.as_deref(), Some("client:billing"));
}

async fn form_credentials_with_an_audience_and_scope_get_exactly_that(backend: Backend) {
    // Arrange
    let app = app_with_client(backend).await;

    // Act
    let response = token_request(
        &app,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "billing"),
            ("client_secret", SECRET),
            ("audience", "portico-audit"),
            ("scope", "users:read"),
        ],
    )
    .await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["scope"], "users:read");
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(
        (claims["aud"].as_str(), claims["scope"].as_str()),
        (Some("portico-audit"), Some("users:read"))
    );
}

/// (Authorization header, form, expected status, expected `error`).
type BadRequestCase<'a> = (Option<String>, Vec<(&'a str, &'a str)>, StatusCode, &'a str);

async fn bad_token_requests_get_rfc_6749_errors_and_no_token(backend: Backend) {
    // Arrange
    let app = app_with_client(backend).await;
    let good = basic("billing", SECRET);
    let grant = ("grant_type", "client_credentials");
    let cases: Vec<BadRequestCase> = vec![
        (
            Some(basic("billing", "wrong")),
            vec![grant],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            Some(basic("nobody", SECRET)),
            vec![grant],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            Some("Basic %%%".to_owned()),
            vec![grant],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            None,
            vec![grant],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            None,
            vec![grant, ("client_id", "billing")],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            Some(good.clone()),
            vec![grant, ("client_id", "billing"), ("client_secret", SECRET)],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Some(good.clone()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Some(good.clone()),
            vec![grant, grant],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Some(good.clone()),
            vec![("grant_type", "password")],
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            Some(good.clone()),
            vec![grant, ("scope", "users:read admin")],
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            Some(good.clone()),
            vec![grant, ("audience", "portico-api")],
            StatusCode::BAD_REQUEST,
            "invalid_target",
        ),
    ];

    for (authorization, form, status, error) in cases {
        // Act
        let response = token_request(&app, authorization.as_deref(), &form).await;

        // Assert
        assert_oauth_error(response, status, error).await;
    }
    // A JSON body is not a token request.
    let response = app
        .client
        .post(format!("{}/v1/auth/token", app.api))
        .header(header::AUTHORIZATION, &good)
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(
        events_of_kind(&app, AuditKind::ClientTokenIssued)
            .await
            .is_empty()
    );
    // The two requests with a wrong secret named a client: each left a
    // trace (newest first).
    let failed = events_of_kind(&app, AuditKind::ClientAuthFailed).await;
    let actors: Vec<_> = failed
        .iter()
        .filter_map(|event| event.actor.as_deref())
        .collect();
    assert_eq!(actors, ["client:nobody", "client:billing"]);
}

async fn the_user_service_refuses_a_real_token_for_another_audience(backend: Backend) {
    // Arrange: billing's token for portico-audit, with the write scope.
    let app = app_with_client(backend).await;
    let response = token_request(
        &app,
        Some(&basic("billing", SECRET)),
        &[
            ("grant_type", "client_credentials"),
            ("audience", "portico-audit"),
        ],
    )
    .await;
    let body: Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();

    // Act
    let response = app
        .client
        .post(format!("{}/internal/users", app.user().api))
        .bearer_auth(token)
        .json(&json!({"id": uuid::Uuid::now_v7(), "email": "x@example.com", "display_name": "X"}))
        .send()
        .await
        .unwrap();

    // Assert: not for it — 401; and nothing was created.
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.user().store.count().await.unwrap(), 0);
}

on_both_backends!(
    a_client_gets_a_token_for_its_default_audience_with_basic_auth,
    form_credentials_with_an_audience_and_scope_get_exactly_that,
    bad_token_requests_get_rfc_6749_errors_and_no_token,
    the_user_service_refuses_a_real_token_for_another_audience,
);
