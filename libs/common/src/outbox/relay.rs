//! The outbox relay: delivers each pending delivery to its subscriber as a
//! signed webhook (Standard Webhooks), at least once, in order per subject;
//! a failed attempt is retried with exponential backoff and jitter, and
//! after `max_attempts` the delivery is dead-lettered for an admin to send
//! again. Every replica runs one; the claim (`SKIP LOCKED` on PostgreSQL,
//! a lease on both) gives each delivery to one of them.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt as _;
use time::OffsetDateTime;

use super::{
    OutboxConfig,
    store::{self as deliveries, Delivery},
};
use crate::{
    clock::SharedClock,
    db::Db,
    http::client::HttpClient,
    jobs::{self, Job, Ran},
    webhooks::{self, SigningSecret},
};

/// A subscriber, resolved from config: where to send and how to sign.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub name: String,
    pub url: String,
    pub secret: SigningSecret,
    /// The event types it receives; empty: all.
    pub types: Vec<String>,
}

impl Subscriber {
    pub fn wants(&self, event_type: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|wanted| wanted == event_type)
    }
}

/// The subscribers of the running config.
#[derive(Debug, Clone, Default)]
pub struct Subscribers(Arc<Vec<Subscriber>>);

impl Subscribers {
    /// Resolves the subscribers configured in `section` (the config key of
    /// `config`) for a service that emits `known_types`; `Err` is the bad
    /// key and why. Also checks that a claimed batch is sent well within
    /// its lease (a lease that ran out mid-batch would let another relay
    /// send a later event of a subject first).
    pub fn from_config(
        config: &OutboxConfig,
        section: &str,
        known_types: &[&str],
    ) -> Result<Self, (String, String)> {
        let rounds = u64::from(config.batch_size).div_ceil(config.concurrency.max(1) as u64);
        let batch_ms = (rounds + 1).saturating_mul(config.timeout_ms);
        if config.lease_ms < batch_ms {
            return Err((
                format!("{section}.lease_ms"),
                format!(
                    "must be at least {batch_ms}: (batch_size / concurrency + 1) × timeout_ms, the longest a claimed batch can take"
                ),
            ));
        }
        let mut resolved = Vec::new();
        for (index, subscriber) in config.subscribers.iter().enumerate() {
            let at = |key: &str| format!("{section}.subscribers[{index}].{key}");
            let name_ok = !subscriber.name.is_empty()
                && subscriber.name.len() <= 64
                && subscriber
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !name_ok {
                return Err((at("name"), "lower-case letters, digits and `-`".to_owned()));
            }
            if resolved
                .iter()
                .any(|s: &Subscriber| s.name == subscriber.name)
            {
                return Err((at("name"), format!("`{}` twice", subscriber.name)));
            }
            let url = reqwest::Url::parse(&subscriber.url)
                .ok()
                .filter(|url| matches!(url.scheme(), "http" | "https"))
                .ok_or_else(|| (at("url"), "an http(s) URL".to_owned()))?;
            let secret =
                SigningSecret::parse(&subscriber.secret).map_err(|err| (at("secret"), err))?;
            if let Some(unknown) = subscriber
                .types
                .iter()
                .find(|raw| !known_types.contains(&raw.as_str()))
            {
                return Err((at("types"), format!("unknown event type `{unknown}`")));
            }
            let types = subscriber.types.clone();
            resolved.push(Subscriber {
                name: subscriber.name.clone(),
                url: url.to_string(),
                secret,
                types,
            });
        }
        Ok(Self(Arc::new(resolved)))
    }

    /// The subscribers that receive `event_type`.
    pub fn of<'a>(&'a self, event_type: &'a str) -> impl Iterator<Item = &'a Subscriber> {
        self.0.iter().filter(move |s| s.wants(event_type))
    }

    fn named(&self, name: &str) -> Option<&Subscriber> {
        self.0.iter().find(|s| s.name == name)
    }
}

/// One replica's relay.
pub struct Relay {
    db: Db,
    clock: SharedClock,
    client: HttpClient,
    subscribers: Subscribers,
    config: OutboxConfig,
    /// When the backlog gauges were last set (they cost two aggregate
    /// reads: at most once a second while work flows).
    reported_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How often the backlog gauges are refreshed while deliveries flow.
const BACKLOG_REPORT_EVERY: Duration = Duration::from_secs(1);

impl Relay {
    pub fn new(
        db: Db,
        clock: SharedClock,
        client: HttpClient,
        subscribers: Subscribers,
        config: OutboxConfig,
    ) -> Self {
        Self {
            db,
            clock,
            client,
            subscribers,
            config,
            reported_at: std::sync::Mutex::new(None),
        }
    }

    fn after(&self, now: OffsetDateTime, wait: Duration) -> OffsetDateTime {
        now + time::Duration::try_from(wait).unwrap_or(time::Duration::MAX)
    }

    /// One attempt at one delivery (claimed until `lease`): `Some(id)`
    /// when it was delivered (recorded with the batch's others); a failure
    /// is recorded here.
    async fn deliver(
        &self,
        delivery: Delivery,
        lease: OffsetDateTime,
    ) -> anyhow::Result<Option<i64>> {
        let subscriber_label = delivery.subscriber.clone();
        // Claimed only for subscribers this replica knows.
        let Some(subscriber) = self.subscribers.named(&delivery.subscriber) else {
            return Ok(None);
        };
        let body = serde_json::to_vec(&delivery.event.envelope())?;
        let webhook_id = delivery.event.id.to_string();
        let timestamp = self.clock.now().unix_timestamp();
        let signature = subscriber.secret.sign(&webhook_id, timestamp, &body);
        let sent = self
            .client
            .post(&subscriber.url)
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(webhooks::ID_HEADER, &webhook_id)
            .header(webhooks::TIMESTAMP_HEADER, timestamp)
            .header(webhooks::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        let failure = match sent {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("answered {}", response.status().as_u16())),
            Err(err) if err.is_timeout() => Some("timed out".to_owned()),
            Err(err) if err.is_connect() => Some("could not connect".to_owned()),
            Err(_) => Some("the request failed".to_owned()),
        };
        let now = self.clock.now();
        let recorded = match failure {
            None => {
                metrics::counter!("events_delivered_total", "subscriber" => subscriber_label)
                    .increment(1);
                return Ok(Some(delivery.id));
            }
            Some(error) => {
                let attempts = u32::try_from(delivery.attempts).unwrap_or(0) + 1;
                metrics::counter!("events_delivery_failures_total", "subscriber" => subscriber_label.clone())
                    .increment(1);
                let retry_at = (attempts < self.config.max_attempts).then(|| {
                    self.after(
                        now,
                        jobs::backoff(
                            attempts,
                            Duration::from_millis(self.config.backoff_base_ms),
                            Duration::from_millis(self.config.backoff_max_ms),
                        ),
                    )
                });
                if retry_at.is_none() {
                    tracing::warn!(delivery = delivery.id, event_id = %delivery.event.id,
                        subscriber = %delivery.subscriber, attempts, %error, "delivery dead-lettered");
                    metrics::counter!("events_dead_lettered_total", "subscriber" => subscriber_label)
                        .increment(1);
                } else {
                    tracing::info!(delivery = delivery.id, event_id = %delivery.event.id,
                        subscriber = %delivery.subscriber, attempts, %error, "delivery failed; will retry");
                }
                deliveries::failed(&self.db, delivery.id, lease, &error, retry_at).await?
            }
        };
        if !recorded {
            tracing::warn!(
                delivery = delivery.id,
                "delivery taken over by another relay after this one's lease ran out"
            );
        }
        Ok(None)
    }

    /// Sets the backlog gauges if a second has passed since the last time,
    /// or always when `drained` (so they read zero once work stops).
    async fn report_backlog_now_and_then(&self, drained: bool) -> anyhow::Result<()> {
        let due = {
            let mut reported_at = self
                .reported_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = drained || reported_at.is_none_or(|at| at.elapsed() >= BACKLOG_REPORT_EVERY);
            if due {
                *reported_at = Some(std::time::Instant::now());
            }
            due
        };
        if due {
            self.report_backlog().await?;
        }
        Ok(())
    }

    /// The backlog gauges: pending deliveries and the age of the oldest,
    /// per configured subscriber (zero when none is pending).
    async fn report_backlog(&self) -> anyhow::Result<()> {
        let now = self.clock.now();
        let backlog: HashMap<String, (i64, OffsetDateTime)> = deliveries::backlog(&self.db)
            .await?
            .into_iter()
            .map(|(subscriber, pending, oldest)| (subscriber, (pending, oldest)))
            .collect();
        for subscriber in self.subscribers.0.iter() {
            let (pending, age) = backlog
                .get(&subscriber.name)
                .map_or((0, 0.0), |(n, oldest)| {
                    (*n, (now - *oldest).as_seconds_f64().max(0.0))
                });
            metrics::gauge!("events_backlog", "subscriber" => subscriber.name.clone())
                .set(pending as f64);
            metrics::gauge!("events_backlog_age_seconds", "subscriber" => subscriber.name.clone())
                .set(age);
        }
        Ok(())
    }
}

impl Job for Relay {
    const NAME: &'static str = "outbox_relay";

    async fn run(&self) -> anyhow::Result<Ran> {
        let now = self.clock.now();
        let lease_until = self.after(now, Duration::from_millis(self.config.lease_ms));
        let batch = i64::from(self.config.batch_size);
        let names: Vec<&str> = self.subscribers.0.iter().map(|s| s.name.as_str()).collect();
        let claimed = deliveries::claim_due(&self.db, &names, now, lease_until, batch).await?;
        let handled = claimed.len() as u64;
        // One delivery per subject is claimed at a time, so these may go
        // out together without reordering any subject's events.
        let outcomes: Vec<anyhow::Result<Option<i64>>> = futures::stream::iter(claimed)
            .map(|delivery| self.deliver(delivery, lease_until))
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let mut delivered = Vec::with_capacity(outcomes.len());
        let mut failure = None;
        for outcome in outcomes {
            match outcome {
                Ok(Some(id)) => delivered.push(id),
                Ok(None) => {}
                Err(err) => failure = failure.or(Some(err)),
            }
        }
        // The batch's successes in one write (on SQLite one write turn,
        // not one per delivery); a row whose lease passed meanwhile is
        // another relay's now and is left to it.
        let recorded =
            deliveries::delivered_all(&self.db, &delivered, lease_until, self.clock.now()).await?;
        if recorded < delivered.len() as u64 {
            tracing::warn!(
                delivered = delivered.len(),
                recorded,
                "deliveries taken over by another relay after this one's lease ran out"
            );
        }
        self.report_backlog_now_and_then(handled == 0).await?;
        if let Some(first) = failure {
            return Err(first.context("recording a delivery's outcome"));
        }
        Ok(Ran {
            handled,
            // Delivering one event of a subject makes its next one due:
            // look again until a run finds nothing.
            more: handled > 0,
        })
    }
}

/// Removes delivered deliveries after `delivered_retention_secs` (a
/// delivery's row is what an admin or a consumer's support case looks at
/// for a while, not for years: the events themselves stay). Replicas may
/// run it at once: a row goes once.
pub struct DeliveryPurge {
    db: Db,
    clock: SharedClock,
    retention: Duration,
}

impl DeliveryPurge {
    /// How often it looks (while a run finds a full batch, at once again).
    pub const INTERVAL: Duration = Duration::from_secs(600);
    /// Rows removed per run: one short write at a time.
    const BATCH: i64 = 1_000;

    pub fn new(db: Db, clock: SharedClock, config: &OutboxConfig) -> Self {
        Self {
            db,
            clock,
            retention: Duration::from_secs(config.delivered_retention_secs),
        }
    }
}

impl Job for DeliveryPurge {
    const NAME: &'static str = "delivery_purge";

    async fn run(&self) -> anyhow::Result<Ran> {
        let Some(before) = time::Duration::try_from(self.retention)
            .ok()
            .and_then(|retention| self.clock.now().checked_sub(retention))
        else {
            return Ok(Ran::default());
        };
        let removed = deliveries::purge_delivered(&self.db, before, Self::BATCH).await?;
        Ok(Ran {
            handled: removed,
            more: removed == Self::BATCH as u64,
        })
    }
}
