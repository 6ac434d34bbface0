//! Refresh-token rotation, reuse detection and logout.

use portico_testkit::Backend;
use reqwest::StatusCode;

use crate::helpers::{PASSWORD, TestApp, assert_tokens, assert_unauthorized, on_both_backends};

async fn refresh_rotates_the_refresh_token(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let registered = app.register_account("ann@example.com").await;

    // Act
    let response = app.refresh(&registered.refresh_token).await;

    // Assert
    let rotated = assert_tokens(response, StatusCode::OK).await;
    assert_ne!(rotated.refresh_token, registered.refresh_token);
    let profile = app.user_profile(&rotated.access_token).await;
    assert_eq!(profile.status(), StatusCode::OK);
    let again = app.refresh(&rotated.refresh_token).await;
    assert_tokens(again, StatusCode::OK).await;
    assert_eq!(app.counts().await, (1, 1), "the same session throughout");
}

async fn rotated_away_refresh_token_is_refused(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let registered = app.register_account("ann@example.com").await;
    assert_tokens(app.refresh(&registered.refresh_token).await, StatusCode::OK).await;

    // Act
    let response = app.refresh(&registered.refresh_token).await;

    // Assert
    assert_unauthorized(response).await;
}

async fn replaying_a_rotated_token_revokes_the_session(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let registered = app.register_account("ann@example.com").await;
    let rotated = assert_tokens(app.refresh(&registered.refresh_token).await, StatusCode::OK).await;

    // Act: the old token comes back, as if it had been stolen.
    let replay = app.refresh(&registered.refresh_token).await;
    let legitimate = app.refresh(&rotated.refresh_token).await;

    // Assert: the current token of that session no longer works either.
    assert_unauthorized(replay).await;
    assert_unauthorized(legitimate).await;
}

async fn unknown_refresh_token_is_refused(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    app.register_account("ann@example.com").await;

    // Act
    let response = app.refresh("not-a-token-we-issued").await;

    // Assert
    assert_unauthorized(response).await;
}

async fn logout_revokes_the_session_of_the_access_token(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let tokens = app.register_account("ann@example.com").await;

    // Act
    let response = app.logout(Some(&tokens.access_token)).await;

    // Assert
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_unauthorized(app.refresh(&tokens.refresh_token).await).await;
}

async fn logout_ends_only_its_own_session(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let first = app.register_account("ann@example.com").await;
    let second = assert_tokens(app.login("ann@example.com", PASSWORD).await, StatusCode::OK).await;

    // Act
    let response = app.logout(Some(&first.access_token)).await;

    // Assert
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_tokens(app.refresh(&second.refresh_token).await, StatusCode::OK).await;
}

async fn logout_without_a_token_is_401(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let tokens = app.register_account("ann@example.com").await;

    // Act
    let response = app.logout(None).await;

    // Assert
    assert_unauthorized(response).await;
    assert_tokens(app.refresh(&tokens.refresh_token).await, StatusCode::OK).await;
}

on_both_backends!(
    refresh_rotates_the_refresh_token,
    rotated_away_refresh_token_is_refused,
    replaying_a_rotated_token_revokes_the_session,
    unknown_refresh_token_is_refused,
    logout_revokes_the_session_of_the_access_token,
    logout_ends_only_its_own_session,
    logout_without_a_token_is_401,
);
