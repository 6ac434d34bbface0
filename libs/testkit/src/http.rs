//! Assertions on HTTP answers every service's tests share, and the macro
//! that runs one storage-backed test on both backends.

use reqwest::{Response, StatusCode, header};
use serde_json::Value;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Generates, for each listed `async fn(Backend)`, one `#[tokio::test]` per
/// backend: `<module>::postgres::<name>` and `<module>::sqlite::<name>`.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::Backend::Postgres).await;
                }
            )+
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::Backend::Sqlite).await;
                }
            )+
        }
    };
}

/// Checks that `response` is an RFC 9457 problem with `status` whose
/// `request_id` is the response's `x-request-id`; returns the body.
pub async fn assert_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        PROBLEM_JSON,
        "content type of a {status} answer"
    );
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii request id")
        .to_owned();
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["request_id"], request_id.as_str());
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    body
}

/// Like [`assert_problem`] for 401, also checking `WWW-Authenticate: Bearer`.
pub async fn assert_unauthorized(response: Response) -> Value {
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert_problem(response, StatusCode::UNAUTHORIZED).await
}

/// Names of the fields listed in a validation problem's `errors`.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}
