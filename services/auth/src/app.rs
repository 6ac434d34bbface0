//! Wiring: config → store, keys, hashing, user directory → a running server.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use portico_common::config::ServiceConfig as _;
use portico_common::{
    admin::Readiness,
    auth::{KeySource, TokenVerifier},
    clock::{SharedClock, SystemClock},
    db::Db,
    http::{
        client::HttpClient,
        server::{Listeners, Server},
    },
};

use crate::{
    accounts::Accounts,
    config::Config,
    domain::{keys::Keyring, password::PasswordHashing, tokens::TokenIssuer},
    http::{self, AppState},
    storage::{AuthStore, MIGRATIONS},
    user_directory::UserDirectory,
};

/// A built auth service, listening but not yet serving.
pub struct Application {
    server: Server,
    store: AuthStore,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listeners = Listeners::bind(&config.listen).await?;
        Self::build_with_listeners(config, listeners).await
    }

    /// Builds the service on listeners the caller bound (tests use port 0).
    pub async fn build_with_listeners(
        config: Config,
        listeners: Listeners,
    ) -> anyhow::Result<Self> {
        Self::build_with_clock(config, listeners, Arc::new(SystemClock)).await
    }

    /// Like [`Self::build_with_listeners`], with the clock that decides
    /// session expiry (tests move it instead of waiting).
    pub async fn build_with_clock(
        config: Config,
        listeners: Listeners,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        config.validate()?;
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
        );

        let hashing = PasswordHashing::new(&config.password_hashing).await?;
        let client = HttpClient::new(&config.http_client)?;
        let directory = UserDirectory::new(client, &config.user_service, issuer.clone());
        let state = AppState {
            accounts: Accounts::new(store.clone(), hashing, issuer, directory, clock.clone()),
            verifier: Arc::new(verifier),
        };

        let readiness = Readiness::new().with_database(db).with_redis(redis);
        let server = Server::new(listeners, http::router(state), readiness, &config.shutdown);
        Ok(Self { server, store })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.server.api_addr()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.server.admin_addr()
    }

    /// The store, for tests that check what was (not) written.
    pub fn store(&self) -> AuthStore {
        self.store.clone()
    }

    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let result = self.server.run(stop).await;
        self.store.db().close().await;
        result
    }
}
