//! GCRA in Redis, shared by every gateway replica: one Lua script per
//! decision reads and sets the key's theoretical arrival time atomically,
//! on Redis's clock (`TIME`), so the replicas' clocks do not matter.

use std::time::Duration;

use ::redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use super::{Decision, Limit};

/// How long a decision may take before the fallback decides instead.
const DECISION_TIMEOUT: Duration = Duration::from_millis(100);

/// KEYS[1]: the key. ARGV: emission interval and tolerance (µs).
/// Returns {allowed, remaining, wait µs}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local nxt = tat + emission
if nxt > now + tolerance then
  return {0, 0, nxt - tolerance - now}
end
redis.call('SET', KEYS[1], nxt, 'PX', math.ceil((nxt - now) / 1000) + 1)
return {1, math.floor((now + tolerance - nxt) / emission), nxt - now}
";

#[derive(Debug)]
pub struct RedisGcra {
    client: ::redis::Client,
    prefix: String,
    /// Made on first use, so a Redis down at startup is a fallback, not a
    /// failed start; it reconnects by itself afterwards.
    connection: OnceCell<ConnectionManager>,
    /// After a failure Redis is not asked again before this: requests do
    /// not each pay a timeout while it is down.
    resting_until: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long Redis rests after a failed decision.
const REST_AFTER_FAILURE: Duration = Duration::from_secs(1);

impl RedisGcra {
    pub fn new(client: ::redis::Client, prefix: &str) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
            connection: OnceCell::new(),
            resting_until: std::sync::Mutex::new(None),
        }
    }

    pub async fn check(&self, limit: &Limit, key: &str) -> Result<Decision, String> {
        let now = std::time::Instant::now();
        if let Ok(resting) = self.resting_until.lock()
            && resting.is_some_and(|until| until > now)
        {
            return Err("Redis failed a moment ago".to_owned());
        }
        let outcome = self.decide(limit, key).await;
        if outcome.is_err()
            && let Ok(mut resting) = self.resting_until.lock()
        {
            *resting = Some(now + REST_AFTER_FAILURE);
        }
        outcome
    }

    async fn decide(&self, limit: &Limit, key: &str) -> Result<Decision, String> {
        let decide = async {
            let connection = self
                .connection
                .get_or_try_init(|| async { ConnectionManager::new(self.client.clone()).await })
                .await
                .map_err(|err| err.to_string())?;
            let mut connection = connection.clone();
            // At least 1 µs: the script divides by it.
            let emission = (limit.emission.as_micros() as u64).max(1);
            let tolerance = emission * u64::from(limit.burst);
            let (allowed, remaining, wait): (i64, i64, i64) = ::redis::cmd("EVAL")
                .arg(GCRA)
                .arg(1)
                .arg(format!("{}ratelimit:{}:{key}", self.prefix, limit.name))
                .arg(emission)
                .arg(tolerance)
                .query_async(&mut connection)
                .await
                .map_err(|err| err.to_string())?;
            Ok(Decision {
                allowed: allowed == 1,
                remaining: remaining.max(0) as u64,
                wait: Duration::from_micros(wait.max(0) as u64),
            })
        };
        tokio::time::timeout(DECISION_TIMEOUT, decide)
            .await
            .map_err(|_| "Redis did not answer in time".to_owned())?
    }
}
