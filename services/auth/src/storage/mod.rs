//! Auth storage: credentials, sessions and signing keys. Every query is
//! written once and runs on PostgreSQL and SQLite alike. What a user does
//! with their own sessions is in [`sessions`].

mod account_tokens;
mod audit;
pub mod inbox;
mod mfa;
mod registrations;
mod roles;
mod sessions;
mod signing_keys;

pub use account_tokens::{MailedToken, TokenPurpose};
pub use audit::AuditQuery;
pub use mfa::TotpFactor;
pub use registrations::PendingCredential;
pub use roles::RoleChange;
pub use sessions::{NewSession, SessionRecord, StoredPassword};
pub use signing_keys::SealedKey;

use portico_common::{
    db::{self, Db},
    jwt::RoleSet,
    on_conn, on_db,
    outbox::Outbox,
};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{audit::AuditEvent, tokens::TokenFacts};

pub const MIGRATIONS: db::Migrations = db::Migrations {
    postgres: &[
        (
            1,
            "create auth tables",
            include_str!("../../migrations/postgres/0001_create_auth.sql"),
        ),
        (
            2,
            "signing key bootstrap",
            include_str!("../../migrations/postgres/0002_signing_key_bootstrap.sql"),
        ),
        (
            3,
            "refresh token families",
            include_str!("../../migrations/postgres/0003_refresh_token_families.sql"),
        ),
        (
            4,
            "session client",
            include_str!("../../migrations/postgres/0004_session_client.sql"),
        ),
        (
            5,
            "revocation feed index",
            include_str!("../../migrations/postgres/0005_revocation_feed_index.sql"),
        ),
        (
            6,
            "audit log",
            include_str!("../../migrations/postgres/0006_audit_log.sql"),
        ),
        (
            7,
            "signing key rotation",
            include_str!("../../migrations/postgres/0007_signing_key_rotation.sql"),
        ),
        (
            8,
            "account deletion",
            include_str!("../../migrations/postgres/0008_account_deletion.sql"),
        ),
        (
            9,
            "mfa",
            include_str!("../../migrations/postgres/0009_mfa.sql"),
        ),
        (
            10,
            "email tokens",
            include_str!("../../migrations/postgres/0010_email_tokens.sql"),
        ),
        (
            11,
            "outbox",
            include_str!("../../migrations/postgres/0011_outbox.sql"),
        ),
    ],
    sqlite: &[
        (
            1,
            "create auth tables",
            include_str!("../../migrations/sqlite/0001_create_auth.sql"),
        ),
        (
            2,
            "signing key bootstrap",
            include_str!("../../migrations/sqlite/0002_signing_key_bootstrap.sql"),
        ),
        (
            3,
            "refresh token families",
            include_str!("../../migrations/sqlite/0003_refresh_token_families.sql"),
        ),
        (
            4,
            "session client",
            include_str!("../../migrations/sqlite/0004_session_client.sql"),
        ),
        (
            5,
            "revocation feed index",
            include_str!("../../migrations/sqlite/0005_revocation_feed_index.sql"),
        ),
        (
            6,
            "audit log",
            include_str!("../../migrations/sqlite/0006_audit_log.sql"),
        ),
        (
            7,
            "signing key rotation",
            include_str!("../../migrations/sqlite/0007_signing_key_rotation.sql"),
        ),
        (
            8,
            "account deletion",
            include_str!("../../migrations/sqlite/0008_account_deletion.sql"),
        ),
        (
            9,
            "mfa",
            include_str!("../../migrations/sqlite/0009_mfa.sql"),
        ),
        (
            10,
            "email tokens",
            include_str!("../../migrations/sqlite/0010_email_tokens.sql"),
        ),
        (
            11,
            "outbox",
            include_str!("../../migrations/sqlite/0011_outbox.sql"),
        ),
    ],
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email already registered")]
    EmailTaken,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// An active credential found by email.
#[derive(Debug, Clone)]
pub struct Credential {
    pub user_id: Uuid,
    pub password_hash: String,
    pub facts: TokenFacts,
    /// A confirmed second factor: sign-in stops at a challenge.
    pub mfa_enabled: bool,
}

/// `credentials.status`: every value the column may hold (a database CHECK
/// allows exactly these). A value this enum does not know is an error when
/// read, never mistaken for another status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialStatus {
    /// Registration under way: the profile is being created.
    Pending,
    /// Can log in.
    Active,
    /// The account was deleted: no sign-in; the email stays taken until
    /// the credential is scrubbed.
    Deleted,
}

impl CredentialStatus {
    pub fn parse(stored: &str) -> Result<Self, UnknownStatus> {
        match stored {
            "pending" => Ok(Self::Pending),
            "active" => Ok(Self::Active),
            "deleted" => Ok(Self::Deleted),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

/// A status value the code does not know (a newer schema, or corruption).
#[derive(Debug, thiserror::Error)]
#[error("unknown credential status `{0}`")]
pub struct UnknownStatus(pub String);

fn decode_error(err: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(err))
}

#[derive(Debug, thiserror::Error)]
#[error("stored roles: {0}")]
struct InvalidRoles(String);

fn roles_from_stored(stored: &str) -> Result<RoleSet, sqlx::Error> {
    RoleSet::from_stored(stored).map_err(|err| decode_error(InvalidRoles(err)))
}

/// Where a credential is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialState {
    /// Registration under way (or died half-way) since this time.
    Pending {
        since: OffsetDateTime,
    },
    Active,
    Deleted,
}

/// A refresh token its session rotated away (see [`AuthStore::spent_refresh`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpentToken {
    pub session: SessionRef,
    pub spent_at: OffsetDateTime,
    /// The token it rotated into is still the session's current one.
    pub successor_is_current: bool,
    /// The session is neither revoked, expired nor idle.
    pub session_is_live: bool,
}

/// A session found by its current refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRef {
    pub session_id: Uuid,
    pub user_id: Uuid,
}

#[derive(Debug, Clone)]
pub struct AuthStore {
    db: Db,
    /// Where announced changes put their events.
    outbox: Outbox,
}

impl AuthStore {
    /// A store whose events nobody receives (they are still recorded).
    pub fn new(db: Db) -> Self {
        let outbox = Outbox::unsubscribed(db.clone());
        Self { db, outbox }
    }

    /// A store whose events go out through `outbox`.
    pub fn with_outbox(db: Db, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The state of the credential holding this email, if any.
    pub async fn credential_state(
        &self,
        email_lower: &str,
    ) -> Result<Option<CredentialState>, sqlx::Error> {
        on_db!(&self.db, pool => {
            let row = sqlx::query("SELECT status, updated_at FROM credentials WHERE email_lower = $1")
                .bind(email_lower)
                .fetch_optional(pool)
                .await?;
            row.map(|row| -> Result<CredentialState, sqlx::Error> {
                let status = CredentialStatus::parse(row.try_get::<&str, _>("status")?)
                    .map_err(decode_error)?;
                Ok(match status {
                    CredentialStatus::Active => CredentialState::Active,
                    CredentialStatus::Deleted => CredentialState::Deleted,
                    CredentialStatus::Pending => {
                        CredentialState::Pending { since: row.try_get("updated_at")? }
                    }
                })
            })
            .transpose()
        })
    }

    /// Takes over a pending credential last touched before `stale_before`
    /// (its registration died half-way): sets the new password hash and
    /// returns its user id, so the retry creates the profile under the same
    /// id (idempotent on the user service). `None` when it is not stale or
    /// another registration took it first.
    pub async fn take_over_stale_pending(
        &self,
        email_lower: &str,
        password_hash: &str,
        stale_before: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        let _turn = self.db().write_turn().await;
        on_db!(&self.db, pool => {
            let row = sqlx::query(
                "UPDATE credentials SET password_hash = $2, updated_at = $4 \
                 WHERE email_lower = $1 AND status = 'pending' AND updated_at < $3 RETURNING user_id",
            )
            .bind(email_lower)
            .bind(password_hash)
            .bind(stale_before)
            .bind(now)
            .fetch_optional(pool)
            .await?;
            row.map(|row| row.try_get::<Uuid, _>("user_id")).transpose()
        })
    }

    /// Stores a pending credential (registration step one).
    pub async fn insert_pending(
        &self,
        user_id: Uuid,
        email_lower: &str,
        password_hash: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let _turn = self.db().write_turn().await;
        let result = on_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO credentials (user_id, email_lower, password_hash, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'pending', $4, $4)",
            )
            .bind(user_id)
            .bind(email_lower)
            .bind(password_hash)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        });
        match result {
            Ok(()) => Ok(()),
            Err(err) if db::is_unique_violation(&err, "email_lower") => Err(StoreError::EmailTaken),
            Err(err) => Err(err.into()),
        }
    }

    /// Removes a pending credential whose registration failed.
    pub async fn delete_pending(&self, user_id: Uuid) -> Result<(), sqlx::Error> {
        let _turn = self.db().write_turn().await;
        on_db!(&self.db, pool => {
            sqlx::query("DELETE FROM credentials WHERE user_id = $1 AND status = 'pending'")
                .bind(user_id)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    /// Activates a pending credential with its roles and opens its first
    /// session, recording `event` — atomically. False (nothing written)
    /// when the credential is no longer pending: a concurrent retry or the
    /// reconciler finished the registration first, or it was abandoned.
    pub async fn activate_with_session(
        &self,
        session: &NewSession<'_>,
        roles: &RoleSet,
        event: &AuditEvent,
    ) -> Result<bool, sqlx::Error> {
        let mut work = self.db.begin().await?;
        let activated = on_conn!((&mut work).into(), exec => {
            sqlx::query(
                "UPDATE credentials SET status = 'active', roles = $3, updated_at = $2 \
                 WHERE user_id = $1 AND status = 'pending'",
            )
            .bind(session.user_id)
            .bind(session.created_at)
            .bind(roles.to_stored())
            .execute(exec)
            .await?
            .rows_affected()
                == 1
        });
        if !activated {
            return Ok(false);
        }
        self.open_session(work, session, event).await
    }

    pub async fn active_credential(
        &self,
        email_lower: &str,
    ) -> Result<Option<Credential>, sqlx::Error> {
        on_db!(&self.db, pool => {
            let row = sqlx::query(
                "SELECT user_id, password_hash, roles, email_verified_at IS NOT NULL AS verified, \
                 EXISTS (SELECT 1 FROM totp_factors t \
                         WHERE t.user_id = credentials.user_id AND t.confirmed_at IS NOT NULL) AS mfa \
                 FROM credentials WHERE email_lower = $1 AND status = 'active'",
            )
            .bind(email_lower)
            .fetch_optional(pool)
            .await?;
            row.map(|row| -> Result<Credential, sqlx::Error> {
                Ok(Credential {
                    user_id: row.try_get("user_id")?,
                    password_hash: row.try_get("password_hash")?,
                    facts: TokenFacts {
                        roles: roles_from_stored(row.try_get::<&str, _>("roles")?)?,
                        email_verified: row.try_get("verified")?,
                    },
                    mfa_enabled: row.try_get("mfa")?,
                })
            })
            .transpose()
        })
    }

    /// Roles and email state of an active user, for a token; `None` when
    /// the credential is gone.
    pub async fn token_facts(&self, user_id: Uuid) -> Result<Option<TokenFacts>, sqlx::Error> {
        on_db!(&self.db, pool => {
            let row = sqlx::query(
                "SELECT roles, email_verified_at IS NOT NULL AS verified FROM credentials \
                 WHERE user_id = $1 AND status = 'active'",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
            row.map(|row| -> Result<TokenFacts, sqlx::Error> {
                Ok(TokenFacts {
                    roles: roles_from_stored(row.try_get::<&str, _>("roles")?)?,
                    email_verified: row.try_get("verified")?,
                })
            })
            .transpose()
        })
    }

    /// Opens a session if the credential is still active, recording
    /// `event` in the same transaction; `false` (nothing written) if it no
    /// longer is. The credential's row is locked first (a no-op update), so
    /// an account deletion — which locks it before revoking sessions —
    /// either waits for this session and then revokes it, or goes first
    /// and this sign-in finds the credential deleted.
    pub async fn create_session(
        &self,
        session: &NewSession<'_>,
        event: &AuditEvent,
    ) -> Result<bool, sqlx::Error> {
        let mut work = self.db.begin().await?;
        let active = on_conn!((&mut work).into(), exec => {
            sqlx::query(
                "UPDATE credentials SET updated_at = updated_at WHERE user_id = $1 AND status = 'active'",
            )
            .bind(session.user_id)
            .execute(exec)
            .await?
            .rows_affected()
                == 1
        });
        if !active {
            return Ok(false);
        }
        self.open_session(work, session, event).await
    }

    /// Rotates a session's refresh token: swaps the hash `old` for `new` if
    /// `old` is current and the session neither revoked, expired nor idle
    /// since `idle_since`, and remembers `old` as spent — one transaction.
    /// A compare-and-swap: of two concurrent rotations only one wins.
    pub async fn rotate_refresh(
        &self,
        old: &[u8],
        new: &[u8],
        now: OffsetDateTime,
        idle_since: OffsetDateTime,
    ) -> Result<Option<SessionRef>, sqlx::Error> {
        let mut work = self.db.begin().await?;
        let rotated = on_conn!((&mut work).into(), exec => {
            let row = sqlx::query(
                "UPDATE sessions SET refresh_hash = $2, previous_hash = $1, rotated_at = $3, last_used_at = $3 \
                 WHERE refresh_hash = $1 AND revoked_at IS NULL AND expires_at > $3 AND last_used_at > $4 \
                 RETURNING id, user_id",
            )
            .bind(old)
            .bind(new)
            .bind(now)
            .bind(idle_since)
            .fetch_optional(exec)
            .await?;
            row.map(|row| -> Result<SessionRef, sqlx::Error> {
                Ok(SessionRef { session_id: row.try_get("id")?, user_id: row.try_get("user_id")? })
            })
            .transpose()?
        });
        let Some(session) = rotated else {
            return Ok(None);
        };
        on_conn!((&mut work).into(), exec => {
            sqlx::query("INSERT INTO spent_refresh_tokens (hash, session_id, spent_at) VALUES ($1, $2, $3)")
                .bind(old)
                .bind(session.session_id)
                .bind(now)
                .execute(exec)
                .await
                .map(|_| ())
        })?;
        work.commit().await?;
        Ok(Some(session))
    }

    /// A refresh token its session already rotated away, by hash: whose it
    /// is, when it was spent, whether the session is still live, and whether
    /// `successor` (the hash it rotated into) is still the current one.
    pub async fn spent_refresh(
        &self,
        hash: &[u8],
        successor: &[u8],
        now: OffsetDateTime,
        idle_since: OffsetDateTime,
    ) -> Result<Option<SpentToken>, sqlx::Error> {
        on_db!(&self.db, pool => {
            let row = sqlx::query(
                "SELECT s.id, s.user_id, t.spent_at, s.refresh_hash = $2 AS successor_current, \
                 (s.revoked_at IS NULL AND s.expires_at > $3 AND s.last_used_at > $4) AS live \
                 FROM spent_refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.hash = $1",
            )
            .bind(hash)
            .bind(successor)
            .bind(now)
            .bind(idle_since)
            .fetch_optional(pool)
            .await?;
            row.map(|row| -> Result<SpentToken, sqlx::Error> {
                Ok(SpentToken {
                    session: SessionRef { session_id: row.try_get("id")?, user_id: row.try_get("user_id")? },
                    spent_at: row.try_get("spent_at")?,
                    successor_is_current: row.try_get("successor_current")?,
                    session_is_live: row.try_get("live")?,
                })
            })
            .transpose()
        })
    }

    /// The secret every replica derives refresh-token successors with; the
    /// first replica to start stores `candidate`, the others read it.
    pub async fn rotation_secret(&self, candidate: &[u8]) -> Result<Vec<u8>, sqlx::Error> {
        let _turn = self.db().write_turn().await;
        on_db!(&self.db, pool => {
            sqlx::query("INSERT INTO token_secrets (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
                .bind(candidate)
                .execute(pool)
                .await?;
            sqlx::query("SELECT secret FROM token_secrets WHERE id = 1")
                .fetch_one(pool)
                .await?
                .try_get::<Vec<u8>, _>("secret")
        })
    }

    /// Revokes one of the user's sessions, recording `event` with it; false
    /// (and nothing recorded) when there was none to revoke.
    pub async fn revoke_session(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<bool, sqlx::Error> {
        let mut work = self.db.begin().await?;
        let revoked = on_conn!((&mut work).into(), exec => {
            sqlx::query(
                "UPDATE sessions SET revoked_at = $3 \
                 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
            )
            .bind(session_id)
            .bind(user_id)
            .bind(now)
            .execute(exec)
            .await?
            .rows_affected()
                > 0
        });
        if revoked {
            self.commit_audited(work, event).await?;
        }
        Ok(revoked)
    }

    /// The end of opening a session: `session` and its audit `event` are
    /// written and `work` (which checked the credential) commits.
    async fn open_session(
        &self,
        mut work: db::UnitOfWork,
        session: &NewSession<'_>,
        event: &AuditEvent,
    ) -> Result<bool, sqlx::Error> {
        on_conn!((&mut work).into(), exec => {
            sessions::insert_session!(session).execute(exec).await.map(|_| ())
        })?;
        self.commit_audited(work, event).await?;
        Ok(true)
    }

    /// Row counts of (credentials, sessions), for tests proving nothing was written.
    pub async fn counts(&self) -> Result<(i64, i64), sqlx::Error> {
        on_db!(&self.db, pool => {
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM credentials) AS c, (SELECT COUNT(*) FROM sessions) AS s",
            )
            .fetch_one(pool)
            .await?;
            Ok((row.try_get::<i64, _>("c")?, row.try_get::<i64, _>("s")?))
        })
    }
}
