//! Optional Redis: the URL validated, the server reported on `/readyz`, and
//! [`Resilient`], the connection the hot paths that use Redis (rate limits,
//! the profile cache) share.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::{
    admin::{CheckFuture, ReadinessCheck},
    http::server::PerEventLoop,
};

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

/// How long Redis is left alone after a failure: an outage costs a request
/// nothing but the fallback, not a timeout each.
const REST_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// A Redis connection for a hot path: made on first use and reconnected by
/// redis' connection manager, every command bounded by `timeout`, and after
/// a failure left alone for a second ([`REST_AFTER_FAILURE`]) — the caller
/// falls back (to the database, to an in-process limit) meanwhile. One
/// connection per API event loop, made on that loop: a multiplexed
/// connection's task runs where it was made, and a command sent to it from
/// another loop's thread would wake that thread to send it and again to
/// answer (measured: ≈ 1.2 such wakes per cached profile read).
#[derive(Debug)]
pub struct Resilient {
    client: redis::Client,
    connections: PerEventLoop<OnceCell<ConnectionManager>>,
    resting_until: std::sync::Mutex<Option<Instant>>,
    timeout: Duration,
}

impl Resilient {
    pub fn new(client: redis::Client, timeout: Duration) -> Self {
        Self {
            client,
            connections: PerEventLoop::default(),
            resting_until: std::sync::Mutex::new(None),
            timeout,
        }
    }

    /// Runs `command`; `Err` (why, for a log line) when Redis failed, did
    /// not answer in time, or failed a moment ago.
    pub async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, String> {
        let now = Instant::now();
        if let Ok(resting) = self.resting_until.lock()
            && resting.is_some_and(|until| until > now)
        {
            return Err("Redis failed a moment ago".to_owned());
        }
        let run = async {
            let connection = self
                .connections
                .own()
                .get_or_try_init(|| async {
                    // The one timer is ours, around the whole query: a
                    // second per command (redis' own response timeout)
                    // would cost a wake-up of the event loop each time it
                    // is armed as the loop's earliest.
                    let config = ConnectionManagerConfig::new().set_response_timeout(None);
                    ConnectionManager::new_with_config(self.client.clone(), config).await
                })
                .await
                .map_err(|err| err.to_string())?;
            let mut connection = connection.clone();
            command
                .query_async::<T>(&mut connection)
                .await
                .map_err(|err| err.to_string())
        };
        let outcome = crate::timer::timeout(self.timeout, run)
            .await
            .unwrap_or_else(|_| Err("Redis did not answer in time".to_owned()));
        if outcome.is_err()
            && let Ok(mut resting) = self.resting_until.lock()
        {
            *resting = Some(now + REST_AFTER_FAILURE);
        }
        outcome
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

    /// The ids of the Redis connections two queries from a thread that
    /// counts as event loop `index` go over, on a runtime of that thread's
    /// own (a loop's connection lives as long as its loop).
    fn connections_used_on(
        resilient: &std::sync::Arc<Resilient>,
        index: Option<usize>,
    ) -> [i64; 2] {
        let resilient = resilient.clone();
        std::thread::spawn(move || {
            crate::http::server::pretend_event_loop(index);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let id = || runtime.block_on(resilient.query(redis::cmd("CLIENT").arg("ID")));
            [id().unwrap(), id().unwrap()]
        })
        .join()
        .unwrap()
    }

    #[test]
    fn each_event_loop_queries_over_its_own_connection() {
        let client = redis::Client::open(portico_testkit::redis_url()).unwrap();
        let resilient = std::sync::Arc::new(Resilient::new(client, Duration::from_secs(5)));
        let [loop_0, again] = connections_used_on(&resilient, Some(0));
        assert_eq!(loop_0, again, "a loop keeps its connection");
        let [loop_1, _] = connections_used_on(&resilient, Some(1));
        let [outside, _] = connections_used_on(&resilient, None);
        assert_ne!(loop_0, loop_1, "two loops shared a connection");
        assert_ne!(loop_0, outside);
        assert_ne!(loop_1, outside);
    }

    #[tokio::test]
    async fn a_reachable_redis_is_reported_ok() {
        let client = redis::Client::open(portico_testkit::redis_url()).unwrap();
        let (_, checks) = Readiness::new().with(RedisCheck(client)).report().await;
        assert_eq!(checks["redis"], "ok");
    }
}
