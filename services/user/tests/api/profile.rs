//! `GET` and `PATCH /v1/users/me`: the caller's own profile.

use portico_testkit::Backend;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem, on_both_backends};

async fn get_me_returns_the_profile_with_an_etag(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);

    // Act
    let response = app.get_me(Some(&token)).await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::ETAG], "\"1\"");
    let body: Value = response.json().await.unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["created_at", "display_name", "email", "id", "updated_at"]
    );
    assert_eq!(body["id"], profile.id.to_string());
    assert_eq!(body["email"], profile.email);
    assert_eq!(body["display_name"], "Ann");
    for time in ["created_at", "updated_at"] {
        let text = body[time].as_str().unwrap();
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|err| panic!("{time} = {text} is not RFC 3339: {err}"));
    }
}

async fn patch_me_changes_the_display_name_and_the_etag(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);
    let before = app.get_me(Some(&token)).await;
    let etag_before = before.headers()[header::ETAG].clone();

    // Act
    let response = app
        .patch_me(Some(&token), &json!({"display_name": "  Ann B.  "}))
        .await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let etag_after = response.headers()[header::ETAG].clone();
    assert_ne!(etag_after, etag_before);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["display_name"], "Ann B.", "the name is stored trimmed");
    let stored = app.store.get(profile.id).await.unwrap().unwrap();
    assert_eq!(stored.display_name, "Ann B.");
    assert_eq!(stored.version, 2);
    let read_back = app.get_me(Some(&token)).await;
    assert_eq!(read_back.headers()[header::ETAG], etag_after);
}

async fn valid_token_without_a_profile_is_404(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let token = app.issuer.user_token(Uuid::now_v7());

    // Act
    let response = app.get_me(Some(&token)).await;

    // Assert
    assert_problem(response, StatusCode::NOT_FOUND).await;
}

on_both_backends!(
    get_me_returns_the_profile_with_an_etag,
    patch_me_changes_the_display_name_and_the_etag,
    valid_token_without_a_profile_is_404,
);
