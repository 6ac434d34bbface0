//! The caller's own sessions and password: list, end one, end all others,
//! change the password (which ends all others).

use portico_testkit::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    PASSWORD, TestApp, assert_problem, assert_tokens, assert_unauthorized, error_fields,
    on_both_backends,
};

/// The session id of a token response's access token.
fn session_of(tokens: &portico_auth::http::TokenResponse) -> String {
    token_claims(&tokens.access_token)["sid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `DELETE /v1/auth/sessions/{id}` with `token`.
async fn end_session(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    app.send_as(
        Method::DELETE,
        &format!("/v1/auth/sessions/{id}"),
        Some(token),
        None,
    )
    .await
}

async fn list(app: &TestApp, token: &str) -> Vec<Value> {
    let response = app
        .send_as(Method::GET, "/v1/auth/sessions", Some(token), None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

async fn the_list_shows_live_sessions_newest_first_marking_the_current_one(backend: Backend) {
    // Arrange: three sessions, one of them logged out.
    let app = TestApp::spawn(backend).await;
    let first = app.register_account("ann@example.com").await;
    let ended = app.login_from("ann@example.com", "Ended/1").await;
    let phone = app.login_from("ann@example.com", "Phone/2").await;
    app.logout(Some(&ended.access_token)).await;

    // Act
    let items = list(&app, &phone.access_token).await;

    // Assert
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0]["user_agent"], "Phone/2");
    assert_eq!(items[0]["current"], true);
    assert_eq!(items[0]["ip"], "127.0.0.1");
    assert_eq!(items[1]["current"], false);
    for item in &items {
        for field in ["id", "created_at", "last_used_at", "expires_at"] {
            assert!(item[field].is_string(), "{field}: {item}");
        }
    }
    let first_id = items[1]["id"].as_str().unwrap();
    let claims = token_claims(&first.access_token);
    assert_eq!(claims["sid"], first_id);
}

use portico_testkit::issuer::claims_of as token_claims;

async fn ending_one_of_my_sessions_stops_its_refresh_token(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let laptop = app.register_account("ann@example.com").await;
    let phone = app.login_from("ann@example.com", "Phone/2").await;
    let phone_id = session_of(&phone);

    // Act
    let response = end_session(&app, &laptop.access_token, &phone_id).await;

    // Assert
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_unauthorized(app.refresh(&phone.refresh_token).await).await;
    assert_eq!(list(&app, &laptop.access_token).await.len(), 1);
    assert_tokens(app.refresh(&laptop.refresh_token).await, StatusCode::OK).await;
}

async fn another_users_session_is_not_found_and_keeps_working(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let ann = app.register_account("ann@example.com").await;
    let bob = app.register_account("bob@example.com").await;
    let bobs_session = session_of(&bob);

    // Act
    let theirs = end_session(&app, &ann.access_token, &bobs_session).await;
    let unknown = end_session(&app, &ann.access_token, &Uuid::now_v7().to_string()).await;
    let not_an_id = end_session(&app, &ann.access_token, "not-a-uuid").await;

    // Assert: one answer for all three, and Bob's session lives on.
    for response in [theirs, unknown, not_an_id] {
        assert_problem(response, StatusCode::NOT_FOUND).await;
    }
    assert_tokens(app.refresh(&bob.refresh_token).await, StatusCode::OK).await;
}

async fn ending_all_other_sessions_keeps_the_current_one(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let first = app.register_account("ann@example.com").await;
    let second = app.login_from("ann@example.com", "B/1").await;
    let current = app.login_from("ann@example.com", "C/1").await;

    // Act
    let response = app
        .send_as(
            Method::DELETE,
            "/v1/auth/sessions",
            Some(&current.access_token),
            None,
        )
        .await;

    // Assert
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_unauthorized(app.refresh(&first.refresh_token).await).await;
    assert_unauthorized(app.refresh(&second.refresh_token).await).await;
    assert_tokens(app.refresh(&current.refresh_token).await, StatusCode::OK).await;
}

async fn changing_the_password_ends_every_other_session(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let other = app.register_account("ann@example.com").await;
    let current = app.login_from("ann@example.com", "C/1").await;
    let body = json!({"current_password": PASSWORD, "new_password": "a much better passphrase"});

    // Act
    let response = app
        .send_as(
            Method::POST,
            "/v1/auth/password",
            Some(&current.access_token),
            Some(&body),
        )
        .await;

    // Assert
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_unauthorized(app.refresh(&other.refresh_token).await).await;
    assert_tokens(app.refresh(&current.refresh_token).await, StatusCode::OK).await;
    assert_unauthorized(app.login("ann@example.com", PASSWORD).await).await;
    assert_tokens(
        app.login("ann@example.com", "a much better passphrase")
            .await,
        StatusCode::OK,
    )
    .await;
}

async fn a_wrong_current_password_is_403_and_changes_nothing(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let other = app.register_account("ann@example.com").await;
    let current = app.login_from("ann@example.com", "C/1").await;
    let body =
        json!({"current_password": "not the password", "new_password": "a much better passphrase"});

    // Act
    let response = app
        .send_as(
            Method::POST,
            "/v1/auth/password",
            Some(&current.access_token),
            Some(&body),
        )
        .await;

    // Assert
    assert_problem(response, StatusCode::FORBIDDEN).await;
    assert_tokens(app.refresh(&other.refresh_token).await, StatusCode::OK).await;
    assert_tokens(app.login("ann@example.com", PASSWORD).await, StatusCode::OK).await;
}

async fn a_weak_new_password_is_422_and_changes_nothing(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let current = app.register_account("ann@example.com").await;
    let other = app.login("ann@example.com", PASSWORD).await;
    let other = assert_tokens(other, StatusCode::OK).await;
    let cases = [
        ("short", "at least 8"),
        ("iloveyou2", "too common"),
        // The account's email name, checked at change time too.
        ("ANN-the-great", "email"),
    ];

    for (new_password, reason) in cases {
        // Act
        let body = json!({"current_password": PASSWORD, "new_password": new_password});
        let response = app
            .send_as(
                Method::POST,
                "/v1/auth/password",
                Some(&current.access_token),
                Some(&body),
            )
            .await;

        // Assert
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(error_fields(&problem), ["new_password"]);
        let message = problem["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{new_password}: {message}");
    }
    // The old password still works and no other session ended.
    assert_tokens(app.refresh(&other.refresh_token).await, StatusCode::OK).await;
    assert_tokens(app.login("ann@example.com", PASSWORD).await, StatusCode::OK).await;
}

async fn every_endpoint_refuses_a_missing_token_and_changes_nothing(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let tokens = app.register_account("ann@example.com").await;
    let sid = session_of(&tokens);
    let body = json!({"current_password": PASSWORD, "new_password": "a much better passphrase"});

    // Act + Assert
    for (method, path, body) in [
        (Method::GET, "/v1/auth/sessions".to_owned(), None),
        (Method::DELETE, "/v1/auth/sessions".to_owned(), None),
        (Method::DELETE, format!("/v1/auth/sessions/{sid}"), None),
        (Method::POST, "/v1/auth/password".to_owned(), Some(&body)),
    ] {
        assert_unauthorized(app.send_as(method, &path, None, body).await).await;
    }
    assert_tokens(app.refresh(&tokens.refresh_token).await, StatusCode::OK).await;
    assert_tokens(app.login("ann@example.com", PASSWORD).await, StatusCode::OK).await;
}

on_both_backends!(
    the_list_shows_live_sessions_newest_first_marking_the_current_one,
    ending_one_of_my_sessions_stops_its_refresh_token,
    another_users_session_is_not_found_and_keeps_working,
    ending_all_other_sessions_keeps_the_current_one,
    changing_the_password_ends_every_other_session,
    a_wrong_current_password_is_403_and_changes_nothing,
    a_weak_new_password_is_422_and_changes_nothing,
    every_endpoint_refuses_a_missing_token_and_changes_nothing,
    a_logged_out_sessions_token_is_refused_by_auth_at_once,
    the_feed_pages_through_revocations_that_share_one_timestamp,
);

mod feed {
    //! `/internal/revocations`, the feed gateways and services follow.

    use portico_testkit::Backend;
    use reqwest::{Method, StatusCode};
    use serde_json::Value;

    use super::token_claims;
    use crate::helpers::{TestApp, assert_problem};

    #[tokio::test]
    async fn a_logout_appears_in_the_feed_and_since_filters_older_ones() {
        // Arrange
        let app = TestApp::spawn(Backend::Sqlite).await;
        let tokens = app.register_account("ann@example.com").await;
        let sid = token_claims(&tokens.access_token)["sid"].clone();
        let empty: Value = app.get("/internal/revocations").await.json().await.unwrap();
        assert_eq!(empty["items"], serde_json::json!([]));

        // Act
        app.logout(Some(&tokens.access_token)).await;
        let feed: Value = app.get("/internal/revocations").await.json().await.unwrap();
        let later = app
            .send_as(
                Method::GET,
                "/internal/revocations?since=2999-01-01T00:00:00Z",
                None,
                None,
            )
            .await;

        // Assert
        assert_eq!(feed["items"][0]["sid"], sid, "{feed}");
        assert!(feed["items"][0]["revoked_at"].is_string());
        assert_eq!(feed["complete"], true);
        let later: Value = later.json().await.unwrap();
        assert_eq!(later["items"], serde_json::json!([]));
    }

    #[tokio::test]
    async fn a_since_that_is_not_a_time_is_400() {
        let app = TestApp::spawn(Backend::Sqlite).await;
        let response = app.get("/internal/revocations?since=yesterday").await;
        assert_problem(response, StatusCode::BAD_REQUEST).await;
    }
}

async fn a_logged_out_sessions_token_is_refused_by_auth_at_once(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let ended = app.register_account("ann@example.com").await;
    app.logout(Some(&ended.access_token)).await;

    // Act
    let listing = app
        .send_as(
            Method::GET,
            "/v1/auth/sessions",
            Some(&ended.access_token),
            None,
        )
        .await;
    let again = app.logout(Some(&ended.access_token)).await;

    // Assert: auth checks the session itself, no feed to wait for.
    assert_unauthorized(listing).await;
    assert_unauthorized(again).await;
}

async fn the_feed_pages_through_revocations_that_share_one_timestamp(backend: Backend) {
    // Arrange: five sessions ended by one "end all others" — one timestamp.
    let app = TestApp::spawn(backend).await;
    let keep = app.register_account("ann@example.com").await;
    for _ in 0..5 {
        app.login_from("ann@example.com", "X/1").await;
    }
    let keep_sid: Uuid = token_claims(&keep.access_token)["sid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let user: Uuid = keep.user_id.unwrap();
    let at = time::OffsetDateTime::now_utc();
    app.store
        .revoke_other_sessions(
            user,
            keep_sid,
            at,
            portico_auth::domain::audit::AuditEvent::new(
                portico_auth::domain::audit::AuditKind::SessionRevoked,
                at,
                &Default::default(),
            ),
        )
        .await
        .unwrap();

    // Act: pages of two, each continuing from the last (revoked_at, id).
    let since = at - time::Duration::seconds(1);
    let mut seen = Vec::new();
    let mut after = None;
    let mut cursor = since;
    loop {
        let page = app.store.revocations_since(cursor, after, 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        let (last_sid, last_at) = *page.last().unwrap();
        seen.extend(page.iter().map(|(sid, _)| *sid));
        (cursor, after) = (last_at, Some(last_sid));
        assert!(seen.len() <= 5, "a page repeated: {seen:?}");
    }

    // Assert: all five, each once.
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5);
}
