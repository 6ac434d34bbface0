//! Signing keys: replicas starting together agree on one key.

use portico_auth::storage::{AuthStore, MIGRATIONS};
use portico_common::{config::ServiceConfig as _, db::Db};
use portico_testkit::{Backend, TestDatabase};
use time::OffsetDateTime;

use crate::helpers::on_both_backends;

async fn replicas_starting_together_on_an_empty_database_share_one_key(backend: Backend) {
    // Arrange: four "replicas", each with its own pool on one database.
    let database = TestDatabase::new(backend).await;
    let config = portico_auth::Config::built_in()
        .database
        .with_url(&database.url)
        .creating_if_missing();
    Db::open(&config, &MIGRATIONS).await.unwrap();
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(AuthStore::new(Db::connect(&config).await.unwrap()));
    }

    // Act: all load (or create) their keys at the same moment.
    let now = OffsetDateTime::now_utc();
    let loaded =
        futures::future::join_all(stores.iter().map(|store| store.signing_keys(now))).await;

    // Assert: exactly one key, the same everywhere.
    let kids: Vec<Vec<String>> = loaded
        .into_iter()
        .map(|keys| keys.unwrap().into_iter().map(|k| k.kid).collect())
        .collect();
    assert_eq!(kids[0].len(), 1, "{kids:?}");
    assert!(kids.iter().all(|k| *k == kids[0]), "{kids:?}");
}

on_both_backends!(replicas_starting_together_on_an_empty_database_share_one_key);
