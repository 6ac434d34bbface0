//! The user service's internal API, as auth calls it at registration
//! (and its reconciler, about registrations that died half-way).
//!
//! Its replicas are an upstream like the gateway's (`portico-upstream`):
//! found by a list or by DNS, balanced, health-checked, ejected when they
//! fail, with attempts retried on another replica within a retry budget
//! and behind a per-replica breaker. Registration works as long as one
//! replica does.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Method, header};
use http_body_util::BodyExt;
use portico_common::{clock::SharedClock, http::client::propagation_headers};
use portico_upstream::{
    AttemptPolicy, Call, Transport, TransportSettings, Upstream, UpstreamConfig,
    balance::PickContext,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::tokens::TokenIssuer;

/// Where the user service is and how it is called (config key
/// `user_service`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserServiceConfig {
    /// Its replicas, and the policies auth applies to them: every key of
    /// the gateway's `upstreams.<name>` except `split` and `openapi_path`.
    pub upstream: UpstreamConfig,
    /// The `aud` of the service tokens auth presents there (the user
    /// service's `internal_api.audience`).
    pub audience: String,
    /// The scope those tokens carry (its `internal_api.create_scope`).
    pub scope: String,
    /// Attempts per call in all, each on another replica.
    pub max_attempts: u32,
    /// Time one attempt may wait for a replica's response headers.
    pub attempt_timeout_ms: u64,
    /// Time a call may take in all, attempts included.
    pub timeout_ms: u64,
    /// TCP connect timeout to a replica.
    pub connect_timeout_ms: u64,
}

impl UserServiceConfig {
    /// The rules beyond the upstream's own: the key at fault (under
    /// `user_service.`) and what is wrong.
    pub fn check(&self) -> Result<(), (String, String)> {
        if !self.upstream.split.is_empty() || self.upstream.openapi_path.is_some() {
            return Err((
                "upstream".into(),
                "`split` and `openapi_path` are the gateway's; a service calls one upstream".into(),
            ));
        }
        self.upstream
            .check()
            .map_err(|(field, message)| (format!("upstream.{field}"), message))?;
        for (field, value) in [
            ("max_attempts", u64::from(self.max_attempts)),
            ("attempt_timeout_ms", self.attempt_timeout_ms),
            ("timeout_ms", self.timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
        ] {
            if value == 0 {
                return Err((field.into(), "must be positive".into()));
            }
        }
        Ok(())
    }
}

/// How long the first discovery answer may take at startup.
const FIRST_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(3);

/// Pause before asking again about a profile whose creation is uncertain.
const RETRY_DELAY: Duration = Duration::from_millis(100);

/// A profile's answer is small; anything longer is not one.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The user service already has a profile with this email.
    #[error("the user service reports the email as taken")]
    EmailTaken,
    /// Unreachable, timed out, or answered with an error.
    #[error("user service unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Serialize)]
struct CreateUser<'a> {
    id: Uuid,
    email: &'a str,
    display_name: &'a str,
}

#[derive(Debug, Clone)]
pub struct UserDirectory {
    transport: Transport,
    upstream: Arc<Upstream>,
    attempts: AttemptPolicy,
    timeout: Duration,
    audience: String,
    scope: String,
    issuer: TokenIssuer,
    /// Issue time of service tokens.
    clock: SharedClock,
}

/// The fields of a profile auth reads.
#[derive(Debug, Deserialize)]
struct Stored {
    id: Uuid,
    status: Option<String>,
}

/// The user service's problem type for an unknown profile id.
const NO_SUCH_USER_PROBLEM: &str = "urn:portico:problem:no-such-user";

/// The `type` of a problem answer.
#[derive(Debug, Deserialize)]
struct ProblemType {
    r#type: String,
}

/// A profile as the registration reconciler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileState {
    Active,
    /// Deleted (or any status but active): not an account to finish.
    Inactive,
}

impl UserDirectory {
    /// The directory, once its upstream has had a first discovery answer
    /// (or a few seconds); discovery and health checks then follow it.
    pub async fn start(
        config: &UserServiceConfig,
        issuer: TokenIssuer,
        clock: SharedClock,
    ) -> Result<Self, String> {
        let eject_for = Duration::from_secs(5);
        let upstream = Arc::new(Upstream::from_config(
            "auth",
            "user",
            &config.upstream,
            eject_for,
        )?);
        portico_upstream::start(std::slice::from_ref(&upstream), FIRST_DISCOVERY_TIMEOUT).await;
        upstream.publish_metrics();
        Ok(Self {
            transport: Transport::new(TransportSettings {
                connect_timeout: Duration::from_millis(config.connect_timeout_ms),
                pool_idle_timeout: Duration::from_secs(60),
                pool_max_idle_per_host: 32,
            }),
            upstream,
            attempts: AttemptPolicy {
                max_attempts: config.max_attempts,
                attempt_timeout: Duration::from_millis(config.attempt_timeout_ms),
                backoff_base: Duration::from_millis(25),
                backoff_max: Duration::from_millis(250),
            },
            timeout: Duration::from_millis(config.timeout_ms),
            audience: config.audience.clone(),
            scope: config.scope.clone(),
            issuer,
            clock,
        })
    }

    /// The replicas and their state, for the admin listener.
    pub fn describe(&self) -> serde_json::Value {
        self.upstream.describe()
    }

    /// Creates the user's profile, authenticated with a service token.
    ///
    /// Creation is idempotent by id, so a call whose outcome is unknown (a
    /// timeout, a dropped connection, a 5xx — the profile may well exist)
    /// is replayed: on another replica within the call, and once more
    /// after a pause (within the upstream's retry budget) when the whole
    /// call failed. A lost answer then costs nothing instead of leaving an
    /// orphaned profile behind a failed registration.
    pub async fn create_profile(
        &self,
        id: Uuid,
        email: &str,
        display_name: &str,
    ) -> Result<(), DirectoryError> {
        match self.try_create(id, email, display_name).await {
            Err(DirectoryError::Unavailable(first)) => {
                if !self.upstream.budget().try_retry() {
                    return Err(DirectoryError::Unavailable(first));
                }
                tracing::warn!(user_id = %id, cause = %first, "profile creation uncertain; asking again");
                tokio::time::sleep(RETRY_DELAY).await;
                self.try_create(id, email, display_name).await
            }
            outcome => outcome,
        }
    }

    async fn try_create(
        &self,
        id: Uuid,
        email: &str,
        display_name: &str,
    ) -> Result<(), DirectoryError> {
        let body = serde_json::to_vec(&CreateUser {
            id,
            email,
            display_name,
        })
        .map_err(|err| DirectoryError::Unavailable(format!("cannot encode the profile: {err}")))?;
        // Idempotent by id: safe to send to another replica.
        let (status, answer) = self
            .call(&Method::POST, "/internal/users", Bytes::from(body))
            .await?;
        match status {
            200 | 201 => {
                let created: Stored = serde_json::from_slice(&answer).map_err(|err| {
                    DirectoryError::Unavailable(format!("unreadable answer: {err}"))
                })?;
                if created.id == id {
                    Ok(())
                } else {
                    Err(DirectoryError::Unavailable(
                        "answer names another user".into(),
                    ))
                }
            }
            409 => Err(DirectoryError::EmailTaken),
            status => Err(DirectoryError::Unavailable(format!("answered {status}"))),
        }
    }

    /// Whether the user service holds a profile with this id, and whether
    /// it is active — what the registration reconciler decides on. Only a
    /// clear answer (200 or 404) counts; anything else is `Unavailable`.
    pub async fn profile(&self, id: Uuid) -> Result<Option<ProfileState>, DirectoryError> {
        let (status, answer) = self
            .call(&Method::GET, &format!("/internal/users/{id}"), Bytes::new())
            .await?;
        match status {
            200 => {
                let stored: Stored = serde_json::from_slice(&answer).map_err(|err| {
                    DirectoryError::Unavailable(format!("unreadable answer: {err}"))
                })?;
                if stored.id != id {
                    return Err(DirectoryError::Unavailable(
                        "answer names another user".into(),
                    ));
                }
                Ok(Some(if stored.status.as_deref() == Some("active") {
                    ProfileState::Active
                } else {
                    ProfileState::Inactive
                }))
            }
            // Only the user service's own "no such profile": a 404 from
            // anything else (a replica without the route) says nothing.
            404 if serde_json::from_slice::<ProblemType>(&answer)
                .is_ok_and(|problem| problem.r#type == NO_SUCH_USER_PROBLEM) =>
            {
                Ok(None)
            }
            status => Err(DirectoryError::Unavailable(format!("answered {status}"))),
        }
    }

    /// One call to the internal API with a service token: the answer's
    /// status and body. Both calls are safe to replay on another replica
    /// (creation is idempotent by id; a read changes nothing).
    async fn call(
        &self,
        method: &Method,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<(u16, Bytes), DirectoryError> {
        // Auth is its own client: the same client-credentials token any
        // service gets from POST /v1/auth/token, minted in process.
        let token = self
            .issuer
            .client_token(
                &self.issuer.settings().service_name,
                &self.audience,
                &self.scope,
                self.clock.now(),
            )
            .map_err(|err| {
                DirectoryError::Unavailable(format!("cannot sign service token: {err}"))
            })?;
        let mut headers = propagation_headers();
        let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            DirectoryError::Unavailable("service token is not a header value".into())
        })?;
        headers.insert(header::AUTHORIZATION, bearer);
        if !body.is_empty() {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let deadline = Instant::now() + self.timeout;
        let response = self
            .transport
            .send(
                &self.upstream,
                Call {
                    method,
                    path_and_query,
                    headers: &headers,
                    body: body.into(),
                    context: PickContext::default(),
                    replayable: true,
                    policy: self.attempts,
                    deadline,
                },
            )
            .await
            .map_err(|failure| DirectoryError::Unavailable(failure.to_string()))?;
        let status = response.status().as_u16();
        let answer = tokio::time::timeout_at(
            deadline.into(),
            http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect(),
        )
        .await
        .map_err(|_| DirectoryError::Unavailable("answer body timed out".into()))?
        .map_err(|err| DirectoryError::Unavailable(format!("unreadable answer: {err}")))?
        .to_bytes();
        Ok((status, answer))
    }
}
