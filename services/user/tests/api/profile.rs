//! `GET` and `PATCH /v1/users/me`: the caller's own profile.

use portico_testkit::Backend;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem, on_both_backends};

async fn get_me_returns_the_profile_with_an_etag(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);

    // Act
    let response = app.get_me(Some(&token)).await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::ETAG], "\"1\"");
    let body: Value = response.json().await.unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "display_name",
            "email",
            "id",
            "locale",
            "status",
            "time_zone",
            "updated_at",
            "version"
        ]
    );
    assert_eq!(body["status"], "active");
    assert_eq!(body["version"], 1);
    assert_eq!(body["locale"], Value::Null);
    assert_eq!(body["id"], profile.id.to_string());
    assert_eq!(body["email"], profile.email);
    assert_eq!(body["display_name"], "Ann");
    for time in ["created_at", "updated_at"] {
        let text = body[time].as_str().unwrap();
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|err| panic!("{time} = {text} is not RFC 3339: {err}"));
    }
}

async fn patch_me_changes_the_display_name_and_the_etag(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);
    let before = app.get_me(Some(&token)).await;
    let etag_before = before.headers()[header::ETAG].clone();

    // Act
    let response = app
        .patch_me(Some(&token), &json!({"display_name": "  Ann B.  "}))
        .await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let etag_after = response.headers()[header::ETAG].clone();
    assert_ne!(etag_after, etag_before);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["display_name"], "Ann B.", "the name is stored trimmed");
    let stored = app.store.get(profile.id).await.unwrap().unwrap();
    assert_eq!(stored.display_name, "Ann B.");
    assert_eq!(stored.version, 2);
    let read_back = app.get_me(Some(&token)).await;
    assert_eq!(read_back.headers()[header::ETAG], etag_after);
}

async fn valid_token_without_a_profile_is_404(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let token = app.issuer.user_token(Uuid::now_v7());

    // Act
    let response = app.get_me(Some(&token)).await;

    // Assert
    assert_problem(response, StatusCode::NOT_FOUND).await;
}

async fn patch_me_sets_locale_and_time_zone_and_null_clears_them(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);

    // Act
    let set = app
        .patch_me_if(
            Some(&token),
            Some("\"1\""),
            &json!({"locale": "sr-latn-rs", "time_zone": "America/Argentina/Buenos_Aires"}),
        )
        .await;
    let cleared = app
        .patch_me_if(Some(&token), Some("\"2\""), &json!({"locale": null}))
        .await;

    // Assert
    assert_eq!(set.status(), StatusCode::OK);
    let body: Value = set.json().await.unwrap();
    assert_eq!(body["locale"], "sr-Latn-RS", "stored in canonical form");
    assert_eq!(body["time_zone"], "America/Argentina/Buenos_Aires");
    assert_eq!(body["display_name"], "Ann", "left out, left alone");
    assert_eq!(cleared.status(), StatusCode::OK);
    assert_eq!(cleared.headers()[header::ETAG], "\"3\"");
    let body: Value = cleared.json().await.unwrap();
    assert_eq!(body["locale"], Value::Null);
    assert_eq!(body["time_zone"], "America/Argentina/Buenos_Aires");
    let changed: Vec<Value> = app
        .store
        .events_of(profile.id)
        .await
        .unwrap()
        .iter()
        .map(|event| event.data["changed"].clone())
        .collect();
    assert_eq!(
        changed,
        [
            Value::Null,
            json!(["locale", "time_zone"]),
            json!(["locale"])
        ]
    );
}

async fn an_empty_change_writes_nothing(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);
    let before = app.snapshot(profile.id).await;

    // Act
    let response = app
        .patch_me_if(Some(&token), Some("\"1\""), &json!({}))
        .await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::ETAG], "\"1\"");
    assert_eq!(app.snapshot(profile.id).await, before);
}

async fn if_none_match_with_the_current_etag_is_304(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);
    let conditional_get = |etag: &'static str| {
        app.client
            .get(format!("{}/v1/users/me", app.api))
            .bearer_auth(&token)
            .header(header::IF_NONE_MATCH, etag)
            .send()
    };

    // Act
    let current = conditional_get("\"1\"").await.unwrap();
    let weak = conditional_get("W/\"1\"").await.unwrap();
    let old = conditional_get("\"0\"").await.unwrap();

    // Assert
    assert_eq!(current.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(current.headers()[header::ETAG], "\"1\"");
    assert!(current.bytes().await.unwrap().is_empty());
    assert_eq!(weak.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(old.status(), StatusCode::OK);
}

async fn of_concurrent_changes_from_one_etag_exactly_one_is_applied(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);

    // Act: eight clients that all read version 1 write at once.
    let changes = (0..8).map(|n| {
        let body = json!({"display_name": format!("Writer {n}")});
        let (app, token) = (&app, &token);
        async move {
            app.patch_me_if(Some(token), Some("\"1\""), &body)
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(changes).await;

    // Assert
    let applied = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((applied, refused), (1, 7), "{statuses:?}");
    let stored = app.store.get(profile.id).await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(app.store.events_of(profile.id).await.unwrap().len(), 2);
}

async fn a_profile_by_id_is_for_its_user_or_an_admin(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let ann = app.seed_profile().await;
    let bob = app.seed_profile().await;
    let ann_token = app.issuer.user_token(ann.id);
    let mut admin_claims = app.issuer.user_claims(Uuid::now_v7());
    admin_claims["roles"] = json!(["user", "admin"]);
    let admin_token = app.issuer.sign(&admin_claims);

    // Act
    let own = app.get_user(&ann_token, &ann.id.to_string()).await;
    let other = app.get_user(&ann_token, &bob.id.to_string()).await;
    let by_admin = app.get_user(&admin_token, &bob.id.to_string()).await;
    let missing = app
        .get_user(&admin_token, &Uuid::now_v7().to_string())
        .await;
    let not_an_id = app.get_user(&admin_token, "not-a-uuid").await;

    // Assert
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(own.headers()[header::ETAG], "\"1\"");
    let other = assert_problem(other, StatusCode::NOT_FOUND).await;
    let missing = assert_problem(missing, StatusCode::NOT_FOUND).await;
    assert_eq!(
        other["detail"], missing["detail"],
        "someone else's profile reads as a missing one"
    );
    assert_eq!(by_admin.status(), StatusCode::OK);
    let body: Value = by_admin.json().await.unwrap();
    assert_eq!(body["id"], bob.id.to_string());
    assert_problem(not_an_id, StatusCode::NOT_FOUND).await;
}

on_both_backends!(
    get_me_returns_the_profile_with_an_etag,
    patch_me_changes_the_display_name_and_the_etag,
    valid_token_without_a_profile_is_404,
    patch_me_sets_locale_and_time_zone_and_null_clears_them,
    an_empty_change_writes_nothing,
    if_none_match_with_the_current_etag_is_304,
    of_concurrent_changes_from_one_etag_exactly_one_is_applied,
    a_profile_by_id_is_for_its_user_or_an_admin,
);
