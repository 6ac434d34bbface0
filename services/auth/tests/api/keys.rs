//! Signing keys: one key for replicas starting together, sealed at rest
//! under a rotatable KEK, rotated on demand and on a schedule — published
//! before they sign, kept until their tokens have expired.

use std::{sync::Arc, time::Duration as StdDuration};

use aws_lc_rs::signature::Ed25519KeyPair;
use portico_auth::{
    domain::audit::AuditKind,
    signing_keys::SigningKeys,
    storage::{AuthStore, MIGRATIONS},
};
use portico_common::{
    clock::{ManualClock, SharedClock, SystemClock},
    config::ServiceConfig as _,
    db::Db,
    types::Email,
};
use portico_testkit::{Backend, TestDatabase, eventually, issuer::header_of};
use reqwest::{Method, StatusCode, header};
use secrecy::SecretString;
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use crate::{
    admin::ADMIN_EMAIL,
    audit::events_of_kind,
    helpers::{PASSWORD, TestApp, assert_problem, assert_tokens, on_both_backends},
};

const OTHER_KEK: &str = "YW5vdGhlciBrZWssIGFsc28gdGhpcnR5LXR3byEhISE=";
const UNRELATED_KEK: &str = "eWV0IGFub3RoZXIga2V5IHRoYXQgc2VhbGVkIG5vbmU=";

/// Auth's signing-key settings with `kek` (and older `previous` KEKs).
fn key_config(kek: &str, previous: &[&str]) -> portico_auth::signing_keys::SigningKeysConfig {
    let mut config = portico_auth::Config::built_in().signing_keys;
    config.encryption_key = Some(SecretString::from(kek));
    config.previous_encryption_keys = previous.iter().map(|p| SecretString::from(*p)).collect();
    config
}

async fn store_on(database: &TestDatabase) -> AuthStore {
    let config = portico_auth::Config::built_in()
        .database
        .with_url(&database.url)
        .creating_if_missing();
    AuthStore::new(Db::open(&config, &MIGRATIONS).await.unwrap())
}

async fn load(store: &AuthStore, kek: &str, previous: &[&str]) -> anyhow::Result<SigningKeys> {
    let clock: SharedClock = Arc::new(SystemClock);
    SigningKeys::load(store.clone(), &key_config(kek, previous), 900, clock).await
}

fn published(keys: &SigningKeys) -> Vec<String> {
    keys.keyring()
        .current()
        .jwks(OffsetDateTime::now_utc())
        .keys
        .into_iter()
        .map(|key| key.kid)
        .collect()
}

async fn replicas_starting_together_on_an_empty_database_share_one_key(backend: Backend) {
    // Arrange: four "replicas", each with its own pool on one database.
    let database = TestDatabase::new(backend).await;
    let first = store_on(&database).await;
    let config = portico_auth::Config::built_in()
        .database
        .with_url(&database.url);
    let mut stores = vec![first];
    for _ in 0..3 {
        stores.push(AuthStore::new(Db::connect(&config).await.unwrap()));
    }

    // Act: all load (or create) their keys at the same moment.
    let loads = stores.into_iter().map(|store| {
        tokio::spawn(async move {
            load(&store, portico_testkit::TEST_KEK, &[])
                .await
                .map(|keys| published(&keys))
                .map_err(|err| err.to_string())
        })
    });
    let kids: Vec<Vec<String>> = futures::future::join_all(loads)
        .await
        .into_iter()
        .map(|loaded| loaded.unwrap().unwrap())
        .collect();

    // Assert: exactly one key, the same everywhere.
    assert_eq!(kids[0].len(), 1, "{kids:?}");
    assert!(kids.iter().all(|k| *k == kids[0]), "{kids:?}");
}

async fn private_keys_are_sealed_at_rest_and_a_plain_first_key_gets_sealed(backend: Backend) {
    // Arrange: a database from before encryption — its one key stored plain.
    let database = TestDatabase::new(backend).await;
    let store = store_on(&database).await;
    let now = OffsetDateTime::now_utc();
    let plain = portico_auth::domain::keys::StoredKey::generate(1, now, now).unwrap();
    let row = portico_auth::storage::SealedKey {
        kid: plain.kid.clone(),
        generation: 1,
        created_at: now,
        signs_from: now,
        sealed_private: plain.private_pkcs8.clone(),
        kek_id: None,
        public_key: plain.public_key.clone(),
    };
    assert!(store.insert_key(&row, None).await.unwrap());

    // Act: a start with a KEK, and a rotation.
    let keys = load(&store, portico_testkit::TEST_KEK, &[]).await.unwrap();
    keys.rotate(None).await.unwrap();

    // Assert: every row is sealed under the KEK; none is a key.
    let rows = store.sealed_keys().await.unwrap();
    assert_eq!(rows.len(), 2);
    let kek_id = rows[1].kek_id.clone().unwrap();
    for row in &rows {
        assert_eq!(row.kek_id.as_deref(), Some(kek_id.as_str()));
        assert!(Ed25519KeyPair::from_pkcs8(&row.sealed_private).is_err());
        assert!(Ed25519KeyPair::from_pkcs8_maybe_unchecked(&row.sealed_private).is_err());
        assert_ne!(row.sealed_private, plain.private_pkcs8);
    }
    assert_eq!(published(&keys), [rows[0].kid.clone(), rows[1].kid.clone()]);

    // A sealed key moved onto another row does not open: that key is left
    // out; a plain row of a later generation is refused too.
    let mut swapped = rows[1].clone();
    swapped.sealed_private = rows[0].sealed_private.clone();
    store
        .delete_keys(std::slice::from_ref(&rows[1].kid))
        .await
        .unwrap();
    store.insert_key(&swapped, None).await.unwrap();
    let mut smuggled = rows[1].clone();
    let other = portico_auth::domain::keys::StoredKey::generate(3, now, now).unwrap();
    (smuggled.kid, smuggled.generation, smuggled.kek_id) = (other.kid.clone(), 3, None);
    smuggled.sealed_private = other.private_pkcs8.clone();
    store.insert_key(&smuggled, None).await.unwrap();
    keys.reload().await.unwrap();
    assert_eq!(published(&keys), [rows[0].kid.clone()]);
}

async fn the_kek_rotates_by_naming_the_old_one_for_one_start(backend: Backend) {
    // Arrange: keys sealed under the first KEK.
    let database = TestDatabase::new(backend).await;
    let store = store_on(&database).await;
    let before = published(&load(&store, portico_testkit::TEST_KEK, &[]).await.unwrap());
    let old_kek_id = store.sealed_keys().await.unwrap()[0].kek_id.clone();

    // Act: a start with the new KEK, the old one listed as previous.
    let keys = load(&store, OTHER_KEK, &[portico_testkit::TEST_KEK])
        .await
        .unwrap();

    // Assert: re-sealed; from now on the new KEK alone opens them.
    assert_eq!(published(&keys), before);
    let rows = store.sealed_keys().await.unwrap();
    assert_ne!(rows[0].kek_id, old_kek_id);
    assert_eq!(
        published(&load(&store, OTHER_KEK, &[]).await.unwrap()),
        before
    );
    // A KEK that opens none of them leaves nothing to sign with.
    let err = load(&store, UNRELATED_KEK, &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no signing key"), "{err}");
    assert!(!err.contains(OTHER_KEK));
}

/// `GET /.well-known/jwks.json`: the kids, and the cache lifetime.
async fn jwks(app: &TestApp) -> (Vec<String>, String) {
    let response = app.get("/.well-known/jwks.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let cache = response.headers()[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    let kids = body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect();
    (kids, cache)
}

fn kid_of(token: &str) -> String {
    header_of(token)["kid"].as_str().unwrap().to_owned()
}

async fn an_admin_rotation_publishes_first_signs_later_and_retires_after_expiry(backend: Backend) {
    // Arrange: Ann holds a token signed by the first key.
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = TestApp::spawn_with_clock_and_config(backend, clock.clone(), |config| {
        config.admin.bootstrap_email = Some(Email::parse(ADMIN_EMAIL).unwrap());
    })
    .await;
    let admin = app.register_account(ADMIN_EMAIL).await.access_token;
    let ann = app.register_account("ann@example.com").await;
    let first_kid = kid_of(&ann.access_token);

    // Act
    let response = app
        .send_as(
            Method::POST,
            "/v1/auth/admin/keys/rotate",
            Some(&admin),
            None,
        )
        .await;

    // Assert: published at once, not signing yet.
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let rotation: Value = response.json().await.unwrap();
    let new_kid = rotation["kid"].as_str().unwrap().to_owned();
    let (kids, cache) = jwks(&app).await;
    assert_eq!(kids, [first_kid.clone(), new_kid.clone()]);
    assert_eq!(cache, "public, max-age=300");
    let before = assert_tokens(app.login("ann@example.com", PASSWORD).await, StatusCode::OK).await;
    assert_eq!(kid_of(&before.access_token), first_kid);
    // Asking again while it waits answers the same key.
    let again: Value = app
        .send_as(
            Method::POST,
            "/v1/auth/admin/keys/rotate",
            Some(&admin),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["kid"], new_kid.as_str());
    let rotated = events_of_kind(&app, AuditKind::KeyRotated).await;
    assert_eq!(rotated.len(), 1);
    assert!(rotated[0].actor.as_deref().unwrap().starts_with("user:"));

    // After the publish lead (10 minutes) the new key signs; tokens of
    // both keys verify at the user service.
    clock.advance(Duration::seconds(601));
    let after = assert_tokens(app.login("ann@example.com", PASSWORD).await, StatusCode::OK).await;
    assert_eq!(kid_of(&after.access_token), new_kid);
    assert_eq!(
        app.user_profile(&before.access_token).await.status(),
        StatusCode::OK
    );
    // The user service fetched its JWKS as it started, before the rotation;
    // an unknown kid makes it fetch again (at most every 5 s of real time;
    // in production the publish lead lets its cache pick the key up first).
    eventually(
        StdDuration::from_secs(10),
        "the user service to accept the new key",
        || async {
            (app.user_profile(&after.access_token).await.status() == StatusCode::OK).then_some(())
        },
    )
    .await;
    let sessions = app
        .send_as(
            Method::GET,
            "/v1/auth/sessions",
            Some(&before.access_token),
            None,
        )
        .await;
    assert_eq!(sessions.status(), StatusCode::OK);

    // Once every token the first key signed has expired, it is withdrawn.
    clock.advance(Duration::seconds(900 + 90));
    assert_eq!(jwks(&app).await.0, [new_kid]);
    assert_eq!(
        app.user_profile(&before.access_token).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn only_admins_rotate_keys(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let ann = app.register_account("ann@example.com").await;

    // Act
    let response = app
        .send_as(
            Method::POST,
            "/v1/auth/admin/keys/rotate",
            Some(&ann.access_token),
            None,
        )
        .await;

    // Assert
    assert_problem(response, StatusCode::FORBIDDEN).await;
    assert_eq!(jwks(&app).await.0.len(), 1);
}

async fn keys_rotate_on_schedule_and_every_replica_follows(backend: Backend) {
    // Arrange: a rotation due every 20 minutes, keys reloaded every 50 ms.
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let settings = |config: &mut portico_auth::Config| {
        config.signing_keys.rotate_every_secs = 1200;
        config.signing_keys.reload_interval_ms = 50;
    };
    let app = TestApp::spawn_with_clock_and_config(backend, clock.clone(), settings).await;
    let replica = app.spawn_replica(settings).await;
    let first = jwks(&app).await.0;

    // Act
    clock.advance(Duration::seconds(1200));

    // Assert: a second key is published here and at the other replica.
    let kids = eventually(
        StdDuration::from_secs(10),
        "a scheduled rotation",
        || async {
            let kids = jwks(&app).await.0;
            (kids.len() == 2).then_some(kids)
        },
    )
    .await;
    assert_eq!(kids[0], first[0]);
    let new_kid = kids[1].clone();
    let client = reqwest::Client::new();
    eventually(
        StdDuration::from_secs(10),
        "the replica to load the new key",
        || async {
            let body: Value = client
                .get(format!("{replica}/.well-known/jwks.json"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let listed = body["keys"]
                .as_array()?
                .iter()
                .any(|key| key["kid"] == new_kid.as_str());
            listed.then_some(())
        },
    )
    .await;
    assert_eq!(events_of_kind(&app, AuditKind::KeyRotated).await.len(), 1);
}

on_both_backends!(
    private_keys_are_sealed_at_rest_and_a_plain_first_key_gets_sealed,
    the_kek_rotates_by_naming_the_old_one_for_one_start,
    an_admin_rotation_publishes_first_signs_later_and_retires_after_expiry,
    only_admins_rotate_keys,
    keys_rotate_on_schedule_and_every_replica_follows,
);

// Worker threads of their own, so the four loads really overlap.
mod postgres_concurrent {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_starting_together_on_an_empty_database_share_one_key() {
        super::replicas_starting_together_on_an_empty_database_share_one_key(
            portico_testkit::Backend::Postgres,
        )
        .await;
    }
}

mod sqlite_concurrent {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_starting_together_on_an_empty_database_share_one_key() {
        super::replicas_starting_together_on_an_empty_database_share_one_key(
            portico_testkit::Backend::Sqlite,
        )
        .await;
    }
}
