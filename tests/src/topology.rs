//! The wiring of `deploy/topology.toml`, as the harness applies it: the same
//! file `scripts/dev.sh` renders and the deployment files are checked
//! against, so a new cross-service key is added there once.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

static TOPOLOGY: &str = include_str!("../../deploy/topology.toml");

#[derive(Debug, Deserialize)]
struct Topology {
    wiring: BTreeMap<String, BTreeMap<String, String>>,
}

/// Where the services answer in one run: one address per service (all its
/// replicas) and, where they have their own, each replica's address.
#[derive(Debug, Default)]
pub struct Addresses {
    pub service: HashMap<&'static str, String>,
    pub replicas: HashMap<&'static str, Vec<String>>,
}

impl Addresses {
    fn one(&self, name: &str) -> String {
        self.service
            .get(name)
            .cloned()
            .or_else(|| self.replicas.get(name).and_then(|all| all.first().cloned()))
            .unwrap_or_else(|| panic!("topology names `{name}`, which this run has no address for"))
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.replicas
            .get(name)
            .cloned()
            .unwrap_or_else(|| vec![self.one(name)])
    }
}

/// `service`'s wiring as `(KEY, value)` with KEY in env form without the
/// service prefix (`TOKENS__JWKS__URL`), the way [`crate::Process`] takes it.
pub fn wiring(service: &str, addresses: &Addresses) -> Vec<(String, String)> {
    let topology: Topology = toml::from_str(TOPOLOGY).expect("deploy/topology.toml parses");
    topology
        .wiring
        .get(service)
        .map(|keys| {
            keys.iter()
                .map(|(key, template)| {
                    (
                        key.to_uppercase().replace('.', "__"),
                        expand(template, addresses),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Fills `{name}` (one address) and `{name*}` (a JSON list of replicas).
fn expand(template: &str, addresses: &Addresses) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let placeholder = &rest[open + 1..open + close];
        match placeholder.strip_suffix('*') {
            Some(name) => {
                out.push_str(&serde_json::to_string(&addresses.all(name)).unwrap_or_default())
            }
            None => out.push_str(&addresses.one(placeholder)),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand_to_one_address_or_the_replica_list() {
        let mut addresses = Addresses::default();
        addresses.service.insert("auth", "http://a:1".to_owned());
        addresses.replicas.insert(
            "user",
            vec!["http://u1:2".to_owned(), "http://u2:2".to_owned()],
        );
        assert_eq!(expand("{auth}/jwks", &addresses), "http://a:1/jwks");
        assert_eq!(expand("{auth*}", &addresses), r#"["http://a:1"]"#);
        assert_eq!(
            expand("{user*}", &addresses),
            r#"["http://u1:2","http://u2:2"]"#
        );
        assert_eq!(expand("{user}", &addresses), "http://u1:2");
    }

    #[test]
    fn every_service_in_the_topology_gets_its_wiring() {
        let mut addresses = Addresses::default();
        addresses.service.insert("auth", "http://a:1".to_owned());
        addresses.service.insert("user", "http://u:2".to_owned());
        let gateway = wiring("gateway", &addresses);
        assert!(gateway.contains(&(
            "TOKENS__JWKS__URL".to_owned(),
            "http://a:1/.well-known/jwks.json".to_owned()
        )));
        assert!(wiring("auth", &addresses).contains(&(
            "USER_SERVICE__UPSTREAM__ENDPOINTS".to_owned(),
            r#"["http://u:2"]"#.to_owned()
        )));
    }
}
