//! Round-robin, failover past dead replicas, mid-request failures and
//! per-route timeouts.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::StatusCode;
use serde_json::Value;
use tokio::{io::AsyncReadExt, task::JoinHandle};

use crate::support::{Gateway, RecordingUpstream, dead_endpoint, expect_problem, route, upstream};

/// A replica that accepts a connection, reads the request head and hangs up
/// without answering: a process dying mid-request.
struct HangupReplica {
    url: String,
    requests: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl Drop for HangupReplica {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl HangupReplica {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Self {
            url,
            requests,
            server,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly_over_replicas() {
    let a = RecordingUpstream::start("a").await;
    let b = RecordingUpstream::start("b").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&a.url, &b.url]));
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;

    let mut replicas = Vec::new();
    for _ in 0..10 {
        let response = gateway.get("/v1/users/me").await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        replicas.push(body["replica"].as_str().unwrap().to_owned());
    }

    assert!(a.hits() > 0 && b.hits() > 0, "{replicas:?}");
    assert!(a.hits().abs_diff(b.hits()) <= 1, "{replicas:?}");
    assert_eq!(a.hits() + b.hits(), 10);
}

#[tokio::test]
async fn a_dead_replica_is_skipped_and_every_request_succeeds() {
    let live = RecordingUpstream::start("live").await;
    let dead = dead_endpoint();
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&dead, &live.url]));
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;

    for i in 0..10 {
        let response = gateway.get("/v1/users/me").await;
        assert_eq!(response.status(), StatusCode::OK, "request {i}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["replica"], "live");
    }
    assert_eq!(live.hits(), 10);
}

#[tokio::test]
async fn a_post_is_also_failed_over_when_the_connection_is_refused() {
    let live = RecordingUpstream::start("live").await;
    let dead = dead_endpoint();
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("auth".into(), upstream(&[&dead, &live.url]));
        config.routes = vec![route("/v1/auth", "auth")];
    })
    .await;

    // Round-robin makes one of two requests start at the dead replica.
    // Nothing reached it, so even a non-idempotent request may move on.
    for _ in 0..2 {
        let response = gateway
            .client
            .post(gateway.url("/v1/auth/login"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(live.hits(), 2);
}

#[tokio::test]
async fn every_replica_dead_is_a_503_problem() {
    let (one, two) = (dead_endpoint(), dead_endpoint());
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&one, &two]));
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;

    let (_, problem) = expect_problem(gateway.get("/v1/users/me").await, 503).await;

    assert_eq!(problem["type"], "urn:portico:problem:service-unavailable");
    assert!(!problem.to_string().contains("127.0.0.1"), "{problem}");
}

#[tokio::test]
async fn a_get_is_replayed_on_another_replica_after_a_mid_request_failure() {
    let hangup = HangupReplica::start().await;
    let live = RecordingUpstream::start("live").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&hangup.url, &live.url]));
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;

    let response = gateway.get("/v1/users/me").await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!((hangup.requests(), live.hits()), (1, 1));
}

#[tokio::test]
async fn a_post_is_not_replayed_after_a_mid_request_failure_and_gets_502() {
    let hangup = HangupReplica::start().await;
    let live = RecordingUpstream::start("live").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("auth".into(), upstream(&[&hangup.url, &live.url]));
        config.routes = vec![route("/v1/auth", "auth")];
    })
    .await;

    // The first request starts at the hang-up replica.
    let response = gateway
        .client
        .post(gateway.url("/v1/auth/register"))
        .body(r#"{"email":"a@example.com"}"#)
        .send()
        .await
        .unwrap();

    let (_, problem) = expect_problem(response, 502).await;
    assert_eq!(problem["type"], "urn:portico:problem:bad-gateway");
    assert_eq!((hangup.requests(), live.hits()), (1, 0));
}

#[tokio::test]
async fn a_slow_upstream_is_cut_off_with_a_504_problem() {
    let slow = RecordingUpstream::start("slow").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&slow.url]));
        let mut users = route("/v1/users", "user");
        users.timeout_ms = 200;
        config.routes = vec![users];
    })
    .await;

    // The upstream holds `/slow` until released, far past the timeout. The
    // outer bound only turns a regression into a failure instead of a hang.
    let response = tokio::time::timeout(Duration::from_secs(10), gateway.get("/v1/users/slow"))
        .await
        .expect("the gateway did not cut off the slow upstream");
    let (_, problem) = expect_problem(response, 504).await;
    assert_eq!(problem["type"], "urn:portico:problem:timeout");
    assert_eq!(slow.hits(), 1);
    slow.release_slow();

    // A timeout does not take the replica out of service.
    let response = gateway.get("/v1/users/me").await;
    assert_eq!(response.status(), StatusCode::OK);
}
