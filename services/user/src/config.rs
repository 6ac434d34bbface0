//! Configuration of the user service (env prefix `PORTICO_USER_`). The
//! defaults are `config/defaults.toml`, the one source of default values.

use portico_common::{
    config::{ConfigError, ConnectionsConfig, ListenConfig, ServiceConfig, ShutdownConfig},
    db::DatabaseConfig,
    http::client::HttpClientConfig,
    jwt::{ServiceIdentity, TokenConfig},
    outbox::OutboxConfig,
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
    /// The outbox relay and the webhooks it sends.
    pub events: OutboxConfig,
    /// The profile cache in Redis (used when `redis.url` is set).
    pub cache: CacheConfig,
    /// Removing deleted accounts' personal data.
    pub scrubber: ScrubberConfig,
    /// The auth service's API, for what it holds about a user (the data
    /// export).
    pub auth_api: AuthApiConfig,
}

/// Where the auth service answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthApiConfig {
    /// Its base URL (one address every auth replica answers on).
    pub url: String,
}

/// The scrubber job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubberConfig {
    /// How long a deleted account's data is kept (its email stays taken).
    pub grace_secs: u64,
    /// How often the scrubber looks for accounts past their grace.
    pub interval_ms: u64,
}

/// The profile cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How long an entry lives (writes replace it at once; this bounds
    /// what an entry costs Redis).
    pub ttl_secs: u64,
    /// One cache command's bound; past it the read goes to the database.
    pub timeout_ms: u64,
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

    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.auth_api.url.starts_with("http://") || self.auth_api.url.starts_with("https://"))
        {
            return Err(ConfigError::key(
                ENV_PREFIX,
                "auth_api.url",
                "must be an http(s) URL",
            ));
        }
        portico_common::outbox::Subscribers::from_config(
            &self.events,
            "events",
            &crate::events::EventType::names(),
        )
        .map(|_| ())
        .map_err(|(key, message)| ConfigError::key(ENV_PREFIX, &key, message))
    }
}

#[cfg(test)]
mod tests {
    use portico_common::outbox::SubscriberConfig;
    use secrecy::SecretString;

    use super::*;

    #[test]
    fn a_subscriber_with_a_bad_secret_or_url_is_a_config_error() {
        let mut config = Config::built_in();
        config.events.subscribers = vec![SubscriberConfig {
            name: "auth".to_owned(),
            url: "http://127.0.0.1:8082/internal/events".to_owned(),
            secret: SecretString::from("not-a-whsec".to_owned()),
            types: vec!["user.deleted".to_owned()],
        }];
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("events.subscribers[0].secret"), "{err}");
        config.events.subscribers[0].secret =
            SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        assert!(config.validate().is_ok());
        config.events.subscribers[0].types = vec!["user.nope".to_owned()];
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("events.subscribers[0].types"), "{err}");
        config.events.subscribers[0].types.clear();
        config.events.subscribers[0].url = "ftp://x".to_owned();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("events.subscribers[0].url"), "{err}");
        config.events.subscribers[0].url = "http://127.0.0.1:8082/internal/events".to_owned();
        // 32 deliveries, 8 at a time, 5 s each: up to 25 s per batch.
        config.events.lease_ms = 20_000;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("events.lease_ms"), "{err}");
    }

    #[test]
    fn the_built_in_defaults_parse() {
        let config = Config::built_in();
        assert_eq!(config.internal_api.allowed_callers[0].name(), "auth");
        assert!(!config.database.create_if_missing);
    }
}
