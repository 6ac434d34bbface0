//! The data export: auth's part (`GET /v1/auth/export`) and the whole
//! document the user service assembles (`GET /v1/users/me/export`), with
//! both services real.

use portico_testkit::Backend;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{PASSWORD, TestApp, assert_tokens, assert_unauthorized, on_both_backends};

async fn get(url: String, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn auth_exports_the_account_sessions_and_audit_trail_without_secrets(backend: Backend) {
    // Arrange: two sessions, one failed sign-in.
    let app = TestApp::spawn(backend).await;
    let registered = app.register_account("ann@example.com").await;
    assert_eq!(
        app.login("ann@example.com", "not the password")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_tokens(app.login("ann@example.com", PASSWORD).await, StatusCode::OK).await;

    // Act
    let response = app
        .send_as(
            Method::GET,
            "/v1/auth/export",
            Some(&registered.access_token),
            None,
        )
        .await;
    let anonymous = app
        .send_as(Method::GET, "/v1/auth/export", None, None)
        .await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["email"], "ann@example.com");
    assert_eq!(body["email_verified"], false);
    assert_eq!(body["mfa"], "off");
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let kinds: Vec<&str> = body["audit_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["login_succeeded", "login_failed", "registered"],
        "newest first"
    );
    for secret in [
        "password_hash",
        "argon2",
        "refresh",
        &registered.refresh_token,
    ] {
        assert!(!text.contains(secret), "no `{secret}` in the export");
    }
    assert_unauthorized(anonymous).await;
}

async fn the_user_service_export_is_one_document_with_auths_part(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let tokens = app.register_account("ann@example.com").await;
    let user_api = app.user().api.clone();

    // Act
    let response = get(
        format!("{user_api}/v1/users/me/export"),
        Some(&tokens.access_token),
    )
    .await;
    let anonymous = get(format!("{user_api}/v1/users/me/export"), None).await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"portico-export.json\""
    );
    let body: Value = response.json().await.unwrap();
    let user_id = tokens.user_id.unwrap().to_string();
    assert_eq!(body["user_id"], user_id);
    assert_eq!(body["profile"]["id"], user_id);
    assert_eq!(body["profile"]["email"], "ann@example.com");
    assert_eq!(body["events"][0]["type"], "user.created");
    assert_eq!(body["auth"]["email"], "ann@example.com");
    assert_eq!(body["auth"]["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(body["auth"]["audit_events"][0]["type"], "registered");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

on_both_backends!(
    auth_exports_the_account_sessions_and_audit_trail_without_secrets,
    the_user_service_export_is_one_document_with_auths_part,
);
