//! Revoked sessions, followed from auth's feed (`/internal/revocations`),
//! so a logged-out session's access tokens are refused everywhere within
//! about a second without a call to auth per request.
//!
//! - Until the first complete catch-up, no token is trusted (503) and the
//!   `revocations` readiness check fails: a replica that starts — or
//!   restarts — must know every revocation whose tokens could still be
//!   valid before it lets them through.
//! - Afterwards, a feed that cannot be reached degrades rather than breaks:
//!   tokens stay valid until they expire; a warning and the
//!   `token_revocations_lag_seconds` gauge say how stale the list is.
//! - Each poll asks again from a minute before the feed's previous answer,
//!   so a revocation committed late with an earlier timestamp (a lock
//!   wait, another auth replica's clock) is still seen. Pages continue from
//!   the last `(revoked_at, sid)`, so they never repeat.
//! - With Redis, auth also publishes each revocation on [`REDIS_CHANNEL`]
//!   and keeps it under [`REDIS_KEY_PREFIX`]`<sid>` for an access-token
//!   lifetime; [`Revocations::follow_redis`] subscribes, so a revocation
//!   arrives in milliseconds. After each (re)subscription it first loads
//!   those keys and polls the feed, so nothing published while it was
//!   disconnected is missed. The feed stays the source of truth.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    admin::{CheckFuture, ReadinessCheck},
    http::client::HttpClient,
};

/// The most of one feed page read: auth pages 1,000 revocations of about
/// 100 bytes each, so 4 MiB leaves room and still bounds what a faulty
/// peer can make this process hold.
const MAX_FEED_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// How long startup waits for the first catch-up before going on unready.
const STARTUP_CATCH_UP: Duration = Duration::from_secs(2);

/// How far back each poll reaches before the previous answer's time: more
/// than a revocation can take to commit after its timestamp was taken (lock
/// waits, 5 s by default) plus clock skew between auth replicas. Re-reading
/// a minute of revocations costs little; missing one costs a session.
const OVERLAP: time::Duration = time::Duration::seconds(60);

/// The Redis channel auth publishes revocations on (JSON [`RevokedSession`]).
pub const REDIS_CHANNEL: &str = "portico:revocations";
/// Prefix of the Redis keys holding revoked session ids, each expiring
/// after an access-token lifetime (the value is the revocation time).
pub const REDIS_KEY_PREFIX: &str = "portico:revoked:";

/// One revoked session in the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevokedSession {
    pub sid: Uuid,
    /// RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub revoked_at: OffsetDateTime,
}

/// An answer of the revocation feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevocationFeed {
    /// Oldest first.
    pub items: Vec<RevokedSession>,
    /// The feed's time when it answered. RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub now: OffsetDateTime,
    /// False when more revocations follow the last item (ask again from it).
    pub complete: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationsConfig {
    /// auth's `/internal/revocations`; absent, revoked sessions' tokens stay
    /// valid until they expire (logged at startup).
    pub url: Option<String>,
    /// How often the feed is polled.
    pub poll_interval_ms: u64,
    /// How long a revoked session is remembered: at least the access-token
    /// lifetime plus clock skew.
    pub retain_secs: u64,
}

/// The revoked sessions this process knows of.
pub struct Revocations {
    config: RevocationsConfig,
    client: HttpClient,
    /// Session id → when it may be forgotten.
    revoked: RwLock<HashMap<Uuid, Instant>>,
    caught_up: AtomicBool,
    /// Where the next poll starts (feed time).
    since: Mutex<Option<OffsetDateTime>>,
    last_success: Mutex<Option<Instant>>,
    /// A warning about an unreachable feed was logged for this outage.
    warned: AtomicBool,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("url", &self.config.url)
            .field("caught_up", &self.is_caught_up())
            .finish_non_exhaustive()
    }
}

/// Why a token's session cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationStatus {
    Live,
    Revoked,
    /// Not caught up with the feed yet: nothing can be trusted.
    Unknown,
}

impl Revocations {
    pub fn new(config: RevocationsConfig, client: HttpClient) -> Arc<Self> {
        if config.url.is_none() {
            tracing::warn!(
                "tokens.revocations.url is not set: revoked sessions' tokens stay valid until they expire"
            );
        }
        Arc::new(Self {
            config,
            client,
            revoked: RwLock::new(HashMap::new()),
            caught_up: AtomicBool::new(false),
            since: Mutex::new(None),
            last_success: Mutex::new(None),
            warned: AtomicBool::new(false),
        })
    }

    fn enabled(&self) -> bool {
        self.config.url.is_some()
    }

    pub fn is_caught_up(&self) -> bool {
        !self.enabled() || self.caught_up.load(Ordering::SeqCst)
    }

    /// The status of session `sid` (tokens without one, service tokens,
    /// have no session to revoke).
    pub fn status(&self, sid: Option<Uuid>) -> RevocationStatus {
        if !self.is_caught_up() {
            return RevocationStatus::Unknown;
        }
        let revoked = sid.is_some_and(|sid| {
            self.revoked
                .read()
                .map(|revoked| revoked.contains_key(&sid))
                .unwrap_or(false)
        });
        if revoked {
            RevocationStatus::Revoked
        } else {
            RevocationStatus::Live
        }
    }

    /// Remembers that `sid` was revoked.
    fn remember(&self, sids: impl IntoIterator<Item = Uuid>) {
        let forget_at = Instant::now() + Duration::from_secs(self.config.retain_secs);
        if let Ok(mut revoked) = self.revoked.write() {
            for sid in sids {
                revoked.insert(sid, forget_at);
            }
        }
    }

    /// One round: fetches every page since the cursor.
    pub async fn poll_once(&self) -> Result<(), String> {
        let Some(url) = &self.config.url else {
            return Ok(());
        };
        let mut since = self.since.lock().map_err(|_| "poisoned")?.to_owned();
        let mut after: Option<Uuid> = None;
        loop {
            let target = match since {
                // UTC, so the RFC 3339 text has `Z` and nothing to escape.
                Some(since) => {
                    let since = since
                        .to_offset(time::UtcOffset::UTC)
                        .format(&time::format_description::well_known::Rfc3339)
                        .map_err(|err| err.to_string())?;
                    match after {
                        Some(after) => format!("{url}?since={since}&after={after}"),
                        None => format!("{url}?since={since}"),
                    }
                }
                None => url.clone(),
            };
            let response = self
                .client
                .get(&target)
                .send()
                .await
                .map_err(|err| err.to_string())?;
            if !response.status().is_success() {
                return Err(format!("revocation feed answered {}", response.status()));
            }
            let feed: RevocationFeed =
                crate::http::client::json_within(response, MAX_FEED_PAGE_BYTES).await?;
            if let Ok(mut revoked) = self.revoked.write() {
                let now = Instant::now();
                revoked.retain(|_, until| *until > now);
            }
            self.remember(feed.items.iter().map(|item| item.sid));
            if feed.complete {
                since = Some(feed.now - OVERLAP);
                break;
            }
            match feed.items.last() {
                Some(last) => {
                    since = Some(last.revoked_at);
                    after = Some(last.sid);
                }
                None => break,
            }
        }
        if let Ok(mut cursor) = self.since.lock() {
            *cursor = since;
        }
        if let Ok(mut last) = self.last_success.lock() {
            *last = Some(Instant::now());
        }
        if !self.caught_up.swap(true, Ordering::SeqCst) {
            tracing::info!("caught up with the revocation feed");
        }
        if self.warned.swap(false, Ordering::SeqCst) {
            tracing::info!("revocation feed reachable again");
        }
        Ok(())
    }

    /// A first catch-up while the service starts, so it can trust tokens as
    /// soon as it serves; if the feed is not there yet, [`Self::follow`]
    /// keeps trying (and the service stays not ready meanwhile).
    pub async fn catch_up_at_start(&self) {
        let outcome = tokio::time::timeout(STARTUP_CATCH_UP, self.poll_once()).await;
        if let Err(err) = outcome.unwrap_or_else(|_| Err("timed out".to_owned())) {
            tracing::warn!(%err, "revocation feed not reachable at startup; not ready until it is");
        }
    }

    /// Follows the feed for as long as the service runs.
    pub async fn follow(self: Arc<Self>) {
        if !self.enabled() {
            return;
        }
        let mut interval =
            tokio::time::interval(Duration::from_millis(self.config.poll_interval_ms));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(err) = self.poll_once().await
                && !self.warned.swap(true, Ordering::SeqCst)
            {
                tracing::warn!(%err,
                    "revocation feed unreachable; tokens of sessions revoked from now on stay valid until they expire");
            }
            let lag = self
                .last_success
                .lock()
                .ok()
                .and_then(|last| *last)
                .map_or(f64::INFINITY, |last| last.elapsed().as_secs_f64());
            metrics::gauge!("token_revocations_lag_seconds").set(lag);
        }
    }

    /// Follows revocations published on Redis for as long as the service
    /// runs, resubscribing (with backoff) after Redis goes away.
    #[cfg(feature = "redis")]
    pub async fn follow_redis(self: Arc<Self>, client: redis::Client) {
        const MAX_BACKOFF: Duration = Duration::from_secs(5);
        let mut backoff = Duration::from_millis(250);
        loop {
            let started = Instant::now();
            let err = self.listen_on_redis(&client).await;
            tracing::warn!(%err, "revocations on Redis interrupted; the feed still polls; resubscribing");
            if started.elapsed() > MAX_BACKOFF {
                backoff = Duration::from_millis(250);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Subscribes, catches up (Redis keys, then the feed), then takes
    /// messages until the connection ends; returns why it ended.
    #[cfg(feature = "redis")]
    async fn listen_on_redis(&self, client: &redis::Client) -> String {
        use futures::StreamExt as _;
        let mut pubsub = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(err) => return err.to_string(),
        };
        // Subscribed before catching up, so nothing falls between the two.
        if let Err(err) = pubsub.subscribe(REDIS_CHANNEL).await {
            return err.to_string();
        }
        if let Err(err) = self.load_redis_keys(client).await {
            return err;
        }
        if let Err(err) = self.poll_once().await {
            tracing::debug!(%err, "feed catch-up after subscribing failed; the poller keeps trying");
        }
        tracing::info!("following revocations on Redis");
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let Ok(payload) = message.get_payload::<String>() else {
                continue;
            };
            match serde_json::from_str::<RevokedSession>(&payload) {
                Ok(item) => self.remember([item.sid]),
                Err(err) => tracing::warn!(%err, "unreadable revocation on Redis ignored"),
            }
        }
        "the subscription ended".to_owned()
    }

    /// Every revoked session auth keeps in Redis (those whose tokens may
    /// still be valid).
    #[cfg(feature = "redis")]
    async fn load_redis_keys(&self, client: &redis::Client) -> Result<(), String> {
        use futures::StreamExt as _;
        use redis::AsyncCommands as _;
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|err| err.to_string())?;
        let pattern = format!("{REDIS_KEY_PREFIX}*");
        let keys: Vec<String> = connection
            .scan_match::<_, String>(&pattern)
            .await
            .map_err(|err| err.to_string())?
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|err| err.to_string())?;
        self.remember(
            keys.iter()
                .filter_map(|key| key.strip_prefix(REDIS_KEY_PREFIX))
                .filter_map(|sid| Uuid::parse_str(sid).ok()),
        );
        Ok(())
    }

    /// `revocations`: ready once caught up with the feed.
    pub fn readiness_check(self: &Arc<Self>) -> RevocationsCheck {
        RevocationsCheck(Arc::clone(self))
    }
}

/// See [`Revocations::readiness_check`].
#[derive(Debug, Clone)]
pub struct RevocationsCheck(Arc<Revocations>);

impl ReadinessCheck for RevocationsCheck {
    fn name(&self) -> &'static str {
        "revocations"
    }

    fn check(&self) -> CheckFuture {
        let caught_up = self.0.is_caught_up();
        Box::pin(async move {
            if caught_up {
                Ok(())
            } else {
                Err("not caught up with the revocation feed yet".to_owned())
            }
        })
    }
}
