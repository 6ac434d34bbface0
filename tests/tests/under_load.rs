//! Replicas dying and restarting while a steady load of profile reads runs
//! through the gateway, with real processes: no idempotent request may
//! fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use portico_e2e::{Load, System};
use portico_testkit::{Backend, eventually};

async fn token(system: &System, email: &str) -> String {
    system.register(email).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn sigkill_of_a_user_replica_under_steady_load_fails_no_read() {
    // Arrange
    let mut system = System::start(Backend::Sqlite).await;
    let token = token(&system, "kill-under-load@example.com").await;
    let load = Load::start(&system, std::slice::from_ref(&token), 4);
    load.progress(50).await;

    // Act: one replica dies mid-load (requests in flight on it included).
    system.users[1].kill_hard();
    load.progress(150).await;
    let (served, failures) = load.stop().await;

    // Assert: not one read failed, and the gateway did meet the dead
    // replica (the failover was exercised, not avoided).
    assert!(
        failures.is_empty(),
        "{} of {served} reads failed: {failures:?}\n{}",
        failures.len(),
        system.logs()
    );
    let failed_attempts = system.gateway_failed_attempts_on_user(1).await;
    assert!(failed_attempts >= 1.0, "no attempt met the killed replica");
}

#[tokio::test]
async fn a_rolling_restart_of_both_user_replicas_under_load_fails_no_read() {
    // Arrange
    let mut system = System::start(Backend::Sqlite).await;
    let token = token(&system, "rolling@example.com").await;
    let load = Load::start(&system, std::slice::from_ref(&token), 4);
    load.progress(50).await;

    // Act: each replica in turn is stopped (SIGTERM, drained), started
    // again on its port, and serves before the next one goes.
    for i in 0..2 {
        let status = system.users[i].terminate().await;
        assert!(status.success(), "user-{} exited with {status}", i + 1);
        system.users[i].restart(&system.client).await;
        load.progress(100).await;
    }
    // The gateway takes both restarted replicas back by itself.
    for user in &system.users {
        eventually(
            Duration::from_secs(30),
            "a restarted replica serving reads again",
            || {
                let client = &system.client;
                async move { (user.request_count(client, "/v1/users/me").await > 0).then_some(()) }
            },
        )
        .await;
    }
    let (served, failures) = load.stop().await;

    // Assert
    assert!(
        failures.is_empty(),
        "{} of {served} reads failed: {failures:?}\n{}",
        failures.len(),
        system.logs()
    );
}

#[tokio::test]
async fn registration_goes_on_when_a_user_replica_is_killed() {
    // Arrange: auth spreads its calls to the user service round robin, so
    // every other registration would go to the dead replica.
    let mut system = System::start_with(
        Backend::Sqlite,
        &[("auth", "USER_SERVICE__UPSTREAM__BALANCE", "round_robin")],
    )
    .await;
    token(&system, "before@example.com").await;

    // Act
    system.users[1].kill_hard();
    for n in 0..6 {
        // (System::register asserts 201.)
        token(&system, &format!("after-{n}@example.com")).await;
    }

    // Assert: auth met the dead replica and went to the other one.
    let dead = format!("endpoint=\"{}\"", system.users[1].api_url());
    let failed_attempts = system
        .auth
        .metric_sum(&system.client, |line| {
            line.starts_with("auth_upstream_connect_failures_total{") && line.contains(&dead)
        })
        .await;
    assert!(failed_attempts >= 1.0, "auth never met the killed replica");
}
