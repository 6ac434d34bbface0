//! Problems for requests hyper cannot parse.
//!
//! hyper answers a request head it cannot parse (a broken request line, a
//! header without a colon, a head past its own buffer) by itself, before
//! any service sees the request: a bare `400` (or `414`, `431`) with an
//! empty body, then it closes the connection. Every other refusal is an
//! RFC 9457 problem with a request id, so the connection's stream, as hyper
//! sees it, replaces that answer on its way out with one.
//!
//! hyper's answer is recognised by its exact form: the status line, then
//! `connection: close`, `content-length: 0` and `date` and nothing else, in
//! one write. No answer a service makes has that form: the pipeline puts an
//! `x-request-id` on every response, so a head hyper writes for a service
//! always has one more header.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{PROBLEM_JSON, Problem};

/// A connection's stream that turns hyper's own answer to an unparseable
/// request into a problem; everything else passes through untouched.
#[derive(Debug)]
pub struct ProblemsForUnparseable<S> {
    inner: S,
    client: std::net::SocketAddr,
    /// The problem being written in place of hyper's answer, and how many
    /// of hyper's bytes it stands for (reported written once it is out).
    replacing: Option<Replacement>,
}

#[derive(Debug)]
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    stands_for: usize,
}

impl<S> ProblemsForUnparseable<S> {
    pub fn new(inner: S, client: std::net::SocketAddr) -> Self {
        Self {
            inner,
            client,
            replacing: None,
        }
    }
}

/// The status of hyper's own answer, if `written` is one.
fn hyper_refusal(written: &[u8]) -> Option<StatusCode> {
    // Cheap first: a body or an ordinary head rarely gets past this.
    let rest = written.strip_prefix(b"HTTP/1.1 4")?;
    let status = match rest.get(..2)? {
        b"00" => StatusCode::BAD_REQUEST,
        b"14" => StatusCode::URI_TOO_LONG,
        b"31" => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    let text = std::str::from_utf8(written).ok()?;
    let (status_line, headers) = text.split_once("\r\n")?;
    let date = headers
        .strip_prefix("connection: close\r\ncontent-length: 0\r\ndate: ")?
        .strip_suffix("\r\n\r\n")?;
    let reason = status.canonical_reason().unwrap_or_default();
    // An IMF-fixdate is 29 characters: "Fri, 04 Dec 2026 14:28:25 GMT".
    (status_line.strip_prefix("HTTP/1.1 ")?.get(4..) == Some(reason)
        && date.len() == 29
        && !date.contains('\r'))
    .then_some(status)
}

/// The problem, as a whole HTTP/1.1 response that closes the connection.
fn problem_response(status: StatusCode, client: std::net::SocketAddr) -> Vec<u8> {
    let request_id = uuid::Uuid::now_v7().to_string();
    let (kind, detail) = match status {
        StatusCode::URI_TOO_LONG => (
            "uri-too-long",
            "the request target is longer than the server reads",
        ),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            "headers-too-large",
            "the request's headers are larger than the server reads",
        ),
        _ => (
            "malformed-request",
            "the request is not valid HTTP/1.1 (request line or header fields)",
        ),
    };
    let mut problem = Problem::new(status, kind, detail);
    problem.request_id = Some(request_id.clone());
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    tracing::info!(
        %request_id,
        status = status.as_u16(),
        client_ip = %client.ip(),
        "a request that could not be parsed was refused",
    );
    metrics::counter!("http_requests_unparseable_total", "status" => status.as_str().to_owned())
        .increment(1);
    let mut response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\n\
         x-request-id: {request_id}\r\nx-content-type-options: nosniff\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or_default(),
        body.len(),
    )
    .into_bytes();
    response.extend_from_slice(&body);
    response
}

impl<S: AsyncWrite + Unpin> ProblemsForUnparseable<S> {
    /// Writes the replacement on; ready with the count of hyper's bytes
    /// once all of it is out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some(replacement) = self.replacing.as_mut() {
            let rest = &replacement.bytes[replacement.written..];
            if rest.is_empty() {
                let stands_for = replacement.stands_for;
                self.replacing = None;
                return Poll::Ready(Ok(stands_for));
            }
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => replacement.written += n,
                other => return other,
            }
        }
        Poll::Ready(Ok(0))
    }

    fn start_replacing(&mut self, status: StatusCode, stands_for: usize) {
        self.replacing = Some(Replacement {
            bytes: problem_response(status, self.client),
            written: 0,
            stands_for,
        });
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ProblemsForUnparseable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ProblemsForUnparseable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            match hyper_refusal(buf) {
                Some(status) => this.start_replacing(status, buf.len()),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        this.poll_replacement(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            // hyper's answer is a head alone: one non-empty slice.
            let mut filled = bufs.iter().filter(|slice| !slice.is_empty());
            let refusal = match (filled.next(), filled.next()) {
                (Some(only), None) => hyper_refusal(only).map(|status| (status, only.len())),
                _ => None,
            };
            match refusal {
                Some((status, stands_for)) => this.start_replacing(status, stands_for),
                None => return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            }
        }
        this.poll_replacement(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Fri, 04 Dec 2026 14:28:25 GMT";

    #[test]
    fn hyper_refusals_are_recognised_by_their_exact_form() {
        for (status, reason) in [
            (StatusCode::BAD_REQUEST, "400 Bad Request"),
            (StatusCode::URI_TOO_LONG, "414 URI Too Long"),
            (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "431 Request Header Fields Too Large",
            ),
        ] {
            let written = format!(
                "HTTP/1.1 {reason}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"
            );
            assert_eq!(hyper_refusal(written.as_bytes()), Some(status), "{written}");
        }
    }

    #[test]
    fn a_services_own_answers_and_bodies_pass_untouched() {
        for written in [
            // A service's empty 400: the pipeline adds a request id.
            format!(
                "HTTP/1.1 400 Bad Request\r\nx-request-id: r1\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"
            ),
            // Kept alive, so no `connection: close`.
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"),
            // More after the head: not a head alone.
            format!(
                "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\nmore"
            ),
            format!(
                "HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"
            ),
            "HTTP/1.1 4".to_owned(),
            "{\"json\": true}".to_owned(),
        ] {
            assert_eq!(hyper_refusal(written.as_bytes()), None, "{written}");
        }
    }

    #[tokio::test]
    async fn the_refusal_is_replaced_with_a_problem_and_other_writes_pass() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(64);
        let mut wrapped = ProblemsForUnparseable::new(server, ([127, 0, 0, 1], 9).into());
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut seen = String::new();
            client.read_to_string(&mut seen).await.unwrap();
            seen
        });
        wrapped.write_all(b"passed through\n").await.unwrap();
        let refusal = format!(
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"
        );
        // Through a 64-byte pipe: the problem goes out in several writes.
        wrapped.write_all(refusal.as_bytes()).await.unwrap();
        wrapped.shutdown().await.unwrap();
        drop(wrapped);

        let seen = reader.await.unwrap();
        let (before, answer) = seen.split_once('\n').unwrap();
        assert_eq!(before, "passed through");
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(answer.contains("content-type: application/problem+json\r\n"));
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 400);
        assert_eq!(problem["type"], "urn:portico:problem:malformed-request");
        let request_id = problem["request_id"].as_str().unwrap();
        assert!(
            head.contains(&format!("x-request-id: {request_id}")),
            "{head}"
        );
    }
}
