//! Wiring: config → stores, verifiers and routers → the service's parts.
//! The shell that builds and runs them is `portico_common::app`.

use std::sync::Arc;

use anyhow::Context as _;
use portico_common::{
    admin::Readiness,
    app::{self, Assembly, Context, Service},
    db::Db,
    http::client::HttpClient,
    jobs::{self, Wake},
    jwt::{JwksCache, KeySource, Revocations, TokenVerifier},
    outbox::{DeliveryPurge, Outbox, Relay, Subscribers},
};

use crate::{
    accounts::Accounts,
    cache::ProfileCache,
    config::Config,
    events::EventType,
    http::{self, Shared},
    scrubber::Scrubber,
    storage::MIGRATIONS,
};

/// The user service, as the application shell runs it.
#[derive(Debug)]
pub struct UserService;

/// A built user service, listening but not yet serving. Its handle is the
/// accounts, for tests that check what was (not) written.
pub type Application = app::Application<UserService>;

impl Service for UserService {
    const NAME: &'static str = "portico-user";
    type Config = Config;
    type Handle = Accounts;

    async fn migrate(config: &Self::Config) -> anyhow::Result<()> {
        Db::open(&config.database, &MIGRATIONS).await?.close().await;
        Ok(())
    }

    async fn assemble(config: Config, context: Context) -> anyhow::Result<Assembly<Accounts>> {
        let subscribers = Subscribers::from_config(&config.events, "events", &EventType::names())
            .map_err(|(key, message)| anyhow::anyhow!("{key}: {message}"))?;
        let db = Db::open(&config.database, &MIGRATIONS).await?;
        let redis = config.redis.client().context("invalid redis.url")?;

        let client = HttpClient::new(&config.http_client)?;
        let auth_api = crate::http::AuthApi::new(client.clone(), &config.auth_api.url);
        let jwks = Arc::new(JwksCache::new(config.tokens.jwks.clone(), client.clone()));
        let revocations = Revocations::new(config.tokens.revocations.clone(), client.clone());
        let keys = KeySource::Remote(jwks.clone());
        let wake_relay = Wake::default();
        let cache = ProfileCache::new(
            redis.clone(),
            &config.redis.key_prefix,
            std::time::Duration::from_secs(config.cache.ttl_secs),
            std::time::Duration::from_millis(config.cache.timeout_ms),
        );
        let scrub_clock = context.clock.clone();
        let purge = DeliveryPurge::new(db.clone(), context.clock.clone(), &config.events);
        let accounts = Accounts::assemble(
            db.clone(),
            Outbox::new(db.clone(), subscribers.clone(), wake_relay.clone()),
            cache.clone(),
        );
        let relay = Relay::new(
            db.clone(),
            context.clock.clone(),
            client,
            subscribers,
            config.events.clone(),
        );
        let state = Arc::new(Shared {
            auth_api,
            accounts: accounts.clone(),
            clock: context.clock.clone(),
            user_tokens: Arc::new(
                config
                    .tokens
                    .verifier(keys.clone(), context.clock.clone())
                    .with_revocations(revocations.clone()),
            ),
            service_tokens: Arc::new(TokenVerifier::new(
                keys,
                &config.tokens.issuer,
                &config.internal_api.audience,
                context.clock,
            )),
            internal_api: Arc::new(config.internal_api.clone()),
        });

        let readiness = Readiness::new()
            .with(db.readiness_check())
            .with(jwks.readiness_check())
            .with(revocations.readiness_check())
            .with_redis(redis.clone());
        let scrubber = Scrubber::new(
            accounts.clone(),
            scrub_clock,
            std::time::Duration::from_secs(config.scrubber.grace_secs),
        );
        let mut assembly =
            Assembly::new(http::router(state), readiness, accounts).owning_database(db);
        revocations.catch_up_at_start().await;
        if let Some(redis) = redis {
            assembly
                .background
                .push(Box::pin(revocations.clone().follow_redis(redis)));
        }
        assembly.background.push(Box::pin(revocations.follow()));
        assembly.background.push(Box::pin(cache.follow()));
        assembly.background.push(Box::pin(jobs::run_every(
            scrubber,
            std::time::Duration::from_millis(config.scrubber.interval_ms),
            Wake::default(),
        )));
        assembly.background.push(Box::pin(jobs::run_every(
            purge,
            DeliveryPurge::INTERVAL,
            Wake::default(),
        )));
        assembly.background.push(Box::pin(jobs::run_every(
            relay,
            std::time::Duration::from_millis(config.events.relay_interval_ms),
            wake_relay,
        )));
        Ok(assembly)
    }
}
