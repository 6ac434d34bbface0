//! Auth rules with no I/O: passwords, signing keys and tokens.

pub mod keys;
pub mod password;
pub mod tokens;
