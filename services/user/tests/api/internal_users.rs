//! `/internal/users`: profile creation by other services, and the read
//! auth's registration reconciler asks.

use portico_testkit::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    TestApp, assert_problem, assert_unauthorized, error_fields, on_both_backends,
};

fn profile_request(id: Uuid) -> Value {
    json!({"id": id, "email": "ann@example.com", "display_name": "Ann"})
}

async fn service_token_creates_with_201_and_a_retry_answers_200(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let token = app.issuer.service_token();
    let id = Uuid::now_v7();

    // Act
    let first = app.create_user(Some(&token), &profile_request(id)).await;
    let first_status = first.status();
    let first_body: Value = first.json().await.unwrap();
    let retry = app.create_user(Some(&token), &profile_request(id)).await;
    let retry_status = retry.status();
    let retry_body: Value = retry.json().await.unwrap();

    // Assert
    assert_eq!(first_status, StatusCode::CREATED);
    assert_eq!(first_body["id"], id.to_string());
    assert_eq!(first_body["email"], "ann@example.com");
    assert_eq!(first_body["display_name"], "Ann");
    assert_eq!(retry_status, StatusCode::OK);
    assert_eq!(retry_body, first_body, "a retry returns the same profile");
    assert_eq!(app.store.count().await.unwrap(), 1);
}

async fn missing_token_is_401_and_creates_nothing(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;

    // Act
    let response = app
        .create_user(None, &profile_request(Uuid::now_v7()))
        .await;

    // Assert
    assert_unauthorized(response).await;
    assert_eq!(app.store.count().await.unwrap(), 0);
}

async fn user_token_is_401_because_its_audience_is_not_internal(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let id = Uuid::now_v7();
    let user_token = app.issuer.user_token(id);

    // Act
    let response = app
        .create_user(Some(&user_token), &profile_request(id))
        .await;

    // Assert
    assert_unauthorized(response).await;
    assert_eq!(app.store.count().await.unwrap(), 0);
}

async fn a_service_not_allowed_to_create_profiles_is_403_and_creates_nothing(backend: Backend) {
    // Arrange: a valid service token, from a service not in allowed_callers.
    let app = TestApp::spawn(backend).await;
    let mut claims = app.issuer.service_claims();
    claims["sub"] = json!("service:billing");
    let token = app.issuer.sign(&claims);

    // Act
    let response = app
        .create_user(Some(&token), &profile_request(Uuid::now_v7()))
        .await;

    // Assert
    let problem = assert_problem(response, StatusCode::FORBIDDEN).await;
    assert!(
        !problem["detail"]
            .as_str()
            .unwrap()
            .contains("allowed_callers"),
        "no configuration details in the body: {problem}"
    );
    assert_eq!(app.store.count().await.unwrap(), 0);
}

async fn a_service_token_for_another_audience_is_401_and_creates_nothing(backend: Backend) {
    // Arrange: everything right but the audience (the old shared one, and
    // the one of user tokens).
    let app = TestApp::spawn(backend).await;
    for audience in ["portico-internal", "portico-api", "portico-billing"] {
        let mut claims = app.issuer.service_claims();
        claims["aud"] = json!(audience);
        let token = app.issuer.sign(&claims);

        // Act
        let response = app
            .create_user(Some(&token), &profile_request(Uuid::now_v7()))
            .await;

        // Assert
        assert_unauthorized(response).await;
    }
    assert_eq!(app.store.count().await.unwrap(), 0);
}

async fn a_service_token_without_the_write_scope_is_403_and_creates_nothing(backend: Backend) {
    // Arrange: no scope, another scope, and a scope that only starts alike.
    let app = TestApp::spawn(backend).await;
    for scope in [None, Some("users:read"), Some("users:write-all openid")] {
        let mut claims = app.issuer.service_claims();
        match scope {
            Some(scope) => claims["scope"] = json!(scope),
            None => {
                claims.as_object_mut().unwrap().remove("scope");
            }
        }
        let token = app.issuer.sign(&claims);

        // Act
        let response = app
            .create_user(Some(&token), &profile_request(Uuid::now_v7()))
            .await;

        // Assert
        let problem = assert_problem(response, StatusCode::FORBIDDEN).await;
        assert!(problem["detail"].as_str().unwrap().contains("users:write"));
    }
    // Among other scopes, it is enough.
    let mut claims = app.issuer.service_claims();
    claims["scope"] = json!("users:read users:write");
    let response = app
        .create_user(
            Some(&app.issuer.sign(&claims)),
            &profile_request(Uuid::now_v7()),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(app.store.count().await.unwrap(), 1);
}

async fn a_token_with_a_service_subject_but_no_service_role_is_403(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let mut claims = app.issuer.service_claims();
    claims["roles"] = json!(["user"]);
    let token = app.issuer.sign(&claims);

    // Act
    let response = app
        .create_user(Some(&token), &profile_request(Uuid::now_v7()))
        .await;

    // Assert
    assert_problem(response, StatusCode::FORBIDDEN).await;
    assert_eq!(app.store.count().await.unwrap(), 0);
}

async fn email_of_another_profile_is_409(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let token = app.issuer.service_token();
    let first = app
        .create_user(Some(&token), &profile_request(Uuid::now_v7()))
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);

    // Act
    let response = app
        .create_user(
            Some(&token),
            &json!({"id": Uuid::now_v7(), "email": "ANN@example.com", "display_name": "Ann 2"}),
        )
        .await;

    // Assert
    assert_problem(response, StatusCode::CONFLICT).await;
    assert_eq!(app.store.count().await.unwrap(), 1);
}

async fn invalid_email_and_display_name_are_422_naming_both(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let token = app.issuer.service_token();

    // Act
    let response = app
        .create_user(
            Some(&token),
            &json!({"id": Uuid::now_v7(), "email": "not-an-email", "display_name": "  "}),
        )
        .await;

    // Assert
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem), ["email", "display_name"]);
    assert_eq!(app.store.count().await.unwrap(), 0);
}

async fn get_internal(app: &TestApp, token: Option<&str>, id: &str) -> reqwest::Response {
    let mut request = app.client.get(format!("{}/internal/users/{id}", app.api));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn service_reads_a_profile_by_id_and_a_missing_one_is_404(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let token = app.issuer.service_token();
    let profile = app.seed_profile().await;

    // Act
    let found = get_internal(&app, Some(&token), &profile.id.to_string()).await;
    let missing = get_internal(&app, Some(&token), &Uuid::now_v7().to_string()).await;

    // Assert
    assert_eq!(found.status(), StatusCode::OK);
    let body: Value = found.json().await.unwrap();
    assert_eq!(body["id"], profile.id.to_string());
    assert_eq!(body["status"], "active");
    let problem = assert_problem(missing, StatusCode::NOT_FOUND).await;
    assert_eq!(problem["type"], "urn:portico:problem:no-such-user");
}

async fn internal_read_refuses_users_and_foreign_services_and_bad_ids(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let profile = app.seed_profile().await;
    let id = profile.id.to_string();
    let mut foreign = app.issuer.service_claims();
    foreign["sub"] = json!("service:billing");
    let foreign = app.issuer.sign(&foreign);

    // Act
    let anonymous = get_internal(&app, None, &id).await;
    let as_user = get_internal(&app, Some(&app.issuer.user_token(profile.id)), &id).await;
    let as_foreign = get_internal(&app, Some(&foreign), &id).await;
    let bad_id = get_internal(&app, Some(&app.issuer.service_token()), "not-a-uuid").await;

    // Assert
    assert_unauthorized(anonymous).await;
    assert_unauthorized(as_user).await;
    assert_problem(as_foreign, StatusCode::FORBIDDEN).await;
    assert_problem(bad_id, StatusCode::BAD_REQUEST).await;
}

on_both_backends!(
    service_reads_a_profile_by_id_and_a_missing_one_is_404,
    internal_read_refuses_users_and_foreign_services_and_bad_ids,
    a_service_not_allowed_to_create_profiles_is_403_and_creates_nothing,
    a_token_with_a_service_subject_but_no_service_role_is_403,
    a_service_token_for_another_audience_is_401_and_creates_nothing,
    a_service_token_without_the_write_scope_is_403_and_creates_nothing,
    service_token_creates_with_201_and_a_retry_answers_200,
    missing_token_is_401_and_creates_nothing,
    user_token_is_401_because_its_audience_is_not_internal,
    email_of_another_profile_is_409,
    invalid_email_and_display_name_are_422_naming_both,
);
