//! When a dependency cannot serve: a busy database answers 503 with
//! `Retry-After` and writes nothing; a replica that cannot verify tokens
//! is not ready, and becomes ready by itself when it can.

use std::time::Duration;

use portico_testkit::{Backend, WriteLock, eventually};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, on_both_backends};

/// Lock waits short enough for a test (pool waits long enough to start
/// under a loaded machine).
async fn app_with_short_waits(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |config| {
        config.database.lock_timeout_ms = 200;
        config.database.acquire_timeout_ms = 1_000;
    })
    .await
}

async fn a_write_blocked_by_a_lock_is_503_with_retry_after_and_writes_nothing(backend: Backend) {
    // Arrange
    let app = app_with_short_waits(backend).await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);
    let lock = WriteLock::hold(&app.db, "users").await;

    // Act
    let response = app
        .patch_me(Some(&token), &json!({"display_name": "Changed"}))
        .await;

    // Assert
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    let problem = assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        !detail.contains("lock"),
        "no internals in the body: {detail}"
    );
    lock.release().await;
    let (after, _) = app.snapshot(profile.id).await;
    assert_eq!(after.unwrap().display_name, "Ann");
}

async fn no_free_pooled_connection_is_503_with_retry_after(backend: Backend) {
    // Arrange: every pooled connection is taken.
    let app = TestApp::spawn_with(backend, |config| {
        config.database.max_connections = 1;
        config.database.acquire_timeout_ms = 1_000;
    })
    .await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);
    let blocker = hold_the_only_connection(&app).await;

    // Act
    let response = app.get_me(Some(&token)).await;

    // Assert
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    blocker.abort();
}

/// Holds the pool's only connection in a task until aborted.
async fn hold_the_only_connection(app: &TestApp) -> tokio::task::JoinHandle<()> {
    let db = app.store.db().clone();
    let (taken, is_taken) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        portico_common::on_db!(&db, pool => {
            let _connection = pool.acquire().await.unwrap();
            let _ = taken.send(());
            std::future::pending::<()>().await;
        });
    });
    is_taken.await.unwrap();
    task
}

async fn readyz(app: &TestApp) -> (StatusCode, Value) {
    let response = app.get_admin("/readyz").await;
    (response.status(), response.json().await.unwrap())
}

async fn a_replica_that_cannot_fetch_keys_is_not_ready_until_it_can(backend: Backend) {
    // Arrange: auth (the JWKS) is down before the replica ever got keys.
    let app = TestApp::spawn(backend).await;
    app.issuer.set_available(false);

    // Act + Assert: not ready, because every token would be refused.
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["keys"], "unavailable", "{body}");
    assert_eq!(body["checks"]["database"], "ok", "{body}");

    // Auth comes back: the replica becomes ready by itself.
    app.issuer.set_available(true);
    eventually(
        Duration::from_secs(10),
        "the replica to become ready",
        || async {
            let (status, _) = readyz(&app).await;
            (status == StatusCode::OK).then_some(())
        },
    )
    .await;
}

/// SQLite: the database file deleted under a running replica (an operator
/// mistake, a volume remounted) takes it out of rotation instead of letting
/// it write into a file nobody will ever read.
#[tokio::test]
async fn a_replica_whose_database_file_vanished_is_not_ready() {
    // Arrange
    let app = TestApp::spawn(Backend::Sqlite).await;
    assert_eq!(readyz(&app).await.0, StatusCode::OK);
    let path = app.db.url.trim_start_matches("sqlite://").to_owned();

    // Act
    std::fs::remove_file(&path).unwrap();

    // Assert
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["database"], "unavailable", "{body}");
}

on_both_backends!(
    a_write_blocked_by_a_lock_is_503_with_retry_after_and_writes_nothing,
    no_free_pooled_connection_is_503_with_retry_after,
    a_replica_that_cannot_fetch_keys_is_not_ready_until_it_can,
);
