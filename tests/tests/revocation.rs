//! Logging out reaches the edge: the session's access token is refused at
//! the gateway and at the user replicas within a second, with no call to
//! auth per request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use portico_e2e::System;
use portico_testkit::{Backend, eventually};

async fn status_of(client: &reqwest::Client, url: &str, token: &str) -> u16 {
    client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_logged_out_sessions_token_is_refused_everywhere_within_a_second() {
    // Arrange: two sessions of one user.
    let system = System::start(Backend::Sqlite).await;
    let first = system.register("out@example.com").await;
    let second = system.login("out@example.com").await;
    let (logged_out, kept) = (
        first["access_token"].as_str().unwrap(),
        second["access_token"].as_str().unwrap(),
    );
    let through_gateway = system.url("/v1/users/me");
    let at_replica = format!("{}/v1/users/me", system.users[0].api_url());
    assert_eq!(
        status_of(&system.client, &through_gateway, logged_out).await,
        200
    );

    // Act
    let response = system
        .client
        .post(system.url("/v1/auth/logout"))
        .bearer_auth(logged_out)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    // Assert: refused at the edge and behind it within a second.
    eventually(
        Duration::from_secs(1),
        "the gateway refusing the token",
        || async {
            (status_of(&system.client, &through_gateway, logged_out).await == 401).then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(1),
        "the replica refusing the token",
        || async {
            (status_of(&system.client, &at_replica, logged_out).await == 401).then_some(())
        },
    )
    .await;
    assert_eq!(
        status_of(&system.client, &through_gateway, kept).await,
        200,
        "{}",
        system.logs()
    );
}

#[tokio::test]
async fn with_redis_a_logout_reaches_the_edge_without_waiting_for_the_feed() {
    // Arrange: the feed is polled only every 30 s, so a refusal within a
    // second can only have come through Redis.
    let redis = portico_testkit::redis_url();
    let slow_feed = "30000";
    let system = System::start_with(
        Backend::Sqlite,
        &[
            ("auth", "REDIS__URL", &redis),
            ("gateway", "REDIS__URL", &redis),
            (
                "gateway",
                "TOKENS__REVOCATIONS__POLL_INTERVAL_MS",
                slow_feed,
            ),
            ("user", "REDIS__URL", &redis),
            ("user", "TOKENS__REVOCATIONS__POLL_INTERVAL_MS", slow_feed),
        ],
    )
    .await;
    let tokens = system.register("redis-out@example.com").await;
    let token = tokens["access_token"].as_str().unwrap();
    let through_gateway = system.url("/v1/users/me");
    let at_replica = format!("{}/v1/users/me", system.users[1].api_url());
    assert_eq!(
        status_of(&system.client, &through_gateway, token).await,
        200
    );

    // Act
    let response = system
        .client
        .post(system.url("/v1/auth/logout"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    // Assert
    for (url, what) in [
        (&through_gateway, "the gateway refusing the token"),
        (&at_replica, "the replica refusing the token"),
    ] {
        eventually(Duration::from_secs(1), what, || async {
            (status_of(&system.client, url, token).await == 401).then_some(())
        })
        .await;
    }
}
