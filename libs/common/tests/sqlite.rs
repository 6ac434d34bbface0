//! The embedded database file: private, never silently re-created, watched
//! while the service runs, and with a bounded write-ahead log.
#![cfg(feature = "db")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use portico_common::db::{self, DatabaseConfig, Db};
use secrecy::SecretString;

fn config(path: &Path, create_if_missing: bool) -> DatabaseConfig {
    DatabaseConfig {
        url: SecretString::from(format!("sqlite://{}", path.display())),
        max_connections: 4,
        acquire_timeout_ms: 2_000,
        lock_timeout_ms: 2_000,
        create_if_missing,
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn companion(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

async fn create_table(db: &Db) {
    portico_common::on_db!(db, pool => {
        sqlx::query("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            .execute(pool)
            .await
            .unwrap();
    });
}

async fn insert(db: &Db, body: &str) -> Result<(), sqlx::Error> {
    portico_common::on_db!(db, pool => {
        sqlx::query("INSERT INTO notes (body) VALUES ($1)")
            .bind(body)
            .execute(pool)
            .await
            .map(|_| ())
    })
}

#[tokio::test]
async fn a_new_database_its_wal_and_its_directory_are_private_to_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = data.join("service.db");

    let db = Db::connect(&config(&path, true)).await.unwrap();
    create_table(&db).await;
    insert(&db, "x").await.unwrap();

    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&path), 0o600, "database file");
    assert_eq!(mode(&companion(&path, "-wal")), 0o600, "WAL");
    assert_eq!(mode(&companion(&path, "-shm")), 0o600, "shared memory");
}

#[tokio::test]
async fn an_existing_world_readable_file_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("service.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    Db::connect(&config(&path, false)).await.unwrap();

    assert_eq!(mode(&path), 0o600);
}

#[tokio::test]
async fn a_missing_file_is_refused_unless_creation_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("service.db");

    let err = Db::connect(&config(&path, false)).await.unwrap_err();

    assert!(err.to_string().contains("create_if_missing"), "{err}");
    assert!(!path.exists(), "nothing may be created");
}

#[tokio::test]
async fn a_database_file_deleted_under_the_service_makes_it_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("service.db");
    let db = Db::connect(&config(&path, true)).await.unwrap();
    create_table(&db).await;
    db.check_usable().await.unwrap();

    std::fs::remove_file(&path).unwrap();
    let gone = db.check_usable().await.unwrap_err();
    assert!(gone.contains("deleted or replaced"), "{gone}");
    // No write lands in the deleted file: the pool hands out no connection.
    let write = insert(&db, "lost").await.unwrap_err();
    assert_eq!(db::problem_for(&write).status, 503, "{write}");

    // Another process creating a new file there does not make it ours.
    Db::connect(&config(&path, true)).await.unwrap();
    assert!(db.check_usable().await.is_err());
    let write = insert(&db, "split brain").await.unwrap_err();
    assert_eq!(db::problem_for(&write).status, 503, "{write}");
}

/// Makes a file read-only even for root (whom file modes do not stop):
/// the immutable attribute. Root runs the test suite in CI.
fn set_immutable(path: &Path, immutable: bool) {
    let flag = if immutable { "+i" } else { "-i" };
    let status = std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .expect("chattr (e2fsprogs) is needed to make a file read-only for root");
    assert!(status.success(), "chattr {flag} {} failed", path.display());
}

#[tokio::test]
async fn a_read_only_file_makes_the_database_unusable_until_it_is_writable_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("service.db");
    let first = Db::connect(&config(&path, true)).await.unwrap();
    create_table(&first).await;
    insert(&first, "before").await.unwrap();
    first.close().await;

    let read_only = running_as_root();
    if read_only {
        set_immutable(&path, true);
    } else {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    let db = Db::connect(&config(&path, false)).await.unwrap();
    let refused = db.check_usable().await.unwrap_err();
    let write = insert(&db, "while read-only").await.unwrap_err();
    assert_eq!(db::problem_for(&write).status, 503, "{write}");

    if read_only {
        set_immutable(&path, false);
    } else {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    db.check_usable().await.unwrap();
    // Connections SQLite opened read-only are replaced: writes work again.
    insert(&db, "after").await.unwrap();
    assert!(refused.contains("writes"), "{refused}");
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Several pooled connections writing back to back starve SQLite's own
/// checkpoints (measured here: 41 MB of WAL for these 5,000 writes, over
/// 100 MB with more writers); the
/// upkeep task keeps it bounded and truncates it when writes stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_concurrent_writes() {
    const WRITERS: usize = 8;
    const WRITES_EACH: usize = 625;
    const BOUND: u64 = 24 * 1024 * 1024;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("service.db");
    let db = Db::connect(&DatabaseConfig {
        max_connections: WRITERS as u32,
        ..config(&path, true)
    })
    .await
    .unwrap();
    create_table(&db).await;
    let upkeep = tokio::spawn(db.upkeep().expect("SQLite has upkeep"));
    let wal = companion(&path, "-wal");

    let body = "x".repeat(2_000);
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (db, body) = (db.clone(), body.clone());
            tokio::spawn(async move {
                for _ in 0..WRITES_EACH {
                    insert(&db, &body).await.unwrap();
                }
            })
        })
        .collect();
    let mut peak = 0;
    while !writers.iter().all(|w| w.is_finished()) {
        peak = peak.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for writer in writers {
        writer.await.unwrap();
    }

    assert!(peak < BOUND, "WAL peaked at {peak} bytes");
    portico_testkit::eventually(Duration::from_secs(10), "the WAL truncated", || {
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        async move { (size == 0).then_some(()) }
    })
    .await;
    upkeep.abort();
}

const FIRST: db::EmbeddedMigration = (1, "notes", "CREATE TABLE notes (id INTEGER PRIMARY KEY)");
const SECOND: db::EmbeddedMigration = (2, "tags", "CREATE TABLE tags (id INTEGER PRIMARY KEY)");
static OLD_RELEASE: &[db::EmbeddedMigration] = &[FIRST];
static NEW_RELEASE: &[db::EmbeddedMigration] = &[FIRST, SECOND];
static CHANGED_RELEASE: &[db::EmbeddedMigration] = &[(
    1,
    "notes",
    "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
)];

fn migrations(list: &'static [db::EmbeddedMigration]) -> db::Migrations {
    db::Migrations {
        postgres: list,
        sqlite: list,
    }
}

#[tokio::test]
async fn the_previous_release_starts_on_a_database_a_newer_release_migrated_but_not_on_a_changed_migration()
 {
    // Arrange: a canary of the new release migrated the shared database.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("service.db");
    let new = Db::open(&config(&path, true), &migrations(NEW_RELEASE))
        .await
        .unwrap();

    // Act: the stable (previous) release restarts on it; and a release whose
    // known migration was edited after it was applied.
    let old = Db::open(&config(&path, false), &migrations(OLD_RELEASE)).await;
    let changed = Db::open(&config(&path, false), &migrations(CHANGED_RELEASE)).await;

    // Assert
    let old = old.expect("the previous release starts on the newer schema");
    assert_eq!(
        old.newer_migrations(&migrations(OLD_RELEASE))
            .await
            .unwrap(),
        vec![2]
    );
    assert!(
        new.newer_migrations(&migrations(NEW_RELEASE))
            .await
            .unwrap()
            .is_empty()
    );
    let refused = changed.expect_err("an edited migration must stop the service");
    assert!(format!("{refused:#}").contains("migration"), "{refused:#}");
}

/// Two replicas share the embedded file (each its own pool and write
/// turn). A unit of work that reads and then writes must wait for the
/// other's write lock, not fail: a transaction begun as a reader whose
/// snapshot another process's commit made stale is refused at its first
/// write without any wait (`SQLITE_BUSY_SNAPSHOT`), which reached clients
/// as 503 "the database is busy" under concurrent profile changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_then_write_units_of_work_from_two_replicas_on_one_file_all_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let first = Db::connect(&config(&path, true)).await.unwrap();
    let second = Db::connect(&config(&path, false)).await.unwrap();
    portico_common::on_db!(&first, pool => {
        sqlx::query("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO counter (id, value) VALUES (1, 0)")
            .execute(pool)
            .await
            .unwrap();
    });

    async fn increment(db: Db) -> Result<(), sqlx::Error> {
        use sqlx::Row as _;
        let mut work = db.begin().await?;
        let db::Tx::Sqlite(tx) = work.tx() else {
            unreachable!("an SQLite database")
        };
        let value: i64 = sqlx::query("SELECT value FROM counter WHERE id = 1")
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
        // Let the other replica commit in between, as a request would.
        tokio::task::yield_now().await;
        sqlx::query("UPDATE counter SET value = $1 WHERE id = 1")
            .bind(value + 1)
            .execute(&mut **tx)
            .await?;
        work.commit().await
    }

    const EACH: usize = 40;
    let mut tasks = tokio::task::JoinSet::new();
    for db in [&first, &second] {
        for _ in 0..EACH {
            tasks.spawn(increment(db.clone()));
        }
    }
    let mut failures = Vec::new();
    while let Some(outcome) = tasks.join_next().await {
        if let Err(err) = outcome.unwrap() {
            failures.push(err.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    let value: i64 = portico_common::on_db!(&first, pool => {
        sqlx::query_scalar("SELECT value FROM counter WHERE id = 1")
            .fetch_one(pool)
            .await
            .unwrap()
    });
    // Every increment counted: no lost update either.
    assert_eq!(value, (2 * EACH) as i64);
}
