//! The admin listener: liveness, readiness and metrics.

use portico_testkit::Backend;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::Value;

use crate::helpers::{TestApp, closed_port, on_both_backends};

async fn healthz_is_200(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;

    // Act
    let response = app.get_admin("/healthz").await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
}

async fn readyz_is_200_with_the_database_ok(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;

    // Act
    let response = app.get_admin("/readyz").await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "ok");
    assert!(
        body["checks"].get("redis").is_none(),
        "no redis configured: {body}"
    );
}

async fn readyz_checks_a_configured_redis(backend: Backend) {
    // Arrange
    let redis_url = portico_testkit::redis_url();
    let app = TestApp::spawn_with(backend, |config| {
        config.redis.url = Some(SecretString::from(redis_url));
    })
    .await;

    // Act
    let response = app.get_admin("/readyz").await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["redis"], "ok");
}

/// Redis down degrades a service; it does not take it out of rotation.
async fn readyz_reports_an_unreachable_redis_but_stays_ready(backend: Backend) {
    // Arrange
    let port = closed_port();
    let app = TestApp::spawn_with(backend, |config| {
        config.redis.url = Some(SecretString::from(format!("redis://127.0.0.1:{port}")));
    })
    .await;

    // Act
    let response = app.get_admin("/readyz").await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["redis"], "unavailable");
}

on_both_backends!(
    healthz_is_200,
    readyz_is_200_with_the_database_ok,
    readyz_checks_a_configured_redis,
    readyz_reports_an_unreachable_redis_but_stays_ready,
);

#[tokio::test]
async fn metrics_count_api_requests() {
    // Arrange
    let app = TestApp::spawn(Backend::Sqlite).await;
    let served = app.get_api("/openapi.json").await;
    assert_eq!(served.status(), StatusCode::OK);

    // Act
    let response = app.get_admin("/metrics").await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let line = text
        .lines()
        .find(|line| line.starts_with("http_requests_total") && line.contains("/openapi.json"))
        .unwrap_or_else(|| panic!("no http_requests_total for /openapi.json in:\n{text}"));
    assert!(line.contains(r#"status="200""#), "{line}");
}

#[tokio::test]
async fn admin_endpoints_are_not_served_on_the_api_listener() {
    // Arrange
    let app = TestApp::spawn(Backend::Sqlite).await;

    // Act
    let response = app.get_api("/metrics").await;

    // Assert
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
