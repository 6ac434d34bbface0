//! Wiring: config → store, keys, hashing, user directory → the service's
//! parts. The shell that builds and runs them is `portico_common::app`.

use std::sync::Arc;

use anyhow::Context as _;
use portico_common::{
    admin::Readiness,
    app::{self, Assembly, Context, Service},
    db::Db,
    http::client::HttpClient,
    jwt::{KeySource, TokenVerifier},
};

use crate::{
    accounts::{Accounts, AccountsParts},
    config::Config,
    domain::{
        clients::ServiceClients,
        keys::Keyring,
        password::PasswordHashing,
        password_policy::PasswordPolicy,
        throttle::Throttle,
        tokens::{RotationKey, TokenIssuer},
    },
    http::{self, AppState},
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

    async fn assemble(config: Config, context: Context) -> anyhow::Result<Assembly<AuthStore>> {
        let clock = context.clock;
        let db = Db::open(&config.database, &MIGRATIONS).await?;
        let redis = config.redis.client().context("invalid redis.url")?;
        let store = AuthStore::new(db.clone());

        let keys = store.signing_keys(clock.now()).await?;
        let keyring = Arc::new(Keyring::new(&keys)?);
        tracing::info!(
            kid = keyring.signing_kid(),
            published = keys.len(),
            "signing keys loaded"
        );
        let issuer = TokenIssuer::new(keyring.clone(), config.tokens.clone());
        let verifier = TokenVerifier::new(
            KeySource::Local(Arc::new(move |kid| keyring.public_key(kid))),
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
        let client = HttpClient::new(&config.http_client)?;
        let directory =
            UserDirectory::new(client, &config.user_service, issuer.clone(), clock.clone());
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
            }),
            verifier: Arc::new(verifier),
            trusted_proxies: Arc::new(config.clients.trusted_proxies.clone()),
            clients: Arc::new(
                ServiceClients::from_config(&config.service_clients)
                    .map_err(|(key, message)| anyhow::anyhow!("{key}: {message}"))?,
            ),
        };

        state.accounts.ensure_bootstrap_admin().await?;

        let readiness = Readiness::new()
            .with(db.readiness_check())
            .with_redis(redis);
        let purge = state.accounts.clone().purge_periodically();
        let mut assembly = Assembly::new(http::router(state), readiness, store).owning_database(db);
        assembly.background.push(Box::pin(purge));
        Ok(assembly)
    }
}
