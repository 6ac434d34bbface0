//! Rate limiting at the edge: GCRA (the token bucket's equivalent, one
//! timestamp per key) per route, keyed by client address, authenticated
//! subject or an API-key header. Decisions are shared by every gateway
//! replica through Redis — one atomic script per decision on Redis's own
//! clock ([`redis`]); when Redis cannot answer, each replica's own limiter
//! ([`local`]) takes over, or the route's `on_redis_failure` says open or
//! closed, and a metric and one warning say so.

pub mod local;
pub mod redis;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::request_facts::RequestFacts;

/// `routes.N.rate_limit`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `client_ip`, `subject` or `header:<name>` (an API key).
    pub key: String,
    /// Requests allowed per `period_ms`.
    pub rate: u32,
    pub period_ms: u64,
    /// Requests allowed at once (absent: `rate`).
    pub burst: Option<u32>,
    /// When Redis cannot answer: `local` (each replica limits alone, the
    /// default), `open` (let everything through) or `closed` (refuse).
    pub on_redis_failure: Option<String>,
}

/// What a limit keys on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    ClientIp,
    Subject,
    Header(HeaderName),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Local,
    Open,
    Closed,
}

/// A route's limit, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub key: LimitKey,
    /// Time one request "costs" (period / rate).
    pub emission: Duration,
    /// Requests at once.
    pub burst: u32,
    pub rate: u32,
    pub period: Duration,
    pub on_failure: OnFailure,
    /// Names the limit in keys and headers (the route's prefix).
    pub name: String,
}

impl Limit {
    pub fn parse(config: &RateLimitConfig, name: &str) -> Result<Self, (&'static str, String)> {
        let key = match config.key.split_once(':') {
            None if config.key == "client_ip" => LimitKey::ClientIp,
            None if config.key == "subject" => LimitKey::Subject,
            Some(("header", header)) => LimitKey::Header(
                HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| ("key", format!("`{header}` is not a header name")))?,
            ),
            _ => {
                return Err((
                    "key",
                    format!("`{}`: use client_ip, subject or header:<name>", config.key),
                ));
            }
        };
        if config.rate == 0 {
            return Err(("rate", "must be positive".to_owned()));
        }
        if config.period_ms == 0 {
            return Err(("period_ms", "must be positive".to_owned()));
        }
        if config.burst == Some(0) {
            return Err(("burst", "must be positive".to_owned()));
        }
        let on_failure = match config.on_redis_failure.as_deref() {
            None | Some("local") => OnFailure::Local,
            Some("open") => OnFailure::Open,
            Some("closed") => OnFailure::Closed,
            Some(other) => {
                return Err((
                    "on_redis_failure",
                    format!("`{other}`: use local, open or closed"),
                ));
            }
        };
        let period = Duration::from_millis(config.period_ms);
        Ok(Self {
            key,
            emission: period / config.rate,
            burst: config.burst.unwrap_or(config.rate),
            rate: config.rate,
            period,
            on_failure,
            name: name.to_owned(),
        })
    }

    /// The request's key, or `None` (no subject, no header): not limited
    /// by this rule.
    pub fn key_of(&self, facts: &RequestFacts<'_>) -> Option<String> {
        match &self.key {
            LimitKey::ClientIp => facts.client_ip.map(|ip| format!("ip:{ip}")),
            LimitKey::Subject => facts.subject.map(|s| format!("sub:{s}")),
            LimitKey::Header(name) => facts.header(name.as_str()).map(|v| {
                format!(
                    "key:{:016x}",
                    crate::request_facts::stable_hash(v.as_bytes())
                )
            }),
        }
    }

    /// `RateLimit-Policy` (IETF draft): quota and window.
    pub fn policy_header(&self) -> HeaderValue {
        let window = self.period.as_secs().max(1);
        HeaderValue::from_str(&format!("\"{}\";q={};w={window}", self.name, self.rate))
            .unwrap_or_else(|_| HeaderValue::from_static("\"default\""))
    }
}

/// A decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests left in the burst.
    pub remaining: u64,
    /// When the next request would be allowed (refused) or the bucket is
    /// full again (allowed).
    pub wait: Duration,
}

impl Decision {
    /// `RateLimit` (IETF draft): what remains, and when it resets.
    pub fn header(&self, limit: &Limit) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "\"{}\";r={};t={}",
            limit.name,
            self.remaining,
            self.wait.as_secs_f64().ceil() as u64
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("\"default\""))
    }
}

/// Decides for every limited route of one gateway.
#[derive(Debug, Clone)]
pub struct Limiter {
    redis: Option<Arc<redis::RedisGcra>>,
    local: Arc<local::LocalGcra>,
    /// Whether decisions are falling back right now (warned once per spell).
    falling_back: Arc<AtomicBool>,
}

impl Limiter {
    pub fn new(redis: Option<redis::RedisGcra>) -> Self {
        Self {
            redis: redis.map(Arc::new),
            local: Arc::new(local::LocalGcra::default()),
            falling_back: Arc::new(AtomicBool::new(false)),
        }
    }

    pub async fn check(&self, limit: &Limit, key: &str) -> Decision {
        let decision = match &self.redis {
            None => Ok(self.local.check(limit, key)),
            Some(redis) => redis.check(limit, key).await,
        };
        match decision {
            Ok(decision) => {
                if self.redis.is_some() && self.falling_back.swap(false, Ordering::Relaxed) {
                    tracing::warn!("rate limiting shares decisions through Redis again");
                    metrics::gauge!("gateway_rate_limit_fallback_active").set(0.0);
                }
                self.record(limit, decision);
                decision
            }
            Err(err) => {
                if !self.falling_back.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%err, "Redis cannot decide rate limits; falling back per route");
                    metrics::gauge!("gateway_rate_limit_fallback_active").set(1.0);
                }
                metrics::counter!("gateway_rate_limit_fallbacks_total").increment(1);
                let decision = match limit.on_failure {
                    OnFailure::Local => self.local.check(limit, key),
                    OnFailure::Open => Decision {
                        allowed: true,
                        remaining: u64::from(limit.burst),
                        wait: Duration::ZERO,
                    },
                    OnFailure::Closed => Decision {
                        allowed: false,
                        remaining: 0,
                        wait: Duration::from_secs(1),
                    },
                };
                self.record(limit, decision);
                decision
            }
        }
    }

    fn record(&self, limit: &Limit, decision: Decision) {
        let outcome = if decision.allowed {
            "allowed"
        } else {
            "limited"
        };
        metrics::counter!("gateway_rate_limit_decisions_total",
            "route" => limit.name.clone(), "outcome" => outcome)
        .increment(1);
    }
}
