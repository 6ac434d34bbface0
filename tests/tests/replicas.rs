//! Load balancing and failover across user replicas, and clean shutdown,
//! with real processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use portico_e2e::System;
use portico_testkit::Backend;
use serde_json::{Value, json};

/// Registers a user through the gateway; returns an access token.
async fn register(system: &System, email: &str) -> String {
    let response = system
        .client
        .post(system.url("/v1/auth/register"))
        .json(&json!({"email": email, "password": "correct horse battery", "display_name": "Ann"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", system.logs());
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn read_profile(system: &System, token: &str) -> reqwest::StatusCode {
    system
        .client
        .get(system.url("/v1/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn profile_reads_are_spread_over_both_user_replicas() {
    let system = System::start(Backend::Postgres).await;
    let token = register(&system, "spread@example.com").await;

    for _ in 0..20 {
        assert_eq!(read_profile(&system, &token).await, 200);
    }

    let mut counts = Vec::new();
    for user in &system.users {
        counts.push(user.request_count(&system.client, "/v1/users/me").await);
    }
    assert_eq!(counts.iter().sum::<u64>(), 20, "{counts:?}");
    assert!(counts.iter().all(|&c| c >= 8), "uneven spread: {counts:?}");
}

#[tokio::test]
async fn profile_reads_keep_succeeding_after_a_replica_is_killed_with_sigkill() {
    let mut system = System::start(Backend::Postgres).await;
    let token = register(&system, "failover@example.com").await;
    // Warm both replicas so the gateway holds pooled connections to each.
    for _ in 0..4 {
        assert_eq!(read_profile(&system, &token).await, 200);
    }

    system.users[1].kill_hard();

    for i in 0..20 {
        let status = read_profile(&system, &token).await;
        assert_eq!(
            status,
            200,
            "read {i} after SIGKILL failed:\n{}",
            system.logs()
        );
    }
    let survivor = system.users[0]
        .request_count(&system.client, "/v1/users/me")
        .await;
    assert!(
        survivor >= 20,
        "the surviving replica served {survivor} reads"
    );
}

#[tokio::test]
async fn sigterm_drains_and_every_service_exits_zero() {
    let mut system = System::start(Backend::Sqlite).await;
    let token = register(&system, "drain@example.com").await;
    assert_eq!(read_profile(&system, &token).await, 200);

    for process in [&mut system.gateway, &mut system.auth] {
        let status = process.terminate().await;
        assert!(status.success(), "{} exited with {status}", process.name);
    }
    for user in &mut system.users {
        let status = user.terminate().await;
        assert!(status.success(), "{} exited with {status}", user.name);
    }
}
