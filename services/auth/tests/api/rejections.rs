//! Bad registrations: each gets a problem and writes nothing, neither in
//! the auth store nor in the user service.

use portico_testkit::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    JSON, PASSWORD, TestApp, assert_problem, error_fields, on_both_backends, registration,
};

const REGISTER: &str = "/v1/auth/register";

/// ((credentials, sessions), profiles): everything a registration writes.
async fn written(app: &TestApp) -> ((i64, i64), i64) {
    (app.counts().await, app.user().store.count().await.unwrap())
}

/// Posts `body` as JSON to register and expects a 422; returns the problem.
async fn register_invalid(app: &TestApp, body: &Value) -> Value {
    let response = app.register(body).await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await
}

async fn malformed_json_is_400(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let before = written(&app).await;

    // Act
    let response = app
        .post_raw(REGISTER, JSON, r#"{"email": "ann@example.com", "#)
        .await;

    // Assert
    assert_problem(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(written(&app).await, before);
}

async fn text_plain_body_is_415(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let before = written(&app).await;
    let body = registration("ann@example.com").to_string();

    // Act
    let response = app.post_raw(REGISTER, "text/plain", body).await;

    // Assert
    assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(written(&app).await, before);
}

async fn bad_email_is_422_naming_email(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let before = written(&app).await;

    // Act
    let problem = register_invalid(&app, &registration("ann.example.com")).await;

    // Assert
    assert_eq!(error_fields(&problem), ["email"]);
    assert_eq!(written(&app).await, before);
}

async fn password_of_7_bytes_is_422_naming_password(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let before = written(&app).await;
    let body = json!({"email": "ann@example.com", "password": "1234567", "display_name": "Ann"});

    // Act
    let problem = register_invalid(&app, &body).await;

    // Assert
    assert_eq!(error_fields(&problem), ["password"]);
    assert_eq!(written(&app).await, before);
}

async fn password_of_1025_bytes_is_422_naming_password(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let before = written(&app).await;
    let password = "p".repeat(1025);
    let body = json!({"email": "ann@example.com", "password": password, "display_name": "Ann"});

    // Act
    let problem = register_invalid(&app, &body).await;

    // Assert
    assert_eq!(error_fields(&problem), ["password"]);
    assert_eq!(written(&app).await, before);
}

async fn weak_passwords_are_422_saying_why(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let before = written(&app).await;
    let cases = [
        // In the shipped list, whatever the letter case.
        ("PassWord123", "too common"),
        // Full-width letters fold to "password1" under NFKC.
        (
            "\u{ff50}\u{ff41}\u{ff53}\u{ff53}\u{ff57}\u{ff4f}\u{ff52}\u{ff44}1",
            "too common",
        ),
        ("marguerite-rocks-2026", "email"),
        ("i am Ada Lovelace!", "display name"),
    ];

    for (password, reason) in cases {
        // Act
        let body = json!({
            "email": "Marguerite@example.com",
            "password": password,
            "display_name": "Ada Lovelace",
        });
        let problem = register_invalid(&app, &body).await;

        // Assert
        assert_eq!(error_fields(&problem), ["password"], "{password}");
        let message = problem["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{password}: {message}");
        assert!(!message.contains(password), "the password is not echoed");
    }
    assert_eq!(written(&app).await, before);
}

async fn empty_display_name_is_422_naming_display_name(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let before = written(&app).await;
    let body = json!({"email": "ann@example.com", "password": PASSWORD, "display_name": ""});

    // Act
    let problem = register_invalid(&app, &body).await;

    // Assert
    assert_eq!(error_fields(&problem), ["display_name"]);
    assert_eq!(written(&app).await, before);
}

async fn several_invalid_fields_are_listed_in_one_422(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let before = written(&app).await;
    let body = json!({"email": "nope", "password": "short", "display_name": " "});

    // Act
    let problem = register_invalid(&app, &body).await;

    // Assert
    assert_eq!(
        error_fields(&problem),
        ["email", "password", "display_name"]
    );
    assert_eq!(written(&app).await, before);
}

async fn missing_field_is_422_naming_it(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let before = written(&app).await;
    let body = json!({"email": "ann@example.com", "display_name": "Ann"});

    // Act
    let problem = register_invalid(&app, &body).await;

    // Assert
    assert_eq!(error_fields(&problem), ["password"]);
    assert_eq!(written(&app).await, before);
}

async fn body_over_64_kib_is_413(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let before = written(&app).await;
    let body = json!({"email": "ann@example.com", "password": PASSWORD, "display_name": "x".repeat(64 * 1024)});

    // Act
    let response = app.post_raw(REGISTER, JSON, body.to_string()).await;

    // Assert
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(written(&app).await, before);
}

async fn email_registered_in_other_letter_case_is_409(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    app.register_account("ann@example.com").await;
    let before = written(&app).await;

    // Act
    let response = app.register(&registration("Ann@EXAMPLE.com")).await;

    // Assert
    assert_problem(response, StatusCode::CONFLICT).await;
    assert_eq!(written(&app).await, before);
    assert_eq!(before, ((1, 1), 1));
}

on_both_backends!(
    malformed_json_is_400,
    text_plain_body_is_415,
    bad_email_is_422_naming_email,
    password_of_7_bytes_is_422_naming_password,
    password_of_1025_bytes_is_422_naming_password,
    weak_passwords_are_422_saying_why,
    empty_display_name_is_422_naming_display_name,
    several_invalid_fields_are_listed_in_one_422,
    missing_field_is_422_naming_it,
    body_over_64_kib_is_413,
    email_registered_in_other_letter_case_is_409,
);
