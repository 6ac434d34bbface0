//! Wiring: config → store, keys, hashing, user directory → the service's
//! parts. The shell that builds and runs them is `portico_common::app`.

use std::sync::Arc;

use anyhow::Context as _;
use portico_common::{
    admin::Readiness,
    app::{self, Assembly, Context, Service},
    db::Db,
    http::client::{HttpClient, HttpClientConfig},
    jobs::Wake,
    jwt::{KeySource, TokenVerifier},
    outbox::{DeliveryPurge, Outbox, Relay, Subscribers},
};

use crate::{
    accounts::{Accounts, AccountsParts},
    config::Config,
    domain::{
        clients::ServiceClients,
        password::PasswordHashing,
        password_policy::PasswordPolicy,
        throttle::Throttle,
        tokens::{RotationKey, TokenIssuer},
    },
    http::{self, AppState},
    revocation_broadcast,
    signing_keys::SigningKeys,
    storage::{AuthStore, MIGRATIONS},
    throttle_store::ThrottleStore,
    user_directory::UserDirectory,
};

/// The auth service, as the application shell runs it.
#[derive(Debug)]
pub struct AuthService;

/// A built auth service, listening but not yet serving. Its handle is the
/// store, for tests that check what was (not) written.
pub type Application = app::Application<AuthService>;

impl Service for AuthService {
    const NAME: &'static str = "portico-auth";
    type Config = Config;
    type Handle = AuthStore;

    async fn migrate(config: &Self::Config) -> anyhow::Result<()> {
        Db::open(&config.database, &MIGRATIONS).await?.close().await;
        Ok(())
    }

    async fn assemble(config: Config, context: Context) -> anyhow::Result<Assembly<AuthStore>> {
        let clock = context.clock;
        let clock_for_inbox = clock.clone();
        let subscribers = Subscribers::from_config(
            &config.outbox,
            "outbox",
            &crate::domain::events::AuthEventType::names(),
        )
        .map_err(|(key, message)| anyhow::anyhow!("{key}: {message}"))?;
        let db = Db::open(&config.database, &MIGRATIONS).await?;
        let redis = config.redis.client().context("invalid redis.url")?;
        let wake_relay = Wake::default();
        let (db_for_purge, purge_clock) = (db.clone(), clock.clone());
        let store = AuthStore::with_outbox(
            db.clone(),
            Outbox::new(db.clone(), subscribers.clone(), wake_relay.clone()),
        );
        // The relay's own client: each attempt is bounded by the outbox's
        // timeout, connecting included.
        let relay = Relay::new(
            db.clone(),
            clock.clone(),
            HttpClient::new(&HttpClientConfig {
                connect_timeout_ms: config.outbox.timeout_ms,
                request_timeout_ms: config.outbox.timeout_ms,
            })?,
            subscribers,
            config.outbox.clone(),
        );
        // With Redis, revocations are also published there (as long as an
        // access token lives, and the verifiers' leeway and skew).
        let broadcast = redis.clone().map(|client| {
            revocation_broadcast::broadcast(
                store.clone(),
                client,
                u64::try_from(config.tokens.access_token_ttl_secs).unwrap_or(0) + 90,
                clock.clone(),
            )
        });

        let signing_keys = SigningKeys::load(
            store.clone(),
            &config.signing_keys,
            config.tokens.access_token_ttl_secs,
            clock.clone(),
        )
        .await?;
        let keyring = signing_keys.keyring().clone();
        tracing::info!(
            kid = keyring.current().signing_key(clock.now()).0,
            "signing keys loaded"
        );
        let issuer = TokenIssuer::new(keyring.clone(), config.tokens.clone());
        let verifying_clock = clock.clone();
        let verifier = TokenVerifier::new(
            KeySource::Local(Arc::new(move |kid| {
                keyring.current().public_key(kid, verifying_clock.now())
            })),
            &config.tokens.issuer,
            &config.tokens.audience,
            clock.clone(),
        );

        let rotation = RotationKey::new(
            &store
                .rotation_secret(&RotationKey::generate_secret().map_err(|_| {
                    anyhow::anyhow!("randomness unavailable for the rotation secret")
                })?)
                .await?,
        );
        let hashing = PasswordHashing::new(&config.password_hashing).await?;
        let directory = UserDirectory::start(&config.user_service, issuer.clone(), clock.clone())
            .await
            .map_err(|err| anyhow::anyhow!("user_service.upstream: {err}"))?;
        let admin = upstreams_view(directory.clone());
        let state = AppState {
            accounts: Accounts::new(AccountsParts {
                store: store.clone(),
                hashing,
                policy: PasswordPolicy::new(&config.password_policy),
                issuer,
                directory,
                clock,
                rotation,
                throttle: ThrottleStore::new(
                    Throttle::new(config.login_throttle.clone()),
                    redis
                        .clone()
                        .map(|client| (client, config.redis.key_prefix.clone())),
                ),
                bootstrap_admin: config.admin.bootstrap_email.clone(),
                pending_timeout: seconds(config.registration.pending_timeout_secs),
                sealing: signing_keys.encryption(),
                mfa_issuer: config.mfa.issuer.clone(),
                mfa_challenge_ttl: seconds(config.mfa.challenge_ttl_secs),
                mailer: crate::mailer::Mailer::from_config(&config.mail)
                    .map_err(|(key, message)| anyhow::anyhow!("{key}: {message}"))?,
                mail_throttle: ThrottleStore::new(
                    Throttle::new(config.mail_throttle.clone()),
                    redis
                        .clone()
                        .map(|client| (client, format!("{}mail:", config.redis.key_prefix))),
                ),
                mfa_throttle: ThrottleStore::new(
                    Throttle::new(config.mfa_throttle.clone()),
                    redis
                        .clone()
                        .map(|client| (client, format!("{}mfa:", config.redis.key_prefix))),
                ),
                mail_tokens: crate::accounts::MailTokenSettings {
                    verification_ttl: seconds(config.email_verification.token_ttl_secs),
                    reset_ttl: seconds(config.password_reset.token_ttl_secs),
                },
                require_verified_email: config.email_verification.required,
            }),
            verifier: Arc::new(verifier),
            trusted_proxies: Arc::new(config.clients.trusted_proxies.clone()),
            signing_keys: signing_keys.clone(),
            inbox: Arc::new(
                http::events::Inbox::new(&config.events, clock_for_inbox)
                    .map_err(|(key, message)| anyhow::anyhow!("{key}: {message}"))?,
            ),
            clients: Arc::new(
                ServiceClients::from_config(&config.service_clients)
                    .map_err(|(key, message)| anyhow::anyhow!("{key}: {message}"))?,
            ),
        };

        state.accounts.ensure_bootstrap_admin().await?;
        state.accounts.reseal_totp_secrets().await?;

        let readiness = Readiness::new()
            .with(db.readiness_check())
            .with_redis(redis);
        let purge = crate::accounts::SessionPurge {
            accounts: state.accounts.clone(),
        };
        let state_accounts = state.accounts.clone();
        let scrubber = crate::accounts::Scrubber {
            accounts: state.accounts.clone(),
            grace: std::time::Duration::from_secs(config.scrubber.grace_secs),
        };
        let mut assembly = Assembly::new(http::router(state), readiness, store).owning_database(db);
        assembly.admin = Some(admin);
        assembly
            .background
            .push(Box::pin(portico_common::jobs::run_every(
                purge,
                crate::accounts::SessionPurge::INTERVAL,
                portico_common::jobs::Wake::default(),
            )));
        assembly
            .background
            .push(Box::pin(portico_common::jobs::run_every(
                scrubber,
                std::time::Duration::from_millis(config.scrubber.interval_ms),
                portico_common::jobs::Wake::default(),
            )));
        assembly
            .background
            .push(Box::pin(portico_common::jobs::run_every(
                crate::accounts::Reconciler {
                    accounts: state_accounts,
                },
                std::time::Duration::from_millis(config.registration.reconcile_interval_ms),
                portico_common::jobs::Wake::default(),
            )));
        let (key_maintenance, every) = signing_keys.maintenance();
        assembly
            .background
            .push(Box::pin(portico_common::jobs::run_every(
                key_maintenance,
                every,
                portico_common::jobs::Wake::default(),
            )));
        assembly
            .background
            .push(Box::pin(portico_common::jobs::run_every(
                DeliveryPurge::new(db_for_purge, purge_clock, &config.outbox),
                DeliveryPurge::INTERVAL,
                Wake::default(),
            )));
        assembly
            .background
            .push(Box::pin(portico_common::jobs::run_every(
                relay,
                std::time::Duration::from_millis(config.outbox.relay_interval_ms),
                wake_relay,
            )));
        if let Some(broadcast) = broadcast {
            assembly.background.push(Box::pin(broadcast));
        }
        Ok(assembly)
    }
}

/// A configured number of seconds as a duration.
fn seconds(secs: u64) -> time::Duration {
    time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// `GET /upstreams` on the admin listener: the user service's replicas as
/// auth sees them (health, ejection, breaker, requests in flight).
fn upstreams_view(directory: UserDirectory) -> axum::Router {
    axum::Router::new().route(
        "/upstreams",
        axum::routing::get(move || {
            let directory = directory.clone();
            async move { axum::Json(serde_json::json!({ "user": directory.describe() })) }
        }),
    )
}
