//! Login: sessions for correct credentials, one answer for every wrong one.

use portico_testkit::Backend;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{PASSWORD, TestApp, assert_tokens, assert_unauthorized, on_both_backends};

async fn login_with_the_email_in_other_letter_case_opens_a_session(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let registered = app.register_account("ann@example.com").await;

    // Act
    let response = app.login("ANN@Example.COM", PASSWORD).await;

    // Assert
    let tokens = assert_tokens(response, StatusCode::OK).await;
    assert_eq!(tokens.user_id, None, "only registration names the user id");
    assert_ne!(tokens.refresh_token, registered.refresh_token);
    assert_eq!(app.counts().await, (1, 2), "a second session");
    let profile = app.user_profile(&tokens.access_token).await;
    assert_eq!(profile.status(), StatusCode::OK);
}

async fn wrong_password_and_unknown_email_get_the_same_answer(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    app.register_account("ann@example.com").await;

    // Act
    let wrong_password = app.login("ann@example.com", "not the right password").await;
    let unknown_email = app.login("nobody@example.com", PASSWORD).await;

    // Assert
    let wrong_password = assert_unauthorized(wrong_password).await;
    let unknown_email = assert_unauthorized(unknown_email).await;
    for field in ["type", "title", "detail", "status"] {
        assert_eq!(wrong_password[field], unknown_email[field], "{field}");
    }
    let without_request_id = |mut problem: Value| {
        problem.as_object_mut().unwrap().remove("request_id");
        problem
    };
    assert_eq!(
        without_request_id(wrong_password),
        without_request_id(unknown_email)
    );
    assert_eq!(app.counts().await, (1, 1), "no session opened");
}

async fn too_short_password_is_refused_like_a_wrong_one(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    app.register_account("ann@example.com").await;

    // Act
    let response = app.login("ann@example.com", "short").await;

    // Assert
    let problem = assert_unauthorized(response).await;
    assert_eq!(problem["detail"], "invalid email or password");
    assert_eq!(app.counts().await, (1, 1));
}

async fn an_address_that_is_not_an_email_is_refused_like_an_unknown_one(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    app.register_account("ann@example.com").await;

    // Act: the registered address with surrounding spaces, and no address.
    let padded = app.login(" ann@example.com ", PASSWORD).await;
    let nonsense = app.login("not an email", PASSWORD).await;

    // Assert: one answer, as for an unknown email; no session opened.
    for response in [padded, nonsense] {
        let problem = assert_unauthorized(response).await;
        assert_eq!(problem["detail"], "invalid email or password");
    }
    assert_eq!(app.counts().await, (1, 1));
}

on_both_backends!(
    a_hash_made_with_a_weaker_cost_is_remade_at_the_next_login,
    an_address_that_is_not_an_email_is_refused_like_an_unknown_one,
    login_with_the_email_in_other_letter_case_opens_a_session,
    wrong_password_and_unknown_email_get_the_same_answer,
    too_short_password_is_refused_like_a_wrong_one,
);

async fn a_hash_made_with_a_weaker_cost_is_remade_at_the_next_login(backend: Backend) {
    // Arrange: the service now asks for more memory than the stored hash used.
    let app = TestApp::spawn_with_config(backend, |config| {
        config.password_hashing.memory_kib = 20_480;
    })
    .await;
    let tokens = app.register_account("ann@example.com").await;
    let user_id = tokens.user_id.unwrap();
    let weak = weak_hash(PASSWORD);
    portico_common::on_db!(app.store.db(), pool => {
        sqlx::query("UPDATE credentials SET password_hash = $1 WHERE user_id = $2")
            .bind(&weak)
            .bind(user_id)
            .execute(pool)
            .await
            .unwrap();
    });

    // Act
    let response = app.login("ann@example.com", PASSWORD).await;

    // Assert: signed in, and the stored hash now carries the configured cost.
    assert_eq!(response.status(), StatusCode::OK);
    let stored = app
        .store
        .password_credential(user_id)
        .await
        .unwrap()
        .unwrap()
        .hash;
    assert!(stored.contains("m=20480"), "{stored}");
    assert_eq!(
        app.login("ann@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

/// An argon2id hash at the old floor (m=19456, t=2, p=1).
fn weak_hash(password: &str) -> String {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
    let params = Params::new(19_456, 2, 1, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes())
        .unwrap()
        .to_string()
}
