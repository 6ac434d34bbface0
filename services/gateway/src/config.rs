//! Configuration of the gateway (env prefix `PORTICO_GATEWAY_`). The
//! defaults are `config/defaults.toml`, the one source of default values.
//!
//! Upstreams are named groups of replicas; routes map path prefixes to
//! upstreams with a timeout and whether a bearer token is required.

use std::collections::BTreeMap;

use portico_common::{
    config::{ConfigError, ConnectionsConfig, ListenConfig, ServiceConfig, ShutdownConfig},
    http::client::HttpClientConfig,
    jwt::TokenConfig,
    redis::RedisConfig,
    telemetry::TelemetryConfig,
};
use serde::Deserialize;

pub use portico_upstream::config::{
    BreakerConfig, DnsConfig, HealthConfig, LimitsConfig, OutlierConfig, RetryBudgetConfig,
    UpstreamConfig,
};

pub const ENV_PREFIX: &str = "PORTICO_GATEWAY_";

/// Paths the gateway never forwards, whatever the routes say.
pub const DENIED_PREFIX: &str = "/internal";

/// Paths the gateway answers itself; routes may not shadow them.
pub const RESERVED_PATHS: [&str; 2] = ["/docs", "/openapi.json"];

/// Whether `path` is one of [`RESERVED_PATHS`] or below one (checked per
/// request: no allocation).
pub fn is_reserved(path: &str) -> bool {
    RESERVED_PATHS.iter().any(|reserved| {
        path.strip_prefix(reserved)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
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
    /// Cross-origin requests from browsers: which origins, answered at the
    /// edge.
    pub cors: Option<crate::cors::CorsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Largest request body forwarded; larger ones get 413.
    pub max_body_bytes: usize,
    /// Request bodies up to this size are read whole before they are sent,
    /// so that a retry can send them again; larger (or unsized) ones stream
    /// through, and are retried only when no endpoint could be reached.
    pub retry_buffer_bytes: usize,
    /// An upgraded connection (WebSocket) with no traffic either way for
    /// this long is closed.
    pub websocket_idle_timeout_secs: u64,
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
    /// Headers every answer carries, and upstream ones removed.
    pub security_headers: crate::edge_headers::SecurityHeadersConfig,
    /// How bearer tokens are verified at the edge.
    pub tokens: TokenConfig,
    pub redis: RedisConfig,
    /// Client used for the JWKS and upstream OpenAPI documents.
    pub http_client: HttpClientConfig,
    pub telemetry: TelemetryConfig,
    pub shutdown: ShutdownConfig,
    pub connections: ConnectionsConfig,
    pub access_log: AccessLogConfig,
    pub compression: crate::compression::CompressionConfig,
    /// TLS on the API listener.
    pub tls: portico_common::http::tls::TlsConfig,
}

/// `[access_log]`: one JSON line per request, target `access`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    pub enabled: bool,
    /// Share of successful answers (below 400) logged, 0 to 1; every
    /// error is.
    pub success_sample_rate: f64,
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
            upstream
                .check()
                .map_err(|(field, err)| key(format!("upstreams.{name}.{field}"), err))?;
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
        if self.tls.enabled {
            portico_common::http::tls::ServerTls::load(&self.tls)
                .map_err(|(field, err)| key(format!("tls.{field}"), err))?;
        }
        if !(0.0..=1.0).contains(&self.access_log.success_sample_rate) {
            return Err(key(
                "access_log.success_sample_rate".to_owned(),
                "must be between 0 and 1".into(),
            ));
        }
        crate::edge_headers::SecurityHeaders::new(&self.security_headers)
            .map_err(|(field, err)| key(format!("security_headers.{field}"), err))?;
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
    fn a_security_header_that_is_not_a_header_value_is_refused() {
        let mut config = Config::built_in();
        config.security_headers.frame_options = "DENY\r\nx-injected: 1".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("security_headers.frame_options"), "{err}");
    }

    #[test]
    fn a_cors_origin_that_is_not_an_origin_is_refused_with_its_key() {
        let mut config = Config::built_in();
        config.routes[0].cors = Some(crate::cors::CorsConfig {
            origins: vec!["*".into()],
            methods: None,
            headers: None,
            expose_headers: vec![],
            credentials: true,
            max_age_secs: None,
        });
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("routes.0.cors.origins"), "{err}");
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
    fn an_access_log_sample_rate_outside_zero_to_one_is_refused() {
        let mut config = Config::built_in();
        config.access_log.success_sample_rate = 1.5;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("access_log.success_sample_rate"), "{err}");
    }

    #[test]
    fn https_endpoints_are_accepted() {
        let mut config = Config::built_in();
        config.upstreams.get_mut("user").unwrap().endpoints = vec!["https://user:8443".into()];
        config.validate().unwrap();
    }

    #[test]
    fn upstream_tls_with_half_a_client_identity_or_an_unreadable_ca_is_refused_with_its_key() {
        use portico_upstream::config::UpstreamTlsConfig;
        for (tls, field) in [
            (
                UpstreamTlsConfig {
                    cert_file: Some("/etc/portico/client.pem".into()),
                    ..UpstreamTlsConfig::default()
                },
                "upstreams.user.tls.cert_file",
            ),
            (
                UpstreamTlsConfig {
                    ca_file: Some("/nonexistent/ca.pem".into()),
                    ..UpstreamTlsConfig::default()
                },
                "upstreams.user.tls.ca_file",
            ),
        ] {
            let mut config = Config::built_in();
            config.upstreams.get_mut("user").unwrap().tls = Some(tls);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
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
