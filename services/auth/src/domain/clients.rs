//! Service clients (OAuth 2.0 client credentials, RFC 6749 §4.4): who may
//! get a service token, for which audiences and scopes. Clients come from
//! config, where only a SHA-256 of each secret is kept: secrets are long
//! random strings, so a fast hash is enough (nothing to brute-force), and
//! checking one costs microseconds, not an argon2 slot.

use std::collections::BTreeMap;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use portico_common::jwt::ServiceIdentity;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// One client in config (`service_clients.<id>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Hex SHA-256 of the client's secret: `printf %s "$SECRET" | sha256sum`.
    pub secret_sha256: String,
    /// Audiences (services) it may ask tokens for; the first is the default.
    pub audiences: Vec<String>,
    /// Scopes it may be granted; asking none grants all of them.
    pub scopes: Vec<String>,
}

/// A client whose config passed the checks.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    pub id: ServiceIdentity,
    secret_sha256: [u8; 32],
    audiences: Vec<String>,
    scopes: Vec<String>,
}

/// What a token request is granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub audience: String,
    /// Space-separated, in the client's configured order.
    pub scope: String,
}

/// Why a token request is refused, as RFC 6749 §5.2 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    /// A scope the client may not have, or not a valid scope.
    InvalidScope,
    /// An audience the client may not ask for (RFC 8707 `invalid_target`).
    InvalidTarget,
}

/// Every configured client, by id.
#[derive(Debug, Clone, Default)]
pub struct ServiceClients {
    clients: BTreeMap<String, ServiceClient>,
}

/// RFC 6749 §3.3 scope-token: printable ASCII but space, `"` and `\`.
fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl ServiceClients {
    /// Checks the config: ids are service names, hashes 64 hex digits,
    /// audiences and scopes well-formed and non-empty. The error names the
    /// offending key.
    pub fn from_config(config: &BTreeMap<String, ClientConfig>) -> Result<Self, (String, String)> {
        let mut clients = BTreeMap::new();
        for (id, client) in config {
            let key = |field: &str| format!("service_clients.{id}.{field}");
            let identity =
                ServiceIdentity::parse(id).map_err(|err| (format!("service_clients.{id}"), err))?;
            let digest = decode_hex_32(&client.secret_sha256).ok_or_else(|| {
                (
                    key("secret_sha256"),
                    "must be 64 hex digits (the SHA-256 of the secret)".to_owned(),
                )
            })?;
            if client.audiences.is_empty() || client.audiences.iter().any(|a| !is_scope_token(a)) {
                return Err((
                    key("audiences"),
                    "must list at least one audience, each without spaces".to_owned(),
                ));
            }
            if client.scopes.iter().any(|scope| !is_scope_token(scope)) {
                return Err((
                    key("scopes"),
                    "each scope must be a non-empty word of printable ASCII".to_owned(),
                ));
            }
            clients.insert(
                id.clone(),
                ServiceClient {
                    id: identity,
                    secret_sha256: digest,
                    audiences: client.audiences.clone(),
                    scopes: client.scopes.clone(),
                },
            );
        }
        Ok(Self { clients })
    }

    /// The client with this id and secret. An unknown id costs the same
    /// comparison as a wrong secret; the comparison is constant-time.
    pub fn authenticate(&self, id: &str, secret: &str) -> Option<&ServiceClient> {
        let presented = sha256(secret);
        let client = self.clients.get(id);
        let expected = client.map_or([0u8; 32], |client| client.secret_sha256);
        let matches = verify_slices_are_equal(&presented, &expected).is_ok();
        client.filter(|_| matches)
    }
}

impl ServiceClient {
    /// What to grant for the requested `audience` and `scope` (both
    /// optional: the first audience and every allowed scope by default).
    pub fn grant(&self, audience: Option<&str>, scope: Option<&str>) -> Result<Grant, GrantError> {
        let audience = match audience {
            None => self.audiences[0].clone(),
            Some(asked) if self.audiences.iter().any(|allowed| allowed == asked) => {
                asked.to_owned()
            }
            Some(_) => return Err(GrantError::InvalidTarget),
        };
        let scope = match scope {
            None => self.scopes.join(" "),
            Some(asked) => {
                let asked: Vec<&str> = asked.split(' ').filter(|s| !s.is_empty()).collect();
                if asked.is_empty()
                    || asked
                        .iter()
                        .any(|scope| !self.scopes.iter().any(|allowed| allowed == scope))
                {
                    return Err(GrantError::InvalidScope);
                }
                // In configured order, without repeats.
                self.scopes
                    .iter()
                    .filter(|allowed| asked.contains(&allowed.as_str()))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        Ok(Grant { audience, scope })
    }
}

fn decode_hex_32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(digest: [u8; 32]) -> String {
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn clients() -> ServiceClients {
        let config = BTreeMap::from([(
            "billing".to_owned(),
            ClientConfig {
                secret_sha256: hex(sha256("s3cret-s3cret-s3cret")),
                audiences: vec!["portico-user".to_owned(), "portico-audit".to_owned()],
                scopes: vec!["users:read".to_owned(), "users:write".to_owned()],
            },
        )]);
        ServiceClients::from_config(&config).unwrap()
    }

    #[test]
    fn only_the_right_secret_authenticates() {
        let clients = clients();
        assert!(
            clients
                .authenticate("billing", "s3cret-s3cret-s3cret")
                .is_some()
        );
        assert!(
            clients
                .authenticate("billing", "s3cret-s3cret-s3creT")
                .is_none()
        );
        assert!(clients.authenticate("billing", "").is_none());
        assert!(
            clients
                .authenticate("nobody", "s3cret-s3cret-s3cret")
                .is_none()
        );
    }

    #[test]
    fn grants_stay_within_the_allowed_audiences_and_scopes() {
        let clients = clients();
        let billing = clients
            .authenticate("billing", "s3cret-s3cret-s3cret")
            .unwrap();
        assert_eq!(
            billing.grant(None, None).unwrap(),
            Grant {
                audience: "portico-user".to_owned(),
                scope: "users:read users:write".to_owned()
            }
        );
        assert_eq!(
            billing
                .grant(
                    Some("portico-audit"),
                    Some("users:write users:read users:write")
                )
                .unwrap(),
            Grant {
                audience: "portico-audit".to_owned(),
                scope: "users:read users:write".to_owned()
            }
        );
        assert_eq!(
            billing.grant(Some("portico-api"), None),
            Err(GrantError::InvalidTarget)
        );
        assert_eq!(
            billing.grant(None, Some("admin")),
            Err(GrantError::InvalidScope)
        );
        assert_eq!(
            billing.grant(None, Some("users:read admin")),
            Err(GrantError::InvalidScope)
        );
        assert_eq!(
            billing.grant(None, Some("  ")),
            Err(GrantError::InvalidScope)
        );
    }

    #[test]
    fn bad_config_is_refused_naming_the_key() {
        let good = ClientConfig {
            secret_sha256: hex(sha256("x")),
            audiences: vec!["portico-user".to_owned()],
            scopes: vec![],
        };
        let refused = |id: &str, client: ClientConfig| {
            ServiceClients::from_config(&BTreeMap::from([(id.to_owned(), client)]))
                .unwrap_err()
                .0
        };
        assert_eq!(refused("Bad Id", good.clone()), "service_clients.Bad Id");
        assert_eq!(
            refused(
                "ok",
                ClientConfig {
                    secret_sha256: "abc".to_owned(),
                    ..good.clone()
                }
            ),
            "service_clients.ok.secret_sha256"
        );
        assert_eq!(
            refused(
                "ok",
                ClientConfig {
                    audiences: vec![],
                    ..good.clone()
                }
            ),
            "service_clients.ok.audiences"
        );
        assert_eq!(
            refused(
                "ok",
                ClientConfig {
                    scopes: vec!["a b".to_owned()],
                    ..good
                }
            ),
            "service_clients.ok.scopes"
        );
    }
}
