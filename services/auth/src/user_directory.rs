//! The user service's internal API, as auth calls it at registration.

use portico_common::{clock::SharedClock, http::client::HttpClient};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::tokens::TokenIssuer;

/// Where the user service is (config key `user_service`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserServiceConfig {
    /// Base URL of the user service's API listener.
    pub url: String,
    /// The `aud` of the service tokens auth presents there (the user
    /// service's `internal_api.audience`).
    pub audience: String,
    /// The scope those tokens carry (its `internal_api.create_scope`).
    pub scope: String,
}

/// Pause before asking again about a profile whose creation is uncertain.
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

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
    client: HttpClient,
    create_url: String,
    audience: String,
    scope: String,
    issuer: TokenIssuer,
    /// Issue time of service tokens.
    clock: SharedClock,
}

#[derive(Debug, Deserialize)]
struct Created {
    id: Uuid,
}

impl UserDirectory {
    pub fn new(
        client: HttpClient,
        config: &UserServiceConfig,
        issuer: TokenIssuer,
        clock: SharedClock,
    ) -> Self {
        Self {
            client,
            create_url: format!("{}/internal/users", config.url.trim_end_matches('/')),
            audience: config.audience.clone(),
            scope: config.scope.clone(),
            issuer,
            clock,
        }
    }

    /// Creates the user's profile, authenticated with a service token.
    ///
    /// Creation is idempotent by id, so when an attempt's outcome is unknown
    /// (a timeout, a dropped connection, a 5xx — the profile may well exist)
    /// it is asked once more: a lost answer then costs nothing instead of
    /// leaving an orphaned profile behind a failed registration.
    pub async fn create_profile(
        &self,
        id: Uuid,
        email: &str,
        display_name: &str,
    ) -> Result<(), DirectoryError> {
        match self.try_create(id, email, display_name).await {
            Err(DirectoryError::Unavailable(first)) => {
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
        let response = self
            .client
            .post(&self.create_url)
            .bearer_auth(token)
            .json(&CreateUser {
                id,
                email,
                display_name,
            })
            .send()
            .await
            .map_err(|err| DirectoryError::Unavailable(err.to_string()))?;
        match response.status().as_u16() {
            200 | 201 => {
                let created: Created = response.json().await.map_err(|err| {
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
}
