//! Time-bound behaviour — session lifetime, registrations that died
//! half-way — with the auth service's clock moved instead of waited on.

use std::sync::Arc;

use portico_common::clock::{Clock, ManualClock};
use portico_testkit::Backend;
use reqwest::StatusCode;
use time::{Duration, OffsetDateTime};

use crate::helpers::{
    TestApp, assert_problem, assert_tokens, assert_unauthorized, on_both_backends, registration,
};

/// Default `tokens.refresh_token_ttl_secs`: 30 days.
const SESSION_LIFETIME: Duration = Duration::days(30);

/// Default `registration.pending_timeout_secs`: two minutes.
const PENDING_TIMEOUT: Duration = Duration::minutes(2);

async fn refresh_works_until_the_session_lifetime_and_not_after(backend: Backend) {
    // Arrange
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = TestApp::spawn_with_clock(backend, clock.clone()).await;
    let registered = app.register_account("ann@example.com").await;

    // Act: used every ten days (inside the idle timeout), the session works
    // up to the end of its lifetime, which refreshing does not extend.
    let mut current = registered.refresh_token;
    for _ in 0..2 {
        clock.advance(Duration::days(10));
        current = assert_tokens(app.refresh(&current).await, StatusCode::OK)
            .await
            .refresh_token;
    }
    clock.advance(SESSION_LIFETIME - Duration::days(20) - Duration::minutes(1));
    let near_the_end = assert_tokens(app.refresh(&current).await, StatusCode::OK).await;
    clock.advance(Duration::minutes(2));
    let response = app.refresh(&near_the_end.refresh_token).await;

    // Assert
    assert_unauthorized(response).await;
}

async fn a_registration_that_died_half_way_is_taken_over_after_the_pending_timeout(
    backend: Backend,
) {
    // Arrange: a pending credential, as left by a registration whose process
    // crashed between storing it and creating the profile.
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = TestApp::spawn_with_clock(backend, clock.clone()).await;
    let orphan = uuid::Uuid::now_v7();
    app.store
        .insert_pending(orphan, "ann@example.com", "$argon2id$unused", clock.now())
        .await
        .unwrap();

    // Act + Assert: while it may still be in progress, the email is taken…
    let response = app.register(&registration("Ann@example.com")).await;
    assert_problem(response, StatusCode::CONFLICT).await;

    // …once it is older than the pending timeout, a new registration takes
    // it over under the same user id, and the account works.
    clock.advance(PENDING_TIMEOUT + Duration::seconds(1));
    let response = app.register(&registration("Ann@example.com")).await;
    let tokens = assert_tokens(response, StatusCode::CREATED).await;
    assert_eq!(tokens.user_id, Some(orphan));
    assert_eq!(app.counts().await, (1, 1));
    // (The access token is dated by the moved clock, so check the profile
    // in the user service's store rather than through its API.)
    let profile = app.user().store.get(orphan).await.unwrap();
    assert_eq!(profile.map(|p| p.email), Some("Ann@example.com".to_owned()));
}

on_both_backends!(
    sessions_that_ended_over_a_day_ago_are_purged_with_their_spent_tokens,
    refresh_works_until_the_session_lifetime_and_not_after,
    a_registration_that_died_half_way_is_taken_over_after_the_pending_timeout,
);

async fn sessions_that_ended_over_a_day_ago_are_purged_with_their_spent_tokens(backend: Backend) {
    // Arrange: a revoked session with a spent token, and a live one.
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = TestApp::spawn_with_clock(backend, clock.clone()).await;
    let ended = app.register_account("ann@example.com").await;
    let rotated = assert_tokens(app.refresh(&ended.refresh_token).await, StatusCode::OK).await;
    app.logout(Some(&rotated.access_token)).await;
    let live = assert_tokens(
        app.login("ann@example.com", crate::helpers::PASSWORD).await,
        StatusCode::OK,
    )
    .await;
    let accounts_store = app.store.clone();

    // Act: a day and more later (the live one used meanwhile), purge.
    clock.advance(Duration::hours(12));
    let live = assert_tokens(app.refresh(&live.refresh_token).await, StatusCode::OK).await;
    clock.advance(Duration::hours(13));
    let purged = accounts_store
        .purge_ended_sessions(
            clock.now() - Duration::days(1),
            clock.now() - Duration::days(15),
        )
        .await
        .unwrap();

    // Assert: only the ended session went, spent tokens with it.
    assert_eq!(purged, 1);
    assert_eq!(app.counts().await, (1, 1));
    let spent: i64 = portico_common::on_db!(app.store.db(), pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM spent_refresh_tokens")
            .fetch_one(pool)
            .await
            .unwrap()
    });
    assert_eq!(spent, 1, "the live session's spent token stays");
    assert_tokens(app.refresh(&live.refresh_token).await, StatusCode::OK).await;
}
