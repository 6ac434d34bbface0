//! `dns`: every A/AAAA record of a name is an endpoint on the configured
//! port (a Kubernetes headless Service, a compose service with replicas), or
//! with `srv` every SRV record is one (its target's addresses, its port).
//! Asked through hickory's resolver with its cache off, so each refresh sees
//! what the DNS says now.

use std::{future::Future, net::SocketAddr, pin::Pin, time::Duration};

use hickory_resolver::{
    Resolver, TokioResolver,
    config::{LookupIpStrategy, NameServerConfig, ResolverConfig},
    name_server::TokioConnectionProvider,
    proto::xfer::Protocol,
};

use super::Discovery;
use crate::config::DnsConfig;

/// How often a name is resolved again unless configured.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct DnsDiscovery {
    resolver: TokioResolver,
    name: String,
    port: Option<u16>,
    srv: bool,
    interval: Duration,
}

/// The config rules, as `(field, message)`.
pub fn check(config: &DnsConfig) -> Result<(), (&'static str, String)> {
    let name = config.name.trim_end_matches('.');
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(("name", format!("`{}` is not a DNS name", config.name)));
    }
    match (config.srv, config.port) {
        (false, None) => return Err(("port", "required unless `srv = true`".to_owned())),
        (false, Some(0)) => return Err(("port", "must be positive".to_owned())),
        (true, Some(_)) => {
            return Err((
                "port",
                "SRV records carry the port; leave it out".to_owned(),
            ));
        }
        _ => {}
    }
    if config.interval_ms == Some(0) {
        return Err(("interval_ms", "must be positive".to_owned()));
    }
    for server in &config.nameservers {
        parse_nameserver(server).map_err(|err| ("nameservers", err))?;
    }
    Ok(())
}

fn parse_nameserver(server: &str) -> Result<SocketAddr, String> {
    server
        .parse::<SocketAddr>()
        .or_else(|_| {
            server
                .parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("`{server}` is not an ip or ip:port"))
}

impl DnsDiscovery {
    pub fn new(config: &DnsConfig) -> Result<Self, String> {
        check(config).map_err(|(field, err)| format!("dns.{field}: {err}"))?;
        let mut builder = if config.nameservers.is_empty() {
            Resolver::builder_tokio().map_err(|err| format!("system DNS configuration: {err}"))?
        } else {
            let mut resolver_config = ResolverConfig::new();
            for server in &config.nameservers {
                let addr = parse_nameserver(server)?;
                resolver_config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                resolver_config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            }
            Resolver::builder_with_config(resolver_config, TokioConnectionProvider::default())
        };
        let options = builder.options_mut();
        // Each refresh must see the DNS as it is now.
        options.cache_size = 0;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.timeout = Duration::from_secs(2);
        options.attempts = 1;
        Ok(Self {
            resolver: builder.build(),
            name: config.name.clone(),
            port: config.port,
            srv: config.srv,
            interval: config
                .interval_ms
                .map_or(DEFAULT_INTERVAL, Duration::from_millis),
        })
    }

    async fn addresses(&self, name: &str, port: u16) -> Result<Vec<String>, String> {
        let found = self
            .resolver
            .lookup_ip(name)
            .await
            .map_err(|err| format!("{name}: {err}"))?;
        Ok(found
            .iter()
            .map(|ip| format!("http://{}", SocketAddr::new(ip, port)))
            .collect())
    }

    async fn lookup(&self) -> Result<Vec<String>, String> {
        let mut urls = if self.srv {
            let records = self
                .resolver
                .srv_lookup(self.name.as_str())
                .await
                .map_err(|err| format!("{}: {err}", self.name))?;
            let mut urls = Vec::new();
            for record in records.iter() {
                let target = record.target().to_utf8();
                urls.extend(self.addresses(&target, record.port()).await?);
            }
            urls
        } else {
            let port = self.port.unwrap_or(80);
            self.addresses(&self.name, port).await?
        };
        // One order whatever the DNS server's rotation: an unchanged set is
        // no change.
        urls.sort();
        urls.dedup();
        Ok(urls)
    }
}

impl Discovery for DnsDiscovery {
    fn discover(&self) -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + '_>> {
        Box::pin(self.lookup())
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn describe(&self) -> String {
        match (self.srv, self.port) {
            (true, _) => format!("dns srv {}", self.name),
            (false, port) => format!("dns {}:{}", self.name, port.unwrap_or(80)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, port: Option<u16>, srv: bool) -> DnsConfig {
        DnsConfig {
            name: name.to_owned(),
            port,
            srv,
            interval_ms: None,
            nameservers: vec![],
        }
    }

    #[test]
    fn bad_names_ports_and_nameservers_are_refused_naming_the_field() {
        assert_eq!(check(&config("user", Some(8081), false)), Ok(()));
        assert_eq!(check(&config("_http._tcp.user.local", None, true)), Ok(()));
        assert_eq!(
            check(&config("bad name", Some(1), false)).unwrap_err().0,
            "name"
        );
        assert_eq!(
            check(&config("a..b", Some(1), false)).unwrap_err().0,
            "name"
        );
        assert_eq!(check(&config("user", None, false)).unwrap_err().0, "port");
        assert_eq!(check(&config("user", Some(1), true)).unwrap_err().0, "port");
        let mut bad_server = config("user", Some(1), false);
        bad_server.nameservers = vec!["dns.example".to_owned()];
        assert_eq!(check(&bad_server).unwrap_err().0, "nameservers");
        let mut zero = config("user", Some(1), false);
        zero.interval_ms = Some(0);
        assert_eq!(check(&zero).unwrap_err().0, "interval_ms");
    }
}
