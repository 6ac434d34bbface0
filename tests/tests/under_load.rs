//! Replicas dying and restarting while a steady load of profile reads runs
//! through the gateway, with real processes: no idempotent request may
//! fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use portico_e2e::System;
use portico_testkit::{Backend, eventually};

/// Workers reading the profile in a loop until stopped (or a minute has
/// passed: the load is bounded whatever happens to the test).
struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(system: &System, token: &str, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let workers = (0..workers)
            .map(|_| {
                let (stop, served, failures) = (stop.clone(), served.clone(), failures.clone());
                let (client, url, token) = (
                    system.client.clone(),
                    system.url("/v1/users/me"),
                    token.to_owned(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                        match client.get(&url).bearer_auth(&token).send().await {
                            Ok(response) if response.status() == 200 => {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(response) => {
                                let status = response.status();
                                let body = response.text().await.unwrap_or_default();
                                failures.lock().unwrap().push(format!("{status}: {body}"));
                            }
                            Err(err) => failures.lock().unwrap().push(err.to_string()),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            served,
            failures,
            workers,
        }
    }

    /// Waits until `more` further reads have succeeded.
    async fn progress(&self, more: u64) {
        let target = self.served.load(Ordering::Relaxed) + more;
        eventually(Duration::from_secs(30), "the load to make progress", || {
            let reached = self.served.load(Ordering::Relaxed) >= target;
            async move { reached.then_some(()) }
        })
        .await;
    }

    /// Stops the workers: (reads served, failures).
    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.served.load(Ordering::Relaxed), failures)
    }
}

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
    let load = Load::start(&system, &token, 4);
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
    let load = Load::start(&system, &token, 4);
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
