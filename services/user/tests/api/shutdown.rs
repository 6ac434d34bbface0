//! Graceful shutdown: readiness turns false, new connections are refused,
//! the request in flight still completes, and `run_until_stopped` is `Ok`.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, routing::get};
use portico_testkit::{Backend, eventually};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::{
    net::TcpStream,
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};

use crate::helpers::TestApp;

const DEADLINE: Duration = Duration::from_secs(10);

/// A JWKS endpoint in front of the real one that holds each fetch until
/// released: a request waiting on it is deterministically in flight.
struct HeldJwks {
    url: String,
    upstream: Arc<Mutex<Option<String>>>,
    reached: mpsc::Receiver<()>,
    release: Arc<Semaphore>,
    server: JoinHandle<()>,
}

#[derive(Clone)]
struct HoldState {
    upstream: Arc<Mutex<Option<String>>>,
    reached: mpsc::Sender<()>,
    release: Arc<Semaphore>,
}

async fn held_jwks(State(state): State<HoldState>) -> Json<Value> {
    let _ = state.reached.send(()).await;
    state.release.acquire().await.unwrap().forget();
    let upstream = state.upstream.lock().unwrap().clone().unwrap();
    Json(reqwest::get(upstream).await.unwrap().json().await.unwrap())
}

impl HeldJwks {
    async fn start() -> Self {
        let (reached_tx, reached) = mpsc::channel(8);
        let state = HoldState {
            upstream: Arc::default(),
            reached: reached_tx,
            release: Arc::new(Semaphore::new(0)),
        };
        let (upstream, release) = (state.upstream.clone(), state.release.clone());
        let app = Router::new()
            .route("/jwks.json", get(held_jwks))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            upstream,
            reached,
            release,
            server,
        }
    }

    /// Serves the keys of `upstream` once released.
    fn forward_to(&self, upstream: String) {
        *self.upstream.lock().unwrap() = Some(upstream);
    }

    async fn wait_until_reached(&mut self) {
        tokio::time::timeout(DEADLINE, self.reached.recv())
            .await
            .expect("no JWKS fetch reached the hold in time");
    }

    fn release(&self) {
        self.release.add_permits(1);
    }
}

impl Drop for HeldJwks {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[tokio::test]
async fn stop_signal_drains_the_request_in_flight_and_returns_ok() {
    // Arrange: a request held inside the handler, waiting for signing keys.
    let mut hold = HeldJwks::start().await;
    let mut app = TestApp::spawn_with(Backend::Sqlite, |config| {
        hold.forward_to(std::mem::replace(
            &mut config.tokens.jwks.url,
            hold.url.clone(),
        ));
        // The hold must not trip the JWKS fetch's own timeout.
        config.http_client.request_timeout_ms = 120_000;
    })
    .await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);
    let url = format!("{}/v1/users/me", app.api);
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
    });
    hold.wait_until_reached().await;

    // Act
    let stopped = app.stop();

    // Assert: not ready, and no new connections, while the request is held.
    let readyz: Value = eventually(DEADLINE, "/readyz to answer 503", || async {
        let response = app.get_admin("/readyz").await;
        match response.status() {
            StatusCode::SERVICE_UNAVAILABLE => Some(response.json().await.unwrap()),
            _ => None,
        }
    })
    .await;
    assert_eq!(readyz["status"], "draining");
    eventually(DEADLINE, "the API listener to close", || async {
        TcpStream::connect(app.api_addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(
        !stopped.is_finished(),
        "stopped before the request finished"
    );

    // Assert: the held request completes, then the service stops cleanly.
    hold.release();
    let response = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .expect("the in-flight request did not finish")
        .unwrap()
        .expect("the in-flight request got an answer");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], profile.id.to_string());
    let result = tokio::time::timeout(DEADLINE, stopped)
        .await
        .expect("run_until_stopped did not return")
        .unwrap();
    assert!(result.is_ok(), "run_until_stopped returned {result:?}");
    assert!(TcpStream::connect(app.admin_addr).await.is_err());
}

#[tokio::test]
async fn idle_service_stops_with_ok_and_closes_both_listeners() {
    // Arrange
    let mut app = TestApp::spawn(Backend::Sqlite).await;
    assert_eq!(app.get_admin("/healthz").await.status(), StatusCode::OK);

    // Act
    let result = tokio::time::timeout(DEADLINE, app.stop())
        .await
        .expect("run_until_stopped did not return")
        .unwrap();

    // Assert
    assert!(result.is_ok(), "run_until_stopped returned {result:?}");
    assert!(TcpStream::connect(app.api_addr).await.is_err());
    assert!(TcpStream::connect(app.admin_addr).await.is_err());
}
