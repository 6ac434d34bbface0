//! `POST /internal/events`: the user service's events, believed only when
//! signed (Standard Webhooks) under a configured secret with a fresh
//! timestamp, each applied once. `user.deleted` ends every session and
//! disables the credential.

use std::{sync::Arc, time::Duration};

use portico_auth::domain::audit::AuditKind;
use portico_common::clock::ManualClock;
use portico_common::webhooks::{self, SigningSecret};
use portico_testkit::{Backend, eventually};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    audit::events_of_kind,
    helpers::{PASSWORD, TestApp, assert_problem, on_both_backends, registration},
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

async fn app_with_inbox(backend: Backend) -> TestApp {
    TestApp::spawn_with_config(backend, |config| {
        config.events.secrets = vec![SecretString::from(SECRET.to_owned())];
    })
    .await
}

fn deletion_of(user_id: Uuid, event_id: &str) -> Value {
    json!({
        "id": event_id,
        "type": "user.deleted",
        "occurred_at": "2026-12-04T12:00:00Z",
        "subject": user_id,
        "version": 2,
        "data": {"user_id": user_id, "deleted_at": "2026-12-04T12:00:00Z"},
    })
}

/// Posts `event` signed with `secret`, `age_secs` old.
async fn deliver(app: &TestApp, event: &Value, secret: &str, age_secs: i64) -> reqwest::Response {
    let body = serde_json::to_vec(event).unwrap();
    let id = event["id"].as_str().unwrap_or("no-id").to_owned();
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp() - age_secs;
    let signature = SigningSecret::parse(&SecretString::from(secret.to_owned()))
        .unwrap()
        .sign(&id, timestamp, &body);
    app.client
        .post(format!("{}/internal/events", app.api))
        .header("content-type", "application/json")
        .header(webhooks::ID_HEADER, id)
        .header(webhooks::TIMESTAMP_HEADER, timestamp)
        .header(webhooks::SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn a_deletion_ends_every_session_and_sign_in_once_per_event(backend: Backend) {
    // Arrange: an account signed in twice.
    let app = app_with_inbox(backend).await;
    let first = app.register_account("gone@example.com").await;
    let user_id = first.user_id.unwrap();
    let second: Value = app
        .login("gone@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let event = deletion_of(user_id, &Uuid::now_v7().to_string());

    // Act: delivered twice, as at-least-once delivery may.
    let applied = deliver(&app, &event, SECRET, 0).await;
    let again = deliver(&app, &event, SECRET, 0).await;

    // Assert
    assert_eq!(applied.status(), StatusCode::NO_CONTENT);
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    for refresh in [
        first.refresh_token.as_str(),
        second["refresh_token"].as_str().unwrap(),
    ] {
        assert_problem(app.refresh(refresh).await, StatusCode::UNAUTHORIZED).await;
    }
    assert_problem(
        app.login("gone@example.com", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // The email stays taken until the account is scrubbed.
    assert_problem(
        app.register(&registration("gone@example.com")).await,
        StatusCode::CONFLICT,
    )
    .await;
    let audited = events_of_kind(&app, AuditKind::AccountDeleted).await;
    assert_eq!(audited.len(), 1, "applied once");
    assert_eq!(audited[0].user_id, Some(user_id));
    assert_eq!(audited[0].detail.as_deref(), Some("2 sessions"));
}

async fn forged_stale_or_malformed_deliveries_change_nothing(backend: Backend) {
    // Arrange
    let app = app_with_inbox(backend).await;
    let account = app.register_account("kept@example.com").await;
    let user_id = account.user_id.unwrap();
    let event = deletion_of(user_id, &Uuid::now_v7().to_string());

    // Act and assert: another secret; a timestamp past the tolerance; a
    // body that is no event; an envelope whose id is not the webhook id.
    assert_problem(
        deliver(&app, &event, OTHER_SECRET, 0).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_problem(
        deliver(&app, &event, SECRET, 301).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_problem(
        deliver(&app, &json!({"id": "x", "nothing": true}), SECRET, 0).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let unsigned = app
        .client
        .post(format!("{}/internal/events", app.api))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_problem(unsigned, StatusCode::UNAUTHORIZED).await;
    let mut mismatched = event.clone();
    mismatched["id"] = json!("another-id");
    let body = serde_json::to_vec(&mismatched).unwrap();
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let signature = SigningSecret::parse(&SecretString::from(SECRET.to_owned()))
        .unwrap()
        .sign("the-webhook-id", timestamp, &body);
    let response = app
        .client
        .post(format!("{}/internal/events", app.api))
        .header(webhooks::ID_HEADER, "the-webhook-id")
        .header(webhooks::TIMESTAMP_HEADER, timestamp)
        .header(webhooks::SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::BAD_REQUEST).await;

    // Nothing changed: the account still refreshes and signs in.
    assert_eq!(
        app.refresh(&account.refresh_token).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login("kept@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
    assert!(
        events_of_kind(&app, AuditKind::AccountDeleted)
            .await
            .is_empty()
    );
}

async fn without_configured_secrets_every_delivery_is_refused(backend: Backend) {
    // Arrange: the built-in config names no secret.
    let app = TestApp::spawn(backend).await;
    let account = app.register_account("safe@example.com").await;
    let event = deletion_of(account.user_id.unwrap(), &Uuid::now_v7().to_string());

    // Act
    let response = deliver(&app, &event, SECRET, 0).await;

    // Assert
    assert_problem(response, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        app.refresh(&account.refresh_token).await.status(),
        StatusCode::OK
    );
}

async fn past_the_grace_the_deleted_credential_is_removed(backend: Backend) {
    // Arrange: the scrubber looks every 50 ms; the clock is the test's.
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let app = TestApp::spawn_with_clock_and_config(backend, clock.clone(), |config| {
        config.events.secrets = vec![SecretString::from(SECRET.to_owned())];
        config.scrubber.grace_secs = 960;
        config.scrubber.interval_ms = 50;
    })
    .await;
    let account = app.register_account("scrubbed@example.com").await;
    let user_id = account.user_id.unwrap();
    let (credentials, _) = app.counts().await;
    let event = deletion_of(user_id, &Uuid::now_v7().to_string());
    assert_eq!(
        deliver(&app, &event, SECRET, 0).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.counts().await.0, credentials, "kept through the grace");

    // Act
    clock.advance(time::Duration::seconds(961));

    // Assert: the credential is gone (its sessions with it); the audit
    // log, append-only, keeps the account's events.
    eventually(
        Duration::from_secs(10),
        "the credential removed",
        || async { (app.counts().await.0 == credentials - 1).then_some(()) },
    )
    .await;
    assert_eq!(app.counts().await.1, 0, "its sessions went with it");
    assert_eq!(
        events_of_kind(&app, AuditKind::AccountDeleted).await.len(),
        1
    );
}

async fn an_applied_deletion_is_announced_once_however_often_it_arrives(backend: Backend) {
    // Arrange: a subscriber of auth's own events.
    let endpoint = portico_testkit::webhooks::WebhookEndpoint::default();
    let url = endpoint.start().await;
    let app = TestApp::spawn_with_config(backend, |config| {
        config.events.secrets = vec![SecretString::from(SECRET.to_owned())];
        config.outbox.subscribers = vec![crate::outbox::subscriber(url, &[])];
    })
    .await;
    let user_id = app
        .register_account("gone@example.com")
        .await
        .user_id
        .unwrap();
    let event = deletion_of(user_id, &Uuid::now_v7().to_string());
    // A deletion of an account auth never had (a registration abandoned
    // before) changes nothing and announces nothing.
    let stranger = deletion_of(Uuid::now_v7(), &Uuid::now_v7().to_string());
    assert_eq!(
        deliver(&app, &stranger, SECRET, 0).await.status(),
        StatusCode::NO_CONTENT
    );

    // Act: delivered twice, as at-least-once delivery may.
    assert_eq!(
        deliver(&app, &event, SECRET, 0).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        deliver(&app, &event, SECRET, 0).await.status(),
        StatusCode::NO_CONTENT
    );

    // Assert: one auth.account_deleted, once nothing is pending.
    endpoint.received_at_least(1).await;
    crate::outbox::backlog_drained(&app).await;
    let received = endpoint.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["type"], "auth.account_deleted");
    assert_eq!(received[0]["data"], json!({"user_id": user_id}));
    portico_testkit::webhooks::assert_each_documented(
        &format!("{}/openapi.json", app.api),
        &received,
    )
    .await;
}

on_both_backends!(
    an_applied_deletion_is_announced_once_however_often_it_arrives,
    past_the_grace_the_deleted_credential_is_removed,
    a_deletion_ends_every_session_and_sign_in_once_per_event,
    forged_stale_or_malformed_deliveries_change_nothing,
    without_configured_secrets_every_delivery_is_refused,
);
