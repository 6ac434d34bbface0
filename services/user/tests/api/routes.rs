//! Unknown routes and the OpenAPI document.

use portico_testkit::Backend;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn unknown_route_is_a_404_problem() {
    // Arrange
    let app = TestApp::spawn(Backend::Sqlite).await;

    // Act
    let response = app.get_api("/v1/nothing-here").await;

    // Assert
    assert_problem(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn openapi_document_lists_the_profile_and_internal_paths() {
    // Arrange
    let app = TestApp::spawn(Backend::Sqlite).await;

    // Act
    let response = app.get_api("/openapi.json").await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    let paths = document["paths"].as_object().expect("paths object");
    assert!(paths["/v1/users/me"].get("get").is_some());
    assert!(paths["/v1/users/me"].get("patch").is_some());
    assert!(paths["/internal/users"].get("post").is_some());
}
