//! Layered, typed configuration: built-in defaults → optional TOML file →
//! environment variables.
//!
//! Every service has one env prefix (`PORTICO_GATEWAY_`, `PORTICO_USER_`,
//! `PORTICO_AUTH_`); `__` separates nesting levels, so `database.url` is
//! `PORTICO_USER_DATABASE__URL`. `<PREFIX>CONFIG_FILE` names a TOML file.
//! Any key can also be given as `<VAR>_FILE`, naming a file whose contents are
//! the value — the usual way to mount secrets in containers.
//!
//! Each service ships its defaults as a TOML document compiled into the
//! binary (`config/defaults.toml` in the service), so layers merge key by
//! key: setting `upstreams.user.endpoints` keeps every other upstream.

use std::{net::SocketAddr, path::PathBuf};

use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
    value::Value,
};
use serde::{Deserialize, de::DeserializeOwned};

/// A configuration problem, rendered as one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// An error about one key, naming both its dotted path and its env var.
    pub fn key(prefix: &str, key: &str, message: impl std::fmt::Display) -> Self {
        Self(format!(
            "key `{key}` (env {}): {message}",
            env_var_name(prefix, key)
        ))
    }
}

/// Env var that sets a dotted key: `database.url` → `PORTICO_USER_DATABASE__URL`.
pub fn env_var_name(prefix: &str, key: &str) -> String {
    format!("{prefix}{}", key.replace('.', "__").to_uppercase())
}

/// Loads `T` from the layers described in the module docs, reading env vars
/// from the process environment. Keys are case-insensitive; unknown keys are
/// errors (config structs use `deny_unknown_fields`) so typos are caught.
pub fn load<T: DeserializeOwned>(prefix: &str, defaults: &str) -> Result<T, ConfigError> {
    load_from(prefix, defaults, std::env::vars())
}

/// Like [`load`], with the environment passed in (for tests).
pub fn load_from<T: DeserializeOwned>(
    prefix: &str,
    defaults: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    // A variable set to the empty string counts as unset, so a deployment
    // file can pass an optional value through (`${VAR:-}` in compose)
    // without a second copy of the service for "not given".
    let env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, value)| name.starts_with(prefix) && !value.is_empty())
        .collect();

    let mut figment = Figment::from(Toml::string(defaults));

    let config_file_var = format!("{prefix}CONFIG_FILE");
    if let Some((_, path)) = env.iter().find(|(name, _)| *name == config_file_var) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(ConfigError::new(format!(
                "{config_file_var}: file `{}` does not exist",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file_exact(path));
    }

    // Env layer. Values are parsed the way figment's `Env` provider does:
    // `8080`, `true` and `["a", "b"]` become numbers, booleans and arrays.
    let mut values = Vec::new();
    for (name, value) in env.iter().filter(|(name, _)| *name != config_file_var) {
        let (name, value) = match name.strip_suffix("_FILE") {
            Some(base) => {
                let contents = std::fs::read_to_string(value).map_err(|err| {
                    ConfigError::new(format!("{name}: cannot read `{value}`: {err}"))
                })?;
                (
                    base.to_owned(),
                    contents.trim_end_matches(['\r', '\n']).to_owned(),
                )
            }
            None => (name.clone(), value.clone()),
        };
        let key = name[prefix.len()..].to_lowercase().replace("__", ".");
        if !key.is_empty() {
            values.push((key, value));
        }
    }

    // A value that parses as a number or boolean but lands in a string field
    // (a numeric password, say) is retried as the literal string.
    let mut literal_keys: Vec<String> = Vec::new();
    loop {
        let mut layered = figment.clone();
        for (key, value) in &values {
            let parsed: Value = if literal_keys.contains(key) {
                Value::from(value.clone())
            } else {
                value.parse().unwrap_or_else(|_| Value::from(value.clone()))
            };
            layered = layered.merge(Serialized::default(key, parsed));
        }
        match layered.extract::<T>() {
            Ok(config) => return Ok(config),
            Err(err) => {
                let key = err.path.join(".");
                let retry = matches!(
                    err.kind,
                    figment::error::Kind::InvalidType(
                        figment::error::Actual::Signed(_)
                            | figment::error::Actual::Unsigned(_)
                            | figment::error::Actual::Float(_)
                            | figment::error::Actual::Bool(_),
                        _
                    )
                ) && values.iter().any(|(k, _)| *k == key)
                    && !literal_keys.contains(&key);
                if retry {
                    literal_keys.push(key);
                } else {
                    return Err(describe(prefix, err));
                }
            }
        }
    }
}

fn describe(prefix: &str, err: figment::Error) -> ConfigError {
    let key = err.path.join(".");
    let message = err.kind.to_string();
    if key.is_empty() {
        ConfigError::new(message)
    } else {
        ConfigError::key(prefix, &key, message)
    }
}

/// Loads the config or stops the process with one line on stderr and exit
/// code 2 — the behaviour every service's `main` wants.
pub fn load_or_exit<T: DeserializeOwned>(
    prefix: &str,
    defaults: &str,
    validate: impl FnOnce(&T) -> Result<(), ConfigError>,
) -> T {
    let result = load::<T>(prefix, defaults).and_then(|config| validate(&config).map(|()| config));
    match result {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(2);
        }
    }
}

/// A service's configuration type: where its env prefix and built-in
/// defaults are, the sections every service has, and the cross-field rules
/// serde cannot express. Loading, validating and exiting on error are the
/// same for every service.
///
/// The defaults TOML is the one source of default values: config structs
/// have no `Default` impls and no `#[serde(default)]` on sections, so a key
/// missing from the TOML is a startup error rather than a silent second
/// default. Tests start from [`Self::built_in`].
pub trait ServiceConfig: DeserializeOwned {
    /// `PORTICO_<SERVICE>_`.
    const ENV_PREFIX: &'static str;
    /// The service's `config/defaults.toml`, compiled in.
    const DEFAULTS: &'static str;

    /// Where the API and admin listeners bind.
    fn listen(&self) -> &ListenConfig;
    /// How long a stop may take.
    fn shutdown(&self) -> &ShutdownConfig;
    /// How many client connections the API listener holds, and how long a
    /// silent one may stay.
    fn connections(&self) -> &ConnectionsConfig;
    /// Logs and traces.
    fn telemetry(&self) -> &crate::telemetry::TelemetryConfig;

    /// Rules across fields; the default has none.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Defaults → file → environment, then [`Self::validate`].
    fn load() -> Result<Self, ConfigError> {
        load::<Self>(Self::ENV_PREFIX, Self::DEFAULTS)
            .and_then(|config| config.validate().map(|()| config))
    }

    /// [`Self::load`], or one line on stderr and exit code 2.
    fn load_or_exit() -> Self {
        load_or_exit(Self::ENV_PREFIX, Self::DEFAULTS, Self::validate)
    }

    /// The built-in defaults alone (no file, no environment).
    fn built_in() -> Self {
        #[allow(clippy::expect_used)] // every service tests that its defaults parse
        load_from(Self::ENV_PREFIX, Self::DEFAULTS, std::iter::empty())
            .expect("built-in defaults parse")
    }
}

/// Implements [`ServiceConfig`]'s accessors for the sections every service
/// config has under the same names: `listen`, `shutdown`, `connections`,
/// `telemetry`.
/// Use inside the `impl ServiceConfig for …` block.
#[macro_export]
macro_rules! standard_sections {
    () => {
        fn listen(&self) -> &$crate::config::ListenConfig {
            &self.listen
        }

        fn shutdown(&self) -> &$crate::config::ShutdownConfig {
            &self.shutdown
        }

        fn connections(&self) -> &$crate::config::ConnectionsConfig {
            &self.connections
        }

        fn telemetry(&self) -> &$crate::telemetry::TelemetryConfig {
            &self.telemetry
        }
    };
}

/// The two listeners every service has: the API and the admin endpoints
/// (health, readiness, metrics), kept apart so admin is never exposed by
/// accident through the public port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address of the API listener.
    pub api: SocketAddr,
    /// Address of the admin listener.
    pub admin: SocketAddr,
}

/// The API listener's client connections: a bound on how many it holds,
/// one per client address, and how long a connection may stay silent. A
/// client that opens connections and sends nothing holds a slot for
/// `first_byte_timeout_ms` at most, and never more than
/// `max_per_client_ip` of them; at `max` the listener stops accepting
/// (new connections wait in the kernel's queue) and goes on serving the
/// open ones. An idle keep-alive connection is closed after
/// `header_read_timeout_ms` without a new request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    pub max: usize,
    /// 0: no limit per address.
    pub max_per_client_ip: usize,
    pub first_byte_timeout_ms: u64,
    pub header_read_timeout_ms: u64,
    /// Longest request target (path and query) answered; longer: 414.
    pub max_uri_bytes: usize,
    /// Most header bytes in a request (names and values); more: 431.
    pub max_header_bytes: usize,
    /// Serve the API on one event loop per core (a thread with its own
    /// single-threaded runtime each; one acceptor hands each new connection
    /// to the loop with the fewest open) instead of on the service's shared
    /// work-stealing runtime. A connection, and every task it starts, then
    /// stays on its loop's thread: nothing crosses cores within a request
    /// (nginx's worker model). On in the gateway's and the user service's
    /// defaults, off in auth's (its password hashing would hold a loop).
    #[serde(default)]
    pub per_core_event_loops: bool,
}

/// How long a stopping service waits for in-flight requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Upper bound on draining in-flight requests after SIGTERM, in seconds.
    pub drain_timeout_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::{ExposeSecret, SecretString};

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        port: u16,
        database: Database,
        names: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Database {
        url: SecretString,
        max_connections: u32,
    }

    impl Default for Database {
        fn default() -> Self {
            Self {
                url: SecretString::from("unset"),
                max_connections: 5,
            }
        }
    }

    const DEFAULTS: &str =
        "port = 1\nnames = [\"default\"]\n[database]\nurl = \"sqlite://default.db\"\n";

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn empty_variable_counts_as_unset() {
        let config: Sample = load_from(
            "T0_",
            DEFAULTS,
            vars(&[("T0_PORT", ""), ("T0_DATABASE__URL", "")]),
        )
        .unwrap();
        assert_eq!(config.port, 1);
        assert_eq!(config.database.url.expose_secret(), "sqlite://default.db");
    }

    #[test]
    fn numeric_looking_value_still_fills_a_string_field() {
        let config: Sample =
            load_from("T8_", DEFAULTS, vars(&[("T8_DATABASE__URL", "12345")])).unwrap();
        assert_eq!(config.database.url.expose_secret(), "12345");
    }

    #[test]
    fn setting_one_nested_key_keeps_its_siblings() {
        let config: Sample = load_from(
            "T9_",
            DEFAULTS,
            vars(&[("T9_DATABASE__MAX_CONNECTIONS", "2")]),
        )
        .unwrap();
        assert_eq!(config.database.max_connections, 2);
        assert_eq!(config.database.url.expose_secret(), "sqlite://default.db");
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config: Sample = load_from("T1_", DEFAULTS, vars(&[])).unwrap();
        assert_eq!(config.port, 1);
        assert_eq!(config.database.max_connections, 5);
    }

    #[test]
    fn env_overrides_nested_keys_and_lists() {
        let config: Sample = load_from(
            "T2_",
            DEFAULTS,
            vars(&[
                ("T2_PORT", "8080"),
                ("T2_DATABASE__MAX_CONNECTIONS", "9"),
                ("T2_NAMES", "[\"a\", \"b\"]"),
                ("OTHER_PORT", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(config.port, 8080);
        assert_eq!(config.database.max_connections, 9);
        assert_eq!(config.names, ["a", "b"]);
    }

    #[test]
    fn file_layer_sits_between_defaults_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "port = 7\n[database]\nmax_connections = 3\n").unwrap();
        let config: Sample = load_from(
            "T3_",
            DEFAULTS,
            vars(&[("T3_CONFIG_FILE", path.to_str().unwrap()), ("T3_PORT", "8")]),
        )
        .unwrap();
        assert_eq!(config.port, 8, "env wins over the file");
        assert_eq!(
            config.database.max_connections, 3,
            "file wins over defaults"
        );
    }

    #[test]
    fn file_variant_reads_a_mounted_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, "postgres://u:p@h/db\n").unwrap();
        let config: Sample = load_from(
            "T4_",
            DEFAULTS,
            vars(&[("T4_DATABASE__URL_FILE", path.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(config.database.url.expose_secret(), "postgres://u:p@h/db");
    }

    #[test]
    fn bad_value_names_the_key_and_the_variable() {
        let err = load_from::<Sample>(
            "T5_",
            DEFAULTS,
            vars(&[("T5_DATABASE__MAX_CONNECTIONS", "many")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("database.max_connections"), "{err}");
        assert!(err.contains("T5_DATABASE__MAX_CONNECTIONS"), "{err}");
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = load_from::<Sample>("T6_", DEFAULTS, vars(&[("T6_PROT", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let err = load_from::<Sample>(
            "T7_",
            DEFAULTS,
            vars(&[("T7_CONFIG_FILE", "/nonexistent.toml")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("T7_CONFIG_FILE"), "{err}");
    }
}
