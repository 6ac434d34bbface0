//! A user service started in-process for one test, with typed requests.

use std::net::SocketAddr;

use portico_common::{
    clock::{Clock, SystemClock},
    config::{ListenConfig, ServiceConfig as _},
    db::{DatabaseConfig, Db},
    http::server::Listeners,
    types::{DisplayName, Email},
};
use portico_testkit::{Backend, TestDatabase, issuer, issuer::TestIssuer};
use portico_user::{
    Application, Config,
    accounts::Accounts,
    domain::{Created, NewProfile, Profile},
    storage::MIGRATIONS,
};
use reqwest::{Response, header};
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};
use uuid::Uuid;

pub use portico_testkit::http::{assert_problem, assert_unauthorized, closed_port, error_fields};
pub(crate) use portico_testkit::on_both_backends;

pub const JSON: &str = "application/json";

/// A user service on port 0 with its own database and token issuer.
pub struct TestApp {
    /// Base URL of the API listener.
    pub api: String,
    /// Base URL of the admin listener.
    pub admin: String,
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub store: Accounts,
    pub issuer: TestIssuer,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    pub db: TestDatabase,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Like [`Self::spawn`], letting the test change the config last.
    pub async fn spawn_with(backend: Backend, customise: impl FnOnce(&mut Config)) -> Self {
        let db = TestDatabase::new(backend).await;
        let issuer = TestIssuer::start().await;
        let mut config = Config::built_in();
        config.database = database_config(&db);
        config.tokens.issuer = issuer::ISSUER.to_owned();
        config.tokens.audience = issuer::AUDIENCE.to_owned();
        config.tokens.jwks.url = issuer.jwks_url.clone();
        config.tokens.revocations.url = Some(issuer.revocations_url.clone());
        customise(&mut config);

        let listeners = Listeners::bind(&ListenConfig {
            api: ([127, 0, 0, 1], 0).into(),
            admin: ([127, 0, 0, 1], 0).into(),
        })
        .await
        .expect("bind listeners");
        let app = Application::build_with_listeners(config, listeners)
            .await
            .expect("build the user service");
        let (api_addr, admin_addr, store) =
            (app.api_addr(), app.admin_addr(), app.handle().clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            api: format!("http://{api_addr}"),
            admin: format!("http://{admin_addr}"),
            api_addr,
            admin_addr,
            store,
            issuer,
            client: reqwest::Client::new(),
            stop: Some(stop),
            server: Some(server),
            db,
        }
    }

    /// Sends the stop signal; the handle yields what `run_until_stopped`
    /// returned once the service has drained.
    pub fn stop(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.take().expect("the service was already stopped")
    }

    /// A profile stored directly, as if auth had registered the user.
    pub async fn seed_profile(&self) -> Profile {
        let id = Uuid::now_v7();
        let new = NewProfile {
            id,
            email: Email::parse(&format!("user-{}@example.com", id.simple())).expect("email"),
            display_name: DisplayName::parse("Ann").expect("display name"),
        };
        match self.store.create(&new, now()).await.expect("seed") {
            Created::New(profile) => profile,
            Created::Existing(_) => panic!("a fresh id already existed"),
        }
    }

    /// The stored profile, the number of profiles and the profile's
    /// events: what rejected requests must leave untouched.
    pub async fn snapshot(&self, id: Uuid) -> (Option<Profile>, i64, usize) {
        let profile = self.store.get(id).await.expect("get profile");
        let events = self.store.events_of(id).await.expect("events").len();
        (
            profile,
            self.store.count().await.expect("count profiles"),
            events,
        )
    }

    pub async fn create_user(&self, token: Option<&str>, body: &Value) -> Response {
        let request = self.client.post(format!("{}/internal/users", self.api));
        with_token(request, token)
            .json(body)
            .send()
            .await
            .expect("POST /internal/users")
    }

    pub async fn get_me(&self, token: Option<&str>) -> Response {
        let request = self.client.get(format!("{}/v1/users/me", self.api));
        with_token(request, token)
            .send()
            .await
            .expect("GET /v1/users/me")
    }

    /// PATCH based on whatever version is current (`If-Match: *`).
    pub async fn patch_me(&self, token: Option<&str>, body: &Value) -> Response {
        self.patch_me_if(token, Some("*"), body).await
    }

    /// PATCH with `If-Match: if_match` (none: without the header).
    pub async fn patch_me_if(
        &self,
        token: Option<&str>,
        if_match: Option<&str>,
        body: &Value,
    ) -> Response {
        let body = serde_json::to_vec(body).expect("json");
        let mut request = self
            .client
            .patch(format!("{}/v1/users/me", self.api))
            .header(header::CONTENT_TYPE, JSON)
            .body(body);
        if let Some(if_match) = if_match {
            request = request.header(header::IF_MATCH, if_match);
        }
        with_token(request, token)
            .send()
            .await
            .expect("PATCH /v1/users/me")
    }

    /// PATCH with any content type and body bytes (`If-Match: *`).
    pub async fn patch_me_raw(
        &self,
        token: Option<&str>,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let request = self.client.patch(format!("{}/v1/users/me", self.api));
        with_token(request, token)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::IF_MATCH, "*")
            .body(body)
            .send()
            .await
            .expect("PATCH /v1/users/me")
    }

    /// `GET /v1/users/{id}` (any text as the id).
    pub async fn get_user(&self, token: &str, id: &str) -> Response {
        self.client
            .get(format!("{}/v1/users/{id}", self.api))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET /v1/users/{id}")
    }

    pub async fn get_api(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.api))
            .send()
            .await
            .expect("GET on the API listener")
    }

    pub async fn get_admin(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .expect("GET on the admin listener")
    }
}

fn with_token(request: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// The accounts on a fresh database, migrated, without a server.
pub async fn store_on(backend: Backend) -> (Accounts, TestDatabase) {
    let database = TestDatabase::new(backend).await;
    let db = Db::connect(&database_config(&database))
        .await
        .expect("connect");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    (Accounts::new(db), database)
}

/// The built-in database config pointed at `database`.
pub fn database_config(database: &TestDatabase) -> DatabaseConfig {
    Config::built_in()
        .database
        .with_url(&database.url)
        .creating_if_missing()
}

/// The current time as the service records it.
pub fn now() -> time::OffsetDateTime {
    SystemClock.now()
}

/// A new profile to create with the given id and email.
pub fn new_profile(id: Uuid, email: &str, display_name: &str) -> NewProfile {
    NewProfile {
        id,
        email: Email::parse(email).expect("email"),
        display_name: DisplayName::parse(display_name).expect("display name"),
    }
}
