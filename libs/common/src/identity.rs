//! Who a token speaks for: role names, a subject's set of roles, and the
//! identity of a calling service. Parse, don't validate: each type holds
//! only well-formed names, so a typo in config or a forged claim cannot
//! become a role nobody checks for.

use std::{collections::BTreeSet, fmt};

use serde::{Deserialize, Serialize};

/// Longest role or service name.
const MAX_NAME_LEN: usize = 64;

/// A name as roles and services use it: 1–64 of `a-z`, `0-9`, `-`, `_`,
/// starting with a letter.
fn parse_name(raw: &str, what: &str) -> Result<String, String> {
    let valid = (1..=MAX_NAME_LEN).contains(&raw.len())
        && raw.starts_with(|c: char| c.is_ascii_lowercase())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "`{raw}` is not a valid {what} name (1–{MAX_NAME_LEN} of a-z, 0-9, `-`, `_`, starting with a letter)"
        ))
    }
}

/// One role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Role(String);

impl Role {
    /// Every registered user.
    pub const USER: &'static str = "user";
    /// Every calling service (service tokens).
    pub const SERVICE: &'static str = "service";
    /// Operators of the deployment.
    pub const ADMIN: &'static str = "admin";

    pub fn parse(raw: &str) -> Result<Self, String> {
        parse_name(raw, "role").map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Role {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Role> for String {
    fn from(role: Role) -> Self {
        role.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The roles of a subject: no duplicates, in a stable order. A JSON array
/// in tokens; one comma-separated column in storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoleSet(BTreeSet<Role>);

impl RoleSet {
    /// The roles of a newly registered user.
    pub fn new_user() -> Self {
        Self::of(&[Role::USER])
    }

    /// The roles of a service token.
    pub fn service() -> Self {
        Self::of(&[Role::SERVICE])
    }

    /// From names known to be valid (the constants on [`Role`]).
    fn of(names: &[&'static str]) -> Self {
        Self(
            names
                .iter()
                .filter_map(|name| Role::parse(name).ok())
                .collect(),
        )
    }

    pub fn contains(&self, role: &str) -> bool {
        self.0.iter().any(|held| held.as_str() == role)
    }

    /// Parses the stored form: names separated by commas. An invalid name is
    /// an error, not a silently dropped role.
    pub fn from_stored(stored: &str) -> Result<Self, String> {
        stored
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(Role::parse)
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Self)
    }

    /// This set with `role` added.
    pub fn with(&self, role: &Role) -> Self {
        let mut roles = self.0.clone();
        roles.insert(role.clone());
        Self(roles)
    }

    /// This set without `role`.
    pub fn without(&self, role: &Role) -> Self {
        let mut roles = self.0.clone();
        roles.remove(role);
        Self(roles)
    }

    /// The stored form (see [`Self::from_stored`]).
    pub fn to_stored(&self) -> String {
        self.0
            .iter()
            .map(Role::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A service calling another one: the subject `service:<name>` of its
/// tokens. Names come from configuration (`tokens.service_name` of the
/// caller, the callee's list of allowed callers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceIdentity(String);

impl ServiceIdentity {
    const SUBJECT_PREFIX: &'static str = "service:";

    pub fn parse(name: &str) -> Result<Self, String> {
        parse_name(name, "service").map(Self)
    }

    /// The identity named by a token subject, if it is a service subject.
    pub fn from_subject(subject: &str) -> Option<Self> {
        subject
            .strip_prefix(Self::SUBJECT_PREFIX)
            .and_then(|name| Self::parse(name).ok())
    }

    /// The `sub` claim of this service's tokens.
    pub fn subject(&self) -> String {
        format!("{}{}", Self::SUBJECT_PREFIX, self.0)
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ServiceIdentity {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ServiceIdentity> for String {
    fn from(identity: ServiceIdentity) -> Self {
        identity.0
    }
}

impl fmt::Display for ServiceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_plain_lowercase_words() {
        for ok in ["user", "admin", "billing-reader", "a1_b"] {
            assert!(Role::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Admin", "1st", "a b", "a,b", "ädmin", &"a".repeat(65)] {
            assert!(Role::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stored_roles_round_trip_in_a_stable_order_without_duplicates() {
        let roles = RoleSet::from_stored("user, admin,user").unwrap();
        assert_eq!(roles.to_stored(), "admin,user");
        assert!(roles.contains(Role::ADMIN) && roles.contains(Role::USER));
        assert!(!roles.contains(Role::SERVICE));
    }

    #[test]
    fn a_stored_role_with_an_invalid_name_is_an_error() {
        assert!(RoleSet::from_stored("user,Root Admin").is_err());
    }

    #[test]
    fn roles_in_json_are_an_array_and_invalid_names_are_refused() {
        let roles: RoleSet = serde_json::from_str(r#"["user","admin"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&roles).unwrap(),
            r#"["admin","user"]"#
        );
        assert!(serde_json::from_str::<RoleSet>(r#"["User"]"#).is_err());
    }

    #[test]
    fn service_identity_is_the_subject_of_service_tokens() {
        let auth = ServiceIdentity::parse("auth").unwrap();
        assert_eq!(auth.subject(), "service:auth");
        assert_eq!(ServiceIdentity::from_subject("service:auth"), Some(auth));
        assert_eq!(ServiceIdentity::from_subject("0195f3c2-8f1e-7c2a"), None);
        assert_eq!(ServiceIdentity::from_subject("service:Bad Name"), None);
    }
}
