//! A DNS server for tests, on a loopback UDP port: answers A, AAAA and SRV
//! questions from records the test sets and changes while it runs (what a
//! Kubernetes headless Service or compose's embedded DNS would answer). A
//! stand-in for a third party, not for any Portico service: the resolver
//! under test is real.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use tokio::{net::UdpSocket, task::JoinHandle};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;

/// One SRV answer: where a replica listens.
#[derive(Debug, Clone)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

#[derive(Debug, Default)]
struct Records {
    addresses: HashMap<String, Vec<IpAddr>>,
    services: HashMap<String, Vec<Srv>>,
    /// Names answered with SERVFAIL (a broken or unreachable DNS).
    failing: Vec<String>,
    queries: usize,
}

/// The running server; stops when dropped.
#[derive(Debug)]
pub struct DnsStub {
    pub addr: SocketAddr,
    records: Arc<Mutex<Records>>,
    task: JoinHandle<()>,
}

impl Drop for DnsStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsStub {
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind DNS stub");
        let addr = socket.local_addr().expect("DNS stub address");
        let records = Arc::new(Mutex::new(Records::default()));
        let shared = records.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some(answer) = answer(&buf[..len], &shared) {
                    let _ = socket.send_to(&answer, peer).await;
                }
            }
        });
        Self {
            addr,
            records,
            task,
        }
    }

    /// The A/AAAA answer for `name` from now on.
    pub fn set_addresses(&self, name: &str, addresses: &[IpAddr]) {
        let mut records = self.records.lock().expect("records");
        records.addresses.insert(key(name), addresses.to_vec());
        records.failing.retain(|failing| *failing != key(name));
    }

    /// The SRV answer for `name` from now on.
    pub fn set_srv(&self, name: &str, services: &[Srv]) {
        let mut records = self.records.lock().expect("records");
        records.services.insert(key(name), services.to_vec());
        records.failing.retain(|failing| *failing != key(name));
    }

    /// Every question about `name` gets SERVFAIL from now on.
    pub fn fail(&self, name: &str) {
        self.records
            .lock()
            .expect("records")
            .failing
            .push(key(name));
    }

    /// Questions answered so far.
    pub fn queries(&self) -> usize {
        self.records.lock().expect("records").queries
    }
}

/// Reads a name at `at` (no compression in questions); returns it and the
/// offset after it.
fn read_name(message: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*message.get(at)?);
        at += 1;
        if len == 0 {
            return Some((labels.join("."), at));
        }
        if len & 0xC0 != 0 {
            return None;
        }
        labels.push(String::from_utf8_lossy(message.get(at..at + len)?).to_string());
        at += len;
    }
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn answer(query: &[u8], records: &Mutex<Records>) -> Option<Vec<u8>> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let (name, after_name) = read_name(query, 12)?;
    let qtype = u16::from_be_bytes([*query.get(after_name)?, *query.get(after_name + 1)?]);
    let question = &query[12..after_name + 4];
    let mut records = records.lock().ok()?;
    records.queries += 1;
    let name_key = key(&name);
    let failing = records.failing.contains(&name_key);

    let mut answers: Vec<(u16, Vec<u8>)> = Vec::new();
    if !failing {
        match qtype {
            TYPE_A | TYPE_AAAA => {
                for ip in records.addresses.get(&name_key).into_iter().flatten() {
                    match (qtype, ip) {
                        (TYPE_A, IpAddr::V4(v4)) => answers.push((TYPE_A, v4.octets().to_vec())),
                        (TYPE_AAAA, IpAddr::V6(v6)) => {
                            answers.push((TYPE_AAAA, v6.octets().to_vec()));
                        }
                        _ => {}
                    }
                }
            }
            TYPE_SRV => {
                for srv in records.services.get(&name_key).into_iter().flatten() {
                    let mut data = Vec::new();
                    data.extend_from_slice(&srv.priority.to_be_bytes());
                    data.extend_from_slice(&srv.weight.to_be_bytes());
                    data.extend_from_slice(&srv.port.to_be_bytes());
                    write_name(&mut data, &srv.target);
                    answers.push((TYPE_SRV, data));
                }
            }
            _ => {}
        }
    }

    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[0..2]); // id
    // QR, the query's opcode and RD, RA; SERVFAIL (2) or NOERROR (0).
    let rd = query[2] & 0x01;
    out.push(0x80 | rd);
    out.push(0x80 | if failing { 2 } else { 0 });
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(question);
    for (rtype, data) in answers {
        out.extend_from_slice(&[0xC0, 0x0C]); // the question's name
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&1u32.to_be_bytes()); // TTL: 1 s
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some(out)
}
