//! Units of work: several statements that commit together or not at all,
//! on either backend, and repository functions that run the same SQL on
//! the pool or inside one.
//!
//! A repository function takes a [`Conn`] — `(&db).into()` for a statement
//! of its own, `(&mut work).into()` to join a unit of work — and runs its
//! SQL with [`on_conn!`](crate::on_conn). A flow (e.g. "change the profile
//! and append its event") opens a [`UnitOfWork`] with [`Db::begin`], calls
//! the repository functions it needs, and commits; dropped without a
//! commit, the work is rolled back.

use sqlx::{Postgres, Sqlite, Transaction};

use super::{Db, Pool};

/// An open transaction on one of the two backends.
#[derive(Debug)]
pub enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

/// A transaction, and on SQLite the process's write turn (held until the
/// work ends, so a second writer queues instead of sleeping in SQLite's
/// busy handler: see [`Db::write_turn`]).
#[derive(Debug)]
pub struct UnitOfWork {
    tx: Tx,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Db {
    /// Opens a unit of work that may write.
    ///
    /// On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`),
    /// waiting for it up to the busy timeout. A plain `BEGIN` starts as a
    /// reader, and a reader that then writes is refused on the spot —
    /// without the busy handler's wait — when another process (a second
    /// replica on the same file) holds the write lock or has committed
    /// since the read (`SQLITE_BUSY`, `SQLITE_BUSY_SNAPSHOT`): every
    /// read-then-write flow (a profile change checks its version first)
    /// failed as "busy" under concurrent writes from two replicas.
    pub async fn begin(&self) -> Result<UnitOfWork, sqlx::Error> {
        let turn = self.write_turn().await;
        let tx = match self.pool() {
            Pool::Postgres(pool) => Tx::Postgres(pool.begin().await?),
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
        };
        Ok(UnitOfWork { tx, _turn: turn })
    }
}

impl UnitOfWork {
    /// Makes every statement of the work durable at once.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.tx {
            Tx::Postgres(tx) => tx.commit().await,
            Tx::Sqlite(tx) => tx.commit().await,
        }
    }

    /// The transaction, for [`on_conn!`](crate::on_conn).
    pub fn tx(&mut self) -> &mut Tx {
        &mut self.tx
    }
}

/// Where a repository function runs its SQL: on the pool (a statement of
/// its own) or inside a unit of work.
#[derive(Debug)]
pub enum Conn<'a> {
    Pool(&'a Pool),
    Tx(&'a mut Tx),
}

impl<'a> From<&'a Db> for Conn<'a> {
    fn from(db: &'a Db) -> Self {
        Conn::Pool(db.pool())
    }
}

impl<'a> From<&'a mut UnitOfWork> for Conn<'a> {
    fn from(work: &'a mut UnitOfWork) -> Self {
        Conn::Tx(work.tx())
    }
}

/// Runs `$body` with `$exec` bound to an executor of whichever backend and
/// place `$conn` (a [`Conn`]) names: `&PgPool`/`&SqlitePool` or the
/// transaction's connection. The body is compiled once per backend and
/// place, so it must be valid SQL for both backends, and uses `$exec` once.
#[macro_export]
macro_rules! on_conn {
    ($conn:expr, $exec:ident => $body:expr) => {
        match $conn {
            $crate::db::Conn::Pool($crate::db::Pool::Postgres($exec)) => $body,
            $crate::db::Conn::Pool($crate::db::Pool::Sqlite($exec)) => $body,
            $crate::db::Conn::Tx($crate::db::Tx::Postgres(tx)) => {
                let $exec = &mut **tx;
                $body
            }
            $crate::db::Conn::Tx($crate::db::Tx::Sqlite(tx)) => {
                let $exec = &mut **tx;
                $body
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DatabaseConfig;

    async fn sqlite() -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("work.db").display());
        let config = DatabaseConfig {
            url: url.into(),
            max_connections: 4,
            acquire_timeout_ms: 2000,
            lock_timeout_ms: 2000,
            create_if_missing: true,
        };
        let db = Db::connect(&config).await.unwrap();
        crate::on_db!(&db, pool => {
            sqlx::query("CREATE TABLE things (name TEXT NOT NULL UNIQUE)")
                .execute(pool)
                .await
                .unwrap();
        });
        (db, dir)
    }

    async fn insert(conn: Conn<'_>, name: &str) -> Result<(), sqlx::Error> {
        on_conn!(conn, exec => {
            sqlx::query("INSERT INTO things (name) VALUES ($1)")
                .bind(name)
                .execute(exec)
                .await
                .map(|_| ())
        })
    }

    async fn names(db: &Db) -> Vec<String> {
        crate::on_db!(db, pool => {
            sqlx::query_scalar("SELECT name FROM things ORDER BY name")
                .fetch_all(pool)
                .await
                .unwrap()
        })
    }

    #[tokio::test]
    async fn a_committed_unit_keeps_all_its_statements() {
        let (db, _dir) = sqlite().await;
        let mut work = db.begin().await.unwrap();
        insert((&mut work).into(), "a").await.unwrap();
        insert((&mut work).into(), "b").await.unwrap();
        work.commit().await.unwrap();
        insert((&db).into(), "c").await.unwrap();
        assert_eq!(names(&db).await, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_failed_or_dropped_unit_keeps_none() {
        let (db, _dir) = sqlite().await;
        {
            let mut work = db.begin().await.unwrap();
            insert((&mut work).into(), "a").await.unwrap();
            // The unique name again: the flow fails and drops its work.
            assert!(insert((&mut work).into(), "a").await.is_err());
        }
        assert!(names(&db).await.is_empty());
    }
}
