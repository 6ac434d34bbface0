//! The outbox (`events`): appended in the transaction of the change it
//! records, with a delivery per subscriber that wants it.

use portico_common::{db::Conn, on_conn};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::events::Event;

/// An event from a row with its columns (`id`, `type`, `subject`,
/// `subject_version`, `occurred_at`, `data`).
pub fn event_from_row<R: Row>(row: &R) -> Result<Event, sqlx::Error>
where
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> OffsetDateTime: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    let event_type: String = row.try_get("type")?;
    let data: String = row.try_get("data")?;
    Ok(Event {
        id: row.try_get("id")?,
        event_type: event_type
            .parse()
            .map_err(|err: String| sqlx::Error::Decode(err.into()))?,
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
