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
    let (after, _, _) = app.snapshot(profile.id).await;
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

/// PostgreSQL stopped, as the service sees it: its connections drop and
/// new ones are refused (a relay between them is cut; the shared server
/// other tests use keeps running).
#[tokio::test]
async fn with_postgresql_unreachable_every_path_is_a_fast_503_and_it_recovers_without_restart() {
    // Arrange
    let server = std::env::var(portico_testkit::POSTGRES_URL_VAR).expect("a PostgreSQL URL");
    let relay = portico_testkit::tcp::TcpRelay::in_front_of(&server).await;
    let app = TestApp::spawn_with(Backend::Postgres, |config| {
        use secrecy::ExposeSecret as _;
        let through = relay.url_through(config.database.url.expose_secret());
        config.database = config.database.clone().with_url(&through);
        config.database.acquire_timeout_ms = 1_000;
    })
    .await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);
    let mut admin = app.issuer.user_claims(profile.id);
    admin["roles"] = json!(["user", "admin"]);
    let admin = app.issuer.sign(&admin);
    assert_eq!(readyz(&app).await.0, StatusCode::OK);

    // Act: the database goes away.
    relay.cut();

    // Assert: each path answers a 503 problem, fast, and writes nothing.
    let started = std::time::Instant::now();
    let read = app.get_me(Some(&token)).await;
    let write = app
        .patch_me(Some(&token), &json!({"display_name": "Not written"}))
        .await;
    let directory = app
        .client
        .get(format!("{}/v1/users?limit=5", app.api))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let export = app
        .client
        .get(format!("{}/v1/users/me/export", app.api))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    for response in [read, write, directory, export] {
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "four requests took {:?}",
        started.elapsed()
    );
    let (status, body) = eventually(Duration::from_secs(10), "readiness false", || async {
        let (status, body) = readyz(&app).await;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some((status, body))
    })
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    // The database comes back: ready again, and the write goes through,
    // without a restart.
    relay.restore();
    eventually(Duration::from_secs(15), "readiness back", || async {
        (readyz(&app).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let write = app
        .patch_me(Some(&token), &json!({"display_name": "Written"}))
        .await;
    assert_eq!(write.status(), StatusCode::OK);
    let stored = app.store.get(profile.id).await.unwrap().unwrap();
    assert_eq!(stored.display_name, "Written");
}

on_both_backends!(
    a_write_blocked_by_a_lock_is_503_with_retry_after_and_writes_nothing,
    no_free_pooled_connection_is_503_with_retry_after,
    a_replica_that_cannot_fetch_keys_is_not_ready_until_it_can,
);

mod revocation {
    //! Revoked sessions, followed from the feed (the test issuer's).

    use std::time::Duration;

    use portico_testkit::{Backend, eventually};
    use reqwest::StatusCode;

    use crate::helpers::{TestApp, assert_problem, assert_unauthorized};

    /// A token for `user` in a session of its own; returns it and the session.
    fn token_in_session(app: &TestApp, user: uuid::Uuid) -> (String, uuid::Uuid) {
        let claims = app.issuer.user_claims(user);
        let sid = claims["sid"].as_str().unwrap().parse().unwrap();
        (app.issuer.sign(&claims), sid)
    }

    async fn ready(app: &TestApp) {
        eventually(Duration::from_secs(10), "the replica ready", || async {
            (app.get_admin("/readyz").await.status() == StatusCode::OK).then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn a_revoked_sessions_token_is_refused_within_a_second() {
        // Arrange: two sessions of one user, both working.
        let app = TestApp::spawn(Backend::Sqlite).await;
        ready(&app).await;
        let profile = app.seed_profile().await;
        let (revoked, sid) = token_in_session(&app, profile.id);
        let (kept, _) = token_in_session(&app, profile.id);
        assert_eq!(app.get_me(Some(&revoked)).await.status(), StatusCode::OK);

        // Act
        app.issuer.revoke(sid);

        // Assert
        eventually(
            Duration::from_secs(1),
            "the revoked token refused",
            || async {
                (app.get_me(Some(&revoked)).await.status() == StatusCode::UNAUTHORIZED)
                    .then_some(())
            },
        )
        .await;
        assert_unauthorized(app.get_me(Some(&revoked)).await).await;
        assert_eq!(app.get_me(Some(&kept)).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn before_catching_up_no_token_is_trusted() {
        // Arrange: the feed is down from the start.
        let feed = format!(
            "http://127.0.0.1:{}/internal/revocations",
            portico_testkit::http::closed_port()
        );
        let app = TestApp::spawn_with(Backend::Sqlite, |config| {
            config.tokens.revocations.url = Some(feed);
        })
        .await;
        let profile = app.seed_profile().await;
        let token = app.issuer.user_token(profile.id);

        // Act
        let response = app.get_me(Some(&token)).await;
        let readiness: serde_json::Value = app.get_admin("/readyz").await.json().await.unwrap();

        // Assert
        assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(
            readiness["checks"]["revocations"], "unavailable",
            "{readiness}"
        );
    }

    #[tokio::test]
    async fn a_feed_lost_after_catching_up_degrades_to_token_expiry() {
        // Arrange: caught up, then the feed goes away.
        let app = TestApp::spawn(Backend::Sqlite).await;
        ready(&app).await;
        let profile = app.seed_profile().await;
        let token = app.issuer.user_token(profile.id);
        assert_eq!(app.get_me(Some(&token)).await.status(), StatusCode::OK);
        app.issuer.set_available(false);

        // Act: well past a few polls.
        eventually(
            Duration::from_secs(5),
            "the lag gauge to show the outage",
            || async {
                let metrics = app.get_admin("/metrics").await.text().await.unwrap();
                metrics
                    .lines()
                    .find(|line| line.starts_with("token_revocations_lag_seconds "))
                    .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                    .filter(|lag| *lag >= 0.5)
                    .map(|_| ())
            },
        )
        .await;

        // Assert: tokens keep working, and the replica stays ready.
        assert_eq!(app.get_me(Some(&token)).await.status(), StatusCode::OK);
        assert_eq!(app.get_admin("/readyz").await.status(), StatusCode::OK);
    }
}
