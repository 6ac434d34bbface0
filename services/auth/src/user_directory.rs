//! The user service's internal API, as auth calls it at registration.

use portico_common::http::client::HttpClient;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::tokens::TokenIssuer;

/// Where the user service is (config key `user_service`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserServiceConfig {
    /// Base URL of the user service's API listener.
    pub url: String,
}

impl Default for UserServiceConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8081".to_owned(),
        }
    }
}

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
    issuer: TokenIssuer,
}

#[derive(Debug, Deserialize)]
struct Created {
    id: Uuid,
}

impl UserDirectory {
    pub fn new(client: HttpClient, config: &UserServiceConfig, issuer: TokenIssuer) -> Self {
        Self {
            client,
            create_url: format!("{}/internal/users", config.url.trim_end_matches('/')),
            issuer,
        }
    }

    /// Creates the user's profile, authenticated with a service token.
    /// Idempotent on the user service's side, so a retry is harmless.
    pub async fn create_profile(
        &self,
        id: Uuid,
        email: &str,
        display_name: &str,
    ) -> Result<(), DirectoryError> {
        let token = self
            .issuer
            .service_token(OffsetDateTime::now_utc())
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
