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

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header::HOST, uri::PathAndQuery};
use http_body_util::{BodyExt, combinators::UnsyncBoxBody};
use portico_common::http::pipeline::DEADLINE;

use crate::{
    balance::PickContext,
    config::Protocol,
    connection::{
        BoxError, OutgoingBody, Sender, http2,
        pool::{IdlePolicy, UpstreamBody},
    },
    health::outlier::Outcome,
    resilience::retry,
    upstream::{Endpoint, Upstream},
};

/// How long the upstream has for a request, in milliseconds, set on every
/// attempt: the services' common pipeline cuts work nobody waits for any
/// more.
pub use portico_common::http::pipeline::DEADLINE_HEADER;

/// Sends requests over the endpoints' own connection pools; share one per
/// process (it holds only settings: the pools belong to the endpoints).
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    settings: TransportSettings,
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
        Self { settings }
    }

    fn idle_policy(&self) -> IdlePolicy {
        IdlePolicy {
            timeout: self.settings.pool_idle_timeout,
            max: self.settings.pool_max_idle_per_host,
        }
    }
}

/// A request's body for its attempts.
pub enum RequestBody {
    /// Held whole: sent again by as many attempts as it takes.
    Buffered(Bytes),
    /// Passed on as it arrives: it goes out once. An attempt that fails
    /// before sending anything (no connection) leaves it for the next.
    Streamed {
        body: Option<UnsyncBoxBody<Bytes, BoxError>>,
        /// Told when the last byte has gone out: the wait for the answer
        /// (the attempt timeout) starts then, not while a client uploads.
        sent: Arc<tokio::sync::Notify>,
    },
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Buffered(bytes) => write!(f, "Buffered({} bytes)", bytes.len()),
            Self::Streamed { body, .. } => write!(f, "Streamed(sent: {})", body.is_none()),
        }
    }
}

impl From<Bytes> for RequestBody {
    fn from(bytes: Bytes) -> Self {
        Self::Buffered(bytes)
    }
}

impl RequestBody {
    /// A stream of `body`'s frames.
    pub fn streamed<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let sent = Arc::new(tokio::sync::Notify::new());
        let body = NotifyAtEnd {
            inner: body,
            sent: Some(sent.clone()),
        };
        Self::Streamed {
            body: Some(body.map_err(Into::into).boxed_unsync()),
            sent,
        }
    }

    /// The body for one attempt; `None` once a stream has gone out.
    fn take(&mut self) -> Option<OutgoingBody> {
        match self {
            Self::Buffered(bytes) => Some(OutgoingBody::Whole(bytes.clone())),
            Self::Streamed { body, .. } => body.take().map(OutgoingBody::Stream),
        }
    }

    /// Puts back a body that never went out.
    fn restore(&mut self, outgoing: OutgoingBody) {
        if let (Self::Streamed { body, .. }, OutgoingBody::Stream(stream)) = (self, outgoing) {
            *body = Some(stream);
        }
    }

    fn is_spent(&self) -> bool {
        matches!(self, Self::Streamed { body: None, .. })
    }

    /// Resolves once the whole body has gone out (at once when buffered).
    fn sent(&self) -> Option<Arc<tokio::sync::Notify>> {
        match self {
            Self::Buffered(_) => None,
            Self::Streamed { sent, .. } => Some(sent.clone()),
        }
    }
}

/// A body that tells `sent` when its last frame has been read.
struct NotifyAtEnd<B> {
    inner: B,
    sent: Option<Arc<tokio::sync::Notify>>,
}

impl<B> http_body::Body for NotifyAtEnd<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_frame(cx));
        if (frame.is_none() || this.inner.is_end_stream())
            && let Some(sent) = this.sent.take()
        {
            sent.notify_one();
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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
    pub body: RequestBody,
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

/// Response extension: who answered, after how many attempts.
#[derive(Debug, Clone)]
pub struct Served {
    pub endpoint: Arc<Endpoint>,
    /// Attempts made, the answering one included.
    pub attempts: u32,
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
    /// The caller's request body failed (the client went away, or it
    /// broke the body's own limit): no endpoint's fault.
    #[error("request body: {0}")]
    RequestBody(String),
    /// The request body went past the limit its stream was given.
    #[error("request body too large")]
    RequestBodyTooLarge,
}

/// How one attempt ended without an answer.
#[derive(Debug)]
enum AttemptError {
    /// No connection: nothing reached the endpoint.
    Connect(String),
    /// The exchange broke after the request may have reached it.
    Broken(BoxError),
    /// The request body failed.
    Body(Failure),
    /// A streamed body went out with an earlier attempt.
    BodyGone,
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
    ) -> Result<http::Response<UpstreamBody>, Failure> {
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
            Err(Failure::RequestBodyTooLarge) => 413,
            Err(Failure::RequestBody(_)) => 400,
            // Overloaded, no endpoint, timed out, broken: the caller
            // answers 502/503/504.
            Err(_) => 503,
        });
        outcome
    }

    async fn attempts(
        &self,
        upstream: &Upstream,
        mut call: Call<'_>,
    ) -> Result<http::Response<UpstreamBody>, Failure> {
        let _slot = upstream.limits.admit().await.map_err(|refused| {
            metrics::counter!(upstream.metric("upstream_overflow_total"),
                "upstream" => upstream.name.clone(), "reason" => format!("{refused:?}"))
            .increment(1);
            Failure::Overloaded
        })?;
        upstream.budget.count_request();
        let policy = call.policy;
        // HTTP/1.1 requests carry the path alone (and `Host`); HTTP/2 ones
        // the whole URI, built per endpoint. The path is parsed once.
        let path_and_query: PathAndQuery = call
            .path_and_query
            .parse()
            .map_err(|_| Failure::InvalidPath)?;
        let origin_form = Uri::from(path_and_query.clone());
        let mut last_failure: Option<Result<http::Response<UpstreamBody>, Failure>> = None;
        let mut reached_upstream = false;
        for (attempt, endpoint) in (0..policy.max_attempts).zip(upstream.attempts(call.context)) {
            if attempt > 0 {
                // A retry: only what is safe to send again, only while the
                // budget lasts, after a pause when the last one got through.
                if reached_upstream && !call.replayable {
                    break;
                }
                if call.body.is_spent() {
                    // The body went out with the last attempt.
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
            let uri = match upstream.connector.protocol {
                Protocol::Http1 => origin_form.clone(),
                Protocol::Http2 => Uri::builder()
                    .scheme(endpoint.scheme.clone())
                    .authority(endpoint.authority.clone())
                    .path_and_query(path_and_query.clone())
                    .build()
                    .map_err(|_| Failure::InvalidPath)?,
            };
            let mut head = http::Request::new(());
            *head.method_mut() = call.method.clone();
            *head.uri_mut() = uri;
            *head.headers_mut() = call.headers.clone();
            // The time this attempt has: the upstream stops work the caller
            // will no longer wait for.
            let remaining = call.deadline.saturating_duration_since(Instant::now());
            let attempt_timeout = policy.attempt_timeout.min(remaining);
            let millis = u64::try_from(attempt_timeout.as_millis()).unwrap_or(u64::MAX);
            if let Ok(value) = HeaderValue::from_str(itoa::Buffer::new().format(millis)) {
                head.headers_mut().insert(DEADLINE, value);
            }

            let started = Instant::now();
            let in_flight = endpoint.start_request();
            let series = upstream.attempt_metrics(&endpoint);
            let body_sent = call.body.sent();
            let exchange = self.exchange(upstream, &endpoint, head, &mut call.body, series);
            let outcome = answer_within(exchange, body_sent, attempt_timeout).await;
            drop(in_flight);
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
                        let mut response = response;
                        response.extensions_mut().insert(Served {
                            endpoint: endpoint.clone(),
                            attempts: attempt + 1,
                        });
                        return Ok(response);
                    }
                    reached_upstream = true;
                    last_failure = Some(Ok(response));
                }
                Ok(Err(AttemptError::Connect(err))) => {
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
                Ok(Err(AttemptError::Broken(err))) => {
                    tracing::warn!(upstream = %upstream.name, endpoint = %endpoint.label, error = %err,
                        replayable = call.replayable, "replica failed mid-request");
                    upstream.report(&endpoint, Outcome::GatewayFailure);
                    series.failures.increment(1);
                    reached_upstream = true;
                    last_failure = Some(Err(Failure::Broken(err.to_string())));
                }
                // The caller's side failed: no replica is to blame, and no
                // other could do better.
                Ok(Err(AttemptError::Body(failure))) => return Err(failure),
                Ok(Err(AttemptError::BodyGone)) => break,
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

    /// One exchange with `endpoint`: a connection (an idle one, else a new
    /// one), the request on it, the response head. A pooled connection
    /// that turns out closed before the request went out is no failure:
    /// the next one is tried.
    async fn exchange(
        &self,
        upstream: &Upstream,
        endpoint: &Endpoint,
        head: http::Request<()>,
        body: &mut RequestBody,
        series: &crate::upstream::AttemptMetrics,
    ) -> Result<http::Response<UpstreamBody>, AttemptError> {
        let idle = self.idle_policy();
        let (mut head, ()) = head.into_parts();
        loop {
            let (sender, reused) = match upstream.connector.protocol {
                Protocol::Http1 => match endpoint.pool.checkout_http1(idle).await {
                    Some(sender) => (Sender::Http1(sender), true),
                    // Boxed: connecting (TLS included) makes a future of
                    // several KiB that a pooled connection never needs, and
                    // unboxed it would be part of every request's future.
                    None => (
                        Box::pin(self.dial(upstream, endpoint, series)).await?,
                        false,
                    ),
                },
                Protocol::Http2 => {
                    let (sender, reused) = endpoint
                        .pool
                        .loop_http2(|| async {
                            match Box::pin(self.dial(upstream, endpoint, series)).await? {
                                Sender::Http2(sender) => Ok(sender),
                                Sender::Http1(_) => Err(AttemptError::Connect(
                                    "dialed HTTP/1.1 for an HTTP/2 upstream".into(),
                                )),
                            }
                        })
                        .await?;
                    (Sender::Http2(sender), reused)
                }
            };
            let Some(outgoing) = body.take() else {
                return Err(AttemptError::BodyGone);
            };
            let mut request = http::Request::from_parts(head, outgoing);
            let unsent = match sender {
                Sender::Http1(mut sender) => {
                    request
                        .headers_mut()
                        .insert(HOST, endpoint.host_header.clone());
                    match sender.try_send_request(request).await {
                        // Switching protocols: the connection is the
                        // upgrade's now, not the pool's.
                        Ok(response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                            return Ok(response.map(UpstreamBody::plain));
                        }
                        Ok(response) => {
                            let (parts, incoming) = response.into_parts();
                            return Ok(http::Response::from_parts(
                                parts,
                                endpoint.pool.returning(incoming, sender, idle),
                            ));
                        }
                        Err(mut err) => match err.take_message() {
                            Some(unsent) => (unsent, err.into_error().to_string()),
                            None => return Err(classify(err.into_error())),
                        },
                    }
                }
                Sender::Http2(sender) => match sender.send(request).await {
                    Ok(response) => return Ok(response.map(UpstreamBody::http2)),
                    Err(http2::SendError::Unsent(unsent, err)) => (*unsent, err.to_string()),
                    Err(http2::SendError::Broken(err)) => {
                        return Err(AttemptError::Broken(err.into()));
                    }
                    Err(http2::SendError::Body(err)) => return Err(classify_body(err)),
                },
            };
            // It never went out: the body is still whole.
            let (request, why) = unsent;
            let (parts, outgoing) = request.into_parts();
            body.restore(outgoing);
            head = parts;
            head.headers.remove(HOST);
            if !reused {
                // A fresh connection that cannot take a request.
                return Err(AttemptError::Connect(why));
            }
        }
    }

    /// A new connection to `endpoint`, counted.
    async fn dial(
        &self,
        upstream: &Upstream,
        endpoint: &Endpoint,
        series: &crate::upstream::AttemptMetrics,
    ) -> Result<Sender, AttemptError> {
        let sender = upstream
            .connector
            .connect(endpoint, self.settings.connect_timeout)
            .await
            .map_err(|err| AttemptError::Connect(err.to_string()))?;
        series.connections_opened.increment(1);
        Ok(sender)
    }
}

/// `exchange`'s outcome, unless the endpoint takes longer than `timeout`
/// to answer once the request body is sent (a streamed body's upload is
/// bounded by the call's deadline alone). `Err` on timeout.
async fn answer_within<F: Future>(
    exchange: F,
    body_sent: Option<Arc<tokio::sync::Notify>>,
    timeout: Duration,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    // Pinned once, here: moved into a timeout on one path and kept on the
    // other, the future would be held twice in this one.
    tokio::pin!(exchange);
    let Some(body_sent) = body_sent else {
        return tokio::time::timeout(timeout, exchange).await;
    };
    tokio::select! {
        outcome = &mut exchange => Ok(outcome),
        () = body_sent.notified() => tokio::time::timeout(timeout, exchange).await,
    }
}

/// Whose fault a failed exchange was: the request body's (the caller's),
/// or the endpoint's.
fn classify(err: hyper::Error) -> AttemptError {
    if let Some(failure) = body_limit(&err) {
        return AttemptError::Body(failure);
    }
    if err.is_user() {
        return AttemptError::Body(Failure::RequestBody(err.to_string()));
    }
    AttemptError::Broken(err.into())
}

/// The request body's own failure, as the caller's.
fn classify_body(err: BoxError) -> AttemptError {
    AttemptError::Body(body_limit(&*err).unwrap_or_else(|| Failure::RequestBody(err.to_string())))
}

/// [`Failure::RequestBodyTooLarge`] when `err` is, or is caused by, a body
/// past its limit.
fn body_limit(err: &(dyn std::error::Error + 'static)) -> Option<Failure> {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err.is::<http_body_util::LengthLimitError>() {
            return Some(Failure::RequestBodyTooLarge);
        }
        cause = err.source();
    }
    None
}
