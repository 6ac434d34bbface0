//! The outbox's tables: `events`, appended in the transaction of the
//! change each records, and `deliveries`, one row per event and subscriber,
//! added with the event, claimed by a relay under a lease, and ended
//! delivered or dead-lettered.

use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Event;
use crate::{
    db::{Conn, Db, Pool},
    on_conn, on_db,
};

/// An event from a row with its columns (`id`, `type`, `subject`,
/// `subject_version`, `occurred_at`, `data`).
fn event_from_row<R: Row>(row: &R) -> Result<Event, sqlx::Error>
where
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> OffsetDateTime: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    let data: String = row.try_get("data")?;
    Ok(Event {
        id: row.try_get("id")?,
        event_type: row.try_get("type")?,
        subject: row.try_get("subject")?,
        version: row.try_get("subject_version")?,
        occurred_at: row.try_get("occurred_at")?,
        data: serde_json::from_str(&data).map_err(|err| sqlx::Error::Decode(err.into()))?,
    })
}

/// Appends `event` (its `data` as JSON text).
pub async fn append(conn: Conn<'_>, event: &Event) -> Result<(), sqlx::Error> {
    let data = event.data.to_string();
    on_conn!(conn, exec => {
        sqlx::query(
            "INSERT INTO events (id, type, subject, subject_version, occurred_at, data) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(event.id)
        .bind(event.event_type.as_str())
        .bind(event.subject)
        .bind(event.version)
        .bind(event.occurred_at)
        .bind(data)
        .execute(exec)
        .await
        .map(|_| ())
    })
}

/// The events of `subject`, oldest first.
pub async fn for_subject(conn: Conn<'_>, subject: Uuid) -> Result<Vec<Event>, sqlx::Error> {
    on_conn!(conn, exec => {
        sqlx::query(
            "SELECT id, type, subject, subject_version, occurred_at, data FROM events \
             WHERE subject = $1 ORDER BY seq",
        )
        .bind(subject)
        .fetch_all(exec)
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    })
}

/// Replaces the data of `subject`'s events (profiles with an email and a
/// name) with `{"scrubbed": true}`; the events themselves stay.
pub async fn scrub_subject(conn: Conn<'_>, subject: Uuid) -> Result<u64, sqlx::Error> {
    on_conn!(conn, exec => {
        sqlx::query("UPDATE events SET data = '{\"scrubbed\":true}' WHERE subject = $1")
            .bind(subject)
            .execute(exec)
            .await
            .map(|done| done.rows_affected())
    })
}

/// A delivery's state.
pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const DEAD: &str = "dead";

/// A delivery with its event: what a relay sends, what an admin lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub subscriber: String,
    pub status: String,
    /// Attempts made so far.
    pub attempts: i32,
    pub last_error: Option<String>,
    pub event: Event,
}

const DELIVERY_COLUMNS: &str = "d.id AS delivery_id, d.subscriber, d.status, d.attempts, d.last_error, \
     e.id, e.type, e.subject, e.subject_version, e.occurred_at, e.data";

fn delivery_from_row<R: Row>(row: &R) -> Result<Delivery, sqlx::Error>
where
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> OffsetDateTime: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    Ok(Delivery {
        id: row.try_get("delivery_id")?,
        subscriber: row.try_get("subscriber")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        event: event_from_row(row)?,
    })
}

/// Adds a pending delivery of the event `event_id` to `subscriber`.
pub async fn add_delivery(
    conn: Conn<'_>,
    event_id: Uuid,
    subscriber: &str,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    on_conn!(conn, exec => {
        sqlx::query(
            "INSERT INTO deliveries (event_seq, subscriber, subject, next_attempt_at, created_at) \
             SELECT seq, $2, subject, $3, $3 FROM events WHERE id = $1",
        )
        .bind(event_id)
        .bind(subscriber)
        .bind(now)
        .execute(exec)
        .await
        .map(|_| ())
    })
}

/// Claims the deliveries to `subscribers` due at `now`, oldest event
/// first, at most one per subscriber and subject — a later event of a
/// subject waits while an earlier one is pending, so each subscriber sees a
/// subject's events in order — leased to the caller until `lease_until`
/// (which is also the caller's claim: outcomes are recorded only while it
/// holds). On PostgreSQL, rows another relay is claiming at the same moment
/// are skipped (`FOR UPDATE SKIP LOCKED`); SQLite has one writer at a
/// time. A relay that dies holding a lease leaves its rows to the others
/// once the lease passes. Only subscribers this replica knows are claimed
/// (a replica running an older config leaves a new subscriber's rows).
pub async fn claim_due(
    db: &Db,
    subscribers: &[&str],
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    if subscribers.is_empty() {
        return Ok(Vec::new());
    }
    // $1 now, $2 lease, $3 limit, then one per subscriber.
    let names: Vec<String> = (0..subscribers.len())
        .map(|i| format!("${}", i + 4))
        .collect();
    let due = format!(
        "SELECT d.id FROM deliveries d \
         WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
           AND (d.leased_until IS NULL OR d.leased_until <= $1) \
           AND d.subscriber IN ({}) \
           AND NOT EXISTS (SELECT 1 FROM deliveries earlier \
               WHERE earlier.subscriber = d.subscriber AND earlier.subject = d.subject \
                 AND earlier.status = 'pending' AND earlier.event_seq < d.event_seq) \
         ORDER BY d.event_seq LIMIT $3",
        names.join(", ")
    );
    let lock = match db.pool() {
        Pool::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        Pool::Sqlite(_) => "",
    };
    let claim = sqlx::AssertSqlSafe(format!(
        "UPDATE deliveries SET leased_until = $2 WHERE id IN ({due}{lock}) RETURNING id"
    ));
    let mut work = db.begin().await?;
    let ids: Vec<i64> = on_conn!((&mut work).into(), exec => {
        let mut query = sqlx::query_scalar(claim)
            .bind(now)
            .bind(lease_until)
            .bind(limit);
        for name in subscribers {
            query = query.bind(*name);
        }
        query.fetch_all(exec).await?
    });
    work.commit().await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // The claimed rows with their events, in one read.
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq \
         WHERE d.id IN ({}) ORDER BY d.event_seq",
        placeholders.join(", ")
    ));
    on_db!(db, pool => {
        let mut query = sqlx::query(sql);
        for id in &ids {
            query = query.bind(*id);
        }
        query
            .fetch_all(pool)
            .await?
            .iter()
            .map(delivery_from_row)
            .collect()
    })
}

/// Records the successful deliveries `ids`, those whose caller's claim
/// (`lease`) still holds; how many were recorded (a delivery another
/// relay took over meanwhile is not).
pub async fn delivered_all(
    db: &Db,
    ids: &[i64],
    lease: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    // $1 lease, $2 now, then the ids.
    let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 3)).collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, \
         delivered_at = $2, leased_until = NULL, last_error = NULL \
         WHERE id IN ({}) AND leased_until = $1 AND status = 'pending'",
        placeholders.join(", ")
    ));
    let _turn = db.write_turn().await;
    on_db!(db, pool => {
        let mut query = sqlx::query(sql).bind(lease).bind(now);
        for id in ids {
            query = query.bind(*id);
        }
        query.execute(pool).await.map(|done| done.rows_affected())
    })
}

/// Records a successful delivery, if the caller's claim (`lease`) still
/// holds; `false` if another relay took the delivery over meanwhile.
pub async fn delivered(
    db: &Db,
    id: i64,
    lease: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    delivered_all(db, &[id], lease, now).await.map(|n| n == 1)
}

/// Removes up to `limit` deliveries delivered before `before`, oldest
/// first (dead-lettered and pending ones stay); how many went. Walks the
/// primary key from the start, where the old rows are, so it needs no
/// index of its own.
pub async fn purge_delivered(
    db: &Db,
    before: OffsetDateTime,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let _turn = db.write_turn().await;
    on_db!(db, pool => {
        sqlx::query(
            "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
             WHERE status = 'delivered' AND delivered_at < $1 ORDER BY id LIMIT $2)",
        )
        .bind(before)
        .bind(limit)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
    })
}

/// Records a failed attempt, if the caller's claim still holds: tried
/// again at `retry_at`, or dead-lettered when `retry_at` is `None`.
pub async fn failed(
    db: &Db,
    id: i64,
    lease: OffsetDateTime,
    error: &str,
    retry_at: Option<OffsetDateTime>,
) -> Result<bool, sqlx::Error> {
    let _turn = db.write_turn().await;
    on_db!(db, pool => {
        let query = match retry_at {
            Some(at) => sqlx::query(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = $3, \
                 next_attempt_at = $4, leased_until = NULL \
                 WHERE id = $1 AND leased_until = $2 AND status = 'pending'",
            )
            .bind(id)
            .bind(lease)
            .bind(error)
            .bind(at),
            None => sqlx::query(
                "UPDATE deliveries SET status = 'dead', attempts = attempts + 1, \
                 last_error = $3, leased_until = NULL \
                 WHERE id = $1 AND leased_until = $2 AND status = 'pending'",
            )
            .bind(id)
            .bind(lease)
            .bind(error),
        };
        query
            .execute(pool)
            .await
            .map(|done| done.rows_affected() == 1)
    })
}

/// Dead-lettered deliveries, newest first, after the `before` id (paging).
pub async fn dead(db: &Db, before: Option<i64>, limit: i64) -> Result<Vec<Delivery>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq \
         WHERE d.status = 'dead' AND d.id < $1 ORDER BY d.id DESC LIMIT $2"
    ));
    on_db!(db, pool => {
        sqlx::query(sql)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(delivery_from_row)
            .collect()
    })
}

/// Sends a dead-lettered delivery again from its first attempt; `false`
/// if no dead delivery has that id.
pub async fn redeliver(db: &Db, id: i64, now: OffsetDateTime) -> Result<bool, sqlx::Error> {
    let _turn = db.write_turn().await;
    on_db!(db, pool => {
        sqlx::query(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2, \
             leased_until = NULL WHERE id = $1 AND status = 'dead'",
        )
        .bind(id)
        .bind(now)
        .execute(pool)
        .await
        .map(|done| done.rows_affected() == 1)
    })
}

/// Per subscriber: how many deliveries are pending, and when the oldest
/// was written (the backlog's age).
pub async fn backlog(db: &Db) -> Result<Vec<(String, i64, OffsetDateTime)>, sqlx::Error> {
    on_db!(db, pool => {
        let counts = sqlx::query(
            "SELECT subscriber, COUNT(*) AS pending FROM deliveries \
             WHERE status = 'pending' GROUP BY subscriber",
        )
        .fetch_all(pool)
        .await?;
        // The oldest pending row per subscriber is its lowest id.
        let oldest = sqlx::query(
            "SELECT subscriber, created_at FROM deliveries WHERE id IN \
             (SELECT MIN(id) FROM deliveries WHERE status = 'pending' GROUP BY subscriber)",
        )
        .fetch_all(pool)
        .await?;
        let mut backlog = Vec::with_capacity(counts.len());
        for row in &counts {
            let subscriber: String = row.try_get("subscriber")?;
            let pending: i64 = row.try_get("pending")?;
            let since = oldest
                .iter()
                .find(|o| o.try_get::<String, _>("subscriber").ok().as_deref() == Some(&subscriber))
                .map(|o| o.try_get::<OffsetDateTime, _>("created_at"))
                .transpose()?;
            if let Some(since) = since {
                backlog.push((subscriber, pending, since));
            }
        }
        Ok(backlog)
    })
}
