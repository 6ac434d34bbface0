//! Configuration of the user service (env prefix `PORTICO_USER_`).

use portico_common::{
    auth::TokenConfig,
    config::{self, ConfigError, ListenConfig, ShutdownConfig},
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
        #[allow(clippy::expect_used)] // the defaults are tested to parse
        config::load_from(ENV_PREFIX, DEFAULTS, std::iter::empty())
            .expect("built-in defaults parse")
    }
}

impl Config {
    pub fn load() -> Result<Self, ConfigError> {
        config::load(ENV_PREFIX, DEFAULTS)
    }

    pub fn load_or_exit() -> Self {
        config::load_or_exit(ENV_PREFIX, DEFAULTS, |_: &Self| Ok(()))
    }
}
