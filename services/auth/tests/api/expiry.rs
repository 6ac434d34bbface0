//! Session lifetime, with the auth service's clock moved instead of waited on.

use std::sync::Arc;

use portico_common::clock::ManualClock;
use portico_testkit::Backend;
use reqwest::StatusCode;
use time::{Duration, OffsetDateTime};

use crate::helpers::{TestApp, assert_tokens, assert_unauthorized, on_both_backends};

/// Default `tokens.refresh_token_ttl_secs`: 30 days.
const SESSION_LIFETIME: Duration = Duration::days(30);

async fn refresh_works_until_the_session_lifetime_and_not_after(backend: Backend) {
    // Arrange
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = TestApp::spawn_with_clock(backend, clock.clone()).await;
    let registered = app.register_account("ann@example.com").await;

    // Act: refreshing near the end of the lifetime works, and does not extend it.
    clock.advance(SESSION_LIFETIME - Duration::minutes(1));
    let near_the_end =
        assert_tokens(app.refresh(&registered.refresh_token).await, StatusCode::OK).await;
    clock.advance(Duration::minutes(2));
    let response = app.refresh(&near_the_end.refresh_token).await;

    // Assert
    assert_unauthorized(response).await;
}

on_both_backends!(refresh_works_until_the_session_lifetime_and_not_after);
