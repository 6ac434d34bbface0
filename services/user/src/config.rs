//! Configuration of the user service (env prefix `PORTICO_USER_`).

use portico_common::{
    auth::TokenConfig,
    config::{ListenConfig, ServiceConfig, ShutdownConfig},
    db::DatabaseConfig,
    http::client::HttpClientConfig,
    redis::RedisConfig,
    telemetry::TelemetryConfig,
};
use serde::Deserialize;

pub const ENV_PREFIX: &str = "PORTICO_USER_";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: ListenConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    /// How user access tokens and service tokens are verified.
    pub tokens: TokenConfig,
    pub http_client: HttpClientConfig,
    pub telemetry: TelemetryConfig,
    pub shutdown: ShutdownConfig,
}

/// The built-in defaults, also the reference for every key.
pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

impl Default for Config {
    /// The built-in defaults (no file, no environment).
    fn default() -> Self {
        Self::built_in()
    }
}

impl ServiceConfig for Config {
    const ENV_PREFIX: &'static str = ENV_PREFIX;
    const DEFAULTS: &'static str = DEFAULTS;
}
