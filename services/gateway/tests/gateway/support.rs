//! Shared harness: recording upstreams, a gateway started in-process on
//! port 0 in front of them, and assertions on problem responses.

use portico_common::config::ServiceConfig as _;
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, Once,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use portico_common::{
    config::ListenConfig, error::PROBLEM_JSON, http::server::Listeners, telemetry,
};
use portico_gateway::{
    Application, Config,
    config::{RouteConfig, UpstreamConfig},
};
use portico_testkit::issuer::{self, TestIssuer};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

/// What a recording upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query, exactly as received.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

struct Shared {
    name: String,
    hits: AtomicUsize,
    last: Mutex<Option<Seen>>,
    /// Requests to `…/slow` wait until this is true (for good: a release
    /// that comes before a request waits is not lost).
    release: tokio::sync::watch::Sender<bool>,
    openapi: Option<Value>,
    /// What `/readyz` answers: 200 while true, 503 after `set_ready(false)`.
    ready: std::sync::atomic::AtomicBool,
    /// While true, every other request gets a 503.
    failing: std::sync::atomic::AtomicBool,
}

/// A stand-in for a service replica. It counts requests, records the last
/// one, and answers by path:
/// - `/openapi.json` (when given a document): that document;
/// - `…/slow`: only after [`RecordingUpstream::release_slow`];
/// - `…/conflict`: a 409 problem+json carrying the request id it received;
/// - anything else: 200 JSON `{replica, method, path, headers, body}`.
pub struct RecordingUpstream {
    /// Base URL (`http://127.0.0.1:port`).
    pub url: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RecordingUpstream {
    pub async fn start(name: &str) -> Self {
        Self::serve(name, None, "127.0.0.1:0").await
    }

    /// A replica listening on `addr` (e.g. `127.0.0.3:PORT`, so that several
    /// share a port on different loopback addresses, as DNS discovery needs).
    pub async fn start_on(name: &str, addr: &str) -> Self {
        Self::serve(name, None, addr).await
    }

    /// A replica that also serves `document` at `/openapi.json`.
    pub async fn with_openapi(name: &str, document: Value) -> Self {
        Self::serve(name, Some(document), "127.0.0.1:0").await
    }

    async fn serve(name: &str, openapi: Option<Value>, addr: &str) -> Self {
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            hits: AtomicUsize::new(0),
            last: Mutex::new(None),
            release: tokio::sync::watch::Sender::new(false),
            ready: std::sync::atomic::AtomicBool::new(true),
            failing: std::sync::atomic::AtomicBool::new(false),
            openapi,
        });
        let app = Router::new()
            .fallback(record_and_answer)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self {
            url,
            shared,
            server,
        }
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Whether a request has arrived whole (its body read to the end).
    pub fn received_a_whole_request(&self) -> bool {
        self.shared.last.lock().unwrap().is_some()
    }

    /// The last request received; panics if there was none.
    pub fn last(&self) -> Seen {
        self.shared
            .last
            .lock()
            .unwrap()
            .clone()
            .expect("the upstream received no request")
    }

    /// What its `/readyz` answers from now on (active health checks).
    pub fn set_ready(&self, ready: bool) {
        self.shared.ready.store(ready, Ordering::SeqCst);
    }

    /// While failing, it answers every request but `/readyz` with 503.
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// Lets `…/slow` requests answer, those waiting and any later one.
    pub fn release_slow(&self) {
        self.shared.release.send_replace(true);
    }
}

async fn record_and_answer(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    // Health checks are answered apart: they are not traffic.
    if request.uri().path() == "/readyz" {
        return if shared.ready.load(Ordering::SeqCst) {
            StatusCode::OK.into_response()
        } else {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        };
    }
    shared.hits.fetch_add(1, Ordering::SeqCst);
    if shared.failing.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"replica": shared.name, "failing": true})),
        )
            .into_response();
    }
    let (parts, body) = request.into_parts();
    // A body cut off on the way (the gateway stopped it) is no request.
    let Ok(body) = body.collect().await.map(|collected| collected.to_bytes()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let uri = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    *shared.last.lock().unwrap() = Some(Seen {
        method: parts.method.clone(),
        uri: uri.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });

    let path = parts.uri.path();
    if path == "/openapi.json"
        && let Some(document) = &shared.openapi
    {
        return Json(document.clone()).into_response();
    }
    if path.ends_with("/conflict") {
        return (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, PROBLEM_JSON)],
            conflict_body(&parts.headers),
        )
            .into_response();
    }
    if path.ends_with("/revealing") {
        // Says which software it is, and sets one security header itself.
        return (
            [
                (header::SERVER, "nginx/1.22.1"),
                (header::HeaderName::from_static("x-powered-by"), "Express"),
                (header::REFERRER_POLICY, "strict-origin"),
            ],
            "{}",
        )
            .into_response();
    }
    if path.ends_with("/large") {
        // Over the gateway's single-write buffering threshold: streamed.
        return large_body().into_response();
    }
    if path.ends_with("/unsized") {
        // No content-length: chunked, streamed frame by frame.
        let chunks = large_body()
            .chunks(16 * 1024)
            .map(|chunk| Ok::<_, std::convert::Infallible>(bytes::Bytes::copy_from_slice(chunk)))
            .collect::<Vec<_>>();
        return axum::body::Body::from_stream(futures::stream::iter(chunks)).into_response();
    }
    if path.ends_with("/slow") {
        let _ = shared
            .release
            .subscribe()
            .wait_for(|released| *released)
            .await;
    }
    let headers: Map<String, Value> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                Value::from(value.to_str().unwrap_or_default()),
            )
        })
        .collect();
    Json(json!({
        "replica": shared.name,
        "method": parts.method.as_str(),
        "path": uri,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response()
}

/// The body a recording upstream sends on `…/large` and `…/unsized`:
/// 200 KiB with a recognisable pattern.
pub fn large_body() -> Vec<u8> {
    (0..200 * 1024).map(|i| (i % 251) as u8).collect()
}

/// The exact body a recording upstream sends with its 409.
pub fn conflict_body(request_headers: &HeaderMap) -> String {
    let request_id = request_headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    json!({
        "type": "urn:portico:problem:conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "that display name is taken",
        "request_id": request_id,
    })
    .to_string()
}

/// The URL of a replica that is down: a port held closed (see
/// `closed_port`).
pub fn dead_endpoint() -> String {
    format!("http://127.0.0.1:{}", portico_testkit::http::closed_port())
}

/// Upstream config with the given replicas, round robin, no OpenAPI document.
pub fn upstream(endpoints: &[&str]) -> UpstreamConfig {
    UpstreamConfig {
        endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
        openapi_path: None,
        dns: None,
        health: None,
        outlier: None,
        panic_threshold_percent: None,
        hash_on: None,
        split: std::collections::BTreeMap::new(),
        split_pin_header: None,
        retry_budget: None,
        limits: None,
        breaker: None,
        slow_start_ms: None,
        protocol: None,
        tls: None,
        // A known order (the first request goes to the first endpoint) for
        // tests about failover; the default policy has tests of its own.
        balance: Some(portico_gateway::balance::Policy::RoundRobin),
        weights: std::collections::BTreeMap::new(),
    }
}

/// A public route with a generous timeout.
pub fn route(path_prefix: &str, upstream: &str) -> RouteConfig {
    RouteConfig {
        path_prefix: path_prefix.to_owned(),
        upstream: upstream.to_owned(),
        timeout_ms: 5_000,
        auth: Some("public".to_owned()),
        require_auth: None,
        attempt_timeout_ms: None,
        host: None,
        methods: None,
        headers: std::collections::BTreeMap::new(),
        rewrite_prefix: None,
        max_body_bytes: None,
        max_attempts: None,
        rate_limit: None,
        cors: None,
    }
}

/// As `main` does: tracing with the OpenTelemetry layer and the W3C
/// propagator, without which no `traceparent` is produced. Once per process.
fn init_telemetry() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let guard = telemetry::init("portico-gateway-tests", &Config::built_in().telemetry)
            .expect("telemetry init");
        // Keep the tracer provider for the life of the process.
        std::mem::forget(guard);
    });
}

/// A gateway running in-process, its token issuer and a client for it.
pub struct Gateway {
    pub api: SocketAddr,
    pub admin: SocketAddr,
    pub issuer: TestIssuer,
    pub client: reqwest::Client,
}

impl Gateway {
    /// Starts a gateway from the built-in defaults with no upstreams and no
    /// routes, tokens from a fresh [`TestIssuer`], then `configure`.
    pub async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        init_telemetry();
        let issuer = TestIssuer::start().await;
        let mut config = Config::built_in();
        config.upstreams.clear();
        config.routes.clear();
        config.tokens.issuer = issuer::ISSUER.to_owned();
        config.tokens.audience = issuer::AUDIENCE.to_owned();
        config.tokens.jwks.url = issuer.jwks_url.clone();
        config.tokens.revocations.url = Some(issuer.revocations_url.clone());
        configure(&mut config);
        let listeners = listeners().await;
        let app = Application::build_with_listeners(config, listeners)
            .await
            .expect("gateway builds");
        let (api, admin) = (app.api_addr(), app.admin_addr());
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        Self {
            api,
            admin,
            issuer,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The running configuration, from the admin listener's `/config`.
    pub async fn running_config(&self) -> Value {
        self.client
            .get(self.admin_url("/config"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The admin listener's `/metrics`, as text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// A valid access token for a new user.
    pub fn token(&self) -> String {
        self.issuer.user_token(uuid::Uuid::now_v7())
    }
}

/// API and admin listeners on free ports.
pub async fn listeners() -> Listeners {
    Listeners::bind(&ListenConfig {
        api: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
    })
    .await
    .unwrap()
}

/// The `x-request-id` of a response.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .expect("every response has x-request-id")
        .to_str()
        .unwrap()
        .to_owned()
}

pub use portico_testkit::http::{assert_problem_parts, expect_problem};

/// A response read by [`send_raw`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Sends `request` over a fresh HTTP/1.1 connection with its target exactly
/// as written (reqwest would normalise dot segments away).
pub async fn send_raw<B>(addr: SocketAddr, request: http::Request<B>) -> RawResponse
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    RawResponse {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A gateway that routes `/v1/users` to one recording upstream, `user`,
/// with `configure` applied after.
pub async fn gateway_with_user(
    configure: impl FnOnce(&mut Config),
) -> (Gateway, RecordingUpstream) {
    let user = RecordingUpstream::start("user").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&user.url]));
        config.routes = vec![route("/v1/users", "user")];
        configure(config);
    })
    .await;
    (gateway, user)
}

/// `GET target` sent verbatim.
pub async fn raw_get(addr: SocketAddr, target: &str) -> RawResponse {
    let request = http::Request::get(target)
        .header(header::HOST, "gateway.test")
        .body(Body::empty())
        .unwrap();
    send_raw(addr, request).await
}
