//! The middleware every API router is wrapped in.
//!
//! Outermost first: [`observe`] (request id, span with the W3C parent, RED
//! metrics, problem normalisation), panic catching, the request body limit
//! and the handler timeout.

use std::time::{Duration, Instant};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::FutureExt as _;
use tower_http::{catch_panic::CatchPanicLayer, limit::RequestBodyLimitLayer};
use tracing::{Instrument, field::Empty};

use super::{
    REQUEST_ID_HEADER,
    access_log::{self, AccessLog, ProxiedFacts, Record},
};
use crate::{
    error::{PROBLEM_JSON, Problem},
    telemetry,
};

/// [`REQUEST_ID_HEADER`] as a name made once, not parsed per request.
const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// Largest body an API accepts unless a service says otherwise.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

tokio::task_local! {
    static CURRENT_REQUEST_ID: RequestId;
}

/// The id of the request being served; also in request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Request id of the request whose task we are in (for outgoing calls).
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(|id| id.0.clone()).ok()
}

/// Spawns `future` as its own task, carrying the current request's span
/// (trace context) and request id along, so work that must outlive a
/// dropped request still logs and propagates under it.
pub fn spawn_in_request_context<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let future = future.instrument(tracing::Span::current());
    let trace = telemetry::TraceContext::current();
    let future = async move {
        match trace {
            Some(trace) => trace.scope(future).await,
            None => future.await,
        }
    };
    match CURRENT_REQUEST_ID.try_with(Clone::clone) {
        Ok(id) => tokio::spawn(CURRENT_REQUEST_ID.scope(id, future)),
        Err(_) => tokio::spawn(future),
    }
}

/// What the pipeline applies besides observation.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Maximum request body size in bytes; `None` leaves bodies to the handler.
    pub body_limit: Option<usize>,
    /// Upper bound for one handler; `None` leaves time limits to the handler.
    pub handler_timeout: Option<Duration>,
    /// One access-log line per request instead of the plain "request
    /// completed" ones; `None`: those.
    pub access_log: Option<AccessLog>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            body_limit: Some(DEFAULT_BODY_LIMIT),
            handler_timeout: Some(Duration::from_secs(30)),
            access_log: None,
        }
    }
}

/// Wraps `router` in the pipeline.
pub fn apply<S>(router: Router<S>, options: &PipelineOptions) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut router = router;
    if let Some(limit) = options.body_limit {
        router = router
            .layer(RequestBodyLimitLayer::new(limit))
            .layer(middleware::from_fn_with_state(limit, refuse_by_length));
    }
    router
        .layer(CatchPanicLayer::custom(panic_problem))
        // The handler timeout and the caller's deadline share one timer.
        .layer(middleware::from_fn_with_state(
            options.handler_timeout,
            within_time,
        ))
        .layer(middleware::from_fn_with_state(options.access_log, observe))
}

/// The pipeline around a whole service, for one that routes by itself
/// (the gateway's route table) and bounds bodies and time per route:
/// observation, the caller's deadline and panics caught, around
/// `handler`, as plain calls in the caller's future. [`apply`] puts its
/// layers inside a router, around each route, where a request clones and
/// boxes every layer of the route it takes (and `from_fn` boxes its inner
/// service again per request); here the caller boxes one future for the
/// whole request. The route label comes from the answer's [`RouteLabel`]
/// (a router's matched path is not known out here).
pub async fn around<F, Fut>(access_log: Option<AccessLog>, request: Request, handler: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    observed(access_log, request, |request| {
        within_deadline(request, None, |request| {
            // Boxed where it starts, so the two layers above hold a
            // pointer: rustc lays an async fn out with room for the future
            // it awaits beside the place that future is built in, so each
            // layer about doubled the size of what it wrapped (an 800-byte
            // handler made a 7 KB pipeline future) and moved it whole.
            Box::pin(async move {
                match std::panic::AssertUnwindSafe(handler(request))
                    .catch_unwind()
                    .await
                {
                    Ok(response) => response,
                    Err(panic) => panic_problem(panic),
                }
            })
        })
    })
    .await
}

fn panic_problem(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    Problem::internal()
        .with_cause("handler panicked")
        .into_response()
}

/// A fresh request id: a UUIDv7 (time-ordered), encoded straight into its
/// text rather than through `Display`.
fn new_request_id() -> String {
    let mut buffer = uuid::Uuid::encode_buffer();
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buffer)
        .to_owned()
}

/// The request id as a header value, marked never to be indexed by HPACK:
/// new on every request, it would only take room in the dynamic tables of
/// an HTTP/2 hop (the gateway's to the replicas) from entries that repeat.
fn request_id_value(request_id: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(request_id).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Accepts a client-sent request id only if it is short and plain, so it can
/// be logged and echoed safely; otherwise a new one is minted.
fn incoming_request_id(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get(REQUEST_ID)?.to_str().ok()?;
    let valid = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    valid.then(|| value.to_owned())
}

async fn observe(
    State(access_log): State<Option<AccessLog>>,
    request: Request,
    next: Next,
) -> Response {
    observed(access_log, request, |request| next.run(request)).await
}

/// Observation (request id, span, trace context, RED metrics, the access
/// line or the request's log line, problems rendered) around `next`.
async fn observed<F, Fut>(access_log: Option<AccessLog>, mut request: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let started = Instant::now();
    let request_id = incoming_request_id(request.headers()).unwrap_or_else(new_request_id);
    if let Some(value) = request_id_value(&request_id) {
        request.headers_mut().insert(REQUEST_ID, value);
    }
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));

    let method = request.method().clone();
    let route: std::sync::Arc<str> = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.with(Clone::clone), |p| p.as_str().into());
    let span = tracing::info_span!(
        "request",
        method = method.as_str(),
        route = &*route,
        request_id = request_id.as_str(),
        trace_id = Empty,
        status = Empty,
    );
    let trace = telemetry::start_request_trace(&span, request.headers());
    let mut trace_id = None;
    if !span.is_disabled() {
        span.record("trace_id", &*trace_id.insert(trace.trace_id_hex()));
    }
    // What the access line needs of the request, taken before it is gone.
    let access = access_log.map(|log| {
        let bytes_in = declared_length(request.headers()).unwrap_or(0);
        let peer = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip());
        let trace_id = trace_id.unwrap_or_else(|| trace.trace_id_hex());
        (
            log,
            request.uri().path().to_owned(),
            bytes_in,
            peer,
            trace_id,
        )
    });

    let response = match head_problem(&request) {
        // Refused before any handler sees it.
        Some(problem) => problem.into_response(),
        None => {
            trace
                .scope(CURRENT_REQUEST_ID.scope(RequestId(request_id.clone()), next(request)))
                .instrument(span.clone())
                .await
        }
    };
    // The internal cause of an error answer, logged here once.
    let cause = response
        .extensions()
        .get::<Problem>()
        .and_then(|problem| problem.cause.clone());
    let mut response = with_problem_body(response, &request_id);
    if let Some(value) = request_id_value(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    if matches!(
        response.status(),
        StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::URI_TOO_LONG
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    ) {
        // The request body was not read to its end, so this connection
        // cannot carry another request; say so, or a pooling client (the
        // gateway) may send its next request into a closing socket.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }

    let status = response.status().as_u16();
    // The span's last fields are read by the line logged in it below (an
    // error, or every request without an access log) and by an exporter;
    // with neither, recording them would format them for nobody.
    let read_later = status >= 500 || access.is_none() || telemetry::exporting();
    // A handler that routes by itself (the gateway's route table) names the
    // route it chose; that is the metric label, as bounded as axum's paths.
    let route = match response.extensions().get::<RouteLabel>() {
        Some(label) => {
            if read_later {
                span.record("route", &*label.0);
            }
            label.0.clone()
        }
        None => route,
    };
    let elapsed = started.elapsed();
    if read_later {
        span.record("status", status);
    }
    RED_SERIES.with(|series| {
        series
            .borrow_mut()
            .get(method_label(&method), &route, status)
            .record(elapsed)
    });
    let latency_ms = elapsed.as_millis() as u64;
    span.in_scope(|| match (status, &cause, &access) {
        // A bug or a broken invariant: an error. A dependency that is busy,
        // down or slow (502/503/504) is a warning; it is expected to pass.
        (500, Some(cause), _) => tracing::error!(latency_ms, %cause, "request failed"),
        (501.., Some(cause), _) => tracing::warn!(latency_ms, %cause, "request failed"),
        (500.., None, _) => tracing::warn!(latency_ms, "request failed"),
        // The access log has the rest.
        (_, _, Some(_)) => {}
        (_, Some(cause), None) => tracing::info!(latency_ms, %cause, "request refused"),
        (_, None, None) => tracing::info!(latency_ms, "request completed"),
    });
    match access {
        Some((log, path, bytes_in, peer, trace_id)) if log.keeps(status, fastrand::f64()) => {
            let proxied = response.extensions().get::<ProxiedFacts>().cloned();
            let record = Record {
                method,
                route,
                path,
                status,
                started,
                bytes_in,
                request_id,
                trace_id,
                client_ip: peer,
                cause,
                proxied,
            };
            access_log::log_when_sent(response, record)
        }
        _ => response,
    }
}

thread_local! {
    /// The route label of a request no route matched.
    static UNMATCHED: std::sync::Arc<str> = std::sync::Arc::from("unmatched");
    /// This thread's handles of the per-request series, by method, status
    /// and route: registered once, so a request does not build label
    /// strings and look them up in the registry (one map per thread: no
    /// lock on the request path).
    static RED_SERIES: std::cell::RefCell<RedSeries> = std::cell::RefCell::new(RedSeries::default());
}

/// Handles of `http_requests_total` and `http_request_duration_seconds`
/// for one method, route and status.
#[derive(Debug)]
struct RedHandles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl RedHandles {
    fn record(&self, elapsed: Duration) {
        self.requests.increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// Method and status first (a small, fixed set), then the route, which is
/// looked up by `&str` without allocating.
#[derive(Debug, Default)]
struct RedSeries(
    std::collections::HashMap<(&'static str, u16), std::collections::HashMap<Box<str>, RedHandles>>,
);

impl RedSeries {
    fn get(&mut self, method: &'static str, route: &str, status: u16) -> &RedHandles {
        let by_route = self.0.entry((method, status)).or_default();
        if !by_route.contains_key(route) {
            let labels = [
                ("method", method.to_owned()),
                ("route", route.to_owned()),
                ("status", status.to_string()),
            ];
            let handles = RedHandles {
                requests: metrics::counter!("http_requests_total", &labels),
                duration: metrics::histogram!("http_request_duration_seconds", &labels),
            };
            by_route.insert(route.into(), handles);
        }
        &by_route[route]
    }
}

/// What is wrong with a request's head, before any handler sees it: its
/// target or headers over the listener's bounds (414, 431), or its `Host`.
/// Only requests read from a connection are judged (the listener puts its
/// [`RequestLimits`](super::server::RequestLimits) on each); one handed to
/// the router in-process has no wire form to judge.
fn head_problem(request: &Request) -> Option<Problem> {
    let limits = request.extensions().get::<super::server::RequestLimits>()?;
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > limits.max_uri_bytes {
        return Some(Problem::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            format!(
                "the request target is longer than {} bytes",
                limits.max_uri_bytes
            ),
        ));
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Some(Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!(
                "the request's headers are larger than {} bytes",
                limits.max_header_bytes
            ),
        ));
    }
    host_problem(request)
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host`; without
/// it, or with several, it is refused with 400 (which host it is for —
/// routing by host, the forwarded host — must never be a guess). HTTP/1.0
/// may leave it out; HTTP/2 names the host in `:authority`.
fn host_problem(request: &Request) -> Option<Problem> {
    if request.version() != axum::http::Version::HTTP_11 {
        return None;
    }
    let hosts = request.headers().get_all(header::HOST).iter().count();
    (hosts != 1).then(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-host",
            if hosts == 0 {
                "an HTTP/1.1 request must carry a Host header"
            } else {
                "an HTTP/1.1 request must carry exactly one Host header"
            },
        )
    })
}

/// The method as a metric label: the standard ones by name, anything else
/// (hyper accepts any token) as `OTHER`, so clients cannot grow the metric
/// set without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// Marks an error response whose body follows another standard on purpose
/// (the OAuth 2.0 token endpoint's RFC 6749 §5.2 errors): the pipeline
/// leaves it as it is instead of turning it into a problem.
#[derive(Debug, Clone, Copy)]
pub struct OwnErrorFormat;

/// Request header: how long the caller (the gateway) will wait for this
/// request, in milliseconds. A service answers 504 when its work outlives
/// it instead of finishing work nobody waits for.
pub const DEADLINE_HEADER: &str = "x-portico-deadline-ms";

/// [`DEADLINE_HEADER`] as a name made once, not parsed per request.
pub const DEADLINE: HeaderName = HeaderName::from_static(DEADLINE_HEADER);

/// Cuts a request short at the caller's deadline ([`DEADLINE_HEADER`]) or
/// at the handler timeout, whichever comes first.
async fn within_time(
    State(handler_timeout): State<Option<Duration>>,
    request: Request,
    next: Next,
) -> Response {
    within_deadline(request, handler_timeout, |request| next.run(request)).await
}

/// Runs `next` for at most the caller's deadline ([`DEADLINE_HEADER`]: 504
/// past it) and `handler_timeout` (a bare 503 past it, made a problem
/// like any bare error), on one timer: a request from the gateway carries
/// a deadline, and two timers per request would each cost a registration
/// in the runtime's timer wheel.
async fn within_deadline<F, Fut>(
    request: Request,
    handler_timeout: Option<Duration>,
    next: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let deadline = request
        .headers()
        .get(DEADLINE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
        .map(Duration::from_millis);
    let (limit, past_deadline) = match (deadline, handler_timeout) {
        (Some(deadline), Some(timeout)) if timeout < deadline => (timeout, false),
        (Some(deadline), _) => (deadline, true),
        (None, Some(timeout)) => (timeout, false),
        (None, None) => return next(request).await,
    };
    match crate::timer::timeout(limit, next(request)).await {
        Ok(response) => response,
        Err(_) if past_deadline => Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline-exceeded",
            "the request's deadline passed before it was done",
        )
        .into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// The most of a body refused by its declared length that is still read
/// (and thrown away) before the 413 goes out, and for how long. A
/// connection closed with input left unread is reset, and the reset can
/// destroy the answer before the client reads it: the client would see a
/// broken connection instead of the problem (nginx's lingering close does
/// the same). Past these, the answer goes out at once and may be lost.
pub const LINGER_MAX_BYTES: u64 = 1024 * 1024;
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// A body over `limit` by its `Content-Length`: read to its end when that
/// is cheap, then a 413 (the pipeline renders the problem and closes the
/// connection).
async fn refuse_by_length(State(limit): State<usize>, request: Request, next: Next) -> Response {
    match declared_length(request.headers()) {
        Some(declared) if declared > limit as u64 => {
            let (parts, body) = request.into_parts();
            linger(&parts.headers, declared, body).await;
            StatusCode::PAYLOAD_TOO_LARGE.into_response()
        }
        _ => next.run(request).await,
    }
}

/// The `Content-Length` a request or response declares, if it is a number.
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// Reads and drops a refused request body of `declared` bytes, within
/// [`LINGER_MAX_BYTES`] and [`LINGER_TIME`], so the refusal that follows
/// reaches the client. A client waiting for `100 Continue` has sent no
/// body and gets its refusal at once.
pub async fn linger(headers: &axum::http::HeaderMap, declared: u64, body: axum::body::Body) {
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue || declared > LINGER_MAX_BYTES {
        return;
    }
    let drain = async {
        let mut body = body;
        while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut body).await {}
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// Response extension: the route that served the request, for a handler
/// that matches routes itself (one fallback handler in front of its own
/// route table). Must come from configuration, never from the request, so
/// the `route` label stays a bounded set.
#[derive(Debug, Clone)]
pub struct RouteLabel(pub std::sync::Arc<str>);

/// Puts the request id into problem bodies and turns bare error responses
/// (router 404/405, body-limit 413, timeouts) into problems.
fn with_problem_body(response: Response, request_id: &str) -> Response {
    if response.extensions().get::<OwnErrorFormat>().is_some() {
        return response;
    }
    let problem = match response.extensions().get::<Problem>() {
        Some(problem) => problem.clone(),
        None => {
            let status = response.status();
            let is_problem = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|ct| ct.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
            if !(status.is_client_error() || status.is_server_error()) || is_problem {
                return response;
            }
            Problem::from_status(status)
        }
    };
    let (parts, _) = response.into_parts();
    let mut problem = problem;
    problem.request_id = Some(request_id.to_owned());
    let mut rendered = problem.to_response();
    // Keep headers the original response set (Allow, Retry-After, ...).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rendered.headers_mut().insert(name.clone(), value.clone());
        }
    }
    // And its extensions (the route that answered), the rendered problem
    // taking the place of the original one.
    let mut extensions = parts.extensions;
    extensions.extend(std::mem::take(rendered.extensions_mut()));
    *rendered.extensions_mut() = extensions;
    rendered
}

/// Finishes a service's API router: its OpenAPI document at
/// `/openapi.json`, a 404 problem for unknown paths, and the pipeline with
/// the default body limit and handler timeout.
pub fn service_router(router: Router, document: &utoipa::openapi::OpenApi) -> Router {
    // Serialised once: the document is fixed for the life of the process.
    let document = Bytes::from(serde_json::to_vec(document).unwrap_or_default());
    let router = router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], document) }
            }),
        )
        .fallback(not_found);
    apply(router, &PipelineOptions::default())
}

/// [`service_router`] for routes that carry their OpenAPI descriptions:
/// splits them into the router (given `state`) and the document it serves.
pub fn documented_service_router<S>(
    routes: utoipa_axum::router::OpenApiRouter<S>,
    state: S,
) -> Router
where
    S: Clone + Send + Sync + 'static,
{
    let (router, document) = routes.split_for_parts();
    service_router(router.with_state(state), &document)
}

/// Fallback for unknown routes: a 404 problem.
pub async fn not_found() -> Response {
    Problem::not_found("no resource at this path").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{body::Body, http::HeaderMap, routing::get};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn app() -> Router {
        let router = Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route(
                "/conflict",
                get(|| async { Problem::conflict("taken").into_response() }),
            )
            .fallback(not_found);
        apply(router, &PipelineOptions::default())
    }

    #[tokio::test]
    async fn generates_a_request_id_when_none_is_sent() {
        let response = app()
            .oneshot(Request::get("/ok").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let id = response.headers()[REQUEST_ID_HEADER].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }

    #[tokio::test]
    async fn the_request_id_is_never_indexed_by_hpack_on_its_way_on() {
        let request = Request::get("/ok").body(Body::empty()).unwrap();
        let response = around(None, request, |request| async move {
            // What a handler forwards (the gateway's upstream request) and
            // what the answer carries.
            assert!(request.headers()[REQUEST_ID_HEADER].is_sensitive());
            "ok".into_response()
        })
        .await;
        assert!(response.headers()[REQUEST_ID_HEADER].is_sensitive());
    }

    #[tokio::test]
    async fn echoes_a_well_formed_request_id() {
        let response = app()
            .oneshot(
                Request::get("/ok")
                    .header(REQUEST_ID_HEADER, "abc-123")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "abc-123");
    }

    #[tokio::test]
    async fn replaces_a_request_id_with_unsafe_characters() {
        let response = app()
            .oneshot(
                Request::get("/ok")
                    .header(REQUEST_ID_HEADER, "a b<script>")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let id = response.headers()[REQUEST_ID_HEADER].to_str().unwrap();
        assert!(
            uuid::Uuid::parse_str(id).is_ok(),
            "a fresh id replaces it: {id}"
        );
    }

    #[tokio::test]
    async fn the_cause_of_an_error_is_logged_not_sent() {
        let router = Router::new().route(
            "/fail",
            get(|| async {
                Problem::service_unavailable("busy")
                    .retry_after(3)
                    .with_cause("database is locked (code 5)")
                    .into_response()
            }),
        );
        let response = apply(router, &PipelineOptions::default())
            .oneshot(Request::get("/fail").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&bytes);
        assert!(!body.contains("locked"), "{body}");
        assert!(body.contains("request_id"), "{body}");
    }

    #[tokio::test]
    async fn problems_carry_the_request_id() {
        let response = app()
            .oneshot(
                Request::get("/conflict")
                    .header(REQUEST_ID_HEADER, "rid-1")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let body = body_json(response).await;
        assert_eq!(body["request_id"], "rid-1");
        assert_eq!(body["status"], 409);
    }

    #[tokio::test]
    async fn method_not_allowed_becomes_a_problem() {
        let response = app()
            .oneshot(Request::post("/ok").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert!(response.headers().contains_key(header::ALLOW));
        let body = body_json(response).await;
        assert!(body["request_id"].is_string());
    }

    #[tokio::test]
    async fn a_body_over_the_limit_closes_the_connection() {
        let router = Router::new().route(
            "/echo",
            axum::routing::post(|body: String| async move { body }),
        );
        let app = apply(
            router,
            &PipelineOptions {
                body_limit: Some(8),
                handler_timeout: None,
                access_log: None,
            },
        );
        let response = app
            .oneshot(
                Request::post("/echo")
                    .header(header::CONTENT_LENGTH, "100")
                    .body(Body::from(vec![b'x'; 100]))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn unknown_path_is_a_404_problem() {
        let response = app()
            .oneshot(Request::get("/nope").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(body_json(response).await["status"], 404);
    }

    #[test]
    fn unknown_methods_share_one_metric_label() {
        let custom = axum::http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&custom), "OTHER");
        assert_eq!(method_label(&axum::http::Method::PATCH), "PATCH");
    }

    #[test]
    fn request_id_longer_than_128_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(
            REQUEST_ID_HEADER,
            HeaderValue::from_str(&"a".repeat(129)).unwrap(),
        );
        assert_eq!(incoming_request_id(&headers), None);
        let longest = "a".repeat(128);
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_str(&longest).unwrap());
        assert_eq!(incoming_request_id(&headers), Some(longest));
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_header_is_a_504_problem() {
        let router = apply(
            Router::new().route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    "late"
                }),
            ),
            &PipelineOptions {
                body_limit: None,
                handler_timeout: None,
                access_log: None,
            },
        );
        let started = std::time::Instant::now();
        let response = tower::ServiceExt::oneshot(
            router,
            axum::http::Request::builder()
                .uri("/slow")
                .header(DEADLINE_HEADER, "50")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["type"], "urn:portico:problem:deadline-exceeded");
        assert!(problem["request_id"].is_string());
    }

    #[tokio::test]
    async fn the_earlier_of_the_handler_timeout_and_the_deadline_ends_a_request() {
        // (handler timeout, deadline header, the status when it ends)
        let cases = [
            (
                Duration::from_millis(50),
                None,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                Duration::from_millis(50),
                Some("5000"),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                Duration::from_secs(5),
                Some("50"),
                StatusCode::GATEWAY_TIMEOUT,
            ),
        ];
        for (handler_timeout, deadline, expected) in cases {
            let router = apply(
                Router::new().route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        "late"
                    }),
                ),
                &PipelineOptions {
                    body_limit: None,
                    handler_timeout: Some(handler_timeout),
                    access_log: None,
                },
            );
            let mut request = axum::http::Request::builder().uri("/slow");
            if let Some(deadline) = deadline {
                request = request.header(DEADLINE_HEADER, deadline);
            }
            let started = Instant::now();
            let response = tower::ServiceExt::oneshot(
                router,
                request.body(axum::body::Body::empty()).unwrap(),
            )
            .await
            .unwrap();

            let case = format!("timeout {handler_timeout:?}, deadline {deadline:?}");
            assert_eq!(response.status(), expected, "{case}");
            assert!(started.elapsed() < Duration::from_secs(2), "{case}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                PROBLEM_JSON,
                "{case}"
            );
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(problem["request_id"].is_string(), "{case}");
        }
    }
}
