//! Registration while the user service is down or loses an answer.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use portico_testkit::{Backend, WriteLock, http::closed_port};
use portico_upstream::balance::Policy;
use reqwest::{StatusCode, header};

use crate::helpers::{
    PASSWORD, TestApp, assert_problem, assert_tokens, on_both_backends, registration,
};

async fn register_is_503_and_leaves_no_account_when_the_user_service_is_down(backend: Backend) {
    // Arrange
    let app = TestApp::spawn_without_user_service(backend).await;

    // Act
    let response = app.register(&registration("ann@example.com")).await;
    let retry = app.register(&registration("ann@example.com")).await;

    // Assert: a pending registration (the reconciler settles it once the
    // user service can say), never an account that signs in; the retry
    // resumes it and is 503 again.
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_problem(retry, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        app.counts().await,
        (1, 0),
        "one pending credential, no session"
    );
    let login = app.login("ann@example.com", PASSWORD).await;
    assert_eq!(login.status(), StatusCode::UNAUTHORIZED);
}

/// A front for the user service that forwards the first profile creation
/// but loses its answer (502), as a timeout or dropped connection would.
/// `calls` counts the creation calls it saw.
async fn lossy_front(user_api: String, calls: Arc<AtomicUsize>) -> String {
    use axum::{Router, body::Bytes, http::HeaderMap, routing::post};

    let app = Router::new().route(
        "/internal/users",
        post(move |headers: HeaderMap, body: Bytes| {
            let (calls, user_api) = (calls.clone(), user_api.clone());
            async move {
                let forwarded = reqwest::Client::new()
                    .post(format!("{user_api}/internal/users"))
                    .header("authorization", headers["authorization"].clone())
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    return (axum::http::StatusCode::BAD_GATEWAY, Vec::new());
                }
                let status = axum::http::StatusCode::from_u16(forwarded.status().as_u16()).unwrap();
                (status, forwarded.bytes().await.unwrap().to_vec())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn a_lost_answer_from_the_user_service_does_not_fail_registration(backend: Backend) {
    // Arrange
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let app = TestApp::spawn_with(
        backend,
        Arc::new(portico_common::clock::SystemClock),
        async move |user_api| lossy_front(user_api, seen).await,
    )
    .await;

    // Act
    let response = app.register(&registration("ann@example.com")).await;

    // Assert: the uncertain first call was asked again; one account, one profile.
    let tokens = assert_tokens(response, StatusCode::CREATED).await;
    assert_eq!(app.counts().await, (1, 1));
    let profile = app.user().store.get(tokens.user_id.unwrap()).await.unwrap();
    assert!(profile.is_some());
    assert_eq!(app.user().store.count().await.unwrap(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "asked exactly once more");
}

/// A user service replica that answers every creation with 503.
async fn unavailable_replica(calls: Arc<AtomicUsize>) -> String {
    use axum::{Router, routing::post};

    let app = Router::new().route(
        "/internal/users",
        post(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { axum::http::StatusCode::SERVICE_UNAVAILABLE }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Auth with `first` listed before the real user replica, round robin, so
/// every other call goes to `first`.
async fn spawn_with_first_user_replica(backend: Backend, first: &str) -> TestApp {
    TestApp::spawn_with_config(backend, |config| {
        let endpoints = &mut config.user_service.upstream.endpoints;
        endpoints.insert(0, first.to_owned());
        config.user_service.upstream.balance = Some(Policy::RoundRobin);
    })
    .await
}

/// Registers `count` new accounts; the status of each answer.
async fn register_several(app: &TestApp, count: usize) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for n in 0..count {
        let response = app
            .register(&registration(&format!("u{n}@example.com")))
            .await;
        statuses.push(response.status());
    }
    statuses
}

async fn registration_works_while_one_of_two_user_replicas_is_down(backend: Backend) {
    // Arrange: the first replica refuses connections; round robin would
    // send every other call to it.
    let down = format!("http://127.0.0.1:{}", closed_port());
    let app = spawn_with_first_user_replica(backend, &down).await;

    // Act
    let statuses = register_several(&app, 6).await;

    // Assert: every registration made an account and a profile; the dead
    // replica is set aside (auth's view of the user service says so).
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED),
        "{statuses:?}"
    );
    assert_eq!(app.counts().await, (6, 6));
    let view = app.admin_json("/upstreams").await;
    let endpoints = view["user"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "{view}");
    let dead = endpoints
        .iter()
        .find(|e| e["url"] == down.as_str())
        .unwrap();
    assert_eq!(dead["ejected"], true, "{view}");
}

async fn a_replica_answering_503_is_passed_over_for_a_healthy_one(backend: Backend) {
    // Arrange
    let calls = Arc::new(AtomicUsize::new(0));
    let sick = unavailable_replica(calls.clone()).await;
    let app = spawn_with_first_user_replica(backend, &sick).await;

    // Act
    let statuses = register_several(&app, 4).await;

    // Assert: the sick replica was asked (round robin reached it) and its
    // 503 retried on the other one each time.
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED),
        "{statuses:?}"
    );
    assert_eq!(app.counts().await, (4, 4));
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "the sick replica was tried"
    );
}

async fn a_login_blocked_by_a_database_lock_is_503_with_retry_after(backend: Backend) {
    // Arrange: an account, then a transaction holding the sessions table.
    let app = TestApp::spawn_with_config(backend, |config| {
        config.database.lock_timeout_ms = 200;
    })
    .await;
    app.register_account("ann@example.com").await;
    let sessions_before = app.counts().await.1;
    let lock = WriteLock::hold(&app.databases[0], "sessions").await;

    // Act
    let response = app.login("ann@example.com", PASSWORD).await;

    // Assert
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    lock.release().await;
    assert_eq!(app.counts().await.1, sessions_before, "no session opened");
    let retried = app.login("ann@example.com", PASSWORD).await;
    assert_eq!(retried.status(), StatusCode::OK, "a retry succeeds");
}

on_both_backends!(
    a_login_blocked_by_a_database_lock_is_503_with_retry_after,
    register_is_503_and_leaves_no_account_when_the_user_service_is_down,
    a_lost_answer_from_the_user_service_does_not_fail_registration,
    registration_works_while_one_of_two_user_replicas_is_down,
    a_replica_answering_503_is_passed_over_for_a_healthy_one,
);

/// PostgreSQL stopped, as auth sees it: its connections drop and new ones
/// are refused (a relay between them is cut; the shared server keeps
/// running for the other tests).
#[tokio::test]
async fn with_postgresql_unreachable_sign_in_paths_are_fast_503s_and_recover_without_restart() {
    // Arrange
    let server = std::env::var(portico_testkit::POSTGRES_URL_VAR).expect("a PostgreSQL URL");
    let relay = portico_testkit::tcp::TcpRelay::in_front_of(&server).await;
    let app = TestApp::spawn_with_config(Backend::Postgres, |config| {
        use secrecy::ExposeSecret as _;
        let through = relay.url_through(config.database.url.expose_secret());
        config.database = config.database.clone().with_url(&through);
        config.database.acquire_timeout_ms = 1_000;
    })
    .await;
    let tokens = app.register_account("ann@example.com").await;
    let readyz = || async {
        app.client
            .get(format!("{}/readyz", app.admin))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(readyz().await, StatusCode::OK);

    // Act
    relay.cut();

    // Assert: sign-in, refresh, MFA, reset and the export are 503 problems.
    let started = std::time::Instant::now();
    let mut answers = vec![
        app.login("ann@example.com", PASSWORD).await,
        app.refresh(&tokens.refresh_token).await,
        app.post_json(
            "/v1/auth/login/mfa",
            &serde_json::json!({"mfa_token": "t", "code": "123456"}),
        )
        .await,
        app.post_json(
            "/v1/auth/password/reset/confirm",
            &serde_json::json!({"token": "t", "new_password": "a brand new passphrase"}),
        )
        .await,
    ];
    for path in ["/v1/auth/mfa", "/v1/auth/export"] {
        answers.push(
            app.send_as(reqwest::Method::GET, path, Some(&tokens.access_token), None)
                .await,
        );
    }
    for answer in answers {
        assert_problem(answer, StatusCode::SERVICE_UNAVAILABLE).await;
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    portico_testkit::eventually(
        std::time::Duration::from_secs(10),
        "auth not ready",
        || async { (readyz().await == StatusCode::SERVICE_UNAVAILABLE).then_some(()) },
    )
    .await;

    // Back, without a restart.
    relay.restore();
    portico_testkit::eventually(
        std::time::Duration::from_secs(15),
        "auth ready again",
        || async { (readyz().await == StatusCode::OK).then_some(()) },
    )
    .await;
    assert_tokens(app.login("ann@example.com", PASSWORD).await, StatusCode::OK).await;
}
