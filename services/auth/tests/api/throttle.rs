//! Guessing defences: failed sign-ins throttled per account+address, per
//! address and per account, with 429 and `Retry-After`.

use std::sync::Arc;

use portico_common::clock::ManualClock;
use portico_testkit::Backend;
use reqwest::{Method, StatusCode, header};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::helpers::{PASSWORD, TestApp, assert_problem, assert_tokens, on_both_backends};

const WRONG: &str = "not the right password";
const HOME: &str = "203.0.113.10";

async fn app_with_clock(backend: Backend) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    (
        TestApp::spawn_with_clock(backend, clock.clone()).await,
        clock,
    )
}

async fn after_five_failures_even_the_right_password_waits_with_429(backend: Backend) {
    // Arrange
    let (app, clock) = app_with_clock(backend).await;
    app.register_account("ann@example.com").await;
    for _ in 0..5 {
        let response = app.login_via("ann@example.com", WRONG, HOME).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let sessions = app.counts().await.1;

    // Act: a sixth failure locks; then the right password is refused too.
    app.login_via("ann@example.com", WRONG, HOME).await;
    let locked = app.login_via("ann@example.com", PASSWORD, HOME).await;

    // Assert
    let wait: i64 = locked.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    assert_problem(locked, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(app.counts().await.1, sessions, "no session opened");
    clock.advance(Duration::seconds(wait + 1));
    assert_tokens(
        app.login_via("ann@example.com", PASSWORD, HOME).await,
        StatusCode::OK,
    )
    .await;
}

async fn failures_from_one_address_do_not_lock_the_owner_elsewhere(backend: Backend) {
    // Arrange
    let (app, _) = app_with_clock(backend).await;
    app.register_account("ann@example.com").await;
    for _ in 0..6 {
        app.login_via("ann@example.com", WRONG, "198.51.100.66")
            .await;
    }

    // Act
    let owner = app.login_via("ann@example.com", PASSWORD, HOME).await;

    // Assert
    assert_tokens(owner, StatusCode::OK).await;
}

async fn many_addresses_against_one_account_lock_it_only_briefly(backend: Backend) {
    // Arrange: 21 failures from 21 addresses.
    let (app, clock) = app_with_clock(backend).await;
    app.register_account("ann@example.com").await;
    for i in 0..21 {
        app.login_via("ann@example.com", WRONG, &format!("198.51.100.{i}"))
            .await;
    }

    // Act
    let owner = app.login_via("ann@example.com", PASSWORD, HOME).await;

    // Assert: locked, but only for the short account penalty.
    assert_problem(owner, StatusCode::TOO_MANY_REQUESTS).await;
    clock.advance(Duration::seconds(61));
    assert_tokens(
        app.login_via("ann@example.com", PASSWORD, HOME).await,
        StatusCode::OK,
    )
    .await;
}

async fn a_success_starts_the_owners_count_afresh(backend: Backend) {
    // Arrange
    let (app, _) = app_with_clock(backend).await;
    app.register_account("ann@example.com").await;
    for _ in 0..4 {
        app.login_via("ann@example.com", WRONG, HOME).await;
    }
    assert_tokens(
        app.login_via("ann@example.com", PASSWORD, HOME).await,
        StatusCode::OK,
    )
    .await;

    // Act: four more failures would have been nine without the reset.
    for _ in 0..4 {
        app.login_via("ann@example.com", WRONG, HOME).await;
    }
    let response = app.login_via("ann@example.com", PASSWORD, HOME).await;

    // Assert
    assert_tokens(response, StatusCode::OK).await;
}

async fn an_unknown_email_is_throttled_like_a_registered_one(backend: Backend) {
    // Arrange
    let (app, _) = app_with_clock(backend).await;
    app.register_account("ann@example.com").await;

    // Act
    for email in ["ann@example.com", "nobody@example.com"] {
        for _ in 0..6 {
            app.login_via(email, WRONG, HOME).await;
        }
    }
    let known = app.login_via("ann@example.com", WRONG, HOME).await;
    let unknown = app.login_via("nobody@example.com", WRONG, HOME).await;

    // Assert: the same answer, so throttling reveals nothing either.
    let known = assert_problem(known, StatusCode::TOO_MANY_REQUESTS).await;
    let unknown = assert_problem(unknown, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(known["detail"], unknown["detail"]);
}

async fn wrong_current_passwords_are_throttled_too(backend: Backend) {
    // Arrange
    let (app, _) = app_with_clock(backend).await;
    let tokens = app.register_account("ann@example.com").await;
    let guess =
        json!({"current_password": "a wrong guess", "new_password": "a much better passphrase"});
    for _ in 0..21 {
        let response = app
            .send_as(
                Method::POST,
                "/v1/auth/password",
                Some(&tokens.access_token),
                Some(&guess),
            )
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }

    // Act: even the right current password now waits.
    let right = json!({"current_password": PASSWORD, "new_password": "a much better passphrase"});
    let response = app
        .send_as(
            Method::POST,
            "/v1/auth/password",
            Some(&tokens.access_token),
            Some(&right),
        )
        .await;

    // Assert
    assert_problem(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert_tokens(
        app.login_via("ann@example.com", PASSWORD, HOME).await,
        StatusCode::OK,
    )
    .await;
}

on_both_backends!(
    an_untrusted_peer_cannot_dodge_the_throttle_with_forwarded_addresses,
    a_burst_of_parallel_guesses_is_held_to_the_limit,
    after_five_failures_even_the_right_password_waits_with_429,
    failures_from_one_address_do_not_lock_the_owner_elsewhere,
    many_addresses_against_one_account_lock_it_only_briefly,
    a_success_starts_the_owners_count_afresh,
    an_unknown_email_is_throttled_like_a_registered_one,
    wrong_current_passwords_are_throttled_too,
);

mod shared {
    //! With Redis, every auth replica counts the same attempts.

    use portico_auth::{
        domain::throttle::{Attempt, Throttle},
        throttle_store::ThrottleStore,
    };
    use portico_common::config::ServiceConfig as _;
    use portico_testkit::Backend;
    use reqwest::StatusCode;
    use secrecy::SecretString;
    use time::OffsetDateTime;

    use super::{HOME, WRONG};
    use crate::helpers::{PASSWORD, TestApp, assert_problem};

    fn unique_prefix() -> String {
        format!("portico-test:{}:", uuid::Uuid::now_v7().simple())
    }

    fn store(redis_url: &str, prefix: &str) -> ThrottleStore {
        let config = portico_auth::Config::built_in().login_throttle;
        let client = redis::Client::open(redis_url).unwrap();
        ThrottleStore::new(Throttle::new(config), Some((client, prefix.to_owned())))
    }

    #[tokio::test]
    async fn two_replicas_share_the_count() {
        // Arrange: two stores, as two auth replicas would hold.
        let prefix = unique_prefix();
        let (first, second) = (
            store(&portico_testkit::redis_url(), &prefix),
            store(&portico_testkit::redis_url(), &prefix),
        );
        let attempt = Attempt {
            account: "ann@example.com",
            address: Some(HOME),
        };
        let now = OffsetDateTime::now_utc();

        // Act: failures split over both replicas.
        for i in 0..6 {
            let replica = if i % 2 == 0 { &first } else { &second };
            replica.failed(&attempt, now).await;
        }

        // Assert: both see the lock.
        assert!(first.check(&attempt, now).await.is_err());
        assert!(second.check(&attempt, now).await.is_err());
        second.succeeded(&attempt).await;
        assert_eq!(first.check(&attempt, now).await, Ok(()));
    }

    #[tokio::test]
    async fn an_unreachable_redis_still_throttles_in_the_process() {
        let url = format!("redis://127.0.0.1:{}", portico_testkit::http::closed_port());
        let store = store(&url, &unique_prefix());
        let attempt = Attempt {
            account: "ann@example.com",
            address: Some(HOME),
        };
        let now = OffsetDateTime::now_utc();
        for _ in 0..6 {
            store.failed(&attempt, now).await;
        }
        assert!(store.check(&attempt, now).await.is_err());
    }

    async fn the_service_throttles_through_redis(backend: Backend) {
        // Arrange
        let prefix = unique_prefix();
        let app = TestApp::spawn_with_config(backend, |config| {
            config.redis.url = Some(SecretString::from(portico_testkit::redis_url()));
            config.redis.key_prefix = prefix.clone();
        })
        .await;
        app.register_account("ann@example.com").await;

        // Act
        for _ in 0..6 {
            app.login_via("ann@example.com", WRONG, HOME).await;
        }
        let locked = app.login_via("ann@example.com", PASSWORD, HOME).await;

        // Assert: locked, and the count is in Redis where other replicas see it.
        assert_problem(locked, StatusCode::TOO_MANY_REQUESTS).await;
        let mut redis = redis::Client::open(portico_testkit::redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}throttle:lock:*"))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(!keys.is_empty(), "no lock in Redis");
    }

    crate::helpers::on_both_backends!(the_service_throttles_through_redis);
}

async fn a_burst_of_parallel_guesses_is_held_to_the_limit(backend: Backend) {
    // Arrange
    let (app, _) = app_with_clock(backend).await;
    app.register_account("ann@example.com").await;

    // Act: twenty guesses at once.
    let guesses = (0..20).map(|_| app.login_via("ann@example.com", WRONG, HOME));
    let statuses: Vec<StatusCode> = futures::future::join_all(guesses)
        .await
        .iter()
        .map(reqwest::Response::status)
        .collect();

    // Assert: only the allowed failures (and the one that locks) were
    // checked; every other guess was refused unchecked.
    let checked = statuses
        .iter()
        .filter(|status| **status == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|status| **status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, throttled), (6, 14), "{statuses:?}");
}

async fn an_untrusted_peer_cannot_dodge_the_throttle_with_forwarded_addresses(backend: Backend) {
    // Arrange: no proxy is trusted, so x-forwarded-for is ignored.
    let app = TestApp::spawn_with_config(backend, |config| {
        config.clients.trusted_proxies.clear();
    })
    .await;
    app.register_account("ann@example.com").await;

    // Act: each guess claims another address.
    for i in 0..6 {
        app.login_via("ann@example.com", WRONG, &format!("198.51.100.{i}"))
            .await;
    }
    let next = app
        .login_via("ann@example.com", PASSWORD, "192.0.2.77")
        .await;

    // Assert: all counted against the real peer, which is now locked.
    assert_problem(next, StatusCode::TOO_MANY_REQUESTS).await;
}
