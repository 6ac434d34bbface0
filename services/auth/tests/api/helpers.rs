//! An auth service and a real user service, started in-process for one
//! test, with typed requests.

use portico_auth::{http::TokenResponse, storage::AuthStore};
use std::sync::Arc;

use portico_common::{
    app::Context,
    clock::{SharedClock, SystemClock},
    config::{ListenConfig, ServiceConfig as _},
    http::server::Listeners,
};
use portico_testkit::{Backend, TestDatabase};
use portico_user::accounts::Accounts;
use reqwest::{Response, StatusCode, header};
use serde_json::{Value, json};

pub use portico_testkit::http::{assert_problem, assert_unauthorized, closed_port, error_fields};
pub(crate) use portico_testkit::on_both_backends;

pub const JSON: &str = "application/json";
pub const PASSWORD: &str = "correct horse battery staple";

/// The user service the auth service registers profiles with.
pub struct UserService {
    pub api: String,
    pub store: Accounts,
}

/// An auth service on port 0 with its own database, in front of a real
/// user service (or of a closed port).
pub struct TestApp {
    /// Base URL of the auth API listener.
    pub api: String,
    /// Base URL of its admin listener.
    pub admin: String,
    pub store: AuthStore,
    /// `None` when the test runs without a user service.
    pub user: Option<UserService>,
    pub client: reqwest::Client,
    /// The auth database first, then the user service's.
    pub databases: Vec<TestDatabase>,
    /// Where the file mail transport writes.
    pub mail_dir: Arc<tempfile::TempDir>,
}

async fn bind_port_zero() -> Listeners {
    Listeners::bind(&ListenConfig {
        api: ([127, 0, 0, 1], 0).into(),
        admin: ([127, 0, 0, 1], 0).into(),
    })
    .await
    .expect("bind listeners")
}

/// The auth config of a test: its database, the test KEK, and mail (the
/// file transport by default) kept in `mail_dir`.
fn auth_config(database: &TestDatabase, mail_dir: &std::path::Path) -> portico_auth::Config {
    let mut config = portico_auth::Config::built_in();
    config.mail.file_dir = mail_dir.to_owned();
    config.database = config
        .database
        .with_url(&database.url)
        .creating_if_missing();
    config.signing_keys.encryption_key =
        Some(secrecy::SecretString::from(portico_testkit::TEST_KEK));
    config
}

impl TestApp {
    /// Auth and user service, both on `backend`. The user service verifies
    /// tokens with the auth service's JWKS, as in production.
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with_clock(backend, Arc::new(SystemClock)).await
    }

    /// Like [`Self::spawn`], with the auth service reading time from `clock`.
    pub async fn spawn_with_clock(backend: Backend, clock: SharedClock) -> Self {
        Self::spawn_with(backend, clock, async |user_api| user_api).await
    }

    /// The full setup, with auth reaching the user service through the URL
    /// `front` returns for the user service's real URL (fault injection).
    pub async fn spawn_with(
        backend: Backend,
        clock: SharedClock,
        front: impl AsyncFnOnce(String) -> String,
    ) -> Self {
        Self::spawn_configured(backend, clock, front, |_| {}).await
    }

    /// Like [`Self::spawn`], letting the test change the auth config last.
    pub async fn spawn_with_config(
        backend: Backend,
        customise: impl FnOnce(&mut portico_auth::Config),
    ) -> Self {
        Self::spawn_configured(
            backend,
            Arc::new(SystemClock),
            async |user_api| user_api,
            customise,
        )
        .await
    }

    /// Like [`Self::spawn_with_config`], with the auth and user services
    /// reading time from `clock`.
    pub async fn spawn_with_clock_and_config(
        backend: Backend,
        clock: SharedClock,
        customise: impl FnOnce(&mut portico_auth::Config),
    ) -> Self {
        Self::spawn_configured(backend, clock, async |user_api| user_api, customise).await
    }

    pub async fn spawn_configured(
        backend: Backend,
        clock: SharedClock,
        front: impl AsyncFnOnce(String) -> String,
        customise: impl FnOnce(&mut portico_auth::Config),
    ) -> Self {
        let auth_db = TestDatabase::new(backend).await;
        let user_db = TestDatabase::new(backend).await;
        let mail_dir = Arc::new(tempfile::tempdir().expect("mail dir"));
        let mut config = auth_config(&auth_db, mail_dir.path());
        // Both bound first: each service's config names the other's port.
        // Auth starts serving first: the user service catches up with its
        // revocation feed as it starts.
        let auth_listeners = bind_port_zero().await;
        let user_listeners = bind_port_zero().await;
        let user_api = format!("http://{}", user_listeners.api_addr());

        let mut user_config = portico_user::Config::built_in();
        user_config.database = user_config
            .database
            .with_url(&user_db.url)
            .creating_if_missing();
        user_config.tokens.issuer = config.tokens.issuer.clone();
        user_config.tokens.audience = config.tokens.audience.clone();
        user_config.tokens.jwks.url =
            format!("http://{}/.well-known/jwks.json", auth_listeners.api_addr());
        user_config.tokens.revocations.url = Some(format!(
            "http://{}/internal/revocations",
            auth_listeners.api_addr()
        ));
        user_config.auth_api.url = format!("http://{}", auth_listeners.api_addr());

        config.user_service.upstream.endpoints = vec![front(user_api.clone()).await];
        customise(&mut config);
        let mut app = Self::start(
            config,
            auth_listeners,
            vec![auth_db, user_db],
            mail_dir,
            clock.clone(),
        )
        .await;

        // Both services read the same clock, so tokens minted at a moved
        // time verify at that time.
        let user_app =
            portico_user::Application::build_with(user_config, user_listeners, Context { clock })
                .await
                .expect("build the user service");
        let user = UserService {
            api: user_api,
            store: user_app.handle().clone(),
        };
        tokio::spawn(user_app.run_until_stopped(std::future::pending()));
        app.user = Some(user);
        app
    }

    /// The auth service alone, its user service at a port nothing listens
    /// on.
    pub async fn spawn_without_user_service(backend: Backend) -> Self {
        let auth_db = TestDatabase::new(backend).await;
        let mail_dir = Arc::new(tempfile::tempdir().expect("mail dir"));
        let mut config = auth_config(&auth_db, mail_dir.path());
        config.user_service.upstream.endpoints =
            vec![format!("http://127.0.0.1:{}", closed_port())];
        Self::start(
            config,
            bind_port_zero().await,
            vec![auth_db],
            mail_dir,
            Arc::new(SystemClock),
        )
        .await
    }

    async fn start(
        config: portico_auth::Config,
        listeners: Listeners,
        databases: Vec<TestDatabase>,
        mail_dir: Arc<tempfile::TempDir>,
        clock: SharedClock,
    ) -> Self {
        let app = portico_auth::Application::build_with(config, listeners, Context { clock })
            .await
            .expect("build the auth service");
        let (api, store) = (format!("http://{}", app.api_addr()), app.handle().clone());
        let admin = format!("http://{}", app.admin_addr());
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        Self {
            api,
            admin,
            store,
            user: None,
            client: reqwest::Client::new(),
            databases,
            mail_dir,
        }
    }

    /// Another auth replica on the same database (and user service), with
    /// `customise` applied to its config; the base URL of its API.
    pub async fn spawn_replica(&self, customise: impl FnOnce(&mut portico_auth::Config)) -> String {
        let mut config = auth_config(&self.databases[0], self.mail_dir.path());
        if let Some(user) = &self.user {
            config.user_service.upstream.endpoints = vec![user.api.clone()];
        }
        customise(&mut config);
        let app = portico_auth::Application::build_with(
            config,
            bind_port_zero().await,
            Context {
                clock: Arc::new(SystemClock),
            },
        )
        .await
        .expect("build an auth replica");
        let api = format!("http://{}", app.api_addr());
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        api
    }

    pub fn user(&self) -> &UserService {
        self.user
            .as_ref()
            .expect("this test runs without a user service")
    }

    /// `GET path` on the admin listener, as JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let response = self
            .client
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .expect("admin request");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.expect("admin JSON")
    }

    /// Rows of (credentials, sessions).
    pub async fn counts(&self) -> (i64, i64) {
        self.store.counts().await.expect("count rows")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        let body = serde_json::to_vec(body).expect("json");
        self.post_raw(path, JSON, body).await
    }

    /// POST with any content type and body bytes.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.client
            .post(format!("{}{path}", self.api))
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|err| panic!("POST {path}: {err}"))
    }

    pub async fn register(&self, body: &Value) -> Response {
        self.post_json("/v1/auth/register", body).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/v1/auth/login",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json("/v1/auth/refresh", &json!({"refresh_token": refresh_token}))
            .await
    }

    pub async fn logout(&self, access_token: Option<&str>) -> Response {
        let request = self.client.post(format!("{}/v1/auth/logout", self.api));
        let request = match access_token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        request.send().await.expect("POST /v1/auth/logout")
    }

    /// A request on the auth API with an optional bearer token.
    pub async fn send_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self.client.request(method, format!("{}{path}", self.api));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request
            .send()
            .await
            .unwrap_or_else(|err| panic!("{path}: {err}"))
    }

    /// `POST /v1/auth/login` as a client at `address` (as the gateway
    /// reports it in `x-forwarded-for`).
    pub async fn login_via(&self, email: &str, password: &str, address: &str) -> Response {
        self.client
            .post(format!("{}/v1/auth/login", self.api))
            .header("x-forwarded-for", address)
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("POST /v1/auth/login")
    }

    /// Logs in with a given user agent.
    pub async fn login_from(&self, email: &str, user_agent: &str) -> TokenResponse {
        let response = self
            .client
            .post(format!("{}/v1/auth/login", self.api))
            .header(header::USER_AGENT, user_agent)
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("POST /v1/auth/login");
        assert_eq!(response.status(), StatusCode::OK, "logging in {email}");
        response.json().await.expect("token response")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.api))
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"))
    }

    /// `GET /v1/users/me` on the user service with an access token.
    pub async fn user_profile(&self, access_token: &str) -> Response {
        self.client
            .get(format!("{}/v1/users/me", self.user().api))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("GET /v1/users/me on the user service")
    }

    /// Registers `email` with [`PASSWORD`] and display name "Ann".
    pub async fn register_account(&self, email: &str) -> TokenResponse {
        let response = self.register(&registration(email)).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "registering {email}"
        );
        response.json().await.expect("token response")
    }
}

/// A valid registration body for `email`.
pub fn registration(email: &str) -> Value {
    json!({"email": email, "password": PASSWORD, "display_name": "Ann"})
}

/// Reads a token response, checking the status and `cache-control: no-store`.
pub async fn assert_tokens(response: Response, status: StatusCode) -> TokenResponse {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let tokens: TokenResponse = response.json().await.expect("token response");
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 900);
    assert!(!tokens.access_token.is_empty() && !tokens.refresh_token.is_empty());
    tokens
}
