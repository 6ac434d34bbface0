//! The flows of the user service: each reads and writes through the
//! storage's repository functions inside one unit of work, so a change and
//! its event commit together, and answers in domain terms (`UserError`).

use portico_common::{
    db::{self, Db, UnitOfWork},
    outbox::{self, Event, Outbox},
    types::Email,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    cache::{Lookup, ProfileCache},
    domain::{Created, NewProfile, Precondition, Profile, ProfileChange},
    error::UserError,
    events,
    storage::profiles,
};

/// Profiles and their events.
#[derive(Debug, Clone)]
pub struct Accounts {
    db: Db,
    outbox: Outbox,
    cache: ProfileCache,
}

impl Accounts {
    /// Accounts whose events nobody receives, without a cache (tests of
    /// the flows alone).
    pub fn new(db: Db) -> Self {
        let outbox = Outbox::unsubscribed(db.clone());
        Self::assemble(db, outbox, ProfileCache::disabled())
    }

    pub fn assemble(db: Db, outbox: Outbox, cache: ProfileCache) -> Self {
        Self { db, outbox, cache }
    }

    /// Appends `event` in `work` and commits, waking the relay if a
    /// subscriber wants it.
    async fn commit_with(
        &self,
        mut work: UnitOfWork,
        event: &Event,
        now: OffsetDateTime,
    ) -> Result<(), UserError> {
        let added = self.outbox.record(&mut work, event, now).await?;
        Ok(self.outbox.commit(work, added).await?)
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
        self.commit_with(work, &events::created(&profile), now)
            .await?;
        self.cache.written(&profile).await;
        Ok(Created::New(profile))
    }

    /// The profile as stored, whatever its status (`None`: never created).
    pub async fn get(&self, id: Uuid) -> Result<Option<Profile>, UserError> {
        Ok(profiles::get((&self.db).into(), id).await?)
    }

    /// The profile of an active account, from the cache when it holds it.
    pub async fn active(&self, id: Uuid) -> Result<Profile, UserError> {
        match self.cached(id).await? {
            Some(profile) if profile.status == "active" => Ok(profile),
            _ => Err(UserError::NotFound),
        }
    }

    /// Cache-aside read: one database load per profile at a time in this
    /// replica; concurrent misses wait for it and find it cached.
    async fn cached(&self, id: Uuid) -> Result<Option<Profile>, UserError> {
        match self.cache.lookup(id).await {
            Lookup::Hit(profile) => return Ok(Some(profile)),
            Lookup::Bypass => return self.get(id).await,
            Lookup::Miss { .. } => {}
        }
        let _loading = self.cache.load_lock(id).lock().await;
        // Another request may have loaded it while this one waited.
        let epoch = match self.cache.lookup(id).await {
            Lookup::Hit(profile) => return Ok(Some(profile)),
            Lookup::Bypass => return self.get(id).await,
            Lookup::Miss { epoch } => epoch,
        };
        metrics::counter!("user_profile_cache_loads_total").increment(1);
        let profile = self.get(id).await?;
        if let Some(profile) = &profile {
            self.cache.fill(profile, &epoch).await;
        }
        Ok(profile)
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
        let current = Self::guarded(&mut work, id, precondition).await?;
        let applied = change.apply_to(&current);
        if applied.changed.is_empty() {
            return Ok(current);
        }
        let updated =
            profiles::update_at_version((&mut work).into(), id, current.version, &applied, now)
                .await?
                // Another writer changed it between our read and write.
                .ok_or(UserError::PreconditionFailed)?;
        self.commit_with(work, &events::updated(&updated, &applied.changed), now)
            .await?;
        self.cache.written(&updated).await;
        Ok(updated)
    }

    /// Deletes the account if `precondition` holds: the profile is marked
    /// deleted (it reads as absent from now on) and `user.deleted` tells
    /// the other services, in one transaction.
    pub async fn delete(
        &self,
        id: Uuid,
        precondition: &Precondition,
        now: OffsetDateTime,
    ) -> Result<Profile, UserError> {
        let mut work = self.db.begin().await?;
        let current = Self::guarded(&mut work, id, precondition).await?;
        let deleted =
            profiles::mark_deleted_at_version((&mut work).into(), id, current.version, now)
                .await?
                .ok_or(UserError::PreconditionFailed)?;
        self.commit_with(work, &events::deleted(&deleted), now)
            .await?;
        self.cache.written(&deleted).await;
        Ok(deleted)
    }

    /// The active profile a change is about, read in its unit of work, if
    /// `precondition` holds for it (the change's own write then checks the
    /// version again: a writer in between makes it a 412 too).
    async fn guarded(
        work: &mut UnitOfWork,
        id: Uuid,
        precondition: &Precondition,
    ) -> Result<Profile, UserError> {
        let current = match profiles::get(work.into(), id).await? {
            Some(profile) if profile.status == "active" => profile,
            _ => return Err(UserError::NotFound),
        };
        if !precondition.holds_for(&current) {
            return Err(UserError::PreconditionFailed);
        }
        Ok(current)
    }

    /// The outbox (its dead letters, for admins).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// A page of the directory (admins).
    pub async fn directory(
        &self,
        query: &profiles::DirectoryQuery,
    ) -> Result<Vec<Profile>, UserError> {
        Ok(profiles::directory((&self.db).into(), query).await?)
    }

    /// Scrubs the personal data of accounts deleted before
    /// `deleted_before` (at most `limit` of them, each in its own unit of
    /// work with its events' data); how many.
    pub async fn scrub_deleted(
        &self,
        deleted_before: OffsetDateTime,
        limit: i64,
        now: OffsetDateTime,
    ) -> Result<u64, UserError> {
        let due = profiles::due_for_scrubbing((&self.db).into(), deleted_before, limit).await?;
        let mut scrubbed = 0;
        for id in due {
            let mut work = self.db.begin().await?;
            // Another replica may have scrubbed it since: then nothing.
            let Some(profile) = profiles::scrub((&mut work).into(), id, now).await? else {
                continue;
            };
            outbox::store::scrub_subject((&mut work).into(), id).await?;
            work.commit().await?;
            self.cache.written(&profile).await;
            scrubbed += 1;
        }
        Ok(scrubbed)
    }

    /// Number of stored profiles.
    pub async fn count(&self) -> Result<i64, UserError> {
        Ok(profiles::count((&self.db).into()).await?)
    }

    /// The events recorded for `id`, oldest first.
    pub async fn events_of(&self, id: Uuid) -> Result<Vec<Event>, UserError> {
        Ok(outbox::store::for_subject((&self.db).into(), id).await?)
    }
}
