//! What a storage error means for the client.
//!
//! Contention (a lock held too long, a busy SQLite file, no free pooled
//! connection) and an unreachable server are transient: the client gets
//! 503 with `Retry-After` and may try again. Everything else is our fault
//! (500). Either way the cause travels with the problem for the log line
//! and never reaches the client.

use std::borrow::Cow;

use sqlx::{error::DatabaseError, postgres::PgDatabaseError, sqlite::SqliteError};

use crate::Problem;

/// Seconds a client is asked to wait after a transient storage failure.
const RETRY_AFTER_SECS: u32 = 1;

/// How a storage error should be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Another transaction holds what we need; retrying soon will likely work.
    Contended,
    /// The database cannot be reached or cannot take writes right now.
    Unavailable,
    /// A bug or a broken invariant: retrying does not help.
    Internal,
}

/// Classifies `err` on either backend.
pub fn classify(err: &sqlx::Error) -> Failure {
    match err {
        sqlx::Error::PoolTimedOut => Failure::Contended,
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => Failure::Unavailable,
        // The peer closed or garbled the conversation — a server shutting
        // down, or a proxy (pgbouncer, a load balancer) in front of one
        // that is down, accepts and hangs up: sqlx reads the silence as a
        // protocol error. Transient like a refused connection.
        sqlx::Error::Protocol(_) => Failure::Unavailable,
        sqlx::Error::Database(db_err) => classify_database_error(db_err.as_ref()),
        _ => Failure::Internal,
    }
}

fn classify_database_error(err: &dyn DatabaseError) -> Failure {
    if let Some(sqlite) = err.try_downcast_ref::<SqliteError>() {
        return classify_sqlite(sqlite.code());
    }
    if let Some(postgres) = err.try_downcast_ref::<PgDatabaseError>() {
        return classify_sqlstate(postgres.code());
    }
    Failure::Internal
}

/// SQLite result codes (the low byte of the extended code).
fn classify_sqlite(code: Option<Cow<'_, str>>) -> Failure {
    const BUSY: i32 = 5;
    const LOCKED: i32 = 6;
    const READONLY: i32 = 8;
    const IOERR: i32 = 10;
    const FULL: i32 = 13;
    const CANTOPEN: i32 = 14;
    let Some(code) = code.and_then(|code| code.parse::<i32>().ok()) else {
        return Failure::Internal;
    };
    match code & 0xff {
        BUSY | LOCKED => Failure::Contended,
        READONLY | IOERR | FULL | CANTOPEN => Failure::Unavailable,
        _ => Failure::Internal,
    }
}

/// PostgreSQL SQLSTATEs.
fn classify_sqlstate(code: &str) -> Failure {
    match code {
        // lock_not_available (lock_timeout), serialization_failure,
        // deadlock_detected, too_many_connections.
        "55P03" | "40001" | "40P01" | "53300" => Failure::Contended,
        // read_only_sql_transaction (a standby), cannot_connect_now,
        // admin/crash shutdown, disk full, out of memory.
        "25006" | "57P01" | "57P02" | "57P03" | "53100" | "53200" => Failure::Unavailable,
        // Connection exceptions.
        code if code.starts_with("08") => Failure::Unavailable,
        _ => Failure::Internal,
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

/// The problem a client sees for a storage error: 503 with `Retry-After`
/// when retrying can help, 500 otherwise. The cause rides along for the log.
pub fn problem_for(err: &sqlx::Error) -> Problem {
    match classify(err) {
        Failure::Contended => Problem::service_unavailable("the database is busy; retry shortly")
            .retry_after(RETRY_AFTER_SECS),
        Failure::Unavailable => {
            Problem::service_unavailable("the database is unavailable; retry shortly")
                .retry_after(RETRY_AFTER_SECS)
        }
        Failure::Internal => Problem::internal(),
    }
    .with_cause(format!("database: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_busy_and_locked_are_contention_whatever_the_extended_code() {
        for code in ["5", "517", "6", "262"] {
            assert_eq!(
                classify_sqlite(Some(code.into())),
                Failure::Contended,
                "{code}"
            );
        }
    }

    #[test]
    fn sqlite_read_only_is_unavailable() {
        // SQLITE_READONLY and SQLITE_READONLY_DBMOVED.
        for code in ["8", "1032"] {
            assert_eq!(
                classify_sqlite(Some(code.into())),
                Failure::Unavailable,
                "{code}"
            );
        }
    }

    #[test]
    fn sqlite_constraint_is_internal() {
        assert_eq!(classify_sqlite(Some("2067".into())), Failure::Internal);
    }

    #[test]
    fn a_server_hanging_up_mid_handshake_is_unavailable() {
        let err = sqlx::Error::Protocol(
            "unexpected response from SSLRequest: 0x00 (sqlx_postgres::connection::tls:95)".into(),
        );
        assert_eq!(classify(&err), Failure::Unavailable);
    }

    #[test]
    fn postgres_lock_timeout_and_connection_errors_are_transient() {
        assert_eq!(classify_sqlstate("55P03"), Failure::Contended);
        assert_eq!(classify_sqlstate("08006"), Failure::Unavailable);
        assert_eq!(classify_sqlstate("23505"), Failure::Internal);
    }

    #[test]
    fn pool_timeout_is_a_503_with_retry_after() {
        let problem = problem_for(&sqlx::Error::PoolTimedOut);
        assert_eq!(problem.status, 503);
        assert_eq!(problem.retry_after_secs, Some(RETRY_AFTER_SECS));
        assert!(problem.cause.is_some());
    }
}
