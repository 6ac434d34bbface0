//! The scrubber: a deleted account's personal data goes after the grace
//! period, and its email can be registered again.

use std::time::Duration;

use portico_testkit::{Backend, eventually};
use portico_user::domain::{Created, Precondition};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, new_profile, now, on_both_backends, store_on};

async fn past_the_grace_a_deleted_account_is_scrubbed_and_its_email_freed(backend: Backend) {
    // Arrange: one account deleted long ago, one deleted just now, one
    // active.
    let (store, _db) = store_on(backend).await;
    let long_ago = now() - time::Duration::days(40);
    let gone = Uuid::now_v7();
    store
        .create(&new_profile(gone, "gone@example.com", "Gone"), long_ago)
        .await
        .unwrap();
    store
        .delete(gone, &Precondition::Any, long_ago)
        .await
        .unwrap();
    let recent = Uuid::now_v7();
    store
        .create(&new_profile(recent, "recent@example.com", "Recent"), now())
        .await
        .unwrap();
    store
        .delete(recent, &Precondition::Any, now())
        .await
        .unwrap();
    let active = Uuid::now_v7();
    store
        .create(&new_profile(active, "active@example.com", "Active"), now())
        .await
        .unwrap();

    // Act: a 30-day grace.
    let scrubbed = store
        .scrub_deleted(now() - time::Duration::days(30), 100, now())
        .await
        .unwrap();
    let again = store
        .scrub_deleted(now() - time::Duration::days(30), 100, now())
        .await
        .unwrap();

    // Assert
    assert_eq!((scrubbed, again), (1, 0));
    let profile = store.get(gone).await.unwrap().unwrap();
    assert_eq!(
        (
            profile.email.as_str(),
            profile.display_name.as_str(),
            profile.status.as_str()
        ),
        ("", "", "deleted")
    );
    for event in store.events_of(gone).await.unwrap() {
        assert_eq!(
            event.data,
            json!({"scrubbed": true}),
            "{:?}",
            event.event_type
        );
    }
    assert_eq!(
        store.get(recent).await.unwrap().unwrap().email,
        "recent@example.com"
    );
    assert_eq!(
        store.get(active).await.unwrap().unwrap().display_name,
        "Active"
    );
    // The email is free again; the recent one's is still taken.
    let reborn = store
        .create(
            &new_profile(Uuid::now_v7(), "GONE@example.com", "Back"),
            now(),
        )
        .await
        .unwrap();
    assert!(matches!(reborn, Created::New(_)));
    assert!(
        store
            .create(
                &new_profile(Uuid::now_v7(), "recent@example.com", "Again"),
                now()
            )
            .await
            .is_err()
    );
}

async fn the_scrubber_runs_as_a_scheduled_job(backend: Backend) {
    // Arrange: no grace, a run every 50 ms.
    let app = TestApp::spawn_with(backend, |config| {
        config.scrubber.grace_secs = 0;
        config.scrubber.interval_ms = 50;
    })
    .await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);

    // Act
    let deleted = app
        .client
        .delete(format!("{}/v1/users/me", app.api))
        .bearer_auth(&token)
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    // Assert
    eventually(
        Duration::from_secs(10),
        "the deleted profile scrubbed",
        || async {
            let stored = app.store.get(profile.id).await.unwrap().unwrap();
            stored.email.is_empty().then_some(())
        },
    )
    .await;
}

on_both_backends!(
    past_the_grace_a_deleted_account_is_scrubbed_and_its_email_freed,
    the_scrubber_runs_as_a_scheduled_job,
);
