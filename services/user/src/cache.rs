//! Cache-aside for profile reads, in Redis, shared by every replica.
//!
//! A read looks in Redis first (`MGET` of the cache epoch and the entry,
//! one round trip); a miss reads the database and fills the entry, one
//! load per profile at a time in a replica (concurrent misses of a cold
//! profile wait for the first and then find it cached: no stampede).
//!
//! Writes go through: after a change commits, its replica puts the new
//! profile in the entry before answering (unless a newer version is
//! already there: writes of two replicas may arrive in either order), so
//! no replica serves the old one after the write returned. A fill never
//! replaces an entry of the current epoch, so a reader that loaded the old
//! profile before the write cannot put it back over the new one.
//!
//! Entries carry the cache epoch they were written under. When a write
//! cannot reach Redis (down, or slower than `cache.timeout_ms`), its
//! replica reads only the database and bumps the epoch as soon as Redis
//! answers again, which retires every entry written before — including
//! the one that write left stale. Until then another replica that still
//! reaches Redis may serve that entry: the guarantee above holds for
//! writes that reached Redis. With Redis down, reads and writes go to the
//! database alone.

use std::{
    hash::{Hash as _, Hasher as _},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use portico_common::redis::Resilient;
use uuid::Uuid;

use crate::domain::Profile;

/// Stripes of the per-profile load lock.
const LOAD_STRIPES: usize = 64;
/// How often a pending epoch bump is tried again.
const BUMP_RETRY: Duration = Duration::from_millis(500);

/// KEYS: epoch, entry. ARGV: the epoch the loader read, the profile's
/// version, the profile, TTL ms. Fills only if the epoch did not move
/// while the profile was loaded, and never over an entry of this epoch (a
/// write may have put a newer version there meanwhile); an entry of an
/// older epoch is retired, so it is replaced.
const FILL: &str = r"
local epoch = redis.call('GET', KEYS[1]) or '0'
if epoch ~= ARGV[1] then return 0 end
local current = redis.call('GET', KEYS[2])
if current and string.match(current, '^(%d+)|') == epoch then return 0 end
redis.call('SET', KEYS[2], epoch .. '|' .. ARGV[2] .. '|' .. ARGV[3], 'PX', ARGV[4])
return 1
";

/// KEYS: epoch, entry. ARGV: the profile's version, the profile, TTL ms.
/// Overwrites, unless the entry (of this epoch) holds a newer version: two
/// replicas' writes may reach Redis in either order.
const WRITE: &str = r"
local epoch = redis.call('GET', KEYS[1]) or '0'
local current = redis.call('GET', KEYS[2])
if current then
  local e, v = string.match(current, '^(%d+)|(%d+)|')
  if e == epoch and tonumber(v) > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[2], epoch .. '|' .. ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return 1
";

/// The profile cache; without Redis, every read goes to the database.
#[derive(Debug, Clone)]
pub struct ProfileCache(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    redis: Option<Resilient>,
    prefix: String,
    /// `<prefix>profile-cache-epoch`, made once: every lookup reads it.
    epoch_key: String,
    ttl: Duration,
    loads: Vec<tokio::sync::Mutex<()>>,
    /// A write could not reach Redis: bump the epoch before using it again.
    bump_pending: AtomicBool,
}

/// What a cache lookup found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Profile),
    /// Not cached: load it, then [`ProfileCache::fill`] with this epoch.
    Miss {
        epoch: String,
    },
    /// The cache cannot be used now (no Redis, Redis down, an epoch bump
    /// pending): read the database and do not fill.
    Bypass,
}

impl ProfileCache {
    pub fn new(
        redis: Option<redis::Client>,
        prefix: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Self {
        Self(Arc::new(Inner {
            redis: redis.map(|client| Resilient::new(client, timeout)),
            prefix: prefix.to_owned(),
            epoch_key: format!("{prefix}profile-cache-epoch"),
            ttl,
            loads: (0..LOAD_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            bump_pending: AtomicBool::new(false),
        }))
    }

    /// A cache that never holds anything.
    pub fn disabled() -> Self {
        Self::new(None, "", Duration::ZERO, Duration::ZERO)
    }

    fn epoch_key(&self) -> &str {
        &self.0.epoch_key
    }

    /// `<prefix>profile:<id>`, written in place (`format!` cost ≈ 0.7 k
    /// instructions a lookup, on every cached read).
    fn entry_key(&self, id: Uuid) -> String {
        const PART: &str = "profile:";
        let mut key = String::with_capacity(self.0.prefix.len() + PART.len() + 36);
        key.push_str(&self.0.prefix);
        key.push_str(PART);
        key.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        key
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.0.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// The lock a load of `id` holds (one load per profile at a time).
    pub fn load_lock(&self, id: Uuid) -> &tokio::sync::Mutex<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        &self.0.loads[(hasher.finish() as usize) % LOAD_STRIPES]
    }

    pub async fn lookup(&self, id: Uuid) -> Lookup {
        let Some(redis) = &self.0.redis else {
            return Lookup::Bypass;
        };
        if self.0.bump_pending.load(Ordering::Acquire) {
            return outcome(Lookup::Bypass);
        }
        let mut command = redis::cmd("MGET");
        command.arg(self.epoch_key()).arg(self.entry_key(id));
        let (epoch, entry): (Option<String>, Option<String>) = match redis.query(&command).await {
            Ok(found) => found,
            Err(err) => {
                tracing::debug!(%err, "profile cache unavailable; reading the database");
                return outcome(Lookup::Bypass);
            }
        };
        let epoch = epoch.unwrap_or_else(|| "0".to_owned());
        // `epoch|version|profile`; an entry of an older epoch is retired.
        let cached = entry.and_then(|entry| {
            let (entry_epoch, rest) = entry.split_once('|')?;
            let (_, json) = rest.split_once('|')?;
            (entry_epoch == epoch)
                .then(|| serde_json::from_str::<Profile>(json).ok())
                .flatten()
        });
        outcome(match cached {
            Some(profile) => Lookup::Hit(profile),
            None => Lookup::Miss { epoch },
        })
    }

    /// Caches a profile loaded after a miss (unless written meanwhile).
    pub async fn fill(&self, profile: &Profile, epoch: &str) {
        let Some(redis) = &self.0.redis else { return };
        let Ok(json) = serde_json::to_string(profile) else {
            return;
        };
        let mut command = redis::cmd("EVAL");
        command
            .arg(FILL)
            .arg(2)
            .arg(self.epoch_key())
            .arg(self.entry_key(profile.id))
            .arg(epoch)
            .arg(profile.version)
            .arg(json)
            .arg(self.ttl_ms());
        if let Err(err) = redis.query::<i64>(&command).await {
            tracing::debug!(%err, "profile not cached");
        }
    }

    /// Puts a profile a write just committed (before the write answers).
    pub async fn written(&self, profile: &Profile) {
        let Some(redis) = &self.0.redis else { return };
        let Ok(json) = serde_json::to_string(profile) else {
            return;
        };
        let mut command = redis::cmd("EVAL");
        command
            .arg(WRITE)
            .arg(2)
            .arg(self.epoch_key())
            .arg(self.entry_key(profile.id))
            .arg(profile.version)
            .arg(json)
            .arg(self.ttl_ms());
        if let Err(err) = redis.query::<i64>(&command).await {
            // The entry may now be stale: retire every entry once Redis
            // answers again, and use none meanwhile.
            tracing::warn!(%err, user_id = %profile.id, "profile cache not updated after a write; its epoch will be bumped");
            self.0.bump_pending.store(true, Ordering::Release);
            metrics::counter!("user_profile_cache_write_failures_total").increment(1);
        }
    }

    /// Bumps the epoch when a write could not reach Redis, as soon as it
    /// answers again; runs as long as the service does.
    pub async fn follow(self) {
        let Some(redis) = &self.0.redis else { return };
        loop {
            tokio::time::sleep(BUMP_RETRY).await;
            if !self.0.bump_pending.load(Ordering::Acquire) {
                continue;
            }
            let mut command = redis::cmd("INCR");
            command.arg(self.epoch_key());
            if redis.query::<i64>(&command).await.is_ok() {
                self.0.bump_pending.store(false, Ordering::Release);
                tracing::info!("profile cache epoch bumped: entries from before are retired");
            }
        }
    }
}

/// Counts a lookup's outcome.
fn outcome(lookup: Lookup) -> Lookup {
    let label = match &lookup {
        Lookup::Hit(_) => "hit",
        Lookup::Miss { .. } => "miss",
        Lookup::Bypass => "bypass",
    };
    metrics::counter!("user_profile_cache_lookups_total", "outcome" => label).increment(1);
    lookup
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys written in place are the keys other replicas (and older
    /// builds) use: `<prefix>profile:<hyphenated id>`.
    #[test]
    fn keys_are_the_prefix_and_the_hyphenated_id() {
        let cache = ProfileCache::new(None, "user:", Duration::ZERO, Duration::ZERO);
        let id = Uuid::parse_str("01a24673-3b80-73eb-9215-9ac2c54b0d2b").unwrap();
        assert_eq!(
            cache.entry_key(id),
            "user:profile:01a24673-3b80-73eb-9215-9ac2c54b0d2b"
        );
        assert_eq!(cache.epoch_key(), "user:profile-cache-epoch");
    }
}
