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

/// An address as text, on the stack: an IPv4 address written digit by
/// digit (the request path writes the client's address into a header and
/// the access line, where `Display` cost over a microsecond), an IPv6 one
/// through `Display`.
#[derive(Clone, Copy)]
pub struct IpText {
    bytes: [u8; IpText::CAPACITY],
    len: u8,
}

impl IpText {
    /// Room for any address's text: `INET6_ADDRSTRLEN` less its NUL (45;
    /// `Display` writes at most 39, eight full groups).
    const CAPACITY: usize = 45;

    pub fn new(ip: IpAddr) -> Self {
        let mut text = Self {
            bytes: [0; Self::CAPACITY],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                use std::fmt::Write as _;
                let _ = write!(text, "{v6}");
            }
        }
        text
    }

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.bytes.get_mut(usize::from(self.len)) {
            *slot = byte;
            self.len += 1;
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever pushed.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if usize::from(self.len) + s.len() > Self::CAPACITY {
            return Err(std::fmt::Error);
        }
        s.bytes().for_each(|byte| self.push(byte));
        Ok(())
    }
}

impl std::ops::Deref for IpText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for IpText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    fn addresses_as_text_are_what_display_writes() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "192.168.1.20",
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
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
