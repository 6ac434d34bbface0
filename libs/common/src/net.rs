//! Networks and client addresses: which peers are trusted proxies, and the
//! address of the client behind them.

use std::net::IpAddr;

use http::HeaderMap;

/// A network in CIDR notation (`10.0.0.0/8`, `fc00::/7`); a bare address
/// is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        let invalid = || format!("`{text}` is not an address or network (CIDR)");
        let (address, prefix) = text
            .split_once('/')
            .map_or((text.as_str(), None), |(a, p)| (a, Some(p)));
        let network: IpAddr = address.parse().map_err(|_| invalid())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(|_| invalid())?,
            None => max,
        };
        if prefix > max {
            return Err(invalid());
        }
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // IPv4 clients may arrive as IPv4-mapped IPv6 addresses.
        let ip = unmapped(ip);
        match (self.network, ip) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: the peer, unless the peer is a trusted proxy; then
/// the nearest address in `x-forwarded-for` (read from the right) that is
/// not itself a trusted proxy. Addresses a client wrote further left are
/// never believed: only what trusted proxies appended counts.
pub fn client_address(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer.map(unmapped)?;
    if !is_trusted(peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok().map(unmapped))
        .collect();
    let mut client = peer;
    for hop in forwarded.iter().rev() {
        client = *hop;
        if !is_trusted(*hop) {
            break;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn cidr(text: &str) -> Cidr {
        Cidr::try_from(text.to_owned()).unwrap()
    }

    fn forwarded(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn networks_contain_their_addresses() {
        assert!(cidr("10.0.0.0/8").contains("10.200.1.1".parse().unwrap()));
        assert!(!cidr("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(cidr("192.168.1.7").contains("::ffff:192.168.1.7".parse().unwrap()));
        assert!(cidr("fc00::/7").contains("fd12::1".parse().unwrap()));
        assert!(Cidr::try_from("10.0.0.0/33".to_owned()).is_err());
        assert!(Cidr::try_from("gateway".to_owned()).is_err());
    }

    #[test]
    fn only_what_trusted_proxies_appended_is_believed() {
        let trusted = [cidr("10.0.0.0/8")];
        let peer = Some("10.0.0.2".parse().unwrap());
        // The client claimed 1.1.1.1; the proxy appended what it saw.
        let headers = forwarded("1.1.1.1, 203.0.113.7");
        assert_eq!(
            client_address(&headers, peer, &trusted),
            "203.0.113.7".parse().ok()
        );
        // Two trusted hops: the first untrusted one from the right.
        let headers = forwarded("203.0.113.7, 10.0.0.9");
        assert_eq!(
            client_address(&headers, peer, &trusted),
            "203.0.113.7".parse().ok()
        );
        // An untrusted peer's header counts for nothing.
        let stranger = Some("198.51.100.4".parse().unwrap());
        assert_eq!(client_address(&headers, stranger, &trusted), stranger);
        assert_eq!(client_address(&HeaderMap::new(), peer, &trusted), peer);
    }
}
