//! Auth rules: password rules and hashing, signing keys, tokens. No storage
//! or network here; hashing runs on the blocking pool and key generation
//! draws from the system's randomness.

pub mod audit;
pub mod clients;
pub mod events;
pub mod keys;
pub mod password;
pub mod password_policy;
pub mod throttle;
pub mod tokens;
pub mod totp;
