//! Slowing down password guessing. Failed attempts are counted per account
//! and address, per address, and per account; a counter past its limit
//! locks its key for a while, and each further failure doubles the lock
//! (up to a cap). The per-account limit is higher and its lock short, so a
//! stranger hammering someone's account from many addresses cannot keep
//! its owner out for long; the owner's own account+address counter is
//! cleared by a success.
//!
//! These counters live in this process (a bounded map); with Redis
//! configured, `crate::throttle_store` keeps them there instead, shared by
//! every auth replica, and falls back to these when Redis fails. Time comes
//! in as a value, so tests move it.

use std::{collections::HashMap, sync::Mutex};

use serde::Deserialize;
use time::{Duration, OffsetDateTime};

/// Keys tracked at most; past it the oldest are dropped (a flood of
/// random emails must not grow memory without bound).
const MAX_KEYS: usize = 100_000;

/// One counter's rules.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Failures allowed within the window before the key locks.
    pub failures: u32,
    /// How far back failures count, in seconds.
    pub window_secs: i64,
    /// The first lock, in seconds; doubled by each failure past the limit.
    pub lock_secs: i64,
    /// The longest lock, in seconds.
    pub max_lock_secs: i64,
}

/// `login_throttle` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    pub account_and_address: Limit,
    pub address: Limit,
    pub account: Limit,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    AccountAndAddress(String, String),
    Address(String),
    Account(String),
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    failures: u32,
    window_start: OffsetDateTime,
    locked_until: Option<OffsetDateTime>,
    last_seen: OffsetDateTime,
}

/// Who is attempting: the normalised email (or the raw text, if it is not
/// an email) and the client's address, when known.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    pub account: &'a str,
    pub address: Option<&'a str>,
}

/// Counters of failed attempts.
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    counters: Mutex<HashMap<Key, Counter>>,
}

/// A counter's name for a shared store: the kind, and the account as a
/// SHA-256 digest (keys name no email).
pub fn labelled_keys(config: &ThrottleConfig, attempt: &Attempt<'_>) -> Vec<(String, Limit)> {
    use sha2::{Digest, Sha256};
    let account: String = Sha256::digest(attempt.account.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut keys = vec![(format!("account:{account}"), config.account)];
    if let Some(address) = attempt.address {
        keys.push((
            format!("account-address:{account}:{address}"),
            config.account_and_address,
        ));
        keys.push((format!("address:{address}"), config.address));
    }
    keys
}

/// The lock a counter at `failures` earns under `limit`, in seconds, if any.
pub fn lock_for(limit: &Limit, failures: u32) -> Option<i64> {
    let excess = failures.checked_sub(limit.failures)?.checked_sub(1)?;
    Some(
        limit
            .lock_secs
            .saturating_mul(1_i64 << excess.min(20))
            .min(limit.max_lock_secs),
    )
}

impl Throttle {
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            counters: Mutex::new(HashMap::new()),
        }
    }

    fn keys(&self, attempt: &Attempt<'_>) -> Vec<(Key, Limit)> {
        let account = attempt.account.to_owned();
        let mut keys = vec![(Key::Account(account.clone()), self.config.account)];
        if let Some(address) = attempt.address {
            keys.push((
                Key::AccountAndAddress(account, address.to_owned()),
                self.config.account_and_address,
            ));
            keys.push((Key::Address(address.to_owned()), self.config.address));
        }
        keys
    }

    /// `Err(seconds)` while any of the attempt's keys is locked: the
    /// attempt is refused without checking the password.
    pub fn check(&self, attempt: &Attempt<'_>, now: OffsetDateTime) -> Result<(), i64> {
        let Ok(counters) = self.counters.lock() else {
            return Ok(());
        };
        let wait = self
            .keys(attempt)
            .iter()
            .filter_map(|(key, _)| counters.get(key)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| (until - now).whole_seconds().max(1))
            .max();
        wait.map_or(Ok(()), Err)
    }

    /// Counts a failed attempt on each of its keys.
    pub fn failed(&self, attempt: &Attempt<'_>, now: OffsetDateTime) {
        let Ok(mut counters) = self.counters.lock() else {
            return;
        };
        if counters.len() >= MAX_KEYS {
            evict_oldest(&mut counters, now);
        }
        for (key, limit) in self.keys(attempt) {
            let counter = counters.entry(key).or_insert(Counter {
                failures: 0,
                window_start: now,
                locked_until: None,
                last_seen: now,
            });
            if now - counter.window_start > Duration::seconds(limit.window_secs) {
                *counter = Counter {
                    failures: 0,
                    window_start: now,
                    locked_until: None,
                    last_seen: now,
                };
            }
            counter.failures += 1;
            counter.last_seen = now;
            if let Some(lock) = lock_for(&limit, counter.failures) {
                counter.locked_until = Some(now + Duration::seconds(lock));
            }
        }
    }

    /// A success clears the account+address counter: the owner, from where
    /// they sign in, starts afresh. (The per-address and per-account
    /// counters stay: one success must not reset an attack's tally.)
    pub fn succeeded(&self, attempt: &Attempt<'_>) {
        if let (Ok(mut counters), Some(address)) = (self.counters.lock(), attempt.address) {
            counters.remove(&Key::AccountAndAddress(
                attempt.account.to_owned(),
                address.to_owned(),
            ));
        }
    }
}

/// Drops the tenth of the keys seen longest ago — never one that is locked
/// now, so a flood of made-up keys cannot lift a lock.
fn evict_oldest(counters: &mut HashMap<Key, Counter>, now: OffsetDateTime) {
    let locked = |counter: &Counter| counter.locked_until.is_some_and(|until| until > now);
    let mut seen: Vec<OffsetDateTime> = counters
        .values()
        .filter(|counter| !locked(counter))
        .map(|counter| counter.last_seen)
        .collect();
    seen.sort_unstable();
    if let Some(cutoff) = seen.get(seen.len() / 10).copied() {
        counters.retain(|_, counter| locked(counter) || counter.last_seen > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(failures: u32, lock_secs: i64) -> Limit {
        Limit {
            failures,
            window_secs: 900,
            lock_secs,
            max_lock_secs: 900,
        }
    }

    fn throttle() -> Throttle {
        Throttle::new(ThrottleConfig {
            account_and_address: limit(3, 60),
            address: limit(10, 300),
            account: limit(6, 30),
        })
    }

    const AT: Attempt<'static> = Attempt {
        account: "ann@example.com",
        address: Some("10.0.0.1"),
    };

    #[test]
    fn failures_past_the_limit_lock_with_a_doubling_wait() {
        let throttle = throttle();
        let start = OffsetDateTime::UNIX_EPOCH;
        for _ in 0..3 {
            assert_eq!(throttle.check(&AT, start), Ok(()));
            throttle.failed(&AT, start);
        }
        assert_eq!(
            throttle.check(&AT, start),
            Ok(()),
            "the limit itself is allowed"
        );
        throttle.failed(&AT, start);
        assert_eq!(throttle.check(&AT, start), Err(60));
        let later = start + Duration::seconds(61);
        assert_eq!(throttle.check(&AT, later), Ok(()));
        throttle.failed(&AT, later);
        assert_eq!(throttle.check(&AT, later), Err(120), "doubled");
    }

    #[test]
    fn a_success_clears_only_the_account_and_address_counter() {
        let throttle = throttle();
        let now = OffsetDateTime::UNIX_EPOCH;
        for _ in 0..4 {
            throttle.failed(&AT, now);
        }
        throttle.succeeded(&AT);
        assert_eq!(throttle.check(&AT, now), Ok(()));
    }

    #[test]
    fn many_addresses_against_one_account_lock_it_briefly() {
        let throttle = throttle();
        let now = OffsetDateTime::UNIX_EPOCH;
        let addresses: Vec<String> = (0..7).map(|i| format!("10.1.0.{i}")).collect();
        for address in &addresses {
            throttle.failed(
                &Attempt {
                    account: AT.account,
                    address: Some(address),
                },
                now,
            );
        }
        // The owner, from a fresh address, waits the short account lock.
        let owner = Attempt {
            account: AT.account,
            address: Some("192.0.2.9"),
        };
        assert_eq!(throttle.check(&owner, now), Err(30));
        assert_eq!(throttle.check(&owner, now + Duration::seconds(31)), Ok(()));
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let throttle = throttle();
        let start = OffsetDateTime::UNIX_EPOCH;
        for _ in 0..3 {
            throttle.failed(&AT, start);
        }
        let later = start + Duration::seconds(901);
        throttle.failed(&AT, later);
        assert_eq!(throttle.check(&AT, later), Ok(()));
    }
}
