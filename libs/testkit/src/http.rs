//! Assertions on HTTP answers every service's tests share, and the macro
//! that runs one storage-backed test on both backends.

use reqwest::{
    Response, StatusCode,
    header::{self, HeaderMap},
};
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

/// Checks that an answer is an RFC 9457 problem with status `expected`
/// whose `request_id` is the answer's `x-request-id`; returns the body.
/// The one problem assertion every test suite uses, on whatever client
/// produced the answer.
pub fn assert_problem_parts(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    expected: StatusCode,
) -> Value {
    assert_eq!(status, expected, "{}", String::from_utf8_lossy(body));
    assert_eq!(
        headers[header::CONTENT_TYPE],
        PROBLEM_JSON,
        "content type of a {status} answer"
    );
    let request_id = headers["x-request-id"]
        .to_str()
        .expect("ascii request id")
        .to_owned();
    let problem: Value = serde_json::from_slice(body).expect("problem body is JSON");
    assert_eq!(problem["status"], expected.as_u16(), "{problem}");
    assert_eq!(problem["request_id"], request_id.as_str(), "{problem}");
    for field in ["type", "title", "detail"] {
        assert!(problem[field].is_string(), "{field} missing: {problem}");
    }
    problem
}

/// [`assert_problem_parts`] for a reqwest response; `status` as a
/// `StatusCode` or a number.
pub async fn assert_problem<S>(response: Response, status: S) -> Value
where
    S: TryInto<StatusCode>,
    S::Error: std::fmt::Debug,
{
    expect_problem(response, status).await.1
}

/// Like [`assert_problem`], also returning the answer's headers.
pub async fn expect_problem<S>(response: Response, status: S) -> (HeaderMap, Value)
where
    S: TryInto<StatusCode>,
    S::Error: std::fmt::Debug,
{
    let expected = status.try_into().expect("a valid status code");
    let actual = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("problem body");
    let problem = assert_problem_parts(actual, &headers, &body, expected);
    (headers, problem)
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

/// A port on 127.0.0.1 that nothing listens on, for as long as the test
/// process runs: a socket is bound to it and never listens, so a connect
/// is refused and no other test's server can take the port (a port bound
/// and released at once was, now and then, and a "dead" endpoint
/// answered).
pub fn closed_port() -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .expect("bind a port to keep closed");
    let port = socket.local_addr().expect("addr").port();
    // Held until the process exits.
    std::mem::forget(socket);
    port
}
