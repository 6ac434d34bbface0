//! A transactional outbox with a webhook relay, for any service that owns
//! a database: a change appends its [`Event`] in the change's own
//! transaction ([`Outbox::record`]) with one delivery per subscriber that
//! wants it, and the [`Relay`] job delivers each as a Standard Webhooks
//! POST, at least once and in order per subject. Consumers dedupe by the
//! event's id. The tables are `events` and `deliveries`; each service
//! carries their migrations (the same schema on PostgreSQL and SQLite).

pub mod admin;
pub mod document;
mod relay;
pub mod store;

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

pub use relay::{DeliveryPurge, Relay, Subscriber, Subscribers};
pub use store::Delivery;

use crate::{
    db::{Db, UnitOfWork},
    jobs::Wake,
};

/// One event, as stored in the outbox and sent to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What consumers dedupe by (UUIDv7: also roughly time-ordered).
    pub id: Uuid,
    /// `user.created`, `auth.password_changed`…: the emitting service's
    /// names.
    pub event_type: String,
    /// The user the event is about.
    pub subject: Uuid,
    /// The subject's version after the change, increasing per subject
    /// within one emitting service.
    pub version: i64,
    pub occurred_at: OffsetDateTime,
    pub data: Value,
}

impl Event {
    /// A new event with a fresh id.
    pub fn new(
        event_type: &str,
        subject: Uuid,
        version: i64,
        occurred_at: OffsetDateTime,
        data: Value,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            subject,
            version,
            occurred_at,
            data,
        }
    }

    /// The event as subscribers receive it.
    pub fn envelope(&self) -> Value {
        json!({
            "id": self.id,
            "type": self.event_type,
            "occurred_at": rfc3339(self.occurred_at),
            "subject": self.subject,
            "version": self.version,
            "data": self.data,
        })
    }
}

/// A time as RFC 3339 text (what events carry).
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The relay and its subscribers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// How often the relay looks for due deliveries when nothing woke it
    /// (a commit that adds deliveries wakes it at once).
    pub relay_interval_ms: u64,
    /// Deliveries claimed per run.
    pub batch_size: u32,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// How long a claimed delivery is this replica's: one that dies
    /// mid-delivery leaves it to the others after this.
    pub lease_ms: u64,
    /// One attempt's bound (connect, send, answer).
    pub timeout_ms: u64,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// The wait after the first failure; doubled per failure up to
    /// `backoff_max_ms`, with jitter.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// How long a delivered delivery's row is kept (then purged; the
    /// event stays). Dead-lettered ones stay until sent again.
    pub delivered_retention_secs: u64,
    /// The endpoints events are posted to.
    pub subscribers: Vec<SubscriberConfig>,
}

/// One webhook subscriber.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriberConfig {
    /// Its name in metrics and the admin API: lower-case letters, digits, `-`.
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// The Standard Webhooks signing secret shared with it (`whsec_…`).
    pub secret: SecretString,
    /// The event types it receives (`user.deleted`…); empty: all.
    #[serde(default)]
    pub types: Vec<String>,
}

/// A service's outbox: where its changes record their events, and what
/// admins use on the deliveries that ran out of attempts.
#[derive(Debug, Clone)]
pub struct Outbox {
    db: Db,
    subscribers: Subscribers,
    /// Wakes the relay when a commit added deliveries.
    relay: Wake,
}

impl Outbox {
    pub fn new(db: Db, subscribers: Subscribers, relay: Wake) -> Self {
        Self {
            db,
            subscribers,
            relay,
        }
    }

    /// An outbox whose events nobody receives (they are still recorded).
    pub fn unsubscribed(db: Db) -> Self {
        Self::new(db, Subscribers::default(), Wake::default())
    }

    /// Appends `event` in `work` with a delivery to each subscriber that
    /// wants it; whether any was added (then [`Outbox::commit`] wakes the
    /// relay).
    pub async fn record(
        &self,
        work: &mut UnitOfWork,
        event: &Event,
        now: OffsetDateTime,
    ) -> Result<bool, sqlx::Error> {
        store::append(work.into(), event).await?;
        let mut added = false;
        for subscriber in self.subscribers.of(&event.event_type) {
            store::add_delivery(work.into(), event.id, &subscriber.name, now).await?;
            added = true;
        }
        Ok(added)
    }

    /// Commits `work`, then wakes the relay if it added deliveries.
    pub async fn commit(
        &self,
        work: UnitOfWork,
        deliveries_added: bool,
    ) -> Result<(), sqlx::Error> {
        work.commit().await?;
        if deliveries_added {
            self.relay.now();
        }
        Ok(())
    }

    /// Dead-lettered deliveries, newest first, older than `before`.
    pub async fn dead(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Delivery>, sqlx::Error> {
        store::dead(&self.db, before, limit).await
    }

    /// Queues a dead-lettered delivery again; `false` if there is none
    /// with that id.
    pub async fn redeliver(&self, id: i64, now: OffsetDateTime) -> Result<bool, sqlx::Error> {
        let queued = store::redeliver(&self.db, id, now).await?;
        if queued {
            self.relay.now();
        }
        Ok(queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_names_the_event_its_subject_and_version() {
        let subject = Uuid::now_v7();
        let event = Event::new(
            "user.updated",
            subject,
            2,
            OffsetDateTime::UNIX_EPOCH,
            json!({ "changed": ["display_name"] }),
        );
        let envelope = event.envelope();
        assert_eq!(envelope["id"], event.id.to_string());
        assert_eq!(envelope["type"], "user.updated");
        assert_eq!(envelope["subject"], subject.to_string());
        assert_eq!(envelope["version"], 2);
        assert_eq!(envelope["occurred_at"], "1970-01-01T00:00:00Z");
        assert_eq!(envelope["data"]["changed"], json!(["display_name"]));
    }
}
