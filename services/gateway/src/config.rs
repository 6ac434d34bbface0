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
const RESERVED_PATHS: [&str; 2] = ["/docs", "/openapi.json"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URLs of the replicas (`http://host:port`).
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Matches this path and everything below it (`/v1/users` matches
    /// `/v1/users` and `/v1/users/me`, not `/v1/usersx`).
    pub path_prefix: String,
    /// Name of the upstream that serves it.
    pub upstream: String,
    /// Time allowed for the client to send the request body, and then,
    /// separately, for the upstream's response headers across all attempts.
    pub timeout_ms: u64,
    /// Require a valid bearer token at the edge. Stated on every route: an
    /// auth policy is never left to a default.
    pub require_auth: bool,
    /// Time one attempt may wait for a replica's response headers; absent,
    /// `proxy.attempt_timeout_ms`.
    pub attempt_timeout_ms: Option<u64>,
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
            if upstream.endpoints.is_empty() {
                return Err(key(
                    format!("upstreams.{name}.endpoints"),
                    "must list at least one endpoint".into(),
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
        for (i, route) in self.routes.iter().enumerate() {
            if !self.upstreams.contains_key(&route.upstream) {
                return Err(key(
                    format!("routes.{i}.upstream"),
                    format!("no upstream named `{}`", route.upstream),
                ));
            }
            let prefix = route.path_prefix.trim_end_matches('/');
            if !route.path_prefix.starts_with('/') || prefix.is_empty() {
                return Err(key(
                    format!("routes.{i}.path_prefix"),
                    "must start with `/` and not be `/`".into(),
                ));
            }
            if prefix == DENIED_PREFIX || prefix.starts_with(&format!("{DENIED_PREFIX}/")) {
                return Err(key(
                    format!("routes.{i}.path_prefix"),
                    "internal APIs are never routed".into(),
                ));
            }
            if RESERVED_PATHS
                .iter()
                .any(|reserved| prefix == *reserved || prefix.starts_with(&format!("{reserved}/")))
            {
                return Err(key(
                    format!("routes.{i}.path_prefix"),
                    "is served by the gateway itself".into(),
                ));
            }
            if prefix.contains(['{', '}', '*']) {
                return Err(key(
                    format!("routes.{i}.path_prefix"),
                    "must be a literal path".into(),
                ));
            }
            if route.timeout_ms == 0 {
                return Err(key(
                    format!("routes.{i}.timeout_ms"),
                    "must be positive".into(),
                ));
            }
            if route.attempt_timeout_ms == Some(0) {
                return Err(key(
                    format!("routes.{i}.attempt_timeout_ms"),
                    "must be positive".into(),
                ));
            }
        }
        let mut prefixes: Vec<&str> = self
            .routes
            .iter()
            .map(|r| r.path_prefix.trim_end_matches('/'))
            .collect();
        prefixes.sort_unstable();
        if let Some(pair) = prefixes.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(key(
                "routes".into(),
                format!("two routes share the prefix `{}`", pair[0]),
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
        Ok(())
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
