//! The whole user journey through the gateway, against the real binaries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use portico_e2e::System;
use portico_testkit::Backend;
use serde_json::{Value, json};

async fn post_json(system: &System, path: &str, body: Value) -> reqwest::Response {
    system
        .client
        .post(system.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn journey(backend: Backend) {
    let system = System::start(backend).await;
    let client = &system.client;

    // Register.
    let response = post_json(
        &system,
        "/v1/auth/register",
        json!({"email": "Ann@Example.com", "password": "correct horse battery", "display_name": "Ann"}),
    )
    .await;
    assert_eq!(response.status(), 201, "{}", system.logs());
    assert!(response.headers().contains_key("x-request-id"));
    let registered: Value = response.json().await.unwrap();
    assert_eq!(registered["token_type"], "Bearer");
    assert_eq!(registered["expires_in"], 900);
    let user_id = registered["user_id"].as_str().unwrap().to_owned();

    // Log in (email in another letter case).
    let response = post_json(
        &system,
        "/v1/auth/login",
        json!({"email": "ann@example.com", "password": "correct horse battery"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let session: Value = response.json().await.unwrap();
    let access = session["access_token"].as_str().unwrap().to_owned();

    // Read the profile.
    let response = client
        .get(system.url("/v1/users/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let profile: Value = response.json().await.unwrap();
    assert_eq!(profile["id"], user_id.as_str());
    assert_eq!(profile["email"], "Ann@Example.com");
    assert_eq!(profile["display_name"], "Ann");

    // Update it.
    let response = client
        .patch(system.url("/v1/users/me"))
        .bearer_auth(&access)
        .header("if-match", &etag)
        .json(&json!({"display_name": "Ann B."}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_ne!(response.headers()["etag"].to_str().unwrap(), etag);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["display_name"], "Ann B.");
    let reread: Value = client
        .get(system.url("/v1/users/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reread["display_name"], "Ann B.");

    // Refresh rotates; a retry of the same refresh (a lost answer) within
    // the grace window gets the same tokens, not a logout.
    let old_refresh = session["refresh_token"].as_str().unwrap().to_owned();
    let response = post_json(
        &system,
        "/v1/auth/refresh",
        json!({"refresh_token": old_refresh}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let rotated: Value = response.json().await.unwrap();
    let new_refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(new_refresh, old_refresh);
    let response = post_json(
        &system,
        "/v1/auth/refresh",
        json!({"refresh_token": old_refresh}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let retried: Value = response.json().await.unwrap();
    assert_eq!(retried["refresh_token"], rotated["refresh_token"]);
    assert_eq!(retried["access_token"], rotated["access_token"]);

    // Log out: the session's refresh token stops working.
    let fresh = post_json(
        &system,
        "/v1/auth/login",
        json!({"email": "ann@example.com", "password": "correct horse battery"}),
    )
    .await
    .json::<Value>()
    .await
    .unwrap();
    let response = client
        .post(system.url("/v1/auth/logout"))
        .bearer_auth(fresh["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = post_json(
        &system,
        "/v1/auth/refresh",
        json!({"refresh_token": fresh["refresh_token"]}),
    )
    .await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn full_journey_through_the_gateway_on_postgres() {
    journey(Backend::Postgres).await;
}

#[tokio::test]
async fn full_journey_through_the_gateway_on_sqlite() {
    journey(Backend::Sqlite).await;
}
