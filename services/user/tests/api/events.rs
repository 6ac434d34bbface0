//! Events and their webhooks: every change is delivered to each subscriber
//! at least once, signed, in order per user; failures are retried and end
//! dead-lettered, from where an admin sends them again. The subscriber is
//! a stand-in for a customer's endpoint (a third party), recording what it
//! receives and answering with the statuses it is told.

use std::time::Duration;

use axum::http::StatusCode;
use portico_common::outbox::SubscriberConfig;
use portico_testkit::{
    Backend, eventually,
    webhooks::{SECRET, WebhookEndpoint as Endpoint, assert_each_documented},
};
use reqwest::header;
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem, error_fields, on_both_backends};

/// A user service whose events go to `endpoint`, retrying fast.
async fn app_with_subscriber(backend: Backend, endpoint: &Endpoint, max_attempts: u32) -> TestApp {
    let url = endpoint.start().await;
    TestApp::spawn_with(backend, |config| {
        config.events.backoff_base_ms = 20;
        config.events.backoff_max_ms = 40;
        config.events.max_attempts = max_attempts;
        config.events.subscribers = vec![SubscriberConfig {
            name: "customer".to_owned(),
            url,
            secret: SecretString::from(SECRET.to_owned()),
            types: Vec::new(),
        }];
    })
    .await
}

fn admin_token(app: &TestApp) -> String {
    let mut claims = app.issuer.user_claims(Uuid::now_v7());
    claims["roles"] = json!(["user", "admin"]);
    app.issuer.sign(&claims)
}

async fn received_within(endpoint: &Endpoint, count: usize) -> Vec<Value> {
    let received = endpoint.received_at_least(count).await;
    assert!(
        endpoint.unverified().is_empty(),
        "{:?}",
        endpoint.unverified()
    );
    received
}

async fn each_change_reaches_the_subscriber_signed_and_in_order(backend: Backend) {
    // Arrange
    let endpoint = Endpoint::default();
    let app = app_with_subscriber(backend, &endpoint, 5).await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);

    // Act
    for (version, name) in [(1, "Two"), (2, "Three"), (3, "Four")] {
        let response = app
            .patch_me_if(
                Some(&token),
                Some(&format!("\"{version}\"")),
                &json!({"display_name": name}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    // Assert
    let received = received_within(&endpoint, 4).await;
    let seen: Vec<(String, i64)> = received
        .iter()
        .map(|event| {
            (
                event["type"].as_str().unwrap().to_owned(),
                event["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("user.created".to_owned(), 1),
            ("user.updated".to_owned(), 2),
            ("user.updated".to_owned(), 3),
            ("user.updated".to_owned(), 4)
        ]
    );
    assert!(
        received
            .iter()
            .all(|event| event["subject"] == profile.id.to_string())
    );
    assert_eq!(received[3]["data"]["profile"]["display_name"], "Four");
    assert_each_documented(&format!("{}/openapi.json", app.api), &received).await;
}

async fn a_failed_delivery_is_retried_and_holds_back_the_users_later_events(backend: Backend) {
    // Arrange: the first two attempts fail.
    let endpoint = Endpoint::default();
    endpoint.answer_next(&[
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::INTERNAL_SERVER_ERROR,
    ]);
    let app = app_with_subscriber(backend, &endpoint, 5).await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);

    // Act
    let response = app
        .patch_me(Some(&token), &json!({"display_name": "Later"}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    // Assert: created (after two failures) still comes before updated.
    let received = received_within(&endpoint, 2).await;
    assert_eq!(received[0]["type"], "user.created");
    assert_eq!(received[1]["type"], "user.updated");
    // Once no delivery is pending, every attempt there will ever be has
    // been answered (a delivery is marked after its answer): the count is
    // final, so a late duplicate would show here.
    eventually(Duration::from_secs(10), "an empty backlog", || async {
        portico_common::outbox::store::backlog(app.store.db())
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(endpoint.received().len(), 2, "each event once it succeeded");
}

async fn a_delivery_out_of_attempts_is_dead_lettered_and_an_admin_resends_it(backend: Backend) {
    // Arrange: three attempts, all failing.
    let endpoint = Endpoint::default();
    endpoint.answer_next(&[StatusCode::BAD_GATEWAY; 3]);
    let app = app_with_subscriber(backend, &endpoint, 3).await;
    let profile = app.seed_profile().await;
    let admin = admin_token(&app);
    let list = || {
        app.client
            .get(format!("{}/v1/users/admin/deliveries", app.api))
            .bearer_auth(&admin)
            .send()
    };

    // Act: wait for the dead letter.
    let dead = eventually(
        Duration::from_secs(10),
        "a dead-lettered delivery",
        || async {
            let page: Value = list().await.unwrap().json().await.unwrap();
            let items = page["items"].as_array().cloned().unwrap_or_default();
            (!items.is_empty()).then_some(items)
        },
    )
    .await;

    // Assert
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["subscriber"], "customer");
    assert_eq!(dead[0]["attempts"], 3);
    assert_eq!(dead[0]["last_error"], "answered 502");
    assert_eq!(dead[0]["event"]["type"], "user.created");
    assert_eq!(dead[0]["event"]["subject"], profile.id.to_string());
    assert!(endpoint.received().is_empty());

    // Act: an admin sends it again; the endpoint now answers 204.
    let id = dead[0]["id"].as_i64().unwrap();
    let resent = app
        .client
        .post(format!(
            "{}/v1/users/admin/deliveries/{id}/redeliver",
            app.api
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(resent.status(), StatusCode::ACCEPTED);
    let received = received_within(&endpoint, 1).await;
    assert_eq!(
        received[0]["id"], dead[0]["event"]["id"],
        "the same event id"
    );
    let page: Value = list().await.unwrap().json().await.unwrap();
    assert_eq!(page["items"], json!([]));
}

async fn the_dead_letter_api_is_for_admins_and_checks_its_input(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let admin = admin_token(&app);
    let user = app.issuer.user_token(Uuid::now_v7());
    let get = |path: &str, token: &str| {
        app.client
            .get(format!("{}{path}", app.api))
            .bearer_auth(token)
            .send()
    };
    let post = |path: &str, token: &str| {
        app.client
            .post(format!("{}{path}", app.api))
            .bearer_auth(token)
            .send()
    };

    // Act and assert
    assert_problem(
        get("/v1/users/admin/deliveries", &user).await.unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_problem(
        post("/v1/users/admin/deliveries/1/redeliver", &user)
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    for (query, fields) in [
        ("limit=0", vec!["limit"]),
        ("limit=101", vec!["limit"]),
        ("limit=ten&before=-1", vec!["limit", "before"]),
        ("before=x", vec!["before"]),
    ] {
        let response = get(&format!("/v1/users/admin/deliveries?{query}"), &admin)
            .await
            .unwrap();
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(error_fields(&problem), fields, "{query}");
    }
    assert_problem(
        get("/v1/users/admin/deliveries?limit=1&limit=2", &admin)
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    for id in ["12345", "not-a-number"] {
        let response = post(
            &format!("/v1/users/admin/deliveries/{id}/redeliver"),
            &admin,
        )
        .await
        .unwrap();
        assert_problem(response, StatusCode::NOT_FOUND).await;
    }
    let empty: Value = get("/v1/users/admin/deliveries?limit=10", &admin)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(empty, json!({"items": [], "next_before": null}));
}

async fn deleting_the_account_hides_the_profile_and_announces_it(backend: Backend) {
    // Arrange
    let endpoint = Endpoint::default();
    let app = app_with_subscriber(backend, &endpoint, 5).await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);
    let delete = |if_match: Option<&'static str>| {
        let mut request = app
            .client
            .delete(format!("{}/v1/users/me", app.api))
            .bearer_auth(&token);
        if let Some(if_match) = if_match {
            request = request.header(header::IF_MATCH, if_match);
        }
        request.send()
    };

    // Act and assert: refused without a precondition or with a stale one.
    let before = app.snapshot(profile.id).await;
    assert_problem(
        delete(None).await.unwrap(),
        StatusCode::PRECONDITION_REQUIRED,
    )
    .await;
    assert_problem(
        delete(Some("\"7\"")).await.unwrap(),
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    assert_eq!(app.snapshot(profile.id).await, before);

    let deleted = delete(Some("\"1\"")).await.unwrap();

    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get_me(Some(&token)).await, StatusCode::NOT_FOUND).await;
    assert_problem(delete(Some("*")).await.unwrap(), StatusCode::NOT_FOUND).await;
    let stored = app.store.get(profile.id).await.unwrap().unwrap();
    assert_eq!((stored.status.as_str(), stored.version), ("deleted", 2));
    let received = received_within(&endpoint, 2).await;
    assert_eq!(received[1]["type"], "user.deleted");
    assert_eq!(received[1]["data"]["user_id"], profile.id.to_string());
    assert!(
        received[1]["data"].get("email").is_none(),
        "no personal data in the deletion event"
    );
    assert_each_documented(&format!("{}/openapi.json", app.api), &received).await;
}

/// The flows alone (no HTTP) with one subscriber, "customer", whose
/// deliveries nobody sends (no relay runs); the database lives as long as
/// the second value.
async fn accounts_with_a_customer(
    backend: Backend,
) -> (
    portico_user::accounts::Accounts,
    portico_testkit::TestDatabase,
) {
    use portico_common::{
        config::ServiceConfig as _,
        outbox::{Outbox, Subscribers},
    };
    use portico_user::{accounts::Accounts, cache::ProfileCache, events::EventType};
    let (plain, database) = crate::helpers::store_on(backend).await;
    let db = plain.db().clone();
    let mut config = portico_user::Config::built_in().events;
    config.subscribers = vec![SubscriberConfig {
        name: "customer".to_owned(),
        url: "http://127.0.0.1:9/hooks".to_owned(),
        secret: SecretString::from(SECRET.to_owned()),
        types: Vec::new(),
    }];
    let subscribers = Subscribers::from_config(&config, "events", &EventType::names()).unwrap();
    let accounts = Accounts::assemble(
        db.clone(),
        Outbox::new(db, subscribers, portico_common::jobs::Wake::default()),
        ProfileCache::disabled(),
    );
    (accounts, database)
}

/// A claim is a lease: claimed rows are skipped until it runs out, then
/// another relay takes them over, and the first relay's late outcome is
/// not recorded over the second's. Only known subscribers are claimed.
async fn a_claim_is_a_lease_and_a_late_outcome_is_ignored(backend: Backend) {
    use portico_common::outbox::store as deliveries;
    // Arrange: a profile whose creation added one delivery to "customer".
    let (accounts, _database) = accounts_with_a_customer(backend).await;
    let db = accounts.db().clone();
    accounts
        .create(
            &crate::helpers::new_profile(Uuid::now_v7(), "lease@example.com", "Lease"),
            crate::helpers::now(),
        )
        .await
        .unwrap();
    let now = crate::helpers::now() + time::Duration::seconds(1);
    let first_lease = now + time::Duration::seconds(30);

    // Act and assert
    let claimed = deliveries::claim_due(&db, &["customer"], now, first_lease, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let id = claimed[0].id;
    assert!(
        deliveries::claim_due(&db, &["customer"], now, first_lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    assert!(
        deliveries::claim_due(&db, &["other"], now, first_lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "another subscriber's rows are not claimed"
    );
    let later = first_lease + time::Duration::seconds(1);
    let second_lease = later + time::Duration::seconds(30);
    let taken_over = deliveries::claim_due(&db, &["customer"], later, second_lease, 10)
        .await
        .unwrap();
    assert_eq!(taken_over.len(), 1, "the lease ran out");
    assert!(
        !deliveries::delivered(&db, id, first_lease, later)
            .await
            .unwrap(),
        "the first relay's late outcome"
    );
    assert!(
        deliveries::delivered(&db, id, second_lease, later)
            .await
            .unwrap()
    );
}

/// The purge removes delivered rows past the retention, oldest first, and
/// leaves pending and dead-lettered ones (and every event).
async fn the_purge_removes_only_old_delivered_rows(backend: Backend) {
    use portico_common::outbox::store as deliveries;
    // Arrange: three profiles, one delivery each to "customer".
    let (accounts, _database) = accounts_with_a_customer(backend).await;
    let db = accounts.db().clone();
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = Uuid::now_v7();
        accounts
            .create(
                &crate::helpers::new_profile(id, &format!("p{n}@example.com"), "P"),
                crate::helpers::now(),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    let now = crate::helpers::now() + time::Duration::seconds(1);
    let lease = now + time::Duration::seconds(30);
    let claimed = deliveries::claim_due(&db, &["customer"], now, lease, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    // The first delivered long ago, the second dead-lettered, the third
    // delivered just now.
    let long_ago = now - time::Duration::days(30);
    assert!(
        deliveries::delivered(&db, claimed[0].id, lease, long_ago)
            .await
            .unwrap()
    );
    assert!(
        deliveries::failed(&db, claimed[1].id, lease, "answered 500", None)
            .await
            .unwrap()
    );
    assert!(
        deliveries::delivered(&db, claimed[2].id, lease, now)
            .await
            .unwrap()
    );

    // Act
    let removed = deliveries::purge_delivered(&db, now - time::Duration::days(7), 100)
        .await
        .unwrap();

    // Assert: the old delivered row went; the dead letter stays; the
    // recent one stays until a cutoff past its delivery.
    assert_eq!(removed, 1);
    let dead = deliveries::dead(&db, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "the dead letter stays");
    assert_eq!(dead[0].id, claimed[1].id);
    let later = now + time::Duration::seconds(1);
    assert_eq!(
        deliveries::purge_delivered(&db, later, 100).await.unwrap(),
        1,
        "the recent one was still there"
    );
    assert_eq!(
        deliveries::purge_delivered(&db, later, 100).await.unwrap(),
        0
    );
    for id in ids {
        assert_eq!(
            accounts.events_of(id).await.unwrap().len(),
            1,
            "events stay"
        );
    }
}

on_both_backends!(
    the_purge_removes_only_old_delivered_rows,
    a_claim_is_a_lease_and_a_late_outcome_is_ignored,
    each_change_reaches_the_subscriber_signed_and_in_order,
    a_failed_delivery_is_retried_and_holds_back_the_users_later_events,
    a_delivery_out_of_attempts_is_dead_lettered_and_an_admin_resends_it,
    the_dead_letter_api_is_for_admins_and_checks_its_input,
    deleting_the_account_hides_the_profile_and_announces_it,
);
