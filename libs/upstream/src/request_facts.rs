//! What policies may key on, gathered once per request after the edge
//! policies: the authenticated subject, the client's address, the headers
//! and cookies. Hash-based choices (consistent hashing, traffic splitting)
//! read their key from here.

use std::net::IpAddr;

use http::{HeaderMap, header};

#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// The verified token's subject, on routes that verify one.
    pub subject: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub headers: &'a HeaderMap,
}

impl RequestFacts<'_> {
    /// The value of cookie `name`, if the client sent it.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// A stable 64-bit hash (FNV-1a, then a splitmix64 finish for spread): the
/// same on every gateway replica and across releases, unlike std's hasher,
/// so stickiness survives restarts and holds across replicas.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}
