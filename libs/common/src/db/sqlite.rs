//! What an embedded SQLite database needs that a database server does not.
//!
//! - **Private files.** The file holds password hashes and signing keys: it
//!   is created `0600` in a `0700` directory (SQLite gives its `-wal` and
//!   `-shm` files the database file's mode), and looser modes on existing
//!   files are tightened at startup.
//! - **No silent re-creation.** A missing file is created only when
//!   `database.create_if_missing` says so. A replica whose file was deleted
//!   must not come back on a new, empty database beside its peers.
//! - **The file under us.** [`DatabaseFile::observe`] runs every 100 ms
//!   (from [`upkeep`]) and on every readiness check. A file deleted or
//!   replaced while the service runs would leave our connections writing to
//!   an inode nobody will read again: from then on the pool hands out no
//!   connection (requests get 503) and readiness stays false until the
//!   replica is restarted. A file that turned read-only makes readiness
//!   false; once it is writable again, the pool replaces the connections
//!   SQLite opened read-only, so the service recovers by itself.
//! - **A bounded WAL.** With several pooled connections writing back to
//!   back, SQLite's automatic checkpoint never gets to rewind the WAL: the
//!   next writer takes its snapshot before the previous commit's checkpoint
//!   finishes, so the file only grows (tens of MB after a few thousand
//!   writes, measured). [`upkeep`] checkpoints and truncates it on a
//!   connection of its own every second; `journal_size_limit` caps what a
//!   rewound WAL keeps on disk; the higher `wal_autocheckpoint` stops every
//!   commit from contending for the checkpoint lock the upkeep needs.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::{
    ConnectOptions, Connection,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};

/// Mode of a database file and its `-wal`/`-shm` companions.
const FILE_MODE: u32 = 0o600;
/// Mode of a data directory we create.
const DIR_MODE: u32 = 0o700;

/// Bytes a checkpointed WAL keeps on disk.
const JOURNAL_SIZE_LIMIT: u64 = 8 * 1024 * 1024;
/// Pages after which a commit checkpoints by itself: a safety net well
/// above what [`upkeep`] lets accumulate.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// How long the writability probe waits for the write lock. Busy means
/// another connection is writing, which proves the file writable.
const PROBE_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// The database file a pool was opened on, watched for readiness.
#[derive(Debug)]
pub struct DatabaseFile {
    path: PathBuf,
    /// `(device, inode)` of the file we opened; `None` for in-memory databases.
    identity: Option<(u64, u64)>,
    /// Options for fresh, unpooled connections: the writability probe and
    /// the checkpointer (a short busy timeout, so neither stalls writers).
    probe: SqliteConnectOptions,
    /// Whether the file could last be opened for writing.
    writable: AtomicBool,
    /// The file we opened is gone or replaced; sticky until restart.
    gone: AtomicBool,
    /// When the file last became writable again after a read-only spell.
    recovered_at: Mutex<Option<Instant>>,
}

/// Options for a pool on `url`, and the watch on its file. Creates the file
/// (and its directory) when allowed; refuses a missing file otherwise.
pub(super) fn prepare(
    url: &str,
    create_if_missing: bool,
    busy_timeout: Duration,
) -> Result<(SqliteConnectOptions, std::sync::Arc<DatabaseFile>), sqlx::Error> {
    let base = SqliteConnectOptions::from_str(url)?
        .create_if_missing(false)
        .foreign_keys(true);
    let path = base.get_filename().to_path_buf();
    // sqlx names in-memory databases `file:sqlx-in-memory-N`: judge the URL.
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let identity = if in_memory {
        None
    } else {
        ensure_file(&path, create_if_missing)?;
        Some(identity_of(&path).map_err(sqlx::Error::Io)?)
    };
    let options = base
        .clone()
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string())
        .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
        .busy_timeout(busy_timeout);
    let probe = base.busy_timeout(PROBE_BUSY_TIMEOUT);
    let writable = in_memory || opens_for_writing(&path);
    let file = DatabaseFile {
        path,
        identity,
        probe,
        writable: AtomicBool::new(writable),
        gone: AtomicBool::new(false),
        recovered_at: Mutex::new(None),
    };
    Ok((options, std::sync::Arc::new(file)))
}

/// Creates the file (0600) and directory (0700) if missing and allowed;
/// tightens the modes of an existing file and its companions.
fn ensure_file(path: &Path, create_if_missing: bool) -> Result<(), sqlx::Error> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

    if !path.exists() {
        if !create_if_missing {
            return Err(sqlx::Error::Configuration(
                format!(
                    "the database file `{}` does not exist; set database.create_if_missing = true \
                     to create a new, empty database",
                    path.display()
                )
                .into(),
            ));
        }
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(sqlx::Error::Io)?;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(path)
        {
            Ok(_) => tracing::info!(path = %path.display(), "created a new database file"),
            // A replica starting beside us created it first.
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(sqlx::Error::Io(err)),
        }
    }
    for companion in [
        path.to_path_buf(),
        suffixed(path, "-wal"),
        suffixed(path, "-shm"),
    ] {
        let Ok(metadata) = std::fs::metadata(&companion) else {
            continue;
        };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&companion, std::fs::Permissions::from_mode(FILE_MODE))
                .map_err(sqlx::Error::Io)?;
            tracing::warn!(path = %companion.display(), mode = format!("{mode:o}"),
                "database file was readable by others; tightened to 0600");
        }
    }
    Ok(())
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn identity_of(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path)?;
    Ok((metadata.dev(), metadata.ino()))
}

/// Whether this process can open the file for writing now: what SQLite
/// does first, falling back to read-only when it cannot. (Opening without
/// truncating and closing at once changes nothing.)
fn opens_for_writing(path: &Path) -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .is_ok()
}

impl DatabaseFile {
    /// Looks at the file (a `stat` and an open): notices it vanishing or
    /// being replaced (sticky), and its writability changing — marking the
    /// moment it recovers, so read-only connections get replaced.
    pub fn observe(&self) -> Result<(), String> {
        let Some(opened) = self.identity else {
            return Ok(());
        };
        if self.gone.load(Ordering::SeqCst) {
            return Err(self.gone_message());
        }
        match identity_of(&self.path) {
            Ok(now) if now == opened => {}
            _ => {
                if !self.gone.swap(true, Ordering::SeqCst) {
                    tracing::error!(path = %self.path.display(),
                        "database file deleted or replaced; no more queries until restart");
                }
                return Err(self.gone_message());
            }
        }
        let writable = opens_for_writing(&self.path);
        let was_writable = self.writable.swap(writable, Ordering::SeqCst);
        if writable && !was_writable {
            tracing::info!(path = %self.path.display(), "database file writable again; reopening connections");
            if let Ok(mut recovered_at) = self.recovered_at.lock() {
                *recovered_at = Some(Instant::now());
            }
        }
        Ok(())
    }

    fn gone_message(&self) -> String {
        format!(
            "database file `{}` was deleted or replaced; restart this replica once it is restored",
            self.path.display()
        )
    }

    /// Whether the file we opened was deleted or replaced.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    /// Ready when the file is still the one we opened and takes writes.
    pub async fn check(&self) -> Result<(), String> {
        self.observe()?;
        self.probe_writable().await
    }

    /// On a fresh connection: takes the write lock and dirties a page (the
    /// header's `user_version`, set to its own value), then rolls back —
    /// nothing reaches the file. Taking the lock alone is not enough: a
    /// read-only WAL database grants `BEGIN IMMEDIATE` and refuses the write.
    async fn probe_writable(&self) -> Result<(), String> {
        let mut connection = self
            .probe
            .connect()
            .await
            .map_err(|err| format!("cannot open the database file: {err}"))?;
        let result = dirty_and_roll_back(&mut connection).await;
        let _ = connection.close().await;
        match result {
            Ok(()) => Ok(()),
            // Another connection is writing: the file evidently takes writes.
            Err(err) if super::errors::classify(&err) == super::errors::Failure::Contended => {
                Ok(())
            }
            Err(err) => Err(format!("the database does not take writes: {err}")),
        }
    }

    /// Whether this is a file (not an in-memory database).
    pub fn is_on_disk(&self) -> bool {
        self.identity.is_some()
    }

    /// Whether a pooled connection of age `age` was opened before the file
    /// last recovered from being read-only (and so may be read-only itself).
    pub fn opened_before_recovery(&self, age: Duration) -> bool {
        self.recovered_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| age > at.elapsed())
    }
}

/// How often the upkeep looks at the WAL's size (one `stat`).
const WAL_WATCH_EVERY: Duration = Duration::from_millis(100);
/// A WAL this large is checkpointed at once.
const CHECKPOINT_AT_BYTES: u64 = 4 * 1024 * 1024;
/// A WAL of any size is checkpointed at least this often.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Attempts per tick when another checkpoint holds the lock.
const CHECKPOINT_ATTEMPTS: usize = 3;

/// Watches the file ([`DatabaseFile::observe`]) and keeps the write-ahead
/// log bounded while the service runs: it watches the
/// WAL's size and, on a connection of its own, checkpoints it into the
/// database and truncates it — at once when it passes
/// [`CHECKPOINT_AT_BYTES`], else every [`CHECKPOINT_EVERY`] while it is not
/// empty. So the WAL stays near the threshold plus what arrives in one
/// watch interval, whatever the write rate.
pub(super) async fn upkeep(
    file: std::sync::Arc<DatabaseFile>,
    writers: std::sync::Arc<tokio::sync::Mutex<()>>,
) {
    let wal = suffixed(&file.path, "-wal");
    let mut interval = tokio::time::interval(WAL_WATCH_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connection = None;
    let mut last_checkpoint = Instant::now();
    loop {
        interval.tick().await;
        if file.observe().is_err() {
            // Gone for good: nothing left to checkpoint.
            return;
        }
        let size = std::fs::metadata(&wal).map_or(0, |metadata| metadata.len());
        let due = size >= CHECKPOINT_AT_BYTES
            || (size > 0 && last_checkpoint.elapsed() >= CHECKPOINT_EVERY);
        if !due {
            continue;
        }
        if connection.is_none() {
            match file.probe.connect().await {
                Ok(opened) => connection = Some(opened),
                Err(err) => {
                    tracing::debug!(path = %file.path.display(), %err, "checkpointer cannot open the database");
                    continue;
                }
            }
        }
        let Some(open) = connection.as_mut() else {
            continue;
        };
        last_checkpoint = Instant::now();
        // The process's writers wait their turn instead of sleeping in
        // SQLite's busy handler while the checkpoint holds the lock.
        let _turn = writers.lock().await;
        if let Err(err) = checkpoint(open).await {
            tracing::debug!(path = %file.path.display(), %err, "WAL checkpoint failed; reconnecting");
            connection = None;
        }
    }
}

/// The writability probe's write: see [`DatabaseFile::probe_writable`].
async fn dirty_and_roll_back(connection: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    use sqlx::Row;
    let version: i64 = sqlx::query("PRAGMA user_version")
        .fetch_one(&mut *connection)
        .await?
        .try_get(0)?;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *connection)
        .await?;
    // A PRAGMA takes no bound parameters; the value is the integer just read.
    let written = sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA user_version = {version}"
    )))
    .execute(&mut *connection)
    .await;
    let rolled_back = sqlx::query("ROLLBACK").execute(&mut *connection).await;
    written?;
    rolled_back.map(|_| ())
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`, retried while another checkpoint is
/// under way (`busy = 1`).
async fn checkpoint(connection: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    use sqlx::Row;
    for _ in 0..CHECKPOINT_ATTEMPTS {
        let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *connection)
            .await?;
        let busy: i64 = row.try_get(0)?;
        if busy == 0 {
            return Ok(());
        }
        tokio::time::sleep(PROBE_BUSY_TIMEOUT).await;
    }
    Ok(())
}
