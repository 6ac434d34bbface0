//! Optional Redis. This skeleton only validates the URL and checks the
//! server for readiness; the features that use Redis (rate limits,
//! revocations, caches) build on [`RedisConfig::client`].

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`; absent means no Redis (in-process fallbacks).
    pub url: Option<SecretString>,
}

impl RedisConfig {
    /// A client when a URL is configured; fails on a malformed URL.
    pub fn client(&self) -> Result<Option<redis::Client>, redis::RedisError> {
        self.url
            .as_ref()
            .map(|url| redis::Client::open(url.expose_secret()))
            .transpose()
    }
}

/// PING over a fresh connection, for readiness.
pub async fn ping(client: &redis::Client) -> Result<(), redis::RedisError> {
    let mut connection = client.get_multiplexed_async_connection().await?;
    let _: String = redis::cmd("PING").query_async(&mut connection).await?;
    Ok(())
}
