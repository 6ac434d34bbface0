//! A throwaway PKI for TLS tests: a CA and the certificates it signs (for
//! `127.0.0.1` and `localhost` by default), written as PEM files into a
//! temporary directory, and rustls server settings built from them.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A CA with a directory for what it signs.
pub struct TestPki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate (what clients and servers trust).
    pub ca_file: PathBuf,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl TestPki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let certificate = params.self_signed(&key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, certificate.pem()).unwrap();
        Self {
            dir,
            issuer: Issuer::new(params, key),
            ca_file,
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses),
    /// written as `<label>.pem` and `<label>.key`.
    pub fn server(&self, label: &str, names: &[&str]) -> Identity {
        self.issue(label, names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn localhost(&self, label: &str) -> Identity {
        self.server(label, &["127.0.0.1", "localhost"])
    }

    /// A client certificate (mutual TLS) for `name`.
    pub fn client(&self, label: &str, name: &str) -> Identity {
        self.issue(label, &[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, label: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(label));
        params.extended_key_usages = vec![usage];
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        let identity = Identity {
            cert_file: self.dir.path().join(format!("{label}.pem")),
            key_file: self.dir.path().join(format!("{label}.key")),
        };
        std::fs::write(&identity.cert_file, certificate.pem()).unwrap();
        std::fs::write(&identity.key_file, key.serialize_pem()).unwrap();
        identity
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Server settings presenting `identity`, offering `alpn`; with
/// `client_ca`, a client certificate signed by it is required.
pub fn server_config(
    identity: &Identity,
    alpn: &[&[u8]],
    client_ca: Option<&Path>,
) -> Arc<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(&identity.cert_file)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&identity.key_file).unwrap();
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for certificate in CertificateDer::pem_file_iter(ca_file).unwrap() {
                roots.add(certificate.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = alpn.iter().map(|id| id.to_vec()).collect();
    Arc::new(config)
}
