//! Where a request comes from, as kept with the session it opens and as
//! the sign-in throttle counts it.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, header, request::Parts},
};

use portico_common::http::pipeline;

use super::AppState;
use crate::accounts::ClientInfo;

/// Longest user agent kept, in characters.
const MAX_USER_AGENT_CHARS: usize = 256;

/// The calling client: its address — from `x-forwarded-for` when the peer
/// is a trusted proxy (the gateway replaces what clients send), else the
/// peer itself — and its user agent, shortened.
#[derive(Debug, Clone)]
pub struct Client(pub ClientInfo);

impl FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Ok(Self(client_info(
            &parts.headers,
            peer,
            &state.trusted_proxies,
        )))
    }
}

pub use portico_common::net::Cidr;

fn client_info(headers: &HeaderMap, peer: Option<IpAddr>, trusted: &[Cidr]) -> ClientInfo {
    let address = portico_common::net::client_address(headers, peer, trusted);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .map(|agent| agent.chars().take(MAX_USER_AGENT_CHARS).collect::<String>())
        .filter(|agent| !agent.is_empty());
    ClientInfo {
        ip: address.map(|ip| ip.to_string()),
        user_agent,
        request_id: pipeline::current_request_id(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn cidr(text: &str) -> Cidr {
        Cidr::try_from(text.to_owned()).unwrap()
    }

    #[test]
    fn a_trusted_proxys_forwarded_address_wins_over_the_peer() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        let peer = Some(IpAddr::from([10, 0, 0, 2]));
        let trusted = [cidr("10.0.0.0/8")];
        assert_eq!(
            client_info(&headers, peer, &trusted).ip.as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            client_info(&HeaderMap::new(), peer, &trusted).ip.as_deref(),
            Some("10.0.0.2")
        );
    }

    #[test]
    fn an_untrusted_peer_cannot_claim_another_address() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        let peer = Some(IpAddr::from([198, 51, 100, 9]));
        let trusted = [cidr("10.0.0.0/8"), cidr("::1")];
        assert_eq!(
            client_info(&headers, peer, &trusted).ip.as_deref(),
            Some("198.51.100.9")
        );
    }

    #[test]
    fn networks_contain_what_they_should() {
        assert!(cidr("172.16.0.0/12").contains("172.31.255.1".parse().unwrap()));
        assert!(!cidr("172.16.0.0/12").contains("172.32.0.1".parse().unwrap()));
        assert!(cidr("fc00::/7").contains("fd12::1".parse().unwrap()));
        assert!(!cidr("fc00::/7").contains("fe80::1".parse().unwrap()));
        assert!(cidr("127.0.0.0/8").contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(cidr("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::try_from("10.0.0.0/33".to_owned()).is_err());
        assert!(Cidr::try_from("nonsense".to_owned()).is_err());
    }

    #[test]
    fn a_malformed_forwarded_address_is_ignored_and_long_agents_are_cut() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("<script>"));
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_str(&"a".repeat(1000)).unwrap(),
        );
        let info = client_info(&headers, None, &[]);
        assert_eq!(info.ip, None);
        assert_eq!(info.user_agent.unwrap().len(), MAX_USER_AGENT_CHARS);
    }
}
