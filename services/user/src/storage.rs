//! Profile storage. Every query is written once and runs on PostgreSQL and
//! SQLite alike (see `portico_common::on_db!`).

use portico_common::{
    db::{self, Db},
    on_db,
    types::Email,
};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Created, NewProfile, Profile};

/// Embedded migrations for both backends.
pub const MIGRATIONS: db::Migrations = db::Migrations {
    postgres: &[(
        1,
        "create users",
        include_str!("../migrations/postgres/0001_create_users.sql"),
    )],
    sqlite: &[(
        1,
        "create users",
        include_str!("../migrations/sqlite/0001_create_users.sql"),
    )],
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email already belongs to another user")]
    EmailTaken,
    #[error("id already belongs to a different profile")]
    IdTaken,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

const COLUMNS: &str = "id, email, display_name, status, version, created_at, updated_at";

fn profile_from_row<R: Row>(row: &R) -> Result<Profile, sqlx::Error>
where
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> OffsetDateTime: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    Ok(Profile {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        status: row.try_get("status")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[derive(Debug, Clone)]
pub struct UserStore {
    db: Db,
}

impl UserStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Creates the profile, or returns the existing one when the same id was
    /// already created with the same email (a retried call).
    pub async fn create(
        &self,
        new: &NewProfile,
        now: OffsetDateTime,
    ) -> Result<Created, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO users (id, email, email_lower, display_name, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
        ));
        let inserted = on_db!(&self.db, pool => {
            sqlx::query(sql)
                .bind(new.id)
                .bind(new.email.as_str())
                .bind(new.email.normalized())
                .bind(new.display_name.as_str())
                .bind(now)
                .fetch_optional(pool)
                .await
                .map(|row| row.as_ref().map(profile_from_row).transpose())
        });
        match inserted {
            Ok(Ok(Some(profile))) => Ok(Created::New(profile)),
            Ok(Err(err)) => Err(err.into()),
            Ok(Ok(None)) => {
                let existing = self.get(new.id).await?.ok_or(StoreError::IdTaken)?;
                if Email::normalize(&existing.email) == new.email.normalized() {
                    Ok(Created::Existing(existing))
                } else {
                    Err(StoreError::IdTaken)
                }
            }
            Err(err) if db::is_unique_violation(&err, "email_lower") => Err(StoreError::EmailTaken),
            Err(err) => Err(err.into()),
        }
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Profile>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE id = $1"));
        on_db!(&self.db, pool => {
            let row = sqlx::query(sql).bind(id).fetch_optional(pool).await?;
            row.as_ref().map(profile_from_row).transpose()
        })
    }

    /// Sets the display name, bumping the version; `None` if no such user.
    pub async fn update_display_name(
        &self,
        id: Uuid,
        display_name: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Profile>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE users SET display_name = $2, version = version + 1, updated_at = $3 \
             WHERE id = $1 RETURNING {COLUMNS}"
        ));
        on_db!(&self.db, pool => {
            let row = sqlx::query(sql)
                .bind(id)
                .bind(display_name)
                .bind(now)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(profile_from_row).transpose()
        })
    }

    /// Number of stored profiles (used by tests to prove nothing was written).
    pub async fn count(&self) -> Result<i64, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query("SELECT COUNT(*) AS n FROM users")
                .fetch_one(pool)
                .await?
                .try_get::<i64, _>("n")
        })
    }
}
