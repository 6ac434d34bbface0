//! A TCP relay a test can cut: between a service and a server it depends
//! on (PostgreSQL), it forwards bytes until [`TcpRelay::cut`] drops every
//! connection and refuses new ones — the server as the service sees it
//! when it stops — and forwards again after [`TcpRelay::restore`], without
//! touching the shared server other tests use.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// A running relay to one target.
pub struct TcpRelay {
    /// Where the service connects instead of the target.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped by every cut: open connections end when it changes.
    generation: watch::Sender<u64>,
}

impl TcpRelay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let (accept_cut, accept_generation) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if accept_cut.load(Ordering::SeqCst) {
                    // Refused as a stopped server would: closed at once.
                    drop(client);
                    continue;
                }
                let mut ended = accept_generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = ended.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            cut,
            generation,
        }
    }

    /// A relay to the host and port of `url` (a database URL).
    pub async fn in_front_of(url: &str) -> Self {
        let parsed = url::Url::parse(url).expect("a URL");
        let host = parsed.host_str().expect("a host");
        let port = parsed.port().expect("a port");
        let target = tokio::net::lookup_host((host, port))
            .await
            .expect("resolve the target")
            .next()
            .expect("an address");
        Self::start(target).await
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// `url` (a database URL) with its host and port replaced by the
    /// relay's.
    pub fn url_through(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).expect("a URL");
        parsed.set_host(Some("127.0.0.1")).expect("host");
        parsed.set_port(Some(self.addr.port())).expect("port");
        parsed.to_string()
    }
}
