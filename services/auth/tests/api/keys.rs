//! Signing keys: replicas starting together agree on one key.

use portico_auth::storage::{AuthStore, MIGRATIONS};
use portico_common::{config::ServiceConfig as _, db::Db};
use portico_testkit::{Backend, TestDatabase};
use time::OffsetDateTime;

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
    let loads = stores.into_iter().map(|store| {
        tokio::spawn(async move { store.signing_keys(now).await.map_err(|err| err.to_string()) })
    });
    let loaded: Vec<_> = futures::future::join_all(loads)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    // Assert: exactly one key, the same everywhere.
    let kids: Vec<Vec<String>> = loaded
        .into_iter()
        .map(|keys| keys.unwrap().into_iter().map(|k| k.kid).collect())
        .collect();
    assert_eq!(kids[0].len(), 1, "{kids:?}");
    assert!(kids.iter().all(|k| *k == kids[0]), "{kids:?}");
}

// Worker threads of their own, so the four loads really overlap.
mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_starting_together_on_an_empty_database_share_one_key() {
        super::replicas_starting_together_on_an_empty_database_share_one_key(
            portico_testkit::Backend::Postgres,
        )
        .await;
    }
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_starting_together_on_an_empty_database_share_one_key() {
        super::replicas_starting_together_on_an_empty_database_share_one_key(
            portico_testkit::Backend::Sqlite,
        )
        .await;
    }
}
