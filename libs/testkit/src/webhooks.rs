//! A webhook receiver for tests: a customer's endpoint as a stand-in (a
//! third party). It checks each delivery's Standard Webhooks signature and
//! timestamp with its own HMAC (not the services' code), records the
//! verified events, and answers the statuses it is told (then 204).
//! Deliveries it cannot verify are counted and answered 400.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use aws_lc_rs::hmac;
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use base64::Engine as _;
use serde_json::Value;

/// A signing secret every test shares (`whsec_` and 24 bytes of base64).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How far a delivery's timestamp may be from now.
const TOLERANCE_SECS: i64 = 300;

#[derive(Clone)]
pub struct WebhookEndpoint {
    key: Arc<hmac::Key>,
    received: Arc<Mutex<Vec<Value>>>,
    answers: Arc<Mutex<VecDeque<StatusCode>>>,
    unverified: Arc<Mutex<Vec<String>>>,
}

impl Default for WebhookEndpoint {
    fn default() -> Self {
        Self::new(SECRET)
    }
}

impl WebhookEndpoint {
    /// An endpoint that believes deliveries signed with `secret` (`whsec_…`).
    pub fn new(secret: &str) -> Self {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
            .expect("base64 after whsec_");
        Self {
            key: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &key)),
            received: Arc::default(),
            answers: Arc::default(),
            unverified: Arc::default(),
        }
    }

    /// Serves on a free port of 127.0.0.1; the URL to deliver to.
    pub async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/hooks", post(deliver))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    /// The verified events it accepted, in arrival order.
    pub fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// Why each delivery it could not verify was refused.
    pub fn unverified(&self) -> Vec<String> {
        self.unverified.lock().unwrap().clone()
    }

    /// Answers the next deliveries with these statuses, in order.
    pub fn answer_next(&self, statuses: &[StatusCode]) {
        self.answers.lock().unwrap().extend(statuses);
    }

    /// The accepted events once there are at least `count` (10 s at most).
    pub async fn received_at_least(&self, count: usize) -> Vec<Value> {
        crate::eventually(Duration::from_secs(10), "the deliveries", || {
            let received = self.received();
            async move { (received.len() >= count).then_some(received) }
        })
        .await
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Value, String> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| format!("no {name}"))
        };
        let id = header("webhook-id")?;
        let timestamp = header("webhook-timestamp")?;
        let sent_at: i64 = timestamp.parse().map_err(|_| "timestamp".to_owned())?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if (now - sent_at).abs() > TOLERANCE_SECS {
            return Err(format!("timestamp {sent_at} is {} s off", now - sent_at));
        }
        let mut signed = format!("{id}.{timestamp}.").into_bytes();
        signed.extend_from_slice(body);
        let expected = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD
                .encode(hmac::sign(&self.key, &signed).as_ref())
        );
        if !header("webhook-signature")?
            .split(' ')
            .any(|candidate| candidate == expected)
        {
            return Err("no signature matches".to_owned());
        }
        let event: Value =
            serde_json::from_slice(body).map_err(|err| format!("body not JSON: {err}"))?;
        if event["id"] != id {
            return Err("webhook-id is not the event's id".to_owned());
        }
        Ok(event)
    }
}

async fn deliver(
    State(endpoint): State<WebhookEndpoint>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let event = match endpoint.verify(&headers, &body) {
        Ok(event) => event,
        Err(why) => {
            endpoint.unverified.lock().unwrap().push(why);
            return StatusCode::BAD_REQUEST;
        }
    };
    let answer = endpoint
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(StatusCode::NO_CONTENT);
    if answer.is_success() {
        endpoint.received.lock().unwrap().push(event);
    }
    answer
}

/// Panics unless `event` is what `document` (a service's OpenAPI document)
/// says its type's webhook carries.
pub fn assert_documented(document: &Value, event: &Value) {
    let event_type = event["type"].as_str().expect("an event type");
    let schema = document
        .pointer(&format!(
            "/webhooks/{}/post/requestBody/content/application~1json/schema",
            event_type.replace('~', "~0").replace('/', "~1")
        ))
        .unwrap_or_else(|| panic!("the document has no webhook `{event_type}`"));
    crate::schema::assert_conforms(document, schema, event);
}

/// [`assert_documented`] for each of `events`, against the document the
/// service serves at `openapi_url`.
pub async fn assert_each_documented(openapi_url: &str, events: &[Value]) {
    let document: Value = reqwest::get(openapi_url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for event in events {
        assert_documented(&document, event);
    }
}
