//! Where a request comes from, as kept with the session it opens.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, header, request::Parts},
};

use crate::accounts::ClientInfo;

/// Longest user agent kept, in characters.
const MAX_USER_AGENT_CHARS: usize = 256;

/// The calling client: its address — from `x-forwarded-for`, which the
/// gateway sets (it drops what clients send; auth is reachable only
/// through it), else the peer — and its user agent, shortened.
#[derive(Debug, Clone)]
pub struct Client(pub ClientInfo);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Ok(Self(client_info(&parts.headers, peer)))
    }
}

fn client_info(headers: &HeaderMap, peer: Option<IpAddr>) -> ClientInfo {
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .and_then(|first| first.trim().parse::<IpAddr>().ok());
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .map(|agent| agent.chars().take(MAX_USER_AGENT_CHARS).collect::<String>())
        .filter(|agent| !agent.is_empty());
    ClientInfo {
        ip: forwarded.or(peer).map(|ip| ip.to_string()),
        user_agent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_gateways_forwarded_address_wins_over_the_peer() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        let peer = Some(IpAddr::from([10, 0, 0, 2]));
        assert_eq!(
            client_info(&headers, peer).ip.as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            client_info(&HeaderMap::new(), peer).ip.as_deref(),
            Some("10.0.0.2")
        );
    }

    #[test]
    fn a_malformed_forwarded_address_is_ignored_and_long_agents_are_cut() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("<script>"));
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_str(&"a".repeat(1000)).unwrap(),
        );
        let info = client_info(&headers, None);
        assert_eq!(info.ip, None);
        assert_eq!(info.user_agent.unwrap().len(), MAX_USER_AGENT_CHARS);
    }
}
