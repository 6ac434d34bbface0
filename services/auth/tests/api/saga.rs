//! Registration as a saga: a profile creation whose outcome is uncertain
//! leaves the registration pending (never an account that can sign in);
//! a retry with the same password resumes it; the reconciler finishes or
//! abandons what nobody resumed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
    time::Duration as StdDuration,
};

use portico_auth::{domain::audit::AuditKind, storage::AuditQuery};
use portico_common::clock::ManualClock;
use portico_testkit::{Backend, eventually};
use reqwest::StatusCode;
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::helpers::{
    PASSWORD, TestApp, assert_problem, assert_tokens, on_both_backends, registration,
};

/// Default `registration.pending_timeout_secs`.
const PENDING_TIMEOUT: Duration = Duration::minutes(2);

/// What the front does with the internal API's calls.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Front {
    /// Passes every call on.
    Forward,
    /// Passes a creation on, then loses its answer (502): the profile
    /// exists, auth cannot know.
    LoseAnswers,
    /// Answers every call 503 without passing it on.
    Refuse,
    /// Answers every call a bare 404, as a replica without the route would.
    BareNotFound,
}

/// A front for the user service whose behaviour the test switches;
/// `reads` counts the reconciler's profile reads it saw.
struct SwitchableFront {
    mode: Arc<AtomicU8>,
    reads: Arc<AtomicUsize>,
}

impl SwitchableFront {
    fn new(mode: Front) -> Self {
        Self {
            mode: Arc::new(AtomicU8::new(mode as u8)),
            reads: Arc::default(),
        }
    }

    fn set(&self, mode: Front) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    async fn serve(&self, user_api: String) -> String {
        use axum::{
            Router,
            body::Bytes,
            extract::Path,
            http::{HeaderMap, Method, StatusCode},
            routing::{get, post},
        };

        /// Forwards the call as the front's mode says; `LoseAnswers`
        /// applies to creations only (a lost read would only delay).
        async fn pass(
            mode: &AtomicU8,
            method: Method,
            url: String,
            headers: HeaderMap,
            body: Bytes,
        ) -> (StatusCode, Vec<u8>) {
            match mode.load(Ordering::SeqCst) {
                m if m == Front::Refuse as u8 => {
                    return (StatusCode::SERVICE_UNAVAILABLE, Vec::new());
                }
                m if m == Front::BareNotFound as u8 => return (StatusCode::NOT_FOUND, Vec::new()),
                _ => {}
            }
            let creation = method == Method::POST;
            let forwarded = reqwest::Client::new()
                .request(method, url)
                .header("authorization", headers["authorization"].clone())
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            if creation && mode.load(Ordering::SeqCst) == Front::LoseAnswers as u8 {
                return (StatusCode::BAD_GATEWAY, Vec::new());
            }
            let status = StatusCode::from_u16(forwarded.status().as_u16()).unwrap();
            (status, forwarded.bytes().await.unwrap().to_vec())
        }

        let (create_mode, create_api) = (self.mode.clone(), user_api.clone());
        let (read_mode, reads) = (self.mode.clone(), self.reads.clone());
        let app = Router::new()
            .route(
                "/internal/users",
                post(move |headers: HeaderMap, body: Bytes| {
                    let (mode, url) = (create_mode.clone(), format!("{create_api}/internal/users"));
                    async move { pass(&mode, Method::POST, url, headers, body).await }
                }),
            )
            .route(
                "/internal/users/{id}",
                get(move |Path(id): Path<String>, headers: HeaderMap| {
                    let (mode, reads) = (read_mode.clone(), reads.clone());
                    let url = format!("{user_api}/internal/users/{id}");
                    async move {
                        reads.fetch_add(1, Ordering::SeqCst);
                        pass(&mode, Method::GET, url, headers, Bytes::new()).await
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }
}

/// Auth behind `front`, its clock `clock`, its reconciler looking often.
async fn spawn_behind(
    backend: Backend,
    front: &SwitchableFront,
    clock: Arc<ManualClock>,
) -> TestApp {
    TestApp::spawn_configured(
        backend,
        clock,
        async |user_api| front.serve(user_api).await,
        |config| config.registration.reconcile_interval_ms = 50,
    )
    .await
}

async fn events_of(app: &TestApp, kind: AuditKind) -> Vec<portico_auth::domain::audit::AuditEvent> {
    app.store
        .audit_events(&AuditQuery {
            user_id: None,
            kind: Some(kind),
            before: None,
            limit: 10,
        })
        .await
        .unwrap()
}

async fn a_lost_answer_leaves_the_registration_pending_and_the_same_password_resumes_it(
    backend: Backend,
) {
    // Arrange: every answer to a creation is lost, so the first attempt
    // cannot know the profile was made.
    let front = SwitchableFront::new(Front::LoseAnswers);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = spawn_behind(backend, &front, clock).await;
    let first = app.register(&registration("ann@example.com")).await;
    assert_problem(first, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(app.counts().await, (1, 0), "pending, no session");
    assert_eq!(
        app.user().store.count().await.unwrap(),
        1,
        "the profile was made"
    );
    let login = app.login("ann@example.com", PASSWORD).await;
    assert_eq!(
        login.status(),
        StatusCode::UNAUTHORIZED,
        "not an account yet"
    );
    front.set(Front::Forward);

    // Act: another password is someone else; the same one is the retry.
    let stranger = app
        .register(&json!({"email": "ann@example.com", "password": "another horse battery", "display_name": "Eve"}))
        .await;
    let stranger = assert_problem(stranger, StatusCode::CONFLICT).await;
    let retry = app.register(&registration("ann@example.com")).await;

    // Assert: resumed under the profile's id, not a second (orphan) one.
    assert_eq!(stranger["status"], 409);
    let tokens = assert_tokens(retry, StatusCode::CREATED).await;
    let user_id = tokens.user_id.unwrap();
    assert!(app.user().store.get(user_id).await.unwrap().is_some());
    assert_eq!(app.user().store.count().await.unwrap(), 1);
    assert_eq!(app.counts().await, (1, 1));
}

async fn the_reconciler_finishes_a_pending_registration_whose_profile_exists(backend: Backend) {
    // Arrange: a registration whose answer was lost, nobody retrying.
    let front = SwitchableFront::new(Front::LoseAnswers);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = spawn_behind(backend, &front, clock.clone()).await;
    let first = app.register(&registration("ann@example.com")).await;
    assert_problem(first, StatusCode::SERVICE_UNAVAILABLE).await;

    // Act: the pending timeout passes.
    clock.advance(PENDING_TIMEOUT + Duration::seconds(1));

    // Assert: the account is complete — the password signs in, under the
    // profile's id — and the completion is audited.
    let tokens = eventually(
        StdDuration::from_secs(10),
        "the reconciler to finish the registration",
        || async {
            let response = app.login("ann@example.com", PASSWORD).await;
            (response.status() == StatusCode::OK).then_some(response)
        },
    )
    .await;
    assert_tokens(tokens, StatusCode::OK).await;
    let completed = events_of(&app, AuditKind::Registered).await;
    assert_eq!(completed.len(), 1);
    assert_eq!(
        completed[0].detail.as_deref(),
        Some("completed by the reconciler")
    );
    let user_id = completed[0].user_id.unwrap();
    assert!(
        app.user().store.get(user_id).await.unwrap().is_some(),
        "under the profile's id"
    );
    assert_eq!(app.user().store.count().await.unwrap(), 1);
    let again = app.register(&registration("ann@example.com")).await;
    assert_problem(again, StatusCode::CONFLICT).await;
}

async fn the_reconciler_abandons_a_pending_registration_without_a_profile(backend: Backend) {
    // Arrange: a registration the user service never saw.
    let front = SwitchableFront::new(Front::Refuse);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = spawn_behind(backend, &front, clock.clone()).await;
    let first = app.register(&registration("ann@example.com")).await;
    assert_problem(first, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(app.counts().await, (1, 0));
    front.set(Front::Forward);

    // Act
    clock.advance(PENDING_TIMEOUT + Duration::seconds(1));

    // Assert: the credential is gone, audited, and the email is free for
    // anyone (another password included).
    eventually(
        StdDuration::from_secs(10),
        "the reconciler to abandon the registration",
        || async { (app.counts().await == (0, 0)).then_some(()) },
    )
    .await;
    let abandoned = events_of(&app, AuditKind::RegistrationAbandoned).await;
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0].detail.as_deref(), Some("no profile"));
    assert_eq!(app.user().store.count().await.unwrap(), 0);
    let fresh = app
        .register(&json!({"email": "ann@example.com", "password": "another horse battery", "display_name": "Ann"}))
        .await;
    assert_tokens(fresh, StatusCode::CREATED).await;
}

async fn the_reconciler_settles_nothing_while_the_user_service_cannot_say(backend: Backend) {
    // Arrange
    let front = SwitchableFront::new(Front::Refuse);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = spawn_behind(backend, &front, clock.clone()).await;
    let first = app.register(&registration("ann@example.com")).await;
    assert_problem(first, StatusCode::SERVICE_UNAVAILABLE).await;

    // Act: stale, but every read of the profile is refused.
    clock.advance(PENDING_TIMEOUT + Duration::seconds(1));
    eventually(
        StdDuration::from_secs(10),
        "two reconciler runs asking about the profile",
        || async { (front.reads.load(Ordering::SeqCst) >= 2).then_some(()) },
    )
    .await;

    // Assert: a second run began, so the first ended — without guessing.
    assert_eq!(app.counts().await, (1, 0), "still pending");
    assert!(
        events_of(&app, AuditKind::RegistrationAbandoned)
            .await
            .is_empty()
    );

    // A 404 that is not the user service's own "no such profile" (a
    // replica without the route) is no answer either.
    front.set(Front::BareNotFound);
    let seen = front.reads.load(Ordering::SeqCst);
    eventually(
        StdDuration::from_secs(10),
        "two more reconciler runs",
        || async { (front.reads.load(Ordering::SeqCst) >= seen + 2).then_some(()) },
    )
    .await;
    assert_eq!(app.counts().await, (1, 0), "still pending after bare 404s");
    assert!(
        events_of(&app, AuditKind::RegistrationAbandoned)
            .await
            .is_empty()
    );
}

on_both_backends!(
    a_lost_answer_leaves_the_registration_pending_and_the_same_password_resumes_it,
    the_reconciler_finishes_a_pending_registration_whose_profile_exists,
    the_reconciler_abandons_a_pending_registration_without_a_profile,
    the_reconciler_settles_nothing_while_the_user_service_cannot_say,
);
