//! Registration: credential, first session and a profile in the user service.

use portico_testkit::Backend;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, assert_tokens, on_both_backends, registration};

async fn register_returns_201_with_tokens_and_the_user_id(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;

    // Act
    let response = app.register(&registration("ann@example.com")).await;

    // Assert
    let tokens = assert_tokens(response, StatusCode::CREATED).await;
    let user_id = tokens.user_id.expect("user_id in a registration answer");
    assert_eq!(user_id.get_version_num(), 7, "user ids are UUIDv7");
    assert_eq!(app.counts().await, (1, 1));
}

async fn access_token_is_eddsa_signed_with_a_published_key(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;

    // Act
    let tokens = app.register_account("ann@example.com").await;
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();

    // Assert
    let header = jsonwebtoken::decode_header(&tokens.access_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let kid = header.kid.expect("kid in the token header");
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|key| key["kid"].as_str())
        .collect();
    assert!(published.contains(&kid.as_str()), "{kid} not in {jwks}");
}

async fn registered_user_has_a_profile_in_the_user_service(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;

    // Act
    let tokens = app.register_account("Ann@Example.com").await;
    let response = app.user_profile(&tokens.access_token).await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let profile: Value = response.json().await.unwrap();
    assert_eq!(profile["id"], tokens.user_id.unwrap().to_string());
    assert_eq!(profile["email"], "Ann@Example.com");
    assert_eq!(profile["display_name"], "Ann");
    assert_eq!(app.user().store.count().await.unwrap(), 1);
}

on_both_backends!(
    register_returns_201_with_tokens_and_the_user_id,
    access_token_is_eddsa_signed_with_a_published_key,
    registered_user_has_a_profile_in_the_user_service,
);
