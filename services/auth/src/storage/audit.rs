//! The audit log: inserted beside the change it records, read by admins
//! newest first with keyset pagination.

use portico_common::{db::UnitOfWork, on_conn, on_db, outbox::Event};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AuthStore, decode_error};
use crate::domain::{
    audit::{AuditEvent, AuditKind, ClientInfo},
    events::announcement,
};

/// The insert of an [`AuditEvent`], for a pool or a transaction.
macro_rules! insert_audit {
    ($event:expr) => {
        sqlx::query(
            "INSERT INTO audit_events \
             (id, occurred_at, type, user_id, session_id, actor, ip, user_agent, request_id, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind($event.id)
        .bind($event.occurred_at)
        .bind($event.kind.as_str())
        .bind($event.user_id)
        .bind($event.session_id)
        .bind($event.actor.as_deref())
        .bind($event.client.ip.as_deref())
        .bind($event.client.user_agent.as_deref())
        .bind($event.client.request_id.as_deref())
        .bind($event.detail.as_deref())
    };
}

/// Which events an admin asks for.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub user_id: Option<Uuid>,
    pub kind: Option<AuditKind>,
    /// Only events older than this one (the previous page's last).
    pub before: Option<Uuid>,
    pub limit: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown audit event type `{0}`")]
struct UnknownKind(String);

impl AuthStore {
    /// Records an event that changes nothing else (a failed or throttled
    /// sign-in, a client token).
    pub async fn record(&self, event: &AuditEvent) -> Result<(), sqlx::Error> {
        if announcement(event).is_some() {
            // Announced kinds carry an outbox event: one transaction.
            let work = self.db().begin().await?;
            return self.commit_audited(work, event).await;
        }
        let _turn = self.db().write_turn().await;
        on_db!(self.db(), pool => {
            insert_audit!(event).execute(pool).await?;
            event.recorded();
            Ok(())
        })
    }

    /// Ends a change: writes its `audit` row in `work` — and, when
    /// subscribers hear of its kind, its event in the outbox with a
    /// delivery each — then commits, counts the audit event and wakes the
    /// relay. The change and its event commit together or not at all.
    pub(super) async fn commit_audited(
        &self,
        work: UnitOfWork,
        audit: &AuditEvent,
    ) -> Result<(), sqlx::Error> {
        self.commit_all_audited(work, &[audit]).await
    }

    /// Ends a change that is audited but announces nothing, whatever its
    /// kind (a deletion that found no credential here).
    pub(super) async fn commit_unannounced(
        &self,
        mut work: UnitOfWork,
        audit: &AuditEvent,
    ) -> Result<(), sqlx::Error> {
        on_conn!((&mut work).into(), exec => {
            insert_audit!(audit).execute(exec).await.map(|_| ())
        })?;
        work.commit().await?;
        audit.recorded();
        Ok(())
    }

    /// [`Self::commit_audited`] for a change that is several audited
    /// facts at once (a reset that also verifies the address).
    pub(super) async fn commit_all_audited(
        &self,
        mut work: UnitOfWork,
        audits: &[&AuditEvent],
    ) -> Result<(), sqlx::Error> {
        let mut deliveries_added = false;
        for audit in audits {
            on_conn!((&mut work).into(), exec => {
                insert_audit!(audit).execute(exec).await.map(|_| ())
            })?;
            if let Some((event_type, subject, data)) = announcement(audit) {
                let version = next_event_version(&mut work, subject).await?;
                let event = Event::new(
                    event_type.as_str(),
                    subject,
                    version,
                    audit.occurred_at,
                    data,
                );
                deliveries_added |= self
                    .outbox
                    .record(&mut work, &event, audit.occurred_at)
                    .await?;
            }
        }
        self.outbox.commit(work, deliveries_added).await?;
        for audit in audits {
            audit.recorded();
        }
        Ok(())
    }

    /// Events matching `query`, newest first.
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, sqlx::Error> {
        // One statement for every filter combination: a NULL parameter
        // matches everything.
        let sql = "SELECT id, occurred_at, type, user_id, session_id, actor, ip, user_agent, \
                   request_id, detail FROM audit_events \
                   WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR type = $2) \
                   AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4";
        let kind = query.kind.map(AuditKind::as_str);
        on_db!(self.db(), pool => {
            let rows = sqlx::query(sql)
                .bind(query.user_id)
                .bind(kind)
                .bind(query.before)
                .bind(query.limit)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| -> Result<AuditEvent, sqlx::Error> {
                    let kind: String = row.try_get("type")?;
                    Ok(AuditEvent {
                        id: row.try_get("id")?,
                        occurred_at: row.try_get::<OffsetDateTime, _>("occurred_at")?,
                        kind: AuditKind::parse(&kind).ok_or_else(|| decode_error(UnknownKind(kind)))?,
                        user_id: row.try_get("user_id")?,
                        session_id: row.try_get("session_id")?,
                        actor: row.try_get("actor")?,
                        client: ClientInfo {
                            ip: row.try_get("ip")?,
                            user_agent: row.try_get("user_agent")?,
                            request_id: row.try_get("request_id")?,
                        },
                        detail: row.try_get("detail")?,
                    })
                })
                .collect()
        })
    }
}

/// Takes the credential's row lock and the version of its next event (its
/// event count after this one). Every announced change takes this lock, so
/// a user's events are numbered in the order their transactions commit; an
/// announced change always concerns an existing credential.
pub(super) async fn next_event_version(
    work: &mut UnitOfWork,
    user_id: Uuid,
) -> Result<i64, sqlx::Error> {
    on_conn!(work.into(), exec => {
        sqlx::query_scalar(
            "UPDATE credentials SET event_version = event_version + 1 \
             WHERE user_id = $1 RETURNING event_version",
        )
        .bind(user_id)
        .fetch_one(exec)
        .await
    })
}
