//! The account flows and their storage, on PostgreSQL and SQLite alike:
//! each change commits with its event or not at all.

use portico_common::types::DisplayName;
use portico_testkit::Backend;
use portico_user::{
    domain::{Created, Precondition, ProfileChange},
    error::UserError,
    events::EventType,
};
use time::Duration;
use uuid::Uuid;

use crate::helpers::{new_profile, now, on_both_backends, store_on};

async fn created_profile_reads_back_unchanged(backend: Backend) {
    // Arrange
    let (store, _db) = store_on(backend).await;
    let id = Uuid::now_v7();
    let now = now();

    // Act
    let created = store
        .create(&new_profile(id, "Ann@Example.com", "Ann"), now)
        .await
        .unwrap();
    let read = store.get(id).await.unwrap();

    // Assert
    let Created::New(profile) = created else {
        panic!("expected a new profile, got {created:?}");
    };
    assert_eq!(profile.id, id);
    assert_eq!(profile.email, "Ann@Example.com");
    assert_eq!(profile.display_name, "Ann");
    assert_eq!(profile.status, "active");
    assert_eq!(profile.version, 1);
    assert_eq!((profile.created_at, profile.updated_at), (now, now));
    assert_eq!(read, Some(profile));
}

async fn creating_the_same_id_and_email_again_returns_the_existing_profile(backend: Backend) {
    // Arrange
    let (store, _db) = store_on(backend).await;
    let id = Uuid::now_v7();
    let first_time = now();
    let Created::New(original) = store
        .create(&new_profile(id, "ann@example.com", "Ann"), first_time)
        .await
        .unwrap()
    else {
        panic!("first creation must create");
    };

    // Act
    let retried = store
        .create(
            &new_profile(id, "ann@example.com", "Ann"),
            first_time + Duration::seconds(5),
        )
        .await
        .unwrap();

    // Assert
    assert_eq!(retried, Created::Existing(original));
    assert_eq!(store.count().await.unwrap(), 1);
}

async fn same_email_in_other_letter_case_with_another_id_is_email_taken(backend: Backend) {
    // Arrange
    let (store, _db) = store_on(backend).await;
    let first = Uuid::now_v7();
    store
        .create(&new_profile(first, "ann@example.com", "Ann"), now())
        .await
        .unwrap();

    // Act
    let result = store
        .create(
            &new_profile(Uuid::now_v7(), "ANN@Example.COM", "Other Ann"),
            now(),
        )
        .await;

    // Assert
    assert!(
        matches!(result, Err(UserError::EmailTaken)),
        "expected EmailTaken, got {result:?}"
    );
    assert_eq!(store.count().await.unwrap(), 1);
    assert_eq!(store.get(first).await.unwrap().unwrap().display_name, "Ann");
}

async fn same_id_with_another_email_is_id_taken(backend: Backend) {
    // Arrange
    let (store, _db) = store_on(backend).await;
    let id = Uuid::now_v7();
    store
        .create(&new_profile(id, "ann@example.com", "Ann"), now())
        .await
        .unwrap();

    // Act
    let result = store
        .create(&new_profile(id, "bob@example.com", "Bob"), now())
        .await;

    // Assert
    assert!(
        matches!(result, Err(UserError::IdTaken)),
        "expected IdTaken, got {result:?}"
    );
    assert_eq!(
        store.get(id).await.unwrap().unwrap().email,
        "ann@example.com"
    );
}

fn rename(name: &str) -> ProfileChange {
    ProfileChange {
        display_name: Some(DisplayName::parse(name).unwrap()),
        ..ProfileChange::default()
    }
}

async fn updating_the_display_name_bumps_version_and_updated_at(backend: Backend) {
    // Arrange
    let (store, _db) = store_on(backend).await;
    let id = Uuid::now_v7();
    let created_at = now();
    store
        .create(&new_profile(id, "ann@example.com", "Ann"), created_at)
        .await
        .unwrap();
    let later = created_at + Duration::seconds(90);

    // Act
    let updated = store
        .update(id, &Precondition::OneOf(vec![1]), &rename("Ann B."), later)
        .await
        .unwrap();

    // Assert
    assert_eq!(updated.display_name, "Ann B.");
    assert_eq!(updated.version, 2);
    assert_eq!(updated.updated_at, later);
    assert_eq!(updated.created_at, created_at);
    assert_eq!(store.get(id).await.unwrap(), Some(updated));
}

async fn each_change_is_recorded_by_its_event_in_order(backend: Backend) {
    // Arrange
    let (store, _db) = store_on(backend).await;
    let id = Uuid::now_v7();
    let new = new_profile(id, "ann@example.com", "Ann");
    store.create(&new, now()).await.unwrap();

    // Act: a retried creation and a change that moves nothing add none.
    store.create(&new, now()).await.unwrap();
    store
        .update(id, &Precondition::Any, &rename("Ann"), now())
        .await
        .unwrap();
    store
        .update(id, &Precondition::Any, &rename("Ann B."), now())
        .await
        .unwrap();

    // Assert
    let events = store.events_of(id).await.unwrap();
    let kinds: Vec<(&str, i64)> = events
        .iter()
        .map(|e| (e.event_type.as_str(), e.version))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventType::UserCreated.as_str(), 1),
            (EventType::UserUpdated.as_str(), 2)
        ]
    );
    assert_eq!(
        events[1].data["changed"],
        serde_json::json!(["display_name"])
    );
    assert_eq!(events[1].data["profile"]["display_name"], "Ann B.");
    assert_ne!(events[0].id, events[1].id);
}

async fn a_stale_version_changes_nothing(backend: Backend) {
    // Arrange
    let (store, _db) = store_on(backend).await;
    let id = Uuid::now_v7();
    store
        .create(&new_profile(id, "ann@example.com", "Ann"), now())
        .await
        .unwrap();
    store
        .update(id, &Precondition::OneOf(vec![1]), &rename("First"), now())
        .await
        .unwrap();

    // Act: based on version 1, which is gone.
    let result = store
        .update(id, &Precondition::OneOf(vec![1]), &rename("Second"), now())
        .await;

    // Assert
    assert!(
        matches!(result, Err(UserError::PreconditionFailed)),
        "{result:?}"
    );
    assert_eq!(store.get(id).await.unwrap().unwrap().display_name, "First");
    assert_eq!(store.events_of(id).await.unwrap().len(), 2);
}

async fn a_failed_creation_leaves_no_event(backend: Backend) {
    // Arrange
    let (store, _db) = store_on(backend).await;
    store
        .create(
            &new_profile(Uuid::now_v7(), "ann@example.com", "Ann"),
            now(),
        )
        .await
        .unwrap();
    let other = Uuid::now_v7();

    // Act
    let result = store
        .create(&new_profile(other, "ANN@example.com", "Ann 2"), now())
        .await;

    // Assert
    assert!(matches!(result, Err(UserError::EmailTaken)), "{result:?}");
    assert!(store.events_of(other).await.unwrap().is_empty());
}

async fn unknown_id_reads_as_none(backend: Backend) {
    // Arrange
    let (store, _db) = store_on(backend).await;

    // Act
    let read = store.get(Uuid::now_v7()).await.unwrap();

    // Assert
    assert_eq!(read, None);
}

async fn updating_an_unknown_id_changes_nothing(backend: Backend) {
    // Arrange
    let (store, _db) = store_on(backend).await;
    let id = Uuid::now_v7();

    // Act
    let result = store
        .update(id, &Precondition::Any, &rename("Nobody"), now())
        .await;

    // Assert
    assert!(matches!(result, Err(UserError::NotFound)), "{result:?}");
    assert_eq!(store.count().await.unwrap(), 0);
    assert!(store.events_of(id).await.unwrap().is_empty());
}

on_both_backends!(
    created_profile_reads_back_unchanged,
    creating_the_same_id_and_email_again_returns_the_existing_profile,
    same_email_in_other_letter_case_with_another_id_is_email_taken,
    same_id_with_another_email_is_id_taken,
    updating_the_display_name_bumps_version_and_updated_at,
    each_change_is_recorded_by_its_event_in_order,
    a_stale_version_changes_nothing,
    a_failed_creation_leaves_no_event,
    unknown_id_reads_as_none,
    updating_an_unknown_id_changes_nothing,
);
