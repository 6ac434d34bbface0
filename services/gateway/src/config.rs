//! Configuration of the gateway (env prefix `PORTICO_GATEWAY_`). The
//! defaults are `config/defaults.toml`, the one source of default values.
//!
//! Upstreams are named groups of replicas; routes map path prefixes to
//! upstreams with a timeout and whether a bearer token is required.

use std::collections::BTreeMap;

use portico_common::{
    config::{ConfigError, ListenConfig, ServiceConfig, ShutdownConfig},
    http::client::HttpClientConfig,
    jwt::TokenConfig,
    redis::RedisConfig,
    telemetry::TelemetryConfig,
};
use serde::Deserialize;

use crate::{balance::Policy, health::outlier::OutlierPolicy};

pub const ENV_PREFIX: &str = "PORTICO_GATEWAY_";

/// Paths the gateway never forwards, whatever the routes say.
pub const DENIED_PREFIX: &str = "/internal";

/// Paths the gateway answers itself; routes may not shadow them.
pub const RESERVED_PATHS: [&str; 2] = ["/docs", "/openapi.json"];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URLs of the replicas (`http://host:port`): the `static`
    /// discovery. Leave it out (or empty) when `dns` finds them.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Path of the upstream's OpenAPI document, merged into the gateway's
    /// public one; absent, the upstream's operations are not documented.
    pub openapi_path: Option<String>,
    /// How attempts are spread over the endpoints; absent, `least_request`.
    pub balance: Option<Policy>,
    /// The `weighted` policy's share per endpoint URL (as listed in
    /// `endpoints`); unlisted endpoints weigh 1.
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// DNS discovery instead of a fixed list.
    pub dns: Option<DnsConfig>,
    /// Active health checks; absent, none (passive detection only).
    pub health: Option<HealthConfig>,
    /// Passive outlier detection; absent, its defaults.
    pub outlier: Option<OutlierConfig>,
    /// Below this share of available endpoints (percent), traffic goes to
    /// all of them, fit or not (Envoy's panic threshold); absent, 50.
    pub panic_threshold_percent: Option<u32>,
    /// What `consistent_hash` keys on: `header:<name>`, `cookie:<name>`,
    /// `subject` or `client_ip` (absent: `client_ip`).
    pub hash_on: Option<String>,
    /// A traffic split instead of endpoints: other upstreams by name with
    /// their weights (`{ user-stable = 95, user-canary = 5 }`).
    #[serde(default)]
    pub split: BTreeMap<String, u32>,
    /// The header that pins a request to a split's group by name (absent:
    /// `x-portico-group`).
    pub split_pin_header: Option<String>,
    /// How many retries the upstream takes on top of its requests.
    pub retry_budget: Option<RetryBudgetConfig>,
    /// Requests in flight and queued for the upstream as a whole.
    pub limits: Option<LimitsConfig>,
    /// The circuit breaker of each endpoint.
    pub breaker: Option<BreakerConfig>,
    /// Slow start: an endpoint that joins (discovery) or comes back from
    /// an ejection ramps its share up from 10% over this long (absent: 0,
    /// off). Not with `consistent_hash`.
    pub slow_start_ms: Option<u64>,
}

/// `upstreams.<name>.retry_budget`: retries may add at most
/// `ratio_percent` (20) of the requests plus `min_per_second` (10) per
/// second, over 10 s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetConfig {
    pub ratio_percent: Option<u32>,
    pub min_per_second: Option<u32>,
}

impl RetryBudgetConfig {
    pub fn policy(&self) -> crate::resilience::retry::BudgetPolicy {
        crate::resilience::retry::BudgetPolicy {
            ratio_percent: self.ratio_percent.unwrap_or(20),
            min_per_second: self.min_per_second.unwrap_or(10),
        }
    }
}

/// `upstreams.<name>.limits`: at most `max_in_flight` (1024) requests at
/// once, `max_queued` (1024) more waiting up to `queue_timeout_ms` (1000);
/// beyond, 503 with `Retry-After` at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_in_flight: Option<usize>,
    pub max_queued: Option<usize>,
    pub queue_timeout_ms: Option<u64>,
}

impl LimitsConfig {
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.unwrap_or(1024)
    }
    pub fn max_queued(&self) -> usize {
        self.max_queued.unwrap_or(1024)
    }
    pub fn queue_timeout_ms(&self) -> u64 {
        self.queue_timeout_ms.unwrap_or(1000)
    }
}

/// `upstreams.<name>.breaker`: an endpoint whose last `window_ms` (10000)
/// saw at least `min_requests` (20) with `error_percent` (50) or more
/// failing opens for `open_ms` (5000), then lets `half_open_requests` (1)
/// probes through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    pub error_percent: Option<u32>,
    pub min_requests: Option<u32>,
    pub window_ms: Option<u64>,
    pub open_ms: Option<u64>,
    pub half_open_requests: Option<u32>,
}

impl BreakerConfig {
    pub fn policy(&self) -> crate::resilience::breaker::BreakerPolicy {
        use std::time::Duration;
        crate::resilience::breaker::BreakerPolicy {
            error_percent: self.error_percent.unwrap_or(50),
            min_requests: self.min_requests.unwrap_or(20),
            window: Duration::from_millis(self.window_ms.unwrap_or(10_000)),
            open_for: Duration::from_millis(self.open_ms.unwrap_or(5_000)),
            half_open_requests: self.half_open_requests.unwrap_or(1),
        }
    }
}

/// `upstreams.<name>.health`: `GET path` on each endpoint every
/// `interval_ms`; `fall` failures in a row take it out, `rise` passes in a
/// row bring it back.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Absent, `/readyz`.
    pub path: Option<String>,
    /// The port to ask (a replica's admin listener); absent, the endpoint's
    /// port plus `port_offset`, or its own port.
    pub port: Option<u16>,
    pub port_offset: Option<u16>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

impl HealthConfig {
    pub fn interval_ms(&self) -> u64 {
        self.interval_ms.unwrap_or(2000)
    }
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(1000)
    }
    pub fn rise(&self) -> u32 {
        self.rise.unwrap_or(2)
    }
    pub fn fall(&self) -> u32 {
        self.fall.unwrap_or(2)
    }
}

/// `upstreams.<name>.outlier` (every key optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Connection failures, resets and attempt timeouts in a row that eject
    /// (absent: 1).
    pub consecutive_gateway_failures: Option<u32>,
    /// 5xx answers in a row that eject (absent: 5).
    pub consecutive_5xx: Option<u32>,
    /// The first ejection's length; each further one is longer by as much
    /// (absent: `proxy.eject_secs`).
    pub base_ejection_ms: Option<u64>,
    /// The longest ejection (absent: 300000).
    pub max_ejection_ms: Option<u64>,
    /// The most of an upstream's endpoints ejected at once (absent: 50).
    pub max_ejection_percent: Option<u32>,
}

impl OutlierConfig {
    pub fn policy(&self, default_ejection: std::time::Duration) -> OutlierPolicy {
        use std::time::Duration;
        let base = self
            .base_ejection_ms
            .map_or(default_ejection, Duration::from_millis);
        OutlierPolicy {
            consecutive_gateway_failures: self.consecutive_gateway_failures.unwrap_or(1),
            consecutive_5xx: self.consecutive_5xx.unwrap_or(5),
            base_ejection: base,
            max_ejection: self
                .max_ejection_ms
                .map_or(Duration::from_secs(300), Duration::from_millis)
                .max(base),
            max_ejection_percent: self.max_ejection_percent.unwrap_or(50),
        }
    }
}

/// `upstreams.<name>.dns`: the endpoints are what a DNS name resolves to,
/// looked up again every `interval_ms` (sooner, backing off, after a
/// failure, which keeps the last good set).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The name: every A/AAAA record is an endpoint on `port` (a Kubernetes
    /// headless Service, a compose service with replicas); with `srv`, an
    /// SRV name whose records give target and port.
    pub name: String,
    /// Port of every address; required unless `srv`.
    pub port: Option<u16>,
    #[serde(default)]
    pub srv: bool,
    /// How often the name is resolved again.
    pub interval_ms: Option<u64>,
    /// `ip:port` of the DNS servers to ask; empty: the system's
    /// (`/etc/resolv.conf`).
    #[serde(default)]
    pub nameservers: Vec<String>,
}

/// One route. Only `path_prefix`, `upstream`, `timeout_ms` and the auth
/// policy are required; the conditions narrow what it matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Matches this path and everything below it (`/v1/users` matches
    /// `/v1/users` and `/v1/users/me`, not `/v1/usersx`); the longest
    /// matching prefix wins.
    pub path_prefix: String,
    /// Name of the upstream that serves it.
    pub upstream: String,
    /// Time allowed for the client to send the request body, and then,
    /// separately, for the upstream's response headers across all attempts.
    pub timeout_ms: u64,
    /// `public`, `bearer` (a valid token) or `role:<name>` (a valid token
    /// with that role; 403 otherwise). Stated on every route, here or as
    /// the older `require_auth`: an auth policy is never left to a default.
    pub auth: Option<String>,
    /// The older form of `auth`: true is `bearer`, false is `public`.
    pub require_auth: Option<bool>,
    /// Time one attempt may wait for a replica's response headers; absent,
    /// `proxy.attempt_timeout_ms`.
    pub attempt_timeout_ms: Option<u64>,
    /// Only requests for this host (`api.example.com`, or `*.example.com`
    /// for any subdomain).
    pub host: Option<String>,
    /// Only these methods.
    pub methods: Option<Vec<String>>,
    /// Only requests with these headers: a value, or `*` for any value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Replaces the matched prefix upstream (`""` strips it).
    pub rewrite_prefix: Option<String>,
    /// Largest request body on this route; absent, `proxy.max_body_bytes`.
    pub max_body_bytes: Option<usize>,
    /// Attempts per request in all; absent, `proxy.max_attempts`.
    pub max_attempts: Option<u32>,
    /// A rate limit (GCRA, shared through Redis).
    pub rate_limit: Option<crate::ratelimit::RateLimitConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Largest request body forwarded; larger ones get 413.
    pub max_body_bytes: usize,
    /// TCP connect timeout to an upstream replica.
    pub connect_timeout_ms: u64,
    /// Idle pooled connections are closed after this long.
    pub pool_idle_timeout_secs: u64,
    /// Maximum idle pooled connections per replica.
    pub pool_max_idle_per_host: usize,
    /// A replica that refused a connection, failed mid-request or let an
    /// attempt time out is tried last (after every healthy one) for this long.
    pub eject_secs: u64,
    /// Time one attempt may wait for a replica's response headers, within
    /// the route's `timeout_ms`: a hung replica costs one short attempt,
    /// is ejected, and (idempotent requests) the next replica is tried.
    pub attempt_timeout_ms: u64,
    /// Attempts per request in all (first one included).
    pub max_attempts: u32,
    /// Retry backoff: a random wait up to base × 2^retry, capped.
    pub retry_backoff_base_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// Peers whose `x-forwarded-for` is believed.
    pub trusted_proxies: Vec<portico_common::net::Cidr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: ListenConfig,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub proxy: ProxyConfig,
    /// How bearer tokens are verified at the edge.
    pub tokens: TokenConfig,
    pub redis: RedisConfig,
    /// Client used for the JWKS and upstream OpenAPI documents.
    pub http_client: HttpClientConfig,
    pub telemetry: TelemetryConfig,
    pub shutdown: ShutdownConfig,
}

/// The built-in defaults, also the reference for every key.
pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

impl Config {
    /// A split upstream: groups that exist and are not splits themselves,
    /// some weight, nothing of a plain upstream.
    fn check_split(&self, name: &str, upstream: &UpstreamConfig) -> Result<(), ConfigError> {
        let key = |k: &str, msg: String| {
            ConfigError::key(ENV_PREFIX, &format!("upstreams.{name}.{k}"), msg)
        };
        if !upstream.endpoints.is_empty() || upstream.dns.is_some() {
            return Err(key(
                "split",
                "a split has groups, not endpoints or dns".into(),
            ));
        }
        for group in upstream.split.keys() {
            match self.upstreams.get(group) {
                None => return Err(key("split", format!("no upstream named `{group}`"))),
                Some(target) if !target.split.is_empty() => {
                    return Err(key("split", format!("`{group}` is itself a split")));
                }
                Some(_) => {}
            }
        }
        if upstream.split.values().all(|weight| *weight == 0) {
            return Err(key(
                "split",
                "at least one group needs a weight above 0".into(),
            ));
        }
        if let Some(header) = &upstream.split_pin_header {
            http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                key(
                    "split_pin_header",
                    format!("`{header}` is not a header name"),
                )
            })?;
        }
        Ok(())
    }
}

impl ServiceConfig for Config {
    const ENV_PREFIX: &'static str = ENV_PREFIX;
    const DEFAULTS: &'static str = DEFAULTS;

    portico_common::standard_sections!();

    /// Cross-field rules: routes name existing upstreams, prefixes are
    /// absolute and never expose `/internal`, endpoints are http URLs.
    fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: String, msg: String| ConfigError::key(ENV_PREFIX, &k, msg);
        for (name, upstream) in &self.upstreams {
            if !upstream.split.is_empty() {
                self.check_split(name, upstream)?;
                continue;
            }
            if let Some(hash_on) = &upstream.hash_on {
                crate::balance::HashOn::parse(hash_on)
                    .map_err(|err| key(format!("upstreams.{name}.hash_on"), err))?;
            }
            match (&upstream.dns, upstream.endpoints.is_empty()) {
                (None, true) => {
                    return Err(key(
                        format!("upstreams.{name}.endpoints"),
                        "must list at least one endpoint (or configure `dns`)".into(),
                    ));
                }
                (Some(_), false) => {
                    return Err(key(
                        format!("upstreams.{name}.dns"),
                        "give `endpoints` or `dns`, not both".into(),
                    ));
                }
                (Some(dns), true) => crate::discovery::dns::check(dns)
                    .map_err(|(field, err)| key(format!("upstreams.{name}.dns.{field}"), err))?,
                (None, false) => {}
            }
            if let Some(health) = &upstream.health {
                let field = |f: &str| format!("upstreams.{name}.health.{f}");
                if health.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                    return Err(key(field("path"), "must start with `/`".into()));
                }
                if health.port.is_some() && health.port_offset.is_some() {
                    return Err(key(
                        field("port"),
                        "give `port` or `port_offset`, not both".into(),
                    ));
                }
                for (f, value) in [
                    ("interval_ms", health.interval_ms()),
                    ("timeout_ms", health.timeout_ms()),
                    ("rise", u64::from(health.rise())),
                    ("fall", u64::from(health.fall())),
                ] {
                    if value == 0 {
                        return Err(key(field(f), "must be positive".into()));
                    }
                }
            }
            if let Some(outlier) = &upstream.outlier {
                let field = |f: &str| format!("upstreams.{name}.outlier.{f}");
                for (f, value) in [
                    (
                        "consecutive_gateway_failures",
                        outlier.consecutive_gateway_failures.map(u64::from),
                    ),
                    ("consecutive_5xx", outlier.consecutive_5xx.map(u64::from)),
                    ("base_ejection_ms", outlier.base_ejection_ms),
                    ("max_ejection_ms", outlier.max_ejection_ms),
                ] {
                    if value == Some(0) {
                        return Err(key(field(f), "must be positive".into()));
                    }
                }
                if outlier.max_ejection_percent.is_some_and(|p| p > 100) {
                    return Err(key(field("max_ejection_percent"), "at most 100".into()));
                }
            }
            let positive = |field: String, value: Option<u64>| match value {
                Some(0) => Err(key(field, "must be positive".into())),
                _ => Ok(()),
            };
            if let Some(limits) = &upstream.limits {
                let field = |f: &str| format!("upstreams.{name}.limits.{f}");
                positive(
                    field("max_in_flight"),
                    limits.max_in_flight.map(|v| v as u64),
                )?;
                positive(field("queue_timeout_ms"), limits.queue_timeout_ms)?;
            }
            if let Some(breaker) = &upstream.breaker {
                let field = |f: &str| format!("upstreams.{name}.breaker.{f}");
                positive(field("min_requests"), breaker.min_requests.map(u64::from))?;
                positive(field("window_ms"), breaker.window_ms)?;
                positive(field("open_ms"), breaker.open_ms)?;
                positive(
                    field("half_open_requests"),
                    breaker.half_open_requests.map(u64::from),
                )?;
                if breaker.error_percent.is_some_and(|p| p == 0 || p > 100) {
                    return Err(key(field("error_percent"), "between 1 and 100".into()));
                }
            }
            if let Some(budget) = &upstream.retry_budget
                && budget.ratio_percent.is_some_and(|p| p > 1000)
            {
                return Err(key(
                    format!("upstreams.{name}.retry_budget.ratio_percent"),
                    "at most 1000".into(),
                ));
            }
            if upstream.panic_threshold_percent.is_some_and(|p| p > 100) {
                return Err(key(
                    format!("upstreams.{name}.panic_threshold_percent"),
                    "at most 100".into(),
                ));
            }
            for (url, weight) in &upstream.weights {
                if !upstream.endpoints.contains(url) {
                    return Err(key(
                        format!("upstreams.{name}.weights"),
                        format!("`{url}` is not one of the upstream's endpoints"),
                    ));
                }
                if *weight == 0 {
                    return Err(key(
                        format!("upstreams.{name}.weights"),
                        format!("`{url}`: a weight must be at least 1"),
                    ));
                }
            }
            for endpoint in &upstream.endpoints {
                let uri: http::Uri = endpoint.parse().map_err(|err| {
                    key(
                        format!("upstreams.{name}.endpoints"),
                        format!("`{endpoint}`: {err}"),
                    )
                })?;
                if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                    return Err(key(
                        format!("upstreams.{name}.endpoints"),
                        format!("`{endpoint}` must be an http://host:port URL"),
                    ));
                }
            }
        }
        if self.proxy.max_attempts == 0 {
            return Err(key(
                "proxy.max_attempts".into(),
                "must be at least 1".into(),
            ));
        }
        if self.proxy.attempt_timeout_ms == 0 {
            return Err(key(
                "proxy.attempt_timeout_ms".into(),
                "must be positive".into(),
            ));
        }
        if self.proxy.max_body_bytes == 0 {
            return Err(key(
                "proxy.max_body_bytes".into(),
                "must be positive".into(),
            ));
        }
        // Routes: resolved exactly as the running gateway resolves them.
        crate::running::Snapshot::build(self, 0, None).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::built_in().validate().unwrap();
    }

    #[test]
    fn route_to_an_unknown_upstream_is_refused() {
        let mut config = Config::built_in();
        config.routes[0].upstream = "nope".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("routes.0.upstream"), "{err}");
    }

    #[test]
    fn routing_internal_paths_is_refused() {
        for prefix in ["/internal", "/internal/", "/internal/users"] {
            let mut config = Config::built_in();
            config.routes[0].path_prefix = prefix.into();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("routes.0.path_prefix"), "{prefix}: {err}");
            assert!(err.contains("never routed"), "{prefix}: {err}");
        }
    }

    #[test]
    fn routes_shadowing_the_gateways_own_paths_are_refused() {
        for prefix in ["/docs", "/openapi.json", "/docs/x"] {
            let mut config = Config::built_in();
            config.routes[0].path_prefix = prefix.into();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("routes.0.path_prefix"), "{prefix}: {err}");
        }
    }

    #[test]
    fn non_http_endpoint_is_refused() {
        let mut config = Config::built_in();
        config.upstreams.get_mut("user").unwrap().endpoints = vec!["ftp://x".into()];
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("upstreams.user.endpoints"), "{err}");
    }

    #[test]
    fn a_weight_for_an_unlisted_endpoint_or_of_zero_is_refused() {
        for (url, weight) in [("http://elsewhere:1", 1), ("http://127.0.0.1:8081", 0)] {
            let mut config = Config::built_in();
            config
                .upstreams
                .get_mut("user")
                .unwrap()
                .weights
                .insert(url.to_owned(), weight);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("upstreams.user.weights"), "{err}");
        }
    }

    #[test]
    fn an_unknown_balancing_policy_names_the_key() {
        let err = portico_common::config::load_from::<Config>(
            ENV_PREFIX,
            DEFAULTS,
            [(
                "PORTICO_GATEWAY_UPSTREAMS__USER__BALANCE".to_owned(),
                "fastest".to_owned(),
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("upstreams.user.balance"), "{err}");
    }

    #[test]
    fn endpoints_can_be_set_as_a_list_in_one_variable() {
        let config: Config = portico_common::config::load_from(
            ENV_PREFIX,
            DEFAULTS,
            [(
                "PORTICO_GATEWAY_UPSTREAMS__USER__ENDPOINTS".to_owned(),
                r#"["http://127.0.0.1:1", "http://127.0.0.1:2"]"#.to_owned(),
            )],
        )
        .unwrap();
        assert_eq!(config.upstreams["user"].endpoints.len(), 2);
        assert_eq!(
            config.upstreams["auth"].endpoints,
            ["http://127.0.0.1:8082"]
        );
    }
}
