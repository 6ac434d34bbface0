//! Optional Redis. Today only the URL is validated and the server is
//! reported on `/readyz`; the features that use Redis (rate limits,
//! revocations, caches) build on [`RedisConfig::client`].

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::admin::{CheckFuture, ReadinessCheck};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`; absent means no Redis (in-process fallbacks).
    pub url: Option<SecretString>,
    /// Prefix of every key this service writes (services share a Redis).
    pub key_prefix: String,
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

/// PING over a fresh connection.
pub async fn ping(client: &redis::Client) -> Result<(), redis::RedisError> {
    let mut connection = client.get_multiplexed_async_connection().await?;
    let _: String = redis::cmd("PING").query_async(&mut connection).await?;
    Ok(())
}

/// `redis`: reported on `/readyz` but never deciding readiness — Redis
/// down degrades a service (caches fall through, in-process fallbacks), it
/// does not take it out of rotation.
#[derive(Debug, Clone)]
pub struct RedisCheck(pub redis::Client);

impl ReadinessCheck for RedisCheck {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn decides_readiness(&self) -> bool {
        false
    }

    fn check(&self) -> CheckFuture {
        let client = self.0.clone();
        Box::pin(async move { ping(&client).await.map_err(|err| err.to_string()) })
    }
}

impl crate::admin::Readiness {
    /// Adds the informational `redis` check when Redis is configured.
    #[must_use]
    pub fn with_redis(self, client: Option<redis::Client>) -> Self {
        match client {
            Some(client) => self.with(RedisCheck(client)),
            None => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::Readiness;

    #[tokio::test]
    async fn redis_down_is_reported_but_keeps_the_service_ready() {
        // Nothing listens on port 1.
        let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
        let readiness = Readiness::new()
            .with_check("database", || async { Ok(()) })
            .with(RedisCheck(client));
        let (ready, checks) = readiness.report().await;
        assert!(ready);
        assert_eq!(checks["redis"], "unavailable");
    }

    #[tokio::test]
    async fn a_reachable_redis_is_reported_ok() {
        let client = redis::Client::open(portico_testkit::redis_url()).unwrap();
        let (_, checks) = Readiness::new().with(RedisCheck(client)).report().await;
        assert_eq!(checks["redis"], "ok");
    }
}
