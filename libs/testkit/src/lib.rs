//! Helpers for Portico's tests.
//!
//! The servers come from `scripts/test.sh`, which starts throwaway
//! PostgreSQL and Redis instances (or uses the ones given) and exports
//! `PORTICO_TEST_POSTGRES_URL` and `PORTICO_TEST_REDIS_URL`. A test that
//! needs a server and finds no URL fails loudly: nothing is skipped.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test support: fail loudly

use std::{fmt, future::Future, path::PathBuf, time::Duration};

use sqlx::{AssertSqlSafe, Connection, PgConnection, SqliteConnection};

pub mod dns;
pub mod fields;
pub mod http;
pub mod issuer;
pub mod schema;
pub mod smtp;
pub mod tcp;
pub mod tls;
pub mod webhooks;

pub const POSTGRES_URL_VAR: &str = "PORTICO_TEST_POSTGRES_URL";
pub const REDIS_URL_VAR: &str = "PORTICO_TEST_REDIS_URL";

/// The key-encryption key test auth services seal signing keys under
/// (`signing_keys.encryption_key`; 32 bytes, base64). Never a real secret.
pub const TEST_KEK: &str = "cG9ydGljbyB0ZXN0IGtlazogbm90IGEgc2VjcmV0ISE=";

/// The Standard Webhooks secret the user service signs its events to auth
/// with in tests (auth's `events.secrets`).
pub const TEST_WEBHOOK_SECRET: &str = "whsec_dGVzdC13ZWJob29rLXNlY3JldC1ub3QtZm9yLXVzZQ==";

fn required_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with `scripts/test.sh`, which starts PostgreSQL and Redis")
    })
}

/// URL of the test Redis server.
pub fn redis_url() -> String {
    required_env(REDIS_URL_VAR)
}

/// Which relational backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        })
    }
}

/// A database of its own for one test: a new PostgreSQL database on the
/// test server, or a SQLite file in a temporary directory (removed on drop).
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => Self {
                url: fresh_postgres_database().await,
                backend,
                _dir: None,
            },
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path: PathBuf = dir.path().join("test.db");
                Self {
                    url: format!("sqlite://{}", path.display()),
                    backend,
                    _dir: Some(dir),
                }
            }
        }
    }
}

/// A transaction holding the write lock of a database (a long migration, a
/// stuck batch job, `BEGIN EXCLUSIVE` from the sqlite3 shell): reads go on,
/// writes wait for it. Released by [`WriteLock::release`].
#[derive(Debug)]
pub enum WriteLock {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

impl WriteLock {
    /// Takes the lock on `table` (PostgreSQL) or the whole file (SQLite).
    /// `table` is a literal of the calling test.
    pub async fn hold(database: &TestDatabase, table: &'static str) -> Self {
        match database.backend {
            Backend::Postgres => {
                let mut connection = PgConnection::connect(&database.url).await.expect("connect");
                sqlx::query("BEGIN")
                    .execute(&mut connection)
                    .await
                    .expect("begin");
                sqlx::query(AssertSqlSafe(format!(
                    "LOCK TABLE {table} IN EXCLUSIVE MODE"
                )))
                .execute(&mut connection)
                .await
                .expect("lock table");
                Self::Postgres(connection)
            }
            Backend::Sqlite => {
                let mut connection = SqliteConnection::connect(&database.url)
                    .await
                    .expect("connect");
                sqlx::query("BEGIN EXCLUSIVE")
                    .execute(&mut connection)
                    .await
                    .expect("begin exclusive");
                Self::Sqlite(connection)
            }
        }
    }

    /// Rolls back and lets go.
    pub async fn release(self) {
        match self {
            Self::Postgres(mut connection) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut connection)
                    .await
                    .expect("rollback");
                connection.close().await.ok();
            }
            Self::Sqlite(mut connection) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut connection)
                    .await
                    .expect("rollback");
                connection.close().await.ok();
            }
        }
    }
}

/// Creates an empty database on the test PostgreSQL server; returns its URL.
pub async fn fresh_postgres_database() -> String {
    let admin_url = required_env(POSTGRES_URL_VAR);
    let name = format!("portico_test_{}", uuid::Uuid::new_v4().simple());
    let mut connection = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to {POSTGRES_URL_VAR}: {err}"));
    // The name is generated above from hex digits only.
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut connection)
        .await
        .expect("create test database");
    connection.close().await.ok();
    let mut url = url::Url::parse(&admin_url).expect("postgres url");
    url.set_path(&name);
    url.to_string()
}

/// Polls `check` until it returns `Some`, failing the test with `what` when
/// `deadline` passes. The way tests wait: never a fixed sleep.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= give_up {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
