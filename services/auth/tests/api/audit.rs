//! The audit log: every security event recorded with who, when and from
//! where, in the same transaction as the change; read by admins, newest
//! first, a page at a time.

use portico_auth::{
    domain::audit::{AuditEvent, AuditKind},
    storage::AuditQuery,
};
use portico_common::{db::Pool, on_db};
use portico_testkit::{Backend, issuer::claims_of};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::{
    admin::app_with_admin,
    helpers::{PASSWORD, TestApp, assert_problem, assert_tokens, error_fields, on_both_backends},
};

/// Every recorded event of `kind`, newest first (read from the store).
pub async fn events_of_kind(app: &TestApp, kind: AuditKind) -> Vec<AuditEvent> {
    app.store
        .audit_events(&AuditQuery {
            kind: Some(kind),
            limit: 1_000,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
}

/// `GET /v1/auth/admin/audit?{query}` as `token`.
async fn audit_page(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.send_as(
        Method::GET,
        &format!("/v1/auth/admin/audit?{query}"),
        Some(token),
        None,
    )
    .await
}

async fn audit_json(app: &TestApp, token: &str, query: &str) -> Value {
    let response = audit_page(app, token, query).await;
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    response.json().await.unwrap()
}

fn types(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["type"].as_str().unwrap())
        .collect()
}

async fn sign_in_events_are_recorded_with_who_when_and_from_where(backend: Backend) {
    // Arrange
    let (app, admin) = app_with_admin(backend).await;
    let ann = app.register_account("ann@example.com").await;
    let ann_id = claims_of(&ann.access_token)["sub"]
        .as_str()
        .unwrap()
        .to_owned();

    // Act: a wrong password, a sign-in, a sign-out — from a known client.
    let send_login = |password: &'static str, request_id: &'static str| {
        app.client
            .post(format!("{}/v1/auth/login", app.api))
            .header(header::USER_AGENT, "audit-test/1.0")
            .header("x-request-id", request_id)
            .json(&json!({"email": "ann@example.com", "password": password}))
            .send()
    };
    assert_eq!(
        send_login("not the password", "req-failed")
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let session = assert_tokens(
        send_login(PASSWORD, "req-ok").await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        app.logout(Some(&session.access_token)).await.status(),
        StatusCode::NO_CONTENT
    );

    // Assert
    let page = audit_json(&app, &admin, &format!("user_id={ann_id}")).await;
    assert_eq!(
        types(&page),
        ["logout", "login_succeeded", "login_failed", "registered"]
    );
    let items = page["items"].as_array().unwrap();
    let failed = &items[2];
    assert_eq!(failed["user_id"], ann_id.as_str());
    assert_eq!(failed["ip"], "127.0.0.1");
    assert_eq!(failed["user_agent"], "audit-test/1.0");
    assert_eq!(failed["request_id"], "req-failed");
    let sid = claims_of(&session.access_token)["sid"].clone();
    assert_eq!(items[1]["session_id"], sid);
    assert_eq!(items[0]["session_id"], sid);
    assert_eq!(page["next_cursor"], Value::Null);
    // A sign-in for an unknown email is recorded without a user.
    app.login("nobody@example.com", PASSWORD).await;
    let failed = audit_json(&app, &admin, "type=login_failed").await;
    assert_eq!(failed["items"][0]["user_id"], Value::Null);
    assert_eq!(failed["items"].as_array().unwrap().len(), 2);
}

async fn account_changes_are_recorded_with_the_actor(backend: Backend) {
    // Arrange
    let (app, admin) = app_with_admin(backend).await;
    let admin_id = claims_of(&admin)["sub"].as_str().unwrap().to_owned();
    let ann = app.register_account("ann@example.com").await;
    let ann_id = claims_of(&ann.access_token)["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = assert_tokens(app.login("ann@example.com", PASSWORD).await, StatusCode::OK).await;

    // Act
    let body = json!({"current_password": PASSWORD, "new_password": "vellum otter quarry"});
    let changed = app
        .send_as(
            Method::POST,
            "/v1/auth/password",
            Some(&ann.access_token),
            Some(&body),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let granted = app
        .send_as(
            Method::PUT,
            &format!("/v1/auth/admin/users/{ann_id}/roles/admin"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(granted.status(), StatusCode::NO_CONTENT);

    // Assert
    let page = audit_json(&app, &admin, &format!("user_id={ann_id}")).await;
    assert_eq!(&types(&page)[..2], ["role_granted", "password_changed"]);
    let grant = &page["items"][0];
    assert_eq!(grant["actor"], format!("user:{admin_id}"));
    assert_eq!(grant["detail"], "admin");
    // The other session ended with the password change; it is not a logout.
    assert_problem(
        app.refresh(&other.refresh_token).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

async fn pages_follow_the_cursor_without_gaps_or_repeats(backend: Backend) {
    // Arrange: the admin's registration plus five failed sign-ins.
    let (app, admin) = app_with_admin(backend).await;
    for _ in 0..5 {
        app.login("root@example.com", "not the password").await;
    }
    let everything = audit_json(&app, &admin, "limit=200").await;
    let all_ids: Vec<&Value> = everything["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["id"])
        .collect();
    assert_eq!(all_ids.len(), 6);

    // Act: pages of two.
    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let page = audit_json(&app, &admin, &query).await;
        let items = page["items"].as_array().unwrap().clone();
        assert!(items.len() <= 2);
        seen.extend(items.into_iter().map(|item| item["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=2&cursor={cursor}"),
            None => break,
        }
    }

    // Assert
    assert_eq!(seen.iter().collect::<Vec<_>>(), all_ids);
    let failed = audit_json(&app, &admin, "type=login_failed&limit=200").await;
    assert_eq!(types(&failed), ["login_failed"; 5]);
}

async fn malformed_audit_queries_are_400_naming_each_parameter(backend: Backend) {
    // Arrange
    let (app, admin) = app_with_admin(backend).await;

    // Act + Assert
    for (query, fields) in [
        ("user_id=ann", vec!["user_id"]),
        ("type=login", vec!["type"]),
        ("limit=0", vec!["limit"]),
        ("limit=201", vec!["limit"]),
        ("limit=ten", vec!["limit"]),
        ("cursor=yesterday", vec!["cursor"]),
        (
            "user_id=1&type=x&limit=-1&cursor=2",
            vec!["user_id", "cursor", "type", "limit"],
        ),
    ] {
        let problem = assert_problem(
            audit_page(&app, &admin, query).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(error_fields(&problem), fields, "{query}");
    }
}

/// Makes every insert into `audit_events` fail (or lets them through again).
async fn break_audit_inserts(app: &TestApp, broken: bool) {
    let (postgres, sqlite) = if broken {
        (
            "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'audit refused by the test'; END $$; \
             CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events \
             FOR EACH ROW EXECUTE FUNCTION refuse_audit();",
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events \
             BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END;",
        )
    } else {
        (
            "DROP TRIGGER refuse_audit ON audit_events; DROP FUNCTION refuse_audit();",
            "DROP TRIGGER refuse_audit;",
        )
    };
    let result = match app.store.db().pool() {
        Pool::Postgres(pool) => sqlx::raw_sql(postgres).execute(pool).await.map(|_| ()),
        Pool::Sqlite(pool) => sqlx::raw_sql(sqlite).execute(pool).await.map(|_| ()),
    };
    result.unwrap();
}

async fn a_change_and_its_audit_row_commit_or_roll_back_together(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let ann = app.register_account("ann@example.com").await;
    break_audit_inserts(&app, true).await;

    // Act: the logout cannot be recorded.
    let refused = app.logout(Some(&ann.access_token)).await;

    // Assert: so it did not happen — the session lives on.
    assert!(refused.status().is_server_error(), "{}", refused.status());
    assert!(events_of_kind(&app, AuditKind::Logout).await.is_empty());
    let ann = assert_tokens(app.refresh(&ann.refresh_token).await, StatusCode::OK).await;

    // Once recording works again, the change and its record land together.
    break_audit_inserts(&app, false).await;
    assert_eq!(
        app.logout(Some(&ann.access_token)).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(events_of_kind(&app, AuditKind::Logout).await.len(), 1);
    assert_problem(
        app.refresh(&ann.refresh_token).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

async fn the_audit_log_cannot_be_edited_or_deleted(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    app.register_account("ann@example.com").await;
    let db = app.store.db();

    // Act
    let update = on_db!(db, pool => sqlx::query("UPDATE audit_events SET type = 'nothing'").execute(pool).await.map(|_| ()));
    let delete =
        on_db!(db, pool => sqlx::query("DELETE FROM audit_events").execute(pool).await.map(|_| ()));

    // Assert
    assert!(update.unwrap_err().to_string().contains("append-only"));
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    assert_eq!(events_of_kind(&app, AuditKind::Registered).await.len(), 1);
}

on_both_backends!(
    sign_in_events_are_recorded_with_who_when_and_from_where,
    account_changes_are_recorded_with_the_actor,
    pages_follow_the_cursor_without_gaps_or_repeats,
    malformed_audit_queries_are_400_naming_each_parameter,
    a_change_and_its_audit_row_commit_or_roll_back_together,
    the_audit_log_cannot_be_edited_or_deleted,
);
