//! The profile store, on PostgreSQL and SQLite alike.

use portico_testkit::Backend;
use portico_user::{domain::Created, storage::StoreError};
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
        matches!(result, Err(StoreError::EmailTaken)),
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
        matches!(result, Err(StoreError::IdTaken)),
        "expected IdTaken, got {result:?}"
    );
    assert_eq!(
        store.get(id).await.unwrap().unwrap().email,
        "ann@example.com"
    );
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
        .update_display_name(id, "Ann B.", later)
        .await
        .unwrap()
        .expect("the profile exists");

    // Assert
    assert_eq!(updated.display_name, "Ann B.");
    assert_eq!(updated.version, 2);
    assert_eq!(updated.updated_at, later);
    assert_eq!(updated.created_at, created_at);
    assert_eq!(store.get(id).await.unwrap(), Some(updated));
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

    // Act
    let updated = store
        .update_display_name(Uuid::now_v7(), "Nobody", now())
        .await
        .unwrap();

    // Assert
    assert_eq!(updated, None);
    assert_eq!(store.count().await.unwrap(), 0);
}

on_both_backends!(
    created_profile_reads_back_unchanged,
    creating_the_same_id_and_email_again_returns_the_existing_profile,
    same_email_in_other_letter_case_with_another_id_is_email_taken,
    same_id_with_another_email_is_id_taken,
    updating_the_display_name_bumps_version_and_updated_at,
    unknown_id_reads_as_none,
    updating_an_unknown_id_changes_nothing,
);
