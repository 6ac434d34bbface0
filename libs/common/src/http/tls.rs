//! TLS on the API listener: rustls (aws-lc-rs), TLS 1.2 and 1.3 only with
//! rustls' modern cipher suites, ALPN `h2` and `http/1.1`, certificates
//! chosen by SNI, and reloaded when their files change — new handshakes get
//! the new certificate while open connections carry on with theirs.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use serde::Deserialize;

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub enabled: bool,
    /// Certificate chains with their keys (PEM). The names each one serves
    /// are its DNS subject alternative names (`*.example.com` included);
    /// the first also serves clients that name no host or an unknown one.
    #[serde(default)]
    pub certificates: Vec<CertificateFiles>,
    /// How often the files are checked for a change.
    pub reload_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The listener's TLS: settings fixed at start, certificates swapped live.
#[derive(Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    certificates: Arc<Certificates>,
    files: Vec<CertificateFiles>,
    reload_interval: Duration,
}

impl ServerTls {
    /// Reads the certificates `config` names; on failure, the key at fault
    /// (`certificates.0.key_file`) and why.
    pub fn load(config: &TlsConfig) -> Result<Self, (String, String)> {
        if config.certificates.is_empty() {
            return Err((
                "certificates".into(),
                "TLS needs at least one certificate".into(),
            ));
        }
        let store = CertStore::load(&config.certificates)?;
        let certificates = Arc::new(Certificates(ArcSwap::from_pointee(store)));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| ("certificates".to_owned(), err.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(certificates.clone());
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(server),
            certificates,
            files: config.certificates.clone(),
            reload_interval: Duration::from_millis(config.reload_interval_ms.max(100)),
        })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// Reloads the certificates whenever a file changes, for as long as the
    /// service runs. A set that fails to load is logged and counted, and
    /// the current one stays.
    pub async fn follow(self: Arc<Self>) {
        let mut seen = self.stamps();
        let mut ticks = tokio::time::interval(self.reload_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = self.stamps();
            if now == seen {
                continue;
            }
            match CertStore::load(&self.files) {
                Ok(store) => {
                    self.certificates.0.store(Arc::new(store));
                    seen = now;
                    tracing::info!("TLS certificates reloaded");
                    metrics::counter!("tls_certificate_reloads_total", "result" => "loaded")
                        .increment(1);
                }
                Err((field, err)) => {
                    // A half-written pair (key before certificate): tried
                    // again at the next tick, the old one serving meanwhile.
                    tracing::warn!(field, %err, "TLS certificates not reloaded");
                    metrics::counter!("tls_certificate_reloads_total", "result" => "failed")
                        .increment(1);
                }
            }
        }
    }

    /// Modification time and length of every file, to notice a change.
    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.files
            .iter()
            .flat_map(|files| [&files.cert_file, &files.key_file])
            .map(|path| {
                let metadata = std::fs::metadata(path).ok()?;
                Some((metadata.modified().ok()?, metadata.len()))
            })
            .collect()
    }
}

/// The certificates by the names they serve.
#[derive(Debug)]
struct CertStore {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertStore {
    fn load(files: &[CertificateFiles]) -> Result<Self, (String, String)> {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        for (i, pair) in files.iter().enumerate() {
            let field = |name: &str| format!("certificates.{i}.{name}");
            let chain = CertificateDer::pem_file_iter(&pair.cert_file)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|err| {
                    (
                        field("cert_file"),
                        format!("{}: {err}", pair.cert_file.display()),
                    )
                })?;
            let Some(leaf) = chain.first() else {
                return Err((
                    field("cert_file"),
                    format!("{}: no certificate", pair.cert_file.display()),
                ));
            };
            let names: Vec<String> = webpki::EndEntityCert::try_from(leaf)
                .map_err(|err| {
                    (
                        field("cert_file"),
                        format!("{}: {err}", pair.cert_file.display()),
                    )
                })?
                .valid_dns_names()
                .map(str::to_ascii_lowercase)
                .collect();
            let key = PrivateKeyDer::from_pem_file(&pair.key_file).map_err(|err| {
                (
                    field("key_file"),
                    format!("{}: {err}", pair.key_file.display()),
                )
            })?;
            let certified = CertifiedKey::from_der(chain, key, &provider)
                .map_err(|err| (field("key_file"), err.to_string()))?;
            let certified = Arc::new(certified);
            for name in names {
                let table = match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()),
                    None => exact.entry(name),
                };
                // The first certificate listed for a name wins.
                table.or_insert_with(|| certified.clone());
            }
            default.get_or_insert(certified);
        }
        Ok(Self {
            default: default.ok_or_else(|| {
                (
                    "certificates".to_owned(),
                    "TLS needs at least one certificate".to_owned(),
                )
            })?,
            exact,
            wildcard,
        })
    }

    fn for_name(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        if let Some(key) = self.exact.get(&name) {
            return key.clone();
        }
        // A wildcard covers one label: `a.example.com`, not `a.b.example.com`.
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
            .clone()
    }
}

#[derive(Debug)]
struct Certificates(ArcSwap<CertStore>);

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().for_name(hello.server_name()))
    }
}
