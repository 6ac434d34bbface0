//! Registration while the user service is down.

use portico_testkit::Backend;
use reqwest::StatusCode;

use crate::helpers::{PASSWORD, TestApp, assert_problem, on_both_backends, registration};

async fn register_is_503_and_leaves_no_credential_when_the_user_service_is_down(backend: Backend) {
    // Arrange
    let app = TestApp::spawn_without_user_service(backend).await;

    // Act
    let response = app.register(&registration("ann@example.com")).await;

    // Assert
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(app.counts().await, (0, 0), "no credential left behind");
    let login = app.login("ann@example.com", PASSWORD).await;
    assert_eq!(login.status(), StatusCode::UNAUTHORIZED);
}

on_both_backends!(register_is_503_and_leaves_no_credential_when_the_user_service_is_down);
