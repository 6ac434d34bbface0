//! The profile cache in Redis: reads come from it, a write replaces the
//! entry before it answers (so no replica serves the old profile after
//! it), a cold profile is loaded once however many ask at once, and with
//! Redis down everything works from the database.

use portico_testkit::Backend;
use reqwest::{StatusCode, header};
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, closed_port, database_config, on_both_backends};

/// A replica with the cache on, its keys under `prefix`; `shared` makes it
/// a second replica on that one's database.
async fn replica(backend: Backend, prefix: &str, shared: Option<&TestApp>) -> TestApp {
    let redis = portico_testkit::redis_url();
    let database = shared.map(|app| database_config(&app.db));
    TestApp::spawn_with(backend, |config| {
        config.redis.url = Some(SecretString::from(redis));
        config.redis.key_prefix = prefix.to_owned();
        if let Some(database) = database {
            config.database = database;
        }
    })
    .await
}

fn unique_prefix() -> String {
    format!("test:{}:", Uuid::now_v7().simple())
}

async fn display_name(app: &TestApp, token: &str) -> String {
    let response = app.get_me(Some(token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["display_name"].as_str().unwrap().to_owned()
}

/// Changes the stored name behind the service's back.
async fn rename_in_the_database(app: &TestApp, id: Uuid, name: &str) {
    use portico_common::on_db;
    on_db!(app.store.db(), pool => {
        sqlx::query("UPDATE users SET display_name = $2 WHERE id = $1")
            .bind(id)
            .bind(name)
            .execute(pool)
            .await
            .unwrap();
    });
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.get_admin("/metrics").await.text().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn reads_come_from_the_cache_and_a_write_reaches_every_replica(backend: Backend) {
    // Arrange: two replicas on one database and one Redis.
    let prefix = unique_prefix();
    let one = replica(backend, &prefix, None).await;
    let two = replica(backend, &prefix, Some(&one)).await;
    let profile = one.seed_profile().await;
    let token = one.issuer.user_token(profile.id);
    // Each test replica trusts its own token issuer.
    let token_two = two.issuer.user_token(profile.id);

    // Act: the profile is cached (its creation wrote it); the database
    // changes behind the cache.
    assert_eq!(display_name(&two, &token_two).await, "Ann");
    rename_in_the_database(&one, profile.id, "Changed Behind").await;

    // Assert: both replicas read the cached profile.
    assert_eq!(display_name(&one, &token).await, "Ann");
    assert_eq!(display_name(&two, &token_two).await, "Ann");

    // Act: a write through replica one.
    let patched = one
        .patch_me_if(
            Some(&token),
            Some("\"1\""),
            &json!({"display_name": "Written"}),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);

    // Assert: the moment it answered, replica two reads the new profile.
    assert_eq!(display_name(&two, &token_two).await, "Written");
    let etag = two.get_me(Some(&token_two)).await.headers()[header::ETAG].clone();
    assert_eq!(etag, "\"2\"");
    assert!(metric(&two, "user_profile_cache_lookups_total{outcome=\"hit\"}").await >= 2.0);
}

async fn a_cold_profile_is_loaded_once_however_many_ask(backend: Backend) {
    // Arrange: a profile whose entry is gone (its TTL ran out, say).
    let prefix = unique_prefix();
    let app = replica(backend, &prefix, None).await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);
    let client = redis::Client::open(portico_testkit::redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}profile:{}", profile.id))
        .query_async(&mut connection)
        .await
        .unwrap();
    let loads_before = metric(&app, "user_profile_cache_loads_total").await;

    // Act: twenty reads at once.
    let reads = (0..20).map(|_| app.get_me(Some(&token)));
    let statuses: Vec<StatusCode> = futures::future::join_all(reads)
        .await
        .iter()
        .map(|response| response.status())
        .collect();

    // Assert
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let loads = metric(&app, "user_profile_cache_loads_total").await - loads_before;
    assert_eq!(loads, 1.0, "one database load for twenty concurrent misses");
}

async fn with_redis_down_reads_and_writes_use_the_database(backend: Backend) {
    // Arrange: Redis configured, nothing listening.
    let port = closed_port();
    let app = TestApp::spawn_with(backend, |config| {
        config.redis.url = Some(SecretString::from(format!("redis://127.0.0.1:{port}")));
    })
    .await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);

    // Act and assert
    assert_eq!(display_name(&app, &token).await, "Ann");
    let patched = app
        .patch_me_if(
            Some(&token),
            Some("\"1\""),
            &json!({"display_name": "No Cache"}),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(display_name(&app, &token).await, "No Cache");
    rename_in_the_database(&app, profile.id, "Straight From The Database").await;
    assert_eq!(
        display_name(&app, &token).await,
        "Straight From The Database"
    );
}

/// Redis lost mid-life and back: a change made while it was away must not
/// be hidden, once it returns, by the entry cached before.
async fn a_write_while_redis_is_away_is_not_hidden_by_the_old_entry_when_it_returns(
    backend: Backend,
) {
    // Arrange: Redis behind a relay the test can cut; the profile cached.
    let relay = portico_testkit::tcp::TcpRelay::in_front_of(&portico_testkit::redis_url()).await;
    let through = relay.url_through(&portico_testkit::redis_url());
    let prefix = unique_prefix();
    let app = TestApp::spawn_with(backend, |config| {
        config.redis.url = Some(SecretString::from(through));
        config.redis.key_prefix = prefix;
    })
    .await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);
    assert_eq!(display_name(&app, &token).await, "Ann");
    assert_eq!(
        display_name(&app, &token).await,
        "Ann",
        "now from the cache"
    );

    // Act: Redis goes away; a change lands in the database alone.
    relay.cut();
    let patched = app
        .patch_me(Some(&token), &json!({"display_name": "While Away"}))
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(display_name(&app, &token).await, "While Away");
    relay.restore();

    // Assert: with Redis back, every read has the change — until reads come
    // from the cache again (the service reconnects in its own time), and
    // then too: never the entry from before.
    let hits = "user_profile_cache_lookups_total{outcome=\"hit\"}";
    let hits_before = metric(&app, hits).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        assert_eq!(display_name(&app, &token).await, "While Away");
        if metric(&app, hits).await > hits_before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cache never served again after Redis returned"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        display_name(&app, &token).await,
        "While Away",
        "from the cache"
    );
}

on_both_backends!(
    a_write_while_redis_is_away_is_not_hidden_by_the_old_entry_when_it_returns,
    reads_come_from_the_cache_and_a_write_reaches_every_replica,
    a_cold_profile_is_loaded_once_however_many_ask,
    with_redis_down_reads_and_writes_use_the_database,
);
