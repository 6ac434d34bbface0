//! The auth service's own events: each announced change (a new password,
//! a role granted or revoked, …) is written with the change and delivered
//! to every subscriber that wants it, signed, in order per user with an
//! increasing version; refused changes and sign-ins announce nothing;
//! deliveries that run out of attempts are listed for admins and sent
//! again. The subscriber is a stand-in for a customer's endpoint.

use std::time::Duration;

use portico_common::outbox::{SubscriberConfig, store};
use portico_testkit::{
    Backend, eventually,
    issuer::claims_of,
    webhooks::{SECRET, WebhookEndpoint, assert_each_documented},
};
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    admin::ADMIN_EMAIL,
    helpers::{PASSWORD, TestApp, assert_problem, assert_unauthorized, on_both_backends},
};

const NEW_PASSWORD: &str = "a much better passphrase";

/// A subscriber named `crm` at `url`, receiving `types` (empty: all).
pub fn subscriber(url: String, types: &[&str]) -> SubscriberConfig {
    SubscriberConfig {
        name: "crm".to_owned(),
        url,
        secret: SecretString::from(SECRET.to_owned()),
        types: types.iter().map(|t| (*t).to_owned()).collect(),
    }
}

/// An auth service with a bootstrap admin whose events go to `endpoint`,
/// retrying fast and giving up after `max_attempts`; the admin's token.
async fn app_with_subscriber(
    backend: Backend,
    endpoint: &WebhookEndpoint,
    types: &[&str],
    max_attempts: u32,
) -> (TestApp, String) {
    let url = endpoint.start().await;
    let app = TestApp::spawn_with_config(backend, |config| {
        config.admin.bootstrap_email =
            Some(portico_common::types::Email::parse(ADMIN_EMAIL).unwrap());
        config.outbox.backoff_base_ms = 20;
        config.outbox.backoff_max_ms = 40;
        config.outbox.max_attempts = max_attempts;
        config.outbox.subscribers = vec![subscriber(url, types)];
    })
    .await;
    let admin = app.register_account(ADMIN_EMAIL).await.access_token;
    (app, admin)
}

fn user_id_of(access_token: &str) -> Uuid {
    claims_of(access_token)["sub"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn change_password(app: &TestApp, access: &str, current: &str) -> reqwest::Response {
    app.send_as(
        Method::POST,
        "/v1/auth/password",
        Some(access),
        Some(&json!({"current_password": current, "new_password": NEW_PASSWORD})),
    )
    .await
}

async fn set_role(app: &TestApp, method: Method, admin: &str, user: Uuid) -> reqwest::Response {
    app.send_as(
        method,
        &format!("/v1/auth/admin/users/{user}/roles/admin"),
        Some(admin),
        None,
    )
    .await
}

/// The `(type, version)` of each event, in arrival order.
pub fn kinds(received: &[Value]) -> Vec<(String, i64)> {
    received
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["version"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Once nothing is pending, every attempt there will be has been
/// answered: what the endpoint holds is final.
pub async fn backlog_drained(app: &TestApp) {
    eventually(Duration::from_secs(10), "an empty backlog", || async {
        store::backlog(app.store.db())
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
}

async fn announced_changes_reach_the_subscriber_signed_and_in_order(backend: Backend) {
    // Arrange
    let endpoint = WebhookEndpoint::default();
    let (app, admin) = app_with_subscriber(backend, &endpoint, &[], 5).await;
    let ann = app.register_account("ann@example.com").await.access_token;
    let ann_id = user_id_of(&ann);

    // Act
    assert_eq!(
        change_password(&app, &ann, PASSWORD).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        set_role(&app, Method::PUT, &admin, ann_id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        set_role(&app, Method::DELETE, &admin, ann_id)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    // Sign-ins are audited, not announced.
    assert_eq!(
        app.login("ann@example.com", NEW_PASSWORD).await.status(),
        StatusCode::OK
    );

    // Assert
    let received = endpoint.received_at_least(3).await;
    backlog_drained(&app).await;
    let received_now = endpoint.received();
    assert_eq!(
        received_now.len(),
        3,
        "each once, nothing else: {received_now:?}"
    );
    assert!(
        endpoint.unverified().is_empty(),
        "{:?}",
        endpoint.unverified()
    );
    assert_eq!(
        kinds(&received),
        [
            ("auth.password_changed".to_owned(), 1),
            ("auth.role_granted".to_owned(), 2),
            ("auth.role_revoked".to_owned(), 3),
        ]
    );
    for event in &received {
        assert_eq!(event["subject"], ann_id.to_string());
        assert_eq!(event["data"]["user_id"], ann_id.to_string());
        assert!(event["occurred_at"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(received[0]["data"]["method"], "change");
    let admin_actor = format!("user:{}", user_id_of(&admin));
    assert_eq!(
        received[1]["data"],
        json!({"user_id": ann_id, "role": "admin", "by": admin_actor})
    );
    assert_eq!(received[2]["data"]["role"], "admin");
    assert_each_documented(&format!("{}/openapi.json", app.api), &received).await;
    let body = serde_json::to_string(&received).unwrap();
    for secret in [PASSWORD, NEW_PASSWORD, "ann@example.com"] {
        assert!(!body.contains(secret), "no password or address in events");
    }
}

async fn a_refused_change_writes_no_event(backend: Backend) {
    // Arrange
    let endpoint = WebhookEndpoint::default();
    let (app, _admin) = app_with_subscriber(backend, &endpoint, &[], 5).await;
    let ann = app.register_account("ann@example.com").await.access_token;

    // Act: a wrong current password is refused; the right one works.
    let refused = change_password(&app, &ann, "not the password at all").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let accepted = change_password(&app, &ann, PASSWORD).await;
    assert_eq!(accepted.status(), StatusCode::NO_CONTENT);

    // Assert: one event stored and delivered, version 1.
    let stored = store::for_subject(app.store.db().into(), user_id_of(&ann))
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].version, 1);
    endpoint.received_at_least(1).await;
    backlog_drained(&app).await;
    assert_eq!(
        kinds(&endpoint.received()),
        [("auth.password_changed".to_owned(), 1)]
    );
}

async fn a_subscriber_receives_only_the_types_it_asked_for(backend: Backend) {
    // Arrange
    let endpoint = WebhookEndpoint::default();
    let (app, admin) = app_with_subscriber(backend, &endpoint, &["auth.role_granted"], 5).await;
    let ann = app.register_account("ann@example.com").await.access_token;
    let ann_id = user_id_of(&ann);

    // Act
    change_password(&app, &ann, PASSWORD).await;
    set_role(&app, Method::PUT, &admin, ann_id).await;

    // Assert: the password change is recorded (version 1) but not sent.
    let received = endpoint.received_at_least(1).await;
    backlog_drained(&app).await;
    assert_eq!(
        kinds(&endpoint.received()),
        [("auth.role_granted".to_owned(), 2)]
    );
    assert_eq!(received[0]["subject"], ann_id.to_string());
    let stored = store::for_subject(app.store.db().into(), ann_id)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
}

async fn a_delivery_that_keeps_failing_is_dead_lettered_and_an_admin_sends_it_again(
    backend: Backend,
) {
    // Arrange: two attempts, both refused.
    let endpoint = WebhookEndpoint::default();
    endpoint.answer_next(&[StatusCode::BAD_GATEWAY; 2]);
    let (app, admin) = app_with_subscriber(backend, &endpoint, &[], 2).await;
    let ann = app.register_account("ann@example.com").await.access_token;
    change_password(&app, &ann, PASSWORD).await;

    // Act: wait for the dead letter.
    let dead = eventually(
        Duration::from_secs(10),
        "a dead-lettered delivery",
        || async {
            let page: Value = app
                .send_as(Method::GET, "/v1/auth/admin/deliveries", Some(&admin), None)
                .await
                .json()
                .await
                .unwrap();
            (page["items"].as_array().unwrap().len() == 1).then_some(page)
        },
    )
    .await;

    // Assert: listed with why; sent again from its first attempt.
    let item = &dead["items"][0];
    assert_eq!(item["subscriber"], "crm");
    assert_eq!(item["attempts"], 2);
    assert_eq!(item["last_error"], "answered 502");
    assert_eq!(item["event"]["type"], "auth.password_changed");
    assert!(dead["next_before"].is_null());
    assert!(endpoint.received().is_empty());
    let path = format!("/v1/auth/admin/deliveries/{}/redeliver", item["id"]);
    let redeliver = || app.send_as(Method::POST, &path, Some(&admin), None);
    assert_eq!(redeliver().await.status(), StatusCode::ACCEPTED);
    let received = endpoint.received_at_least(1).await;
    assert_eq!(received[0]["id"], item["event"]["id"], "the same event id");
    // Pending again, not dead: a second resend finds nothing to resend.
    assert_problem(redeliver().await, StatusCode::NOT_FOUND).await;
}

async fn the_deliveries_admin_api_refuses_bad_requests(backend: Backend) {
    // Arrange
    let endpoint = WebhookEndpoint::default();
    let (app, admin) = app_with_subscriber(backend, &endpoint, &[], 5).await;
    let ann = app.register_account("ann@example.com").await.access_token;

    // Act + Assert
    for query in ["limit=0", "limit=101", "limit=ten", "before=0", "before=x"] {
        let response = app
            .send_as(
                Method::GET,
                &format!("/v1/auth/admin/deliveries?{query}"),
                Some(&admin),
                None,
            )
            .await;
        let problem: Value = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        let field = query.split('=').next().unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
    let twice = app
        .send_as(
            Method::GET,
            "/v1/auth/admin/deliveries?limit=1&limit=2",
            Some(&admin),
            None,
        )
        .await;
    assert_problem(twice, StatusCode::BAD_REQUEST).await;
    for path in [
        "/v1/auth/admin/deliveries/999999/redeliver",
        "/v1/auth/admin/deliveries/abc/redeliver",
    ] {
        let response = app.send_as(Method::POST, path, Some(&admin), None).await;
        assert_problem(response, StatusCode::NOT_FOUND).await;
    }
    let not_admin = app
        .send_as(Method::GET, "/v1/auth/admin/deliveries", Some(&ann), None)
        .await;
    assert_problem(not_admin, StatusCode::FORBIDDEN).await;
    let not_admin = app
        .send_as(
            Method::POST,
            "/v1/auth/admin/deliveries/1/redeliver",
            Some(&ann),
            None,
        )
        .await;
    assert_problem(not_admin, StatusCode::FORBIDDEN).await;
    assert_unauthorized(
        app.send_as(Method::GET, "/v1/auth/admin/deliveries", None, None)
            .await,
    )
    .await;
}

on_both_backends!(
    announced_changes_reach_the_subscriber_signed_and_in_order,
    a_refused_change_writes_no_event,
    a_subscriber_receives_only_the_types_it_asked_for,
    a_delivery_that_keeps_failing_is_dead_lettered_and_an_admin_sends_it_again,
    the_deliveries_admin_api_refuses_bad_requests,
);
