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
#[serde(default, deny_unknown_fields)]
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

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: ListenConfig {
                api: ([127, 0, 0, 1], 8081).into(),
                admin: ([127, 0, 0, 1], 9081).into(),
            },
            database: DatabaseConfig::with_url("sqlite://data/user.db"),
            redis: RedisConfig::default(),
            tokens: TokenConfig::default(),
            http_client: HttpClientConfig::default(),
            telemetry: TelemetryConfig::default(),
            shutdown: ShutdownConfig::default(),
        }
    }
}

impl Config {
    pub fn load() -> Result<Self, ConfigError> {
        config::load(ENV_PREFIX)
    }

    pub fn load_or_exit() -> Self {
        config::load_or_exit(ENV_PREFIX, |_: &Self| Ok(()))
    }
}
