//! The flows of the user service: each reads and writes through the
//! storage's repository functions inside one unit of work, so a change and
//! its event commit together, and answers in domain terms (`UserError`).

use portico_common::{
    db::{self, Db},
    types::Email,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    domain::{Created, NewProfile, Precondition, Profile, ProfileChange},
    error::UserError,
    events::Event,
    storage::{events, profiles},
};

/// Profiles and their events.
#[derive(Debug, Clone)]
pub struct Accounts {
    db: Db,
}

impl Accounts {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Creates the profile with its `user.created` event, or returns the
    /// existing one when the same id was already created with the same
    /// email (a retried call: no second event).
    pub async fn create(
        &self,
        new: &NewProfile,
        now: OffsetDateTime,
    ) -> Result<Created, UserError> {
        let mut work = self.db.begin().await?;
        let inserted = match profiles::insert((&mut work).into(), new, now).await {
            Ok(inserted) => inserted,
            Err(err) if db::is_unique_violation(&err, "email_lower") => {
                return Err(UserError::EmailTaken);
            }
            Err(err) => return Err(err.into()),
        };
        let Some(profile) = inserted else {
            let existing = profiles::get((&mut work).into(), new.id)
                .await?
                .ok_or(UserError::IdTaken)?;
            return if Email::normalize(&existing.email) == new.email.normalized() {
                Ok(Created::Existing(existing))
            } else {
                Err(UserError::IdTaken)
            };
        };
        events::append((&mut work).into(), &Event::created(&profile)).await?;
        work.commit().await?;
        Ok(Created::New(profile))
    }

    /// The profile as stored, whatever its status (`None`: never created).
    pub async fn get(&self, id: Uuid) -> Result<Option<Profile>, UserError> {
        Ok(profiles::get((&self.db).into(), id).await?)
    }

    /// The profile of an active account.
    pub async fn active(&self, id: Uuid) -> Result<Profile, UserError> {
        match self.get(id).await? {
            Some(profile) if profile.status == "active" => Ok(profile),
            _ => Err(UserError::NotFound),
        }
    }

    /// Applies `change` if `precondition` holds for the current version,
    /// with its `user.updated` event. A change that moves nothing writes
    /// nothing and answers the profile as it is.
    pub async fn update(
        &self,
        id: Uuid,
        precondition: &Precondition,
        change: &ProfileChange,
        now: OffsetDateTime,
    ) -> Result<Profile, UserError> {
        let mut work = self.db.begin().await?;
        let current = match profiles::get((&mut work).into(), id).await? {
            Some(profile) if profile.status == "active" => profile,
            _ => return Err(UserError::NotFound),
        };
        if !precondition.holds_for(&current) {
            return Err(UserError::PreconditionFailed);
        }
        let applied = change.apply_to(&current);
        if applied.changed.is_empty() {
            return Ok(current);
        }
        let updated =
            profiles::update_at_version((&mut work).into(), id, current.version, &applied, now)
                .await?
                // Another writer changed it between our read and write.
                .ok_or(UserError::PreconditionFailed)?;
        events::append(
            (&mut work).into(),
            &Event::updated(&updated, &applied.changed),
        )
        .await?;
        work.commit().await?;
        Ok(updated)
    }

    /// Number of stored profiles.
    pub async fn count(&self) -> Result<i64, UserError> {
        Ok(profiles::count((&self.db).into()).await?)
    }

    /// The events recorded for `id`, oldest first.
    pub async fn events_of(&self, id: Uuid) -> Result<Vec<Event>, UserError> {
        Ok(events::for_subject((&self.db).into(), id).await?)
    }
}
