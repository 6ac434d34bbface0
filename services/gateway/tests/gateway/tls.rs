//! TLS on the gateway's listener: HTTP/2 or HTTP/1.1 as ALPN agrees, the
//! certificate chosen by SNI, and a renewed certificate taken up under load
//! without one failed request.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::{StatusCode, Version};
use portico_common::http::tls::{CertificateFiles, TlsConfig};
use portico_testkit::{
    eventually,
    tls::{Identity, TestPki},
};

use crate::support::*;

fn tls_config(identities: &[&Identity]) -> TlsConfig {
    TlsConfig {
        enabled: true,
        certificates: identities
            .iter()
            .map(|identity| CertificateFiles {
                cert_file: identity.cert_file.clone(),
                key_file: identity.key_file.clone(),
            })
            .collect(),
        reload_interval_ms: 100,
    }
}

/// A client trusting only the CAs in `ca_files`, sending every request
/// for `names` to `addr`.
fn client_trusting(ca_files: &[&Path], names: &[&str], addr: SocketAddr) -> reqwest::ClientBuilder {
    let roots = ca_files
        .iter()
        .map(|ca_file| reqwest::Certificate::from_pem(&std::fs::read(ca_file).unwrap()).unwrap());
    let mut builder = reqwest::Client::builder()
        .tls_certs_only(roots)
        .timeout(Duration::from_secs(5));
    for name in names {
        builder = builder.resolve(name, addr);
    }
    builder
}

#[tokio::test]
async fn clients_are_served_over_tls_by_http2_or_http1_as_alpn_agrees() {
    let pki = TestPki::new("edge CA");
    let identity = pki.localhost("edge");
    let (gateway, user) = gateway_with_user(|config| config.tls = tls_config(&[&identity])).await;
    let url = format!("https://localhost:{}/v1/users/me", gateway.api.port());

    let h2 = client_trusting(&[&pki.ca_file], &[], gateway.api)
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    let h1 = client_trusting(&[&pki.ca_file], &[], gateway.api)
        .http1_only()
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();

    assert_eq!(h2.status(), StatusCode::OK);
    assert_eq!(h2.version(), Version::HTTP_2);
    assert_eq!(h1.status(), StatusCode::OK);
    assert_eq!(h1.version(), Version::HTTP_11);
    assert_eq!(user.last().headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn the_certificate_is_chosen_by_the_name_the_client_asks_for() {
    let pki = TestPki::new("edge CA");
    let first = pki.server("first", &["api.first.test"]);
    let second = pki.server("second", &["*.second.test"]);
    let (gateway, _user) =
        gateway_with_user(|config| config.tls = tls_config(&[&first, &second])).await;
    let names = [
        "api.first.test",
        "api.second.test",
        "deep.api.second.test",
        "other.test",
    ];
    let client = client_trusting(&[&pki.ca_file], &names, gateway.api)
        .build()
        .unwrap();
    let get = |name: &str| {
        client
            .get(format!("https://{name}:{}/v1/users/me", gateway.api.port()))
            .send()
    };

    // The client checks that the certificate is for the name it asked for.
    assert_eq!(
        get("api.first.test").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        get("api.second.test").await.unwrap().status(),
        StatusCode::OK
    );
    // Neither names these: they get the first (default) one, which fails
    // the client's check.
    assert!(
        get("deep.api.second.test").await.is_err(),
        "a wildcard covers one label"
    );
    assert!(get("other.test").await.is_err());
}

#[tokio::test]
async fn a_renewed_certificate_is_taken_up_under_load_without_a_failed_request() {
    let old_ca = TestPki::new("old CA");
    let new_ca = TestPki::new("new CA");
    // The files the gateway reads, as a secret mount would hold them.
    let served = tempfile::tempdir().unwrap();
    let live = Identity {
        cert_file: served.path().join("tls.crt"),
        key_file: served.path().join("tls.key"),
    };
    let install = |identity: &Identity| {
        for (from, to) in [
            (&identity.cert_file, &live.cert_file),
            (&identity.key_file, &live.key_file),
        ] {
            // Written aside and renamed: a reader never sees half a file.
            let staged = to.with_extension("new");
            std::fs::copy(from, &staged).unwrap();
            std::fs::rename(&staged, to).unwrap();
        }
    };
    install(&old_ca.localhost("old"));
    let (gateway, _user) = gateway_with_user(|config| config.tls = tls_config(&[&live])).await;
    let url = format!("https://localhost:{}/v1/users/me", gateway.api.port());

    // Load: clients trusting both CAs, half on keep-alive connections,
    // half making a full handshake for every request.
    let stop = Arc::new(AtomicBool::new(false));
    let (served_ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for worker in 0..6 {
        let mut builder = client_trusting(&[&old_ca.ca_file, &new_ca.ca_file], &[], gateway.api);
        if worker % 2 == 1 {
            builder = builder.pool_max_idle_per_host(0);
        }
        let client = builder.build().unwrap();
        let (stop, served_ok, failed, url) =
            (stop.clone(), served_ok.clone(), failed.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match client.get(&url).send().await {
                    Ok(response) if response.status() == StatusCode::OK => {
                        served_ok.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    eventually(Duration::from_secs(5), "load under way", || {
        let going = served_ok.load(Ordering::SeqCst) >= 50;
        async move { going.then_some(()) }
    })
    .await;

    install(&new_ca.localhost("new"));
    let only_new = client_trusting(&[&new_ca.ca_file], &[], gateway.api)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the new certificate served",
        || {
            let request = only_new.get(&url).send();
            async move { request.await.ok().filter(|r| r.status() == StatusCode::OK) }
        },
    )
    .await;
    let at_reload = served_ok.load(Ordering::SeqCst);
    eventually(Duration::from_secs(5), "load after the reload", || {
        let going = served_ok.load(Ordering::SeqCst) >= at_reload + 50;
        async move { going.then_some(()) }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }

    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during the reload"
    );
    let only_old = client_trusting(&[&old_ca.ca_file], &[], gateway.api)
        .build()
        .unwrap();
    assert!(
        only_old.get(&url).send().await.is_err(),
        "the old certificate is still served"
    );
}
