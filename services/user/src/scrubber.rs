//! The scrubber: a scheduled job that removes the personal data of
//! accounts deleted more than `scrubber.grace_secs` ago (the email is free
//! for a new registration from then on). Every replica runs it; a profile
//! is scrubbed in one transaction that checks it still needs it, so two
//! replicas at once scrub it once.

use std::time::Duration;

use portico_common::{
    clock::SharedClock,
    jobs::{Job, Ran},
};

use crate::accounts::Accounts;

/// Profiles scrubbed per run.
const BATCH: i64 = 100;

pub struct Scrubber {
    accounts: Accounts,
    clock: SharedClock,
    grace: Duration,
}

impl Scrubber {
    pub fn new(accounts: Accounts, clock: SharedClock, grace: Duration) -> Self {
        Self {
            accounts,
            clock,
            grace,
        }
    }
}

impl Job for Scrubber {
    const NAME: &'static str = "scrubber";

    async fn run(&self) -> anyhow::Result<Ran> {
        let now = self.clock.now();
        // A grace reaching before the epoch scrubs nothing.
        let Some(deleted_before) = time::Duration::try_from(self.grace)
            .ok()
            .and_then(|grace| now.checked_sub(grace))
        else {
            return Ok(Ran::default());
        };
        let scrubbed = self
            .accounts
            .scrub_deleted(deleted_before, BATCH, now)
            .await?;
        Ok(Ran {
            handled: scrubbed,
            more: scrubbed == BATCH as u64,
        })
    }
}
