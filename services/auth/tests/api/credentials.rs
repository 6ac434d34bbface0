//! The credential's status column: every value the code reads is one it
//! knows. An unknown status (a newer schema, a manual edit) is an error —
//! never taken for a pending registration that the next sign-up may take
//! over.

use portico_common::db::Pool;
use portico_testkit::Backend;
use reqwest::StatusCode;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem, on_both_backends, registration};

const INSERT: &str = "INSERT INTO credentials \
    (user_id, email_lower, password_hash, status, created_at, updated_at) \
    VALUES ($1, $2, 'x', $3, $4, $4)";

/// `INSERT` bound for a credential with `email` and `status`.
macro_rules! insert_credential {
    ($email:expr, $status:expr, $at:expr) => {
        sqlx::query(INSERT)
            .bind(Uuid::now_v7())
            .bind($email)
            .bind($status)
            .bind($at)
    };
}

/// Writes a credential with `status`, bypassing the CHECK constraint as a
/// newer schema (or a hand edit) would; the row looks long stale.
async fn insert_with_unknown_status(app: &TestApp, email: &str, status: &str) {
    let long_ago = OffsetDateTime::now_utc() - Duration::days(1);
    match app.store.db().pool() {
        Pool::Postgres(pool) => {
            sqlx::query("ALTER TABLE credentials DROP CONSTRAINT credentials_status_check")
                .execute(pool)
                .await
                .unwrap();
            insert_credential!(email, status, long_ago)
                .execute(pool)
                .await
                .unwrap();
        }
        Pool::Sqlite(pool) => {
            let mut connection = pool.acquire().await.unwrap();
            sqlx::query("PRAGMA ignore_check_constraints = ON")
                .execute(&mut *connection)
                .await
                .unwrap();
            insert_credential!(email, status, long_ago)
                .execute(&mut *connection)
                .await
                .unwrap();
            sqlx::query("PRAGMA ignore_check_constraints = OFF")
                .execute(&mut *connection)
                .await
                .unwrap();
        }
    }
}

async fn the_database_refuses_a_status_the_code_does_not_know(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;

    // Act
    let inserted = portico_common::on_db!(app.store.db(), pool => {
        insert_credential!("ann@example.com", "disabled", OffsetDateTime::now_utc())
            .execute(pool)
            .await
            .map(|_| ())
    });

    // Assert
    let err = inserted.unwrap_err();
    assert!(
        err.as_database_error()
            .is_some_and(|e| e.is_check_violation()),
        "{err}"
    );
}

async fn an_unknown_status_is_an_error_not_a_pending_registration(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    insert_with_unknown_status(&app, "ann@example.com", "disabled").await;

    // Act
    let state = app.store.credential_state("ann@example.com").await;
    let response = app.register(&registration("ann@example.com")).await;

    // Assert: an error, and the account is not handed to a new sign-up.
    assert!(state.is_err(), "{state:?}");
    assert_problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_eq!(app.counts().await, (1, 0), "nothing taken over");
}

on_both_backends!(
    the_database_refuses_a_status_the_code_does_not_know,
    an_unknown_status_is_an_error_not_a_pending_registration,
);
