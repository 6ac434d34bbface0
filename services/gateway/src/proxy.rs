//! Forwarding a request to an upstream replica: the edge stages (path
//! check, authentication, rate limit, body) here, then the attempts through
//! the shared upstream machinery ([`portico_upstream::forward`]).
//!
//! The body is buffered (bounded by `proxy.max_body_bytes`) so that a
//! request can be replayed on another replica: always when the connection
//! was refused (nothing reached the upstream), and for idempotent methods
//! when the connection failed mid-request.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request},
    response::Response,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::upgrade::OnUpgrade;
use portico_common::{
    http::{access_log::ProxiedFacts, pipeline, server::OverTls},
    jwt::TokenVerifier,
    net::{IpText, client_address},
    telemetry,
};
use portico_upstream::{
    AttemptPolicy, Call, Failure, RequestBody, Transport, TransportSettings, UpstreamBody,
    config::Protocol,
    forward::{self, Served},
};

use crate::{
    config::ProxyConfig,
    error::GatewayError,
    ratelimit::Limiter,
    request_facts::RequestFacts,
    routing::{AuthPolicy, Route},
    upgrade,
};

/// Shared by every proxied request.
pub struct Proxy {
    transport: Transport,
    verifier: Arc<TokenVerifier>,
    limiter: Limiter,
    trusted_proxies: Vec<portico_common::net::Cidr>,
    backoff_base: Duration,
    backoff_max: Duration,
    /// Bodies up to this size are held whole, so a retry can send them.
    retry_buffer_bytes: usize,
    /// An upgraded (WebSocket) connection where nothing moves is closed
    /// after this long.
    upgraded_idle_timeout: Duration,
    /// Whether answers carry what the access log says of the upstream.
    access_log: bool,
}

/// How long the upstream has for a request, in milliseconds: set on every
/// attempt, honoured by the services (an internal header: one a client
/// sends is dropped like every `x-portico-*`).
pub const DEADLINE_HEADER: &str = forward::DEADLINE_HEADER;

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Header prefixes only Portico itself may set; never accepted from clients.
const INTERNAL_PREFIXES: [&str; 3] = ["x-portico-", "x-internal-", "x-forwarded-"];

/// Headers a client could use to spoof its address; replaced by ours.
const SPOOFABLE: [&str; 2] = ["forwarded", "x-real-ip"];

impl Proxy {
    pub fn new(
        config: &ProxyConfig,
        access_log: bool,
        verifier: Arc<TokenVerifier>,
        limiter: Limiter,
    ) -> Self {
        let transport = Transport::new(TransportSettings {
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            pool_idle_timeout: Duration::from_secs(config.pool_idle_timeout_secs),
            pool_max_idle_per_host: config.pool_max_idle_per_host,
        });
        Self {
            transport,
            verifier,
            limiter,
            trusted_proxies: config.trusted_proxies.clone(),
            backoff_base: Duration::from_millis(config.retry_backoff_base_ms),
            backoff_max: Duration::from_millis(config.retry_backoff_max_ms),
            retry_buffer_bytes: config.retry_buffer_bytes,
            upgraded_idle_timeout: Duration::from_secs(config.websocket_idle_timeout_secs),
            access_log,
        }
    }

    /// Forwards `request` along `route` (already matched): edge policies,
    /// then the attempts.
    pub async fn forward(&self, route: &Route, request: Request) -> Result<Response, GatewayError> {
        let (mut parts, body) = request.into_parts();
        if is_ambiguous(parts.uri.path()) {
            return Err(GatewayError::AmbiguousPath);
        }
        let claims = match &route.auth {
            AuthPolicy::Public => None,
            AuthPolicy::Bearer => Some(self.verifier.verify_headers(&parts.headers).await?),
            AuthPolicy::Role(role) => {
                let claims = self.verifier.verify_headers(&parts.headers).await?;
                if !claims.roles.contains(role) {
                    return Err(GatewayError::Forbidden(role.clone()));
                }
                Some(claims)
            }
        };
        let subject = claims.as_ref().map(|claims| claims.sub.as_str());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let client_ip = client_address(&parts.headers, peer, &self.trusted_proxies);
        let facts = RequestFacts {
            subject,
            client_ip,
            headers: &parts.headers,
        };
        // The stages that may wait on something (Redis, the client's body)
        // are boxed where they run, so that routes without them do not
        // carry their futures in every request's.
        let rate_headers = match &route.rate_limit {
            Some(limit) => Box::pin(self.rate_limit(limit, &facts)).await?,
            None => None,
        };
        let body = if http_body::Body::is_end_stream(&body) {
            RequestBody::Buffered(Bytes::new())
        } else {
            Box::pin(self.request_body(&parts.headers, body, route)).await?
        };
        let over_tls = parts.extensions.get::<OverTls>().is_some();
        let mut headers = upstream_headers(&parts.headers, client_ip, over_tls);
        let path_and_query =
            route.upstream_path(parts.uri.path_and_query().map_or("/", |pq| pq.as_str()));

        // Pick the upstream (a split's group) and the policy's key.
        let (upstream, sticky_cookie) = route.upstream.resolve(&facts);
        let context = upstream.pick_context(&facts);

        // A WebSocket (or other) upgrade goes on to an HTTP/1.1 upstream;
        // the client's side of it is taken now, joined after a 101.
        let client_upgrade =
            match upgrade::requested(&parts.method, &parts.headers, &parts.extensions) {
                Some(switch) if upstream.protocol() == Protocol::Http1 => {
                    upgrade::ask_upstream(&mut headers, &switch);
                    parts
                        .extensions
                        .remove::<OnUpgrade>()
                        .map(|client| (switch, client))
                }
                Some(upgrade::Switch::ExtendedConnect) => {
                    return Err(GatewayError::WebSocketOverHttp2(upstream.name.clone()));
                }
                _ => None,
            };
        // An extended CONNECT is, to the upstream, the GET of a WebSocket
        // handshake.
        let method = match client_upgrade {
            Some((upgrade::Switch::ExtendedConnect, _)) => Method::GET,
            _ => parts.method.clone(),
        };

        let call = Call {
            method: &method,
            path_and_query: &path_and_query,
            headers: &headers,
            body,
            context,
            replayable: forward::is_idempotent(&method),
            policy: AttemptPolicy {
                max_attempts: route.max_attempts,
                attempt_timeout: route.attempt_timeout,
                backoff_base: self.backoff_base,
                backoff_max: self.backoff_max,
            },
            deadline: Instant::now() + route.timeout,
        };
        let name = || upstream.name.clone();
        let sent_at = Instant::now();
        // Boxed: see where `forward` is called.
        let result = match Box::pin(self.transport.send(upstream, call)).await {
            Ok(response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => self
                .switch(response, client_upgrade)
                .ok_or_else(|| GatewayError::BadGateway {
                    upstream: name(),
                    cause: "switched protocols unasked".into(),
                }),
            Ok(mut response) => {
                if self.access_log
                    && let Some(served) = response.extensions_mut().remove::<Served>()
                {
                    response.extensions_mut().insert(ProxiedFacts {
                        upstream: upstream.name.clone(),
                        endpoint: served.endpoint.label.clone(),
                        attempts: served.attempts,
                        upstream_duration: sent_at.elapsed(),
                        client_ip,
                    });
                }
                downstream_response(response)
                    .await
                    .map_err(|err| GatewayError::BadGateway {
                        upstream: name(),
                        cause: format!("response body: {err}"),
                    })
            }
            Err(Failure::Overloaded) => Err(GatewayError::Overloaded(name())),
            Err(Failure::NoEndpoint) => Err(GatewayError::NoReplica(name())),
            Err(Failure::Timeout) => Err(GatewayError::Timeout(name())),
            Err(Failure::Broken(cause)) => Err(GatewayError::BadGateway {
                upstream: name(),
                cause,
            }),
            Err(Failure::InvalidPath) => Err(GatewayError::AmbiguousPath),
            Err(Failure::RequestBodyTooLarge) => Err(GatewayError::BodyTooLarge),
            Err(Failure::RequestBody(cause)) => Err(GatewayError::BodyUnreadable(cause)),
        };
        let mut response = result?;
        if let Some(rate_headers) = rate_headers {
            response.headers_mut().extend(rate_headers);
        }
        if let Some(cookie) = sticky_cookie
            && let Ok(value) = HeaderValue::from_str(&cookie)
        {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        Ok(response)
    }

    /// The switch for the client (101, or 200 over HTTP/2), its
    /// connection joined to the upstream's once both have switched; `None`
    /// when the client never asked.
    fn switch(
        &self,
        mut response: http::Response<UpstreamBody>,
        client: Option<(upgrade::Switch, OnUpgrade)>,
    ) -> Option<Response> {
        let (switch, client) = client?;
        let upstream = response.extensions_mut().remove::<OnUpgrade>()?;
        upgrade::join(client, upstream, self.upgraded_idle_timeout);
        let (mut parts, _) = response.into_parts();
        for name in HOP_BY_HOP {
            if name != "upgrade" {
                parts.headers.remove(name);
            }
        }
        parts.status = upgrade::answer(&switch, &mut parts.headers);
        Some(Response::from_parts(parts, Body::empty()))
    }

    /// The rate-limit stage: `Err` (429) over the limit, else the
    /// `RateLimit-Policy` / `RateLimit` headers for the answer. A request
    /// without the limit's key (no subject, no API key) is not limited.
    async fn rate_limit(
        &self,
        limit: &crate::ratelimit::Limit,
        facts: &RequestFacts<'_>,
    ) -> Result<Option<HeaderMap>, GatewayError> {
        let Some(key) = limit.key_of(facts) else {
            return Ok(None);
        };
        let decision = self.limiter.check(limit, &key).await;
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("ratelimit-policy"),
            limit.policy_header(),
        );
        headers.insert(HeaderName::from_static("ratelimit"), decision.header(limit));
        if decision.allowed {
            Ok(Some(headers))
        } else {
            Err(GatewayError::RateLimited {
                retry_after_secs: decision.wait.as_secs_f64().ceil().max(1.0) as u32,
                headers,
            })
        }
    }
}

impl Proxy {
    /// The body (not an empty one) as the attempts send it: held whole when it is small
    /// enough to replay (`proxy.retry_buffer_bytes`), else streamed
    /// through as it arrives. Either way bounded by the route's
    /// `max_body_bytes` (413).
    async fn request_body(
        &self,
        headers: &HeaderMap,
        body: Body,
        route: &Route,
    ) -> Result<RequestBody, GatewayError> {
        let limit = route.max_body_bytes;
        let declared = pipeline::declared_length(headers);
        if let Some(declared) = declared
            && declared > limit as u64
        {
            // Read first (when cheap), so the 413 is not lost to a reset.
            pipeline::linger(headers, declared, body).await;
            return Err(GatewayError::BodyTooLarge);
        }
        let declared = declared.and_then(|len| usize::try_from(len).ok());
        match declared {
            Some(len) if len <= self.retry_buffer_bytes => {
                // A client that sends its body slowly holds memory; it gets
                // the route's time, like the upstream does.
                let bytes = tokio::time::timeout(route.timeout, read_body(body, limit))
                    .await
                    .map_err(|_| GatewayError::BodyTimeout)??;
                Ok(RequestBody::Buffered(bytes))
            }
            _ => Ok(RequestBody::streamed(Limited::new(body, limit))),
        }
    }
}

/// The whole request body, refused past `limit` (413).
async fn read_body(body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(GatewayError::BodyTooLarge)
        }
        Err(err) => Err(GatewayError::BodyUnreadable(err.to_string())),
    }
}

/// Paths whose meaning depends on who normalises them: dot segments,
/// encoded dots, slashes or backslashes. Refusing them keeps the gateway's
/// view of a path (and of `/internal`) the same as the upstream's.
///
/// One pass over the bytes, nothing allocated: it runs on every request
/// (a lowercased copy and five searches cost ≈ 1.1 k instructions a
/// request; this ≈ 0.1 k).
pub fn is_ambiguous(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut segment_start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        match byte {
            b'\\' => return true,
            // `%2e`, `%2f`, `%5c` in either case (`| 0x20` lowers a letter).
            b'%' => {
                if let [high, low, ..] = bytes[i + 1..] {
                    let low = low | 0x20;
                    if (high == b'2' && matches!(low, b'e' | b'f')) || (high == b'5' && low == b'c')
                    {
                        return true;
                    }
                }
            }
            b'/' => {
                if is_dot_segment(&bytes[segment_start..i]) {
                    return true;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    is_dot_segment(&bytes[segment_start..])
}

fn is_dot_segment(segment: &[u8]) -> bool {
    matches!(segment, b"." | b"..")
}

/// The headers sent upstream: the client's, minus hop-by-hop and internal
/// ones, plus forwarding information and the current trace context.
fn upstream_headers(
    incoming: &HeaderMap,
    client_ip: Option<std::net::IpAddr>,
    over_tls: bool,
) -> HeaderMap {
    let connection_listed: Vec<String> = incoming
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut headers = HeaderMap::with_capacity(incoming.len() + 4);
    for (name, value) in incoming {
        let lower = name.as_str();
        // `TE: trailers` is end to end in effect: a gRPC server wants to
        // know that trailers reach the client (and the gateway passes them).
        let trailers_accepted = name == header::TE && value == "trailers";
        let dropped = (HOP_BY_HOP.contains(&lower) && !trailers_accepted)
            || SPOOFABLE.contains(&lower)
            || INTERNAL_PREFIXES
                .iter()
                .any(|prefix| lower.starts_with(prefix))
            || connection_listed.iter().any(|listed| listed == lower)
            || name == header::HOST
            || lower == "traceparent"
            || lower == "tracestate";
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(ip) = client_ip
        && let Ok(value) = HeaderValue::from_str(&IpText::new(ip))
    {
        headers.insert(HeaderName::from_static("x-forwarded-for"), value);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if over_tls { "https" } else { "http" }),
    );
    if let Some(host) = incoming.get(header::HOST) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    // The gateway's span is the parent of the upstream's. (This value and
    // the request id are new per request, so both are made never to be
    // indexed by HPACK where they are made.)
    telemetry::inject_current_context(&mut headers);
    headers
}

/// Responses up to this size are read whole before they are passed on, so
/// the client gets headers and body in one write (as nginx's buffering
/// does); larger or unsized ones stream through.
const BUFFERED_RESPONSE_MAX: u64 = 64 * 1024;

async fn downstream_response(
    response: http::Response<UpstreamBody>,
) -> Result<Response, portico_upstream::connection::BoxError> {
    let (mut parts, body) = response.into_parts();
    // Looked for before removed: an answer rarely has any, and a removal by
    // name parses and hashes the name.
    if parts
        .headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(&name.as_str()))
    {
        for name in HOP_BY_HOP {
            parts.headers.remove(name);
        }
    }
    // An upstream's JSON error is its own answer — a problem, or another
    // standard's format (the token endpoint's RFC 6749 errors) — and
    // passes through as sent; a bare, text or HTML error page still becomes
    // a problem, so no framework's page reaches clients.
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        });
    if json {
        parts.extensions.insert(pipeline::OwnErrorFormat);
    }
    // gRPC answers end in trailers, which reading the body whole would
    // drop; they always stream.
    let small = !crate::grpc::is_grpc(&parts.headers)
        && pipeline::declared_length(&parts.headers)
            .is_some_and(|len| len <= BUFFERED_RESPONSE_MAX);
    if small {
        let bytes = body.collect().await?.to_bytes();
        return Ok(Response::from_parts(parts, Body::from(bytes)));
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_encoded_separators_are_ambiguous() {
        for path in [
            "/v1/users/../internal/users",
            "/v1/users/./me",
            "/v1/users/%2e%2e/internal",
            "/v1/users%2Fme",
            "/v1/users/..",
            "/v1\\users",
        ] {
            assert!(is_ambiguous(path), "{path}");
        }
        assert!(!is_ambiguous("/v1/users/me"));
        assert!(!is_ambiguous("/.well-known/jwks.json"));
    }

    /// The one-pass test says what the rule says — lowercased, no `%2e`,
    /// `%2f` or `%5c`, no backslash, no `.` or `..` segment — for every
    /// path of up to five characters over the characters that matter.
    #[test]
    fn the_one_pass_test_agrees_with_the_rule_everywhere() {
        fn rule(path: &str) -> bool {
            let lower = path.to_ascii_lowercase();
            lower.contains("%2e")
                || lower.contains("%2f")
                || lower.contains("%5c")
                || path.contains('\\')
                || path
                    .split('/')
                    .any(|segment| segment == "." || segment == "..")
        }
        let alphabet = [
            '/', '.', '%', '2', '5', 'e', 'E', 'f', 'F', 'c', 'C', '\\', 'a',
        ];
        let mut paths = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = paths
                .iter()
                .filter(|path| path.len() == paths.last().map_or(0, String::len))
                .flat_map(|path| alphabet.iter().map(move |c| format!("{path}{c}")))
                .collect();
            paths.extend(longer);
        }
        assert!(paths.len() > 400_000);
        for path in &paths {
            assert_eq!(is_ambiguous(path), rule(path), "{path:?}");
        }
    }

    #[test]
    fn internal_and_hop_by_hop_headers_are_stripped() {
        let mut incoming = HeaderMap::new();
        for (name, value) in [
            ("x-portico-user-id", "admin"),
            ("x-internal-role", "admin"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-port", "1"),
            ("forwarded", "for=1.2.3.4"),
            ("connection", "keep-alive, x-custom"),
            ("x-custom", "1"),
            ("keep-alive", "timeout=5"),
            ("host", "gateway.example"),
            ("authorization", "Bearer t"),
            ("x-request-id", "r1"),
            ("accept", "application/json"),
        ] {
            incoming.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let out = upstream_headers(
            &incoming,
            Some(std::net::IpAddr::from([10, 0, 0, 7])),
            false,
        );
        for gone in [
            "x-portico-user-id",
            "x-internal-role",
            "x-forwarded-port",
            "forwarded",
            "connection",
            "x-custom",
            "keep-alive",
            "host",
        ] {
            assert!(!out.contains_key(gone), "{gone} should be stripped");
        }
        assert_eq!(out["x-forwarded-for"], "10.0.0.7");
        assert_eq!(out["x-forwarded-host"], "gateway.example");
        assert_eq!(out["authorization"], "Bearer t");
        assert_eq!(out["x-request-id"], "r1");
        assert_eq!(out["accept"], "application/json");
    }
}
