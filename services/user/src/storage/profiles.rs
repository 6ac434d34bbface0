//! The `users` table.

use portico_common::{db::Conn, on_conn};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Applied, NewProfile, Profile};

const COLUMNS: &str =
    "id, email, display_name, locale, time_zone, status, version, created_at, updated_at";

fn profile_from_row<R: Row>(row: &R) -> Result<Profile, sqlx::Error>
where
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> OffsetDateTime: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    Ok(Profile {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        locale: row.try_get("locale")?,
        time_zone: row.try_get("time_zone")?,
        status: row.try_get("status")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Inserts the profile at version 1; `None` if the id is taken (the email
/// being taken is a unique violation on `email_lower`).
pub async fn insert(
    conn: Conn<'_>,
    new: &NewProfile,
    now: OffsetDateTime,
) -> Result<Option<Profile>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO users (id, email, email_lower, display_name, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
    ));
    on_conn!(conn, exec => {
        let row = sqlx::query(sql)
            .bind(new.id)
            .bind(new.email.as_str())
            .bind(new.email.normalized())
            .bind(new.display_name.as_str())
            .bind(now)
            .fetch_optional(exec)
            .await?;
        row.as_ref().map(profile_from_row).transpose()
    })
}

pub async fn get(conn: Conn<'_>, id: Uuid) -> Result<Option<Profile>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE id = $1"));
    on_conn!(conn, exec => {
        let row = sqlx::query(sql).bind(id).fetch_optional(exec).await?;
        row.as_ref().map(profile_from_row).transpose()
    })
}

/// Writes `applied` over the profile if it is still at `version`, bumping
/// the version; `None` if it is not (another writer came first).
pub async fn update_at_version(
    conn: Conn<'_>,
    id: Uuid,
    version: i64,
    applied: &Applied,
    now: OffsetDateTime,
) -> Result<Option<Profile>, sqlx::Error> {
    // The version in the WHERE clause is what makes the write conditional:
    // on PostgreSQL a concurrent writer of the same row waits for the first
    // to commit, re-reads the row, finds the version moved and writes
    // nothing; on SQLite writers take turns.
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE users SET display_name = $3, locale = $4, time_zone = $5, \
         version = version + 1, updated_at = $6 \
         WHERE id = $1 AND version = $2 RETURNING {COLUMNS}"
    ));
    on_conn!(conn, exec => {
        let row = sqlx::query(sql)
            .bind(id)
            .bind(version)
            .bind(applied.display_name.as_str())
            .bind(applied.locale.as_deref())
            .bind(applied.time_zone.as_deref())
            .bind(now)
            .fetch_optional(exec)
            .await?;
        row.as_ref().map(profile_from_row).transpose()
    })
}

/// Marks the profile deleted if it is still at `version`, bumping the
/// version; `None` if it is not.
pub async fn mark_deleted_at_version(
    conn: Conn<'_>,
    id: Uuid,
    version: i64,
    now: OffsetDateTime,
) -> Result<Option<Profile>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE users SET status = 'deleted', version = version + 1, updated_at = $3 \
         WHERE id = $1 AND version = $2 AND status = 'active' RETURNING {COLUMNS}"
    ));
    on_conn!(conn, exec => {
        let row = sqlx::query(sql)
            .bind(id)
            .bind(version)
            .bind(now)
            .fetch_optional(exec)
            .await?;
        row.as_ref().map(profile_from_row).transpose()
    })
}

/// Number of stored profiles (tests prove nothing was written with it).
pub async fn count(conn: Conn<'_>) -> Result<i64, sqlx::Error> {
    on_conn!(conn, exec => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users")
            .fetch_one(exec)
            .await
    })
}

/// What the admin directory asks for.
#[derive(Debug, Clone, Default)]
pub struct DirectoryQuery {
    /// Only ids after this one (the previous page's last).
    pub after: Option<Uuid>,
    /// `active` or `deleted`.
    pub status: Option<String>,
    /// Email prefix or display-name substring, any letter case.
    pub search: Option<String>,
    pub limit: i64,
}

/// `raw` with LIKE's wildcards and escape character escaped (`\`).
fn like_literal(raw: &str) -> String {
    let mut escaped = String::with_capacity(raw.len());
    for c in raw.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A page of profiles in id order (creation order: ids are UUIDv7).
/// Keyset paging: a page starts after the last id of the one before, so
/// it does not shift when rows are inserted or deleted meanwhile, and
/// costs the same at any depth.
pub async fn directory(
    conn: Conn<'_>,
    query: &DirectoryQuery,
) -> Result<Vec<Profile>, sqlx::Error> {
    // Only the clauses asked for; every value is a bound parameter.
    let mut clauses = Vec::new();
    let mut next = 1;
    let mut placeholder = || {
        let p = format!("${next}");
        next += 1;
        p
    };
    if query.after.is_some() {
        clauses.push(format!("id > {}", placeholder()));
    }
    if query.status.is_some() {
        clauses.push(format!("status = {}", placeholder()));
    }
    let search = query.search.as_deref().map(|raw| {
        let literal = like_literal(&raw.to_lowercase());
        (format!("{literal}%"), format!("%{literal}%"))
    });
    if search.is_some() {
        let (prefix, substring) = (placeholder(), placeholder());
        clauses.push(format!(
            "(email_lower LIKE {prefix} ESCAPE '\\' OR lower(display_name) LIKE {substring} ESCAPE '\\')"
        ));
    }
    let limit = placeholder();
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users {filter} ORDER BY id LIMIT {limit}"
    ));
    on_conn!(conn, exec => {
        let mut statement = sqlx::query(sql);
        if let Some(after) = query.after {
            statement = statement.bind(after);
        }
        if let Some(status) = &query.status {
            statement = statement.bind(status.as_str());
        }
        if let Some((prefix, substring)) = &search {
            statement = statement.bind(prefix.as_str()).bind(substring.as_str());
        }
        statement
            .bind(query.limit)
            .fetch_all(exec)
            .await?
            .iter()
            .map(profile_from_row)
            .collect()
    })
}

/// Deleted profiles whose data is not scrubbed yet, deleted before
/// `deleted_before`, oldest first.
pub async fn due_for_scrubbing(
    conn: Conn<'_>,
    deleted_before: OffsetDateTime,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    on_conn!(conn, exec => {
        sqlx::query_scalar(
            "SELECT id FROM users WHERE status = 'deleted' AND scrubbed_at IS NULL \
             AND updated_at < $1 ORDER BY updated_at LIMIT $2",
        )
        .bind(deleted_before)
        .bind(limit)
        .fetch_all(exec)
        .await
    })
}

/// Scrubs a deleted profile's personal data: the email (freed for a new
/// registration: `email_lower` becomes a placeholder no address can be),
/// the display name, locale and time zone. The row stays, so the id is
/// never reused. `None` if it is not a deleted, unscrubbed profile.
pub async fn scrub(
    conn: Conn<'_>,
    id: Uuid,
    now: OffsetDateTime,
) -> Result<Option<Profile>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE users SET email = '', email_lower = $2, display_name = '', locale = NULL, \
         time_zone = NULL, version = version + 1, updated_at = $3, scrubbed_at = $3 \
         WHERE id = $1 AND status = 'deleted' AND scrubbed_at IS NULL RETURNING {COLUMNS}"
    ));
    on_conn!(conn, exec => {
        let row = sqlx::query(sql)
            .bind(id)
            // No address has no `@`-less form like this one.
            .bind(format!("scrubbed:{id}"))
            .bind(now)
            .fetch_optional(exec)
            .await?;
        row.as_ref().map(profile_from_row).transpose()
    })
}
