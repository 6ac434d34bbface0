//! Wiring: config → stores, verifiers and routers → a running server.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use portico_common::{
    admin::Readiness,
    auth::{INTERNAL_AUDIENCE, JwksCache, KeySource, TokenVerifier},
    db::Db,
    http::{
        client::HttpClient,
        server::{Listeners, Server},
    },
};

use crate::{
    config::Config,
    http::{self, AppState},
    storage::{MIGRATIONS, UserStore},
};

/// A built user service, listening but not yet serving.
pub struct Application {
    server: Server,
    store: UserStore,
}

impl Application {
    /// Binds the configured addresses and builds the service.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listeners = Listeners::bind(&config.listen).await?;
        Self::build_with_listeners(config, listeners).await
    }

    /// Builds the service on listeners the caller bound (tests use port 0).
    pub async fn build_with_listeners(
        config: Config,
        listeners: Listeners,
    ) -> anyhow::Result<Self> {
        let db = Db::open(&config.database, &MIGRATIONS).await?;
        let redis = config.redis.client().context("invalid redis.url")?;

        let client = HttpClient::new(&config.http_client)?;
        let jwks = Arc::new(JwksCache::new(config.tokens.jwks.clone(), client));
        let keys = KeySource::Remote(jwks);
        let store = UserStore::new(db.clone());
        let state = AppState {
            store: store.clone(),
            user_tokens: Arc::new(TokenVerifier::new(
                keys.clone(),
                &config.tokens.issuer,
                &config.tokens.audience,
            )),
            service_tokens: Arc::new(TokenVerifier::new(
                keys,
                &config.tokens.issuer,
                INTERNAL_AUDIENCE,
            )),
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
    pub fn store(&self) -> UserStore {
        self.store.clone()
    }

    /// Serves until `stop` completes, then drains and returns.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let result = self.server.run(stop).await;
        self.store.db().close().await;
        result
    }
}
