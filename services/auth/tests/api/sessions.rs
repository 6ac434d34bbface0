//! Refresh-token rotation, reuse detection and logout.

use std::sync::Arc;

use portico_common::clock::ManualClock;
use portico_testkit::Backend;
use reqwest::StatusCode;
use time::{Duration, OffsetDateTime};

use portico_auth::domain::audit::AuditKind;

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

/// Default `tokens.refresh_reuse_grace_secs`.
const GRACE: Duration = Duration::seconds(10);

async fn a_retry_within_the_grace_window_gets_the_same_tokens(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let registered = app.register_account("ann@example.com").await;
    let rotated = assert_tokens(app.refresh(&registered.refresh_token).await, StatusCode::OK).await;

    // Act: the answer was lost; the client asks again with the same token.
    let retried = assert_tokens(app.refresh(&registered.refresh_token).await, StatusCode::OK).await;

    // Assert: byte for byte the same tokens, and they keep working.
    assert_eq!(retried.refresh_token, rotated.refresh_token);
    assert_eq!(retried.access_token, rotated.access_token);
    assert_eq!(
        app.user_profile(&retried.access_token).await.status(),
        StatusCode::OK
    );
    assert_tokens(app.refresh(&retried.refresh_token).await, StatusCode::OK).await;
    assert_eq!(app.counts().await, (1, 1), "one session throughout");
}

async fn two_clients_racing_with_one_token_both_get_the_same_tokens(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let registered = app.register_account("ann@example.com").await;

    // Act: two tabs refresh at the same moment.
    let (first, second) = tokio::join!(
        app.refresh(&registered.refresh_token),
        app.refresh(&registered.refresh_token)
    );

    // Assert
    let first = assert_tokens(first, StatusCode::OK).await;
    let second = assert_tokens(second, StatusCode::OK).await;
    assert_eq!(first.refresh_token, second.refresh_token);
    assert_eq!(first.access_token, second.access_token);
    assert_tokens(app.refresh(&first.refresh_token).await, StatusCode::OK).await;
}

async fn a_spent_token_after_the_grace_window_revokes_the_session(backend: Backend) {
    // Arrange
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = TestApp::spawn_with_clock(backend, clock.clone()).await;
    let registered = app.register_account("ann@example.com").await;
    let rotated = assert_tokens(app.refresh(&registered.refresh_token).await, StatusCode::OK).await;
    clock.advance(GRACE + Duration::seconds(1));

    // Act: the old token comes back late, as if it had been stolen.
    let replay = app.refresh(&registered.refresh_token).await;
    let legitimate = app.refresh(&rotated.refresh_token).await;

    // Assert: the whole session is over, its current token included, and
    // a security event says why.
    assert_unauthorized(replay).await;
    assert_unauthorized(legitimate).await;
    let sid = portico_testkit::issuer::claims_of(&registered.access_token)["sid"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .unwrap();
    let reused = crate::audit::events_of_kind(&app, AuditKind::RefreshReused).await;
    assert_eq!(reused.len(), 1);
    assert_eq!(reused[0].session_id, Some(sid));
}

async fn an_older_generation_coming_back_revokes_the_session(backend: Backend) {
    // Arrange: A → B → C, each step outside the grace window.
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = TestApp::spawn_with_clock(backend, clock.clone()).await;
    let a = app.register_account("ann@example.com").await;
    clock.advance(GRACE + Duration::seconds(1));
    let b = assert_tokens(app.refresh(&a.refresh_token).await, StatusCode::OK).await;
    clock.advance(GRACE + Duration::seconds(1));
    let c = assert_tokens(app.refresh(&b.refresh_token).await, StatusCode::OK).await;
    clock.advance(GRACE + Duration::seconds(1));

    // Act: the first token, two rotations old.
    let replay = app.refresh(&a.refresh_token).await;

    // Assert
    assert_unauthorized(replay).await;
    assert_unauthorized(app.refresh(&c.refresh_token).await).await;
}

async fn a_token_whose_successor_moved_on_within_the_window_is_refused_without_revoking(
    backend: Backend,
) {
    // Arrange: A → B → C inside the window (one client refreshing fast).
    let app = TestApp::spawn(backend).await;
    let a = app.register_account("ann@example.com").await;
    let b = assert_tokens(app.refresh(&a.refresh_token).await, StatusCode::OK).await;
    let c = assert_tokens(app.refresh(&b.refresh_token).await, StatusCode::OK).await;

    // Act: A again, still inside its window.
    let late = app.refresh(&a.refresh_token).await;

    // Assert: refused, but the session lives on.
    assert_unauthorized(late).await;
    assert_tokens(app.refresh(&c.refresh_token).await, StatusCode::OK).await;
}

async fn a_session_unused_past_the_idle_timeout_ends(backend: Backend) {
    // Arrange
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = TestApp::spawn_with_clock(backend, clock.clone()).await;
    let used = app.register_account("ann@example.com").await;
    let unused = assert_tokens(app.login("ann@example.com", PASSWORD).await, StatusCode::OK).await;

    // Act: 13 days on, one session is used; 2 more days, both are tried.
    clock.advance(Duration::days(13));
    let kept = assert_tokens(app.refresh(&used.refresh_token).await, StatusCode::OK).await;
    clock.advance(Duration::days(2));

    // Assert: the unused one has been idle 15 days (> 14); the other 2.
    assert_unauthorized(app.refresh(&unused.refresh_token).await).await;
    assert_tokens(app.refresh(&kept.refresh_token).await, StatusCode::OK).await;
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
    a_retry_within_the_grace_window_gets_the_same_tokens,
    two_clients_racing_with_one_token_both_get_the_same_tokens,
    a_spent_token_after_the_grace_window_revokes_the_session,
    an_older_generation_coming_back_revokes_the_session,
    a_token_whose_successor_moved_on_within_the_window_is_refused_without_revoking,
    a_session_unused_past_the_idle_timeout_ends,
    unknown_refresh_token_is_refused,
    logout_revokes_the_session_of_the_access_token,
    logout_ends_only_its_own_session,
    logout_without_a_token_is_401,
);
