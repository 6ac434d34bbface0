//! GCRA in Redis, shared by every gateway replica: one Lua script per
//! decision reads and sets the key's theoretical arrival time atomically,
//! on Redis's clock (`TIME`), so the replicas' clocks do not matter.

use std::time::Duration;

use portico_common::redis::Resilient;

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
    redis: Resilient,
    prefix: String,
}

impl RedisGcra {
    pub fn new(client: ::redis::Client, prefix: &str) -> Self {
        Self {
            redis: Resilient::new(client, DECISION_TIMEOUT),
            prefix: prefix.to_owned(),
        }
    }

    /// The decision, or why Redis could not make it (the caller falls back
    /// to the in-process limiter).
    pub async fn check(&self, limit: &Limit, key: &str) -> Result<Decision, String> {
        let emission = (limit.emission.as_micros() as u64).max(1);
        let tolerance = emission * u64::from(limit.burst);
        let mut command = ::redis::cmd("EVAL");
        command
            .arg(GCRA)
            .arg(1)
            .arg(format!("{}ratelimit:{}:{key}", self.prefix, limit.name))
            .arg(emission)
            .arg(tolerance);
        let (allowed, remaining, wait): (i64, i64, i64) = self.redis.query(&command).await?;
        Ok(Decision {
            allowed: allowed == 1,
            remaining: remaining.max(0) as u64,
            wait: Duration::from_micros(wait.max(0) as u64),
        })
    }
}
