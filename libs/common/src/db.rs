//! The relational store each service owns: PostgreSQL in production, SQLite
//! (WAL) as the embedded default, chosen by the URL scheme.
//!
//! Services write their SQL once and run it on either pool with
//! [`on_db!`](crate::on_db); both dialects accept `$1` placeholders,
//! `RETURNING` and `ON CONFLICT`. Migrations are embedded per backend.

use std::{borrow::Cow, str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::{
    SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
    postgres::{PgPool, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite://path/to/file.db`. Secret: may hold a password.
    pub url: SecretString,
    /// Upper bound of pooled connections.
    pub max_connections: u32,
    /// How long a query waits for a free connection before failing fast.
    pub acquire_timeout_ms: u64,
}

impl DatabaseConfig {
    pub fn with_url(url: &str) -> Self {
        Self {
            url: SecretString::from(url.to_owned()),
            ..Self::default()
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("sqlite://data/service.db"),
            max_connections: 10,
            acquire_timeout_ms: 3_000,
        }
    }
}

/// A pool on one of the two supported backends.
#[derive(Debug, Clone)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to whichever pool `$db` holds. The body is
/// compiled once per backend, so it must be valid SQL for both.
#[macro_export]
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Postgres($pool) => $body,
            $crate::db::Db::Sqlite($pool) => $body,
        }
    };
}

/// A migration embedded in the binary: `(version, description, sql)`.
pub type EmbeddedMigration = (i64, &'static str, &'static str);

/// A service's migrations for both backends.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub postgres: &'static [EmbeddedMigration],
    pub sqlite: &'static [EmbeddedMigration],
}

fn migrator(migrations: &'static [EmbeddedMigration]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

impl Db {
    /// Connects (creating the SQLite file and its directory if missing).
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, sqlx::Error> {
        let url = config.url.expose_secret();
        let acquire = Duration::from_millis(config.acquire_timeout_ms);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(acquire)
                .connect(url)
                .await?;
            Ok(Self::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            if let Some(dir) = options.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(acquire)
                .connect_with(options)
                .await?;
            Ok(Self::Sqlite(pool))
        } else {
            Err(sqlx::Error::Configuration(
                "database.url must start with postgres://, postgresql:// or sqlite:".into(),
            ))
        }
    }

    /// Connects and applies the service's pending migrations: what every
    /// service does at startup.
    pub async fn open(config: &DatabaseConfig, migrations: &Migrations) -> anyhow::Result<Self> {
        use anyhow::Context;
        let db = Self::connect(config)
            .await
            .context("cannot connect to the database (database.url)")?;
        db.migrate(migrations)
            .await
            .context("database migration failed")?;
        tracing::info!(backend = db.backend(), "database ready");
        Ok(db)
    }

    /// Applies the service's pending migrations.
    pub async fn migrate(
        &self,
        migrations: &Migrations,
    ) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Self::Postgres(pool) => migrator(migrations.postgres).run(pool).await,
            Self::Sqlite(pool) => migrator(migrations.sqlite).run(pool).await,
        }
    }

    /// A round trip to the database, for readiness.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_db!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    /// `postgres` or `sqlite`, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    pub async fn close(&self) {
        on_db!(self, pool => pool.close().await);
    }
}

/// True when `err` is a unique-constraint violation whose constraint name or
/// message mentions `hint` (PostgreSQL reports the constraint name, SQLite the
/// `table.column`).
pub fn is_unique_violation(err: &sqlx::Error, hint: &str) -> bool {
    err.as_database_error().is_some_and(|db_err| {
        db_err.is_unique_violation()
            && (db_err.constraint().is_some_and(|c| c.contains(hint))
                || db_err.message().contains(hint))
    })
}

/// The problem a client sees for a storage error: 503 when the database is
/// unreachable (retry later), 500 otherwise. The cause is logged, never sent.
pub fn problem_for(err: &sqlx::Error) -> crate::Problem {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            tracing::error!(error = %err, "database unavailable");
            crate::Problem::service_unavailable("the database is unavailable; retry shortly")
        }
        _ => {
            tracing::error!(error = %err, "database error");
            crate::Problem::internal()
        }
    }
}
