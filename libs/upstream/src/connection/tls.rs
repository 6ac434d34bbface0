//! TLS to upstreams: rustls (aws-lc-rs), TLS 1.2 and 1.3 only, the CA and
//! client certificate read from PEM files when the upstream is built.

use std::sync::{Arc, OnceLock};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};

use crate::config::{Protocol, UpstreamTlsConfig};

/// The ALPN ids offered for `protocol`: the endpoint cannot pick another.
fn alpn(protocol: Protocol) -> Vec<Vec<u8>> {
    match protocol {
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
        Protocol::Http2 => vec![b"h2".to_vec()],
    }
}

/// The client side of `tls` (absent: the public roots, no client
/// certificate) for `protocol`; on failure, the offending key and why.
pub fn client_config(
    tls: Option<&UpstreamTlsConfig>,
    protocol: Protocol,
) -> Result<Arc<ClientConfig>, (&'static str, String)> {
    let roots = match tls.and_then(|tls| tls.ca_file.as_ref()) {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let certificates = CertificateDer::pem_file_iter(path)
                .map_err(|err| ("ca_file", format!("{}: {err}", path.display())))?;
            for certificate in certificates {
                let certificate =
                    certificate.map_err(|err| ("ca_file", format!("{}: {err}", path.display())))?;
                roots
                    .add(certificate)
                    .map_err(|err| ("ca_file", format!("{}: {err}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(("ca_file", format!("{}: no certificate", path.display())));
            }
            Arc::new(roots)
        }
        None => public_roots(),
    };
    let builder = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| ("ca_file", err.to_string()))?
    .with_root_certificates(roots);
    let mut config = match tls.and_then(|tls| tls.cert_file.as_ref().zip(tls.key_file.as_ref())) {
        Some((cert_file, key_file)) => {
            let chain = CertificateDer::pem_file_iter(cert_file)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|err| ("cert_file", format!("{}: {err}", cert_file.display())))?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|err| ("key_file", format!("{}: {err}", key_file.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| ("key_file", err.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn(protocol);
    Ok(Arc::new(config))
}

/// Mozilla's roots, parsed once per process.
fn public_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            Arc::new(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        })
        .clone()
}

/// The name an endpoint's certificate is checked against: the configured
/// one, else its host (brackets of an IPv6 literal removed).
pub fn server_name(configured: Option<&str>, host: &str) -> Result<ServerName<'static>, String> {
    let name = configured.unwrap_or(host);
    let name = name
        .strip_prefix('[')
        .and_then(|v6| v6.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(name.to_owned()).map_err(|err| format!("`{name}`: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_names_the_key_and_the_path() {
        let tls = UpstreamTlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..UpstreamTlsConfig::default()
        };
        let (field, message) = client_config(Some(&tls), Protocol::Http1).unwrap_err();
        assert_eq!(field, "ca_file");
        assert!(message.contains("/nonexistent/ca.pem"), "{message}");
    }

    #[test]
    fn the_protocol_is_the_only_one_offered_by_alpn() {
        let h2 = client_config(None, Protocol::Http2).unwrap();
        assert_eq!(h2.alpn_protocols, vec![b"h2".to_vec()]);
        let h1 = client_config(None, Protocol::Http1).unwrap();
        assert_eq!(h1.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn server_names_are_dns_names_or_ip_addresses() {
        assert!(matches!(
            server_name(None, "127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name(None, "[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name(Some("user.internal"), "10.0.0.1").unwrap(),
            ServerName::DnsName(_)
        ));
    }
}
