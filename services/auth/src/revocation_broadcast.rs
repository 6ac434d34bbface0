//! With Redis, every revocation is also published (`PUBLISH` on
//! `portico:revocations`) and kept as a key expiring after an access-token
//! lifetime (`portico:revoked:<sid>`), so gateways and services learn of it
//! in milliseconds and can catch up from Redis after a reconnect. The
//! `/internal/revocations` feed stays the source of truth.
//!
//! Revocations are read back from this service's database rather than
//! published from each place that revokes: one path for logout, session
//! ends, password and role changes and refresh reuse, for every auth
//! replica's revocations, and none lost to a crash between commit and
//! publish. Every replica publishes; followers ignore repeats.

use std::{collections::HashMap, time::Duration as StdDuration};

use portico_common::{
    clock::SharedClock,
    jwt::RevokedSession,
    revocations::{REDIS_CHANNEL, REDIS_KEY_PREFIX},
};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::storage::AuthStore;

/// How often the database is read for new revocations.
const POLL_EVERY: StdDuration = StdDuration::from_millis(100);
/// Each read reaches this far back: longer than a revocation can take to
/// commit after its timestamp (lock waits) plus skew between replicas.
const LOOK_BACK: Duration = Duration::seconds(10);
/// Most revocations published per read.
const BATCH: i64 = 1_000;

/// Publishes revocations on Redis for as long as the service runs.
pub async fn broadcast(
    store: AuthStore,
    client: redis::Client,
    keep_for_secs: u64,
    clock: SharedClock,
) {
    let mut connection = None;
    // What was published lately (sid → revocation time), so a revocation
    // read again within the look-back is not published twice.
    let mut published: HashMap<Uuid, OffsetDateTime> = HashMap::new();
    let mut interval = tokio::time::interval(POLL_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        interval.tick().await;
        let since = clock.now() - LOOK_BACK;
        published.retain(|_, at| *at >= since);
        let outcome = publish_new(
            &store,
            &client,
            &mut connection,
            &mut published,
            since,
            keep_for_secs,
        )
        .await;
        match outcome {
            Ok(()) if warned => {
                tracing::info!("publishing revocations on Redis again");
                warned = false;
            }
            Ok(()) => {}
            Err(err) => {
                connection = None;
                if !warned {
                    tracing::warn!(%err, "cannot publish revocations on Redis; followers rely on the feed meanwhile");
                    warned = true;
                }
            }
        }
    }
}

async fn publish_new(
    store: &AuthStore,
    client: &redis::Client,
    connection: &mut Option<redis::aio::MultiplexedConnection>,
    published: &mut HashMap<Uuid, OffsetDateTime>,
    since: OffsetDateTime,
    keep_for_secs: u64,
) -> Result<(), String> {
    // Every page of the window, continuing from the last (time, sid).
    let mut revoked = Vec::new();
    let mut after = None;
    let mut from = since;
    loop {
        let page = store
            .revocations_since(from, after, BATCH)
            .await
            .map_err(|err| err.to_string())?;
        let full = page.len() as i64 == BATCH;
        if let Some((sid, at)) = page.last() {
            (from, after) = (*at, Some(*sid));
        }
        revoked.extend(page);
        if !full {
            break;
        }
    }
    let fresh: Vec<_> = revoked
        .into_iter()
        .filter(|(sid, _)| !published.contains_key(sid))
        .collect();
    if fresh.is_empty() {
        return Ok(());
    }
    if connection.is_none() {
        *connection = Some(
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(|err| err.to_string())?,
        );
    }
    let Some(connection) = connection.as_mut() else {
        return Err("no connection".to_owned());
    };
    let mut pipe = redis::pipe();
    for (sid, revoked_at) in &fresh {
        let item = RevokedSession {
            sid: *sid,
            revoked_at: *revoked_at,
        };
        let payload = serde_json::to_string(&item).map_err(|err| err.to_string())?;
        pipe.set_ex(format!("{REDIS_KEY_PREFIX}{sid}"), &payload, keep_for_secs)
            .ignore()
            .publish(REDIS_CHANNEL, payload)
            .ignore();
    }
    pipe.query_async::<()>(connection)
        .await
        .map_err(|err| err.to_string())?;
    published.extend(fresh);
    Ok(())
}
