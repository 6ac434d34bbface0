//! Sending one request to an upstream: the "pick endpoint → forward attempt
//! → classify outcome → retry or answer → record" stages, shared by the
//! gateway's proxy and the services' calls to each other.
//!
//! The upstream's limits admit the request first. Each attempt goes to the
//! endpoint the policy picks among those not tried yet, with its own
//! timeout and the time left passed on in the deadline header. An attempt
//! is tried again, on another endpoint, only when it provably never reached
//! one (connection refused) or when the request may be replayed (after a
//! reset, a timed-out attempt, or a 502/503/504), at most `max_attempts`
//! times, after a jittered backoff, and while the retry budget allows.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::{
    balance::PickContext, health::outlier::Outcome, resilience::retry, upstream::Upstream,
};

/// How long the upstream has for a request, in milliseconds, set on every
/// attempt: the services' common pipeline cuts work nobody waits for any
/// more.
pub use portico_common::http::pipeline::DEADLINE_HEADER;

/// Pooled keep-alive connections to every endpoint; share one per process.
#[derive(Clone)]
pub struct Transport {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").finish_non_exhaustive()
    }
}

/// How the transport connects and pools.
#[derive(Debug, Clone, Copy)]
pub struct TransportSettings {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

impl Transport {
    pub fn new(settings: TransportSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .build(connector);
        Self { client }
    }
}

/// How many attempts a request gets and how long each may take.
#[derive(Debug, Clone, Copy)]
pub struct AttemptPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Time one attempt may wait for response headers.
    pub attempt_timeout: Duration,
    /// Retry backoff: a random wait up to base × 2^retry, capped.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

/// One request to send.
#[derive(Debug)]
pub struct Call<'a> {
    pub method: &'a Method,
    /// Path and query on the endpoint (`/internal/users`).
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    /// What the balancing policy may key on.
    pub context: PickContext,
    /// Whether sending it twice is harmless once it may have reached an
    /// endpoint: idempotent methods, or a request idempotent by design (a
    /// create keyed by a client-chosen id).
    pub replayable: bool,
    pub policy: AttemptPolicy,
    /// When the caller stops waiting: no attempt outlives it.
    pub deadline: Instant,
}

/// Why no endpoint's answer came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Its limits are full: nothing was sent.
    #[error("too many requests in flight and queued")]
    Overloaded,
    /// No endpoint could be reached (refused, or none at all).
    #[error("no endpoint reachable")]
    NoEndpoint,
    /// The deadline, or the last attempt's timeout, ran out.
    #[error("no answer in time")]
    Timeout,
    /// An endpoint failed mid-request.
    #[error("{0}")]
    Broken(String),
    /// The path cannot be put on an endpoint's URI.
    #[error("invalid path")]
    InvalidPath,
}

/// Whether `method` may be sent twice with the effect of once.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

impl Transport {
    /// Sends `call` to `upstream`: the first endpoint's answer that is not a
    /// replayable 502/503/504, or why there is none.
    pub async fn send(
        &self,
        upstream: &Upstream,
        call: Call<'_>,
    ) -> Result<http::Response<Incoming>, Failure> {
        let deadline = call.deadline;
        let outcome = tokio::time::timeout_at(deadline.into(), self.attempts(upstream, call))
            .await
            .unwrap_or(Err(Failure::Timeout));
        if outcome.as_ref().is_err_and(|f| *f == Failure::Timeout) {
            metrics::counter!(upstream.metric("upstream_timeouts_total"),
                "upstream" => upstream.name.clone())
            .increment(1);
        }
        upstream.count_response(match &outcome {
            Ok(response) => response.status().as_u16(),
            Err(Failure::InvalidPath) => 400,
            // Overloaded, no endpoint, timed out, broken: the caller
            // answers 502/503/504.
            Err(_) => 503,
        });
        outcome
    }

    async fn attempts(
        &self,
        upstream: &Upstream,
        call: Call<'_>,
    ) -> Result<http::Response<Incoming>, Failure> {
        let _slot = upstream.limits.admit().await.map_err(|refused| {
            metrics::counter!(upstream.metric("upstream_overflow_total"),
                "upstream" => upstream.name.clone(), "reason" => format!("{refused:?}"))
            .increment(1);
            Failure::Overloaded
        })?;
        upstream.budget.count_request();
        let policy = call.policy;
        let mut last_failure: Option<Result<http::Response<Incoming>, Failure>> = None;
        let mut reached_upstream = false;
        for (attempt, endpoint) in (0..policy.max_attempts).zip(upstream.attempts(call.context)) {
            if attempt > 0 {
                // A retry: only what is safe to send again, only while the
                // budget lasts, after a pause when the last one got through.
                if reached_upstream && !call.replayable {
                    break;
                }
                if !upstream.budget.try_retry() {
                    metrics::counter!(upstream.metric("retry_budget_exhausted_total"),
                        "upstream" => upstream.name.clone())
                    .increment(1);
                    break;
                }
                metrics::counter!(upstream.metric("upstream_retries_total"),
                    "upstream" => upstream.name.clone())
                .increment(1);
                if reached_upstream {
                    tokio::time::sleep(retry::backoff(
                        attempt - 1,
                        policy.backoff_base,
                        policy.backoff_max,
                    ))
                    .await;
                }
            }
            let uri = Uri::builder()
                .scheme(endpoint.scheme.clone())
                .authority(endpoint.authority.clone())
                .path_and_query(call.path_and_query)
                .build()
                .map_err(|_| Failure::InvalidPath)?;
            let mut request = http::Request::new(Full::new(call.body.clone()));
            *request.method_mut() = call.method.clone();
            *request.uri_mut() = uri;
            *request.headers_mut() = call.headers.clone();
            // The time this attempt has: the upstream stops work the caller
            // will no longer wait for.
            let remaining = call.deadline.saturating_duration_since(Instant::now());
            let attempt_timeout = policy.attempt_timeout.min(remaining);
            if let Ok(value) = HeaderValue::from_str(&attempt_timeout.as_millis().to_string()) {
                request.headers_mut().insert(DEADLINE_HEADER, value);
            }

            let started = Instant::now();
            let in_flight = endpoint.start_request();
            let outcome = tokio::time::timeout(attempt_timeout, self.client.request(request)).await;
            drop(in_flight);
            let series = upstream.attempt_metrics(&endpoint);
            match outcome {
                Ok(Ok(response)) => {
                    let status = response.status();
                    upstream.report(
                        &endpoint,
                        if status.is_server_error() {
                            Outcome::ServerError
                        } else {
                            Outcome::Success
                        },
                    );
                    series.duration.record(started.elapsed().as_secs_f64());
                    series.requests.increment(1);
                    // 502/503/504 from a replica is worth another replica's
                    // try (replayable requests); anything else is the answer.
                    let transient = matches!(
                        status,
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    );
                    if !(transient && call.replayable) {
                        return Ok(response);
                    }
                    reached_upstream = true;
                    last_failure = Some(Ok(response));
                }
                Ok(Err(err)) if err.is_connect() => {
                    // Nothing reached the replica: always safe to try another.
                    tracing::warn!(upstream = %upstream.name, endpoint = %endpoint.label, error = %err,
                        "replica refused connection");
                    upstream.report(&endpoint, Outcome::GatewayFailure);
                    series.connect_failures.increment(1);
                    reached_upstream = false;
                    if last_failure.is_none() {
                        last_failure = Some(Err(Failure::NoEndpoint));
                    }
                }
                Ok(Err(err)) => {
                    tracing::warn!(upstream = %upstream.name, endpoint = %endpoint.label, error = %err,
                        replayable = call.replayable, "replica failed mid-request");
                    upstream.report(&endpoint, Outcome::GatewayFailure);
                    series.failures.increment(1);
                    reached_upstream = true;
                    last_failure = Some(Err(Failure::Broken(err.to_string())));
                }
                Err(_) => {
                    // A hung replica: it costs this one attempt, then it is
                    // set aside. The request may have reached it.
                    tracing::warn!(upstream = %upstream.name, endpoint = %endpoint.label,
                        replayable = call.replayable,
                        timeout_ms = attempt_timeout.as_millis() as u64,
                        "replica did not answer within the attempt timeout");
                    upstream.report(&endpoint, Outcome::GatewayFailure);
                    series.attempt_timeouts.increment(1);
                    reached_upstream = true;
                    last_failure = Some(Err(Failure::Timeout));
                }
            }
        }
        last_failure.unwrap_or(Err(Failure::NoEndpoint))
    }
}
