//! The relational store each service owns: PostgreSQL in production, SQLite
//! (WAL) as the embedded default, chosen by the URL scheme.
//!
//! Services write their SQL once and run it on either pool with
//! [`on_db!`](crate::on_db); both dialects accept `$1` placeholders,
//! `RETURNING` and `ON CONFLICT`. Migrations are embedded per backend.
//!
//! - [`errors`] — which failures are the client's to retry (503 with
//!   `Retry-After`: busy, locked, unreachable) and which are ours (500).
//! - [`unit_of_work`] — statements that commit together ([`UnitOfWork`]),
//!   and repository functions that run on the pool or inside one
//!   ([`Conn`], [`on_conn!`](crate::on_conn)).
//! - [`sqlite`] — what an embedded database file needs that a server does
//!   not: private permissions, no silent re-creation, a bounded WAL, and
//!   noticing when the file vanishes or turns read-only under us.

pub mod errors;
pub mod sqlite;
pub mod unit_of_work;

use std::{borrow::Cow, str::FromStr, sync::Arc, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::{
    SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{SqlitePool, SqlitePoolOptions},
};

pub use errors::{is_unique_violation, problem_for};
pub use unit_of_work::{Conn, Tx, UnitOfWork};

use crate::admin::{CheckFuture, ReadinessCheck};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite://path/to/file.db`. Secret: may hold a password.
    pub url: SecretString,
    /// Upper bound of pooled connections.
    pub max_connections: u32,
    /// How long a query waits for a free connection before failing fast.
    pub acquire_timeout_ms: u64,
    /// How long a statement waits for a lock another connection holds
    /// before it fails (and the client gets 503 with `Retry-After`):
    /// SQLite's busy timeout, PostgreSQL's `lock_timeout`.
    pub lock_timeout_ms: u64,
    /// SQLite only: create the database file when it does not exist. Off,
    /// a missing file is a startup error — a replica whose file was deleted
    /// must not come back on a new, empty database beside its peers.
    pub create_if_missing: bool,
}

impl DatabaseConfig {
    /// This config on another database (tests point the built-in defaults
    /// at a fresh database).
    #[must_use]
    pub fn with_url(mut self, url: &str) -> Self {
        self.url = SecretString::from(url.to_owned());
        self
    }

    /// This config, allowed to create a missing SQLite file.
    #[must_use]
    pub fn creating_if_missing(mut self) -> Self {
        self.create_if_missing = true;
        self
    }
}

/// A pool on one of the two supported backends.
#[derive(Debug, Clone)]
pub enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// How often [`Db::report_pool`] samples the pool.
const POOL_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// A service's database: the pool, and for SQLite the watch on its file.
#[derive(Debug, Clone)]
pub struct Db {
    pool: Pool,
    file: Option<Arc<sqlite::DatabaseFile>>,
    /// SQLite: this process's writers take turns here (see
    /// [`Db::write_turn`]).
    writers: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// Runs `$body` with `$pool` bound to whichever pool `$db` holds. The body is
/// compiled once per backend, so it must be valid SQL for both.
#[macro_export]
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db.pool() {
            $crate::db::Pool::Postgres($pool) => $body,
            $crate::db::Pool::Sqlite($pool) => $body,
        }
    };
}

/// The first line of a migration that runs outside a transaction of the
/// migrator's (it opens and commits its own).
pub const NO_TRANSACTION: &str = "-- no-transaction";

/// A migration embedded in the binary: `(version, description, sql)`.
pub type EmbeddedMigration = (i64, &'static str, &'static str);

/// A service's migrations for both backends.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub postgres: &'static [EmbeddedMigration],
    pub sqlite: &'static [EmbeddedMigration],
}

/// The migrator of one backend. Migrations the database has and this
/// binary does not know (a newer release applied them: a canary beside
/// the stable release, or a release rolled back) are let be, as Flyway
/// does by default: a release's migrations keep the previous release
/// working (expand, then contract in a later release), so the previous
/// binary may still start. A known migration whose text changed still
/// stops it.
fn migrator(migrations: &'static [EmbeddedMigration]) -> Migrator {
    let mut migrator = Migrator::with_migrations(
        migrations
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    // A migration that manages its own transaction (SQLite's
                    // table rebuild turns foreign keys off first, which it
                    // cannot do inside one) says so on its first line.
                    sql.starts_with(NO_TRANSACTION),
                )
            })
            .collect(),
    );
    migrator.set_ignore_missing(true);
    migrator
}

impl Db {
    /// Connects. A SQLite file is created (0600, directory 0700) only when
    /// `create_if_missing` says so.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, sqlx::Error> {
        let url = config.url.expose_secret();
        let acquire = Duration::from_millis(config.acquire_timeout_ms);
        let lock_timeout = Duration::from_millis(config.lock_timeout_ms);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?
                .options([("lock_timeout", format!("{}ms", lock_timeout.as_millis()))]);
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(acquire)
                .connect_with(options)
                .await?;
            Ok(Self {
                pool: Pool::Postgres(pool),
                file: None,
                writers: None,
            })
        } else if url.starts_with("sqlite:") {
            let (options, file) = sqlite::prepare(url, config.create_if_missing, lock_timeout)?;
            let recycle = file.clone();
            let pool = SqlitePoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(acquire)
                .before_acquire(move |_, meta| {
                    // Connections opened while the file was read-only stay
                    // read-only; once it is writable again they are replaced.
                    // None at all once the file is gone: writes there are lost.
                    let keep = !recycle.is_gone() && !recycle.opened_before_recovery(meta.age);
                    Box::pin(async move { Ok(keep) })
                })
                .after_connect({
                    let file = file.clone();
                    move |_, _| {
                        let gone = file.is_gone();
                        Box::pin(async move {
                            if gone {
                                Err(sqlx::Error::Io(std::io::Error::new(
                                    std::io::ErrorKind::NotFound,
                                    "the database file was deleted or replaced",
                                )))
                            } else {
                                Ok(())
                            }
                        })
                    }
                })
                .connect_with(options)
                .await?;
            Ok(Self {
                pool: Pool::Sqlite(pool),
                file: Some(file),
                writers: Some(Arc::default()),
            })
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
            .context("cannot open the database (database.url)")?;
        db.migrate(migrations)
            .await
            .context("database migration failed")?;
        let newer = db.newer_migrations(migrations).await.unwrap_or_default();
        if !newer.is_empty() {
            tracing::warn!(
                ?newer,
                "the database has migrations of a newer release; running on its schema"
            );
        }
        tracing::info!(backend = db.backend(), "database ready");
        Ok(db)
    }

    /// Versions of migrations applied to the database that `migrations`
    /// does not have (a newer release's).
    pub async fn newer_migrations(&self, migrations: &Migrations) -> Result<Vec<i64>, sqlx::Error> {
        let known = match &self.pool {
            Pool::Postgres(_) => migrations.postgres,
            Pool::Sqlite(_) => migrations.sqlite,
        };
        let latest = known
            .iter()
            .map(|(version, _, _)| *version)
            .max()
            .unwrap_or(0);
        let versions: Vec<(i64,)> = on_db!(self, pool => {
            sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE version > $1 ORDER BY version")
                .bind(latest)
                .fetch_all(pool)
                .await?
        });
        Ok(versions.into_iter().map(|(version,)| version).collect())
    }

    /// Applies the service's pending migrations.
    pub async fn migrate(
        &self,
        migrations: &Migrations,
    ) -> Result<(), sqlx::migrate::MigrateError> {
        match &self.pool {
            Pool::Postgres(pool) => migrator(migrations.postgres).run(pool).await,
            Pool::Sqlite(pool) => migrator(migrations.sqlite).run(pool).await,
        }
    }

    /// A turn to write. SQLite has one writer at a time, and a writer that
    /// finds the lock held sleeps in SQLite's busy handler — 1, 2, 5, 10…
    /// ms — before trying again: tail latency under load. Writers of this
    /// process queue here instead, in order and without sleeping, and hold
    /// the turn until their transaction ends. PostgreSQL needs none
    /// (writers of different rows do not wait for each other): `None`.
    pub async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.writers {
            Some(writers) => Some(Arc::clone(writers).lock_owned().await),
            None => None,
        }
    }

    /// The pool, for [`on_db!`](crate::on_db).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_db!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    /// Whether the database can serve reads *and writes* now: the server
    /// answers, and a SQLite file is still the one opened and is writable.
    pub async fn check_usable(&self) -> Result<(), String> {
        if let Some(file) = &self.file {
            file.check().await?;
        }
        self.ping().await.map_err(|err| err.to_string())
    }

    /// The readiness check for this database.
    pub fn readiness_check(&self) -> DatabaseCheck {
        DatabaseCheck(self.clone())
    }

    /// Background upkeep the database needs while the service runs (SQLite:
    /// WAL checkpoints), or `None`.
    pub fn upkeep(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let writers = self.writers.clone()?;
        self.file
            .as_ref()
            .filter(|file| file.is_on_disk())
            .map(|file| sqlite::upkeep(file.clone(), writers))
    }

    /// Publishes the pool's state every [`POOL_REPORT_INTERVAL`] while the
    /// service runs: `db_pool_connections{state="idle"|"in_use"}` and
    /// `db_pool_max_connections` (what the pool-exhaustion alert compares).
    pub async fn report_pool(self) {
        let idle = metrics::gauge!("db_pool_connections", "state" => "idle");
        let in_use = metrics::gauge!("db_pool_connections", "state" => "in_use");
        let max = metrics::gauge!("db_pool_max_connections");
        let mut ticks = tokio::time::interval(POOL_REPORT_INTERVAL);
        loop {
            ticks.tick().await;
            let (size, idle_now, max_now) = on_db!(self, pool => {
                (pool.size(), pool.num_idle(), pool.options().get_max_connections())
            });
            let idle_now = u32::try_from(idle_now).unwrap_or(u32::MAX).min(size);
            idle.set(f64::from(idle_now));
            in_use.set(f64::from(size - idle_now));
            max.set(f64::from(max_now));
        }
    }

    /// `postgres` or `sqlite`, for logs.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    pub async fn close(&self) {
        on_db!(self, pool => pool.close().await);
    }
}

impl<H> crate::app::Assembly<H> {
    /// Hands the service's database to the shell: its upkeep runs while the
    /// service does, and its pool closes once the service has drained.
    #[must_use]
    pub fn owning_database(mut self, db: Db) -> Self {
        if let Some(upkeep) = db.upkeep() {
            self.background.push(Box::pin(upkeep));
        }
        self.background.push(Box::pin(db.clone().report_pool()));
        let previous = self.on_stopped.take();
        self.on_stopped = Some(Box::pin(async move {
            if let Some(previous) = previous {
                previous.await;
            }
            db.close().await;
        }));
        self
    }
}

/// `database`: decides readiness — a service that cannot write its own
/// database cannot serve its routes.
#[derive(Debug, Clone)]
pub struct DatabaseCheck(Db);

impl ReadinessCheck for DatabaseCheck {
    fn name(&self) -> &'static str {
        "database"
    }

    fn check(&self) -> CheckFuture {
        let db = self.0.clone();
        Box::pin(async move { db.check_usable().await })
    }
}
