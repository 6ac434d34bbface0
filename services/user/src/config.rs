//! Configuration of the user service (env prefix `PORTICO_USER_`). The
//! defaults are `config/defaults.toml`, the one source of default values.

use portico_common::{
    config::{ConnectionsConfig, ListenConfig, ServiceConfig, ShutdownConfig},
    db::DatabaseConfig,
    http::client::HttpClientConfig,
    jwt::{ServiceIdentity, TokenConfig},
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
    /// Who may call `/internal/*`.
    pub internal_api: InternalApiConfig,
    pub http_client: HttpClientConfig,
    pub telemetry: TelemetryConfig,
    pub shutdown: ShutdownConfig,
    pub connections: ConnectionsConfig,
}

/// The internal API (`/internal/*`, never routed by the gateway).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalApiConfig {
    /// The `aud` a service token must carry here: this service's name as
    /// an OAuth 2.0 resource (client credentials `audience`). A token for
    /// any other audience — a user's, or one meant for another service —
    /// is refused (401).
    pub audience: String,
    /// The scope a service token needs to create profiles (else 403).
    pub create_scope: String,
    /// Services whose tokens may create profiles (by `tokens.service_name`
    /// of the caller); any other service token gets 403.
    pub allowed_callers: Vec<ServiceIdentity>,
}

/// The built-in defaults, also the reference for every key.
pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

impl ServiceConfig for Config {
    const ENV_PREFIX: &'static str = ENV_PREFIX;
    const DEFAULTS: &'static str = DEFAULTS;

    portico_common::standard_sections!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_defaults_parse() {
        let config = Config::built_in();
        assert_eq!(config.internal_api.allowed_callers[0].name(), "auth");
        assert!(!config.database.create_if_missing);
    }
}
