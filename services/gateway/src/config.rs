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

use crate::balance::Policy;

pub const ENV_PREFIX: &str = "PORTICO_GATEWAY_";

/// Paths the gateway never forwards, whatever the routes say.
pub const DENIED_PREFIX: &str = "/internal";

/// Paths the gateway answers itself; routes may not shadow them.
pub const RESERVED_PATHS: [&str; 2] = ["/docs", "/openapi.json"];

#[derive(Debug, Clone, Deserialize)]
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

impl ServiceConfig for Config {
    const ENV_PREFIX: &'static str = ENV_PREFIX;
    const DEFAULTS: &'static str = DEFAULTS;

    portico_common::standard_sections!();

    /// Cross-field rules: routes name existing upstreams, prefixes are
    /// absolute and never expose `/internal`, endpoints are http URLs.
    fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: String, msg: String| ConfigError::key(ENV_PREFIX, &k, msg);
        for (name, upstream) in &self.upstreams {
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
