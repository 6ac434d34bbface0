//! gRPC through the gateway with a real gRPC client and server (tonic):
//! unary, server-streaming and bidirectional calls with their statuses in
//! trailers, and the gateway's own refusals as gRPC statuses.

use std::{convert::Infallible, pin::Pin, time::Duration};

use futures::{Stream, StreamExt};
use http::uri::PathAndQuery;
use tonic::{
    Code, Request, Status, Streaming,
    body::Body as GrpcBody,
    server::{Grpc, NamedService, ServerStreamingService, StreamingService, UnaryService},
};
use tonic_prost::ProstCodec;

use crate::support::*;

#[derive(Clone, PartialEq, prost::Message)]
struct Note {
    #[prost(string, tag = "1")]
    text: String,
    /// Count: how many notes to answer with; above 100, fail after 100.
    #[prost(uint32, tag = "2")]
    count: u32,
}

fn note(text: &str, count: u32) -> Note {
    Note {
        text: text.to_owned(),
        count,
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

/// `test.Notes`: `Echo` (unary; text `fail` fails with NOT_FOUND),
/// `Count` (server streaming: `count` notes; above 100, fails after 3),
/// `Chat` (bidirectional: each note echoed).
#[derive(Clone)]
struct Notes;

impl NamedService for Notes {
    const NAME: &'static str = "test.Notes";
}

struct Echo;
impl UnaryService<Note> for Echo {
    type Response = Note;
    type Future = BoxFuture<Result<tonic::Response<Note>, Status>>;
    fn call(&mut self, request: Request<Note>) -> Self::Future {
        Box::pin(async move {
            let note = request.into_inner();
            if note.text == "fail" {
                return Err(Status::not_found("no such note"));
            }
            Ok(tonic::Response::new(note))
        })
    }
}

struct Count;
impl ServerStreamingService<Note> for Count {
    type Response = Note;
    type ResponseStream = BoxStream<Note>;
    type Future = BoxFuture<Result<tonic::Response<BoxStream<Note>>, Status>>;
    fn call(&mut self, request: Request<Note>) -> Self::Future {
        Box::pin(async move {
            let asked = request.into_inner().count;
            let (count, fail) = if asked > 100 {
                (3, true)
            } else {
                (asked, false)
            };
            let notes = futures::stream::iter(0..count).map(|i| Ok(note(&format!("note {i}"), i)));
            let end =
                futures::stream::iter(fail.then(|| Err(Status::aborted("stopped after three"))));
            Ok(tonic::Response::new(
                Box::pin(notes.chain(end)) as BoxStream<Note>
            ))
        })
    }
}

struct Chat;
impl StreamingService<Note> for Chat {
    type Response = Note;
    type ResponseStream = BoxStream<Note>;
    type Future = BoxFuture<Result<tonic::Response<BoxStream<Note>>, Status>>;
    fn call(&mut self, request: Request<Streaming<Note>>) -> Self::Future {
        Box::pin(async move {
            let incoming = request.into_inner();
            Ok(tonic::Response::new(Box::pin(incoming) as BoxStream<Note>))
        })
    }
}

impl tower::Service<http::Request<GrpcBody>> for Notes {
    type Response = http::Response<GrpcBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<GrpcBody>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<Note, Note>::default());
            Ok(match request.uri().path() {
                "/test.Notes/Echo" => grpc.unary(Echo, request).await,
                "/test.Notes/Count" => grpc.server_streaming(Count, request).await,
                "/test.Notes/Chat" => grpc.streaming(Chat, request).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// The gRPC server on a free port: its `http://` URL.
async fn notes_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Notes)
            .serve_with_incoming(incoming),
    );
    url
}

/// A gateway routing `/test.Notes` to `endpoint` over HTTP/2, `auth` as
/// the route's policy.
async fn gateway_to(endpoint: &str, auth: &str) -> Gateway {
    let mut spec = upstream(&[endpoint]);
    spec.protocol = Some(portico_upstream::config::Protocol::Http2);
    let mut notes = route("/test.Notes", "notes");
    notes.auth = Some(auth.to_owned());
    Gateway::start(|config| {
        config.upstreams.insert("notes".into(), spec);
        config.routes = vec![notes];
    })
    .await
}

/// A gRPC client of the gateway (h2c, prior knowledge).
async fn client(gateway: &Gateway) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.api))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

fn codec() -> ProstCodec<Note, Note> {
    ProstCodec::default()
}

async fn echo(
    client: &mut tonic::client::Grpc<tonic::transport::Channel>,
    request: Request<Note>,
) -> Result<Note, Status> {
    client.ready().await.unwrap();
    client
        .unary(
            request,
            PathAndQuery::from_static("/test.Notes/Echo"),
            codec(),
        )
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_unary_call_and_its_error_status_pass_through() {
    let gateway = gateway_to(&notes_server().await, "public").await;
    let mut client = client(&gateway).await;

    let answer = echo(&mut client, Request::new(note("hello", 1)))
        .await
        .unwrap();
    let failed = echo(&mut client, Request::new(note("fail", 1)))
        .await
        .unwrap_err();

    assert_eq!(answer, note("hello", 1));
    assert_eq!(failed.code(), Code::NotFound);
    assert_eq!(failed.message(), "no such note");
}

#[tokio::test]
async fn a_server_stream_delivers_every_message_then_the_status_in_trailers() {
    let gateway = gateway_to(&notes_server().await, "public").await;
    let mut client = client(&gateway).await;
    let path = PathAndQuery::from_static("/test.Notes/Count");

    client.ready().await.unwrap();
    let mut stream = client
        .server_streaming(Request::new(note("", 5)), path.clone(), codec())
        .await
        .unwrap()
        .into_inner();
    let mut received = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        received.push(item.count);
    }
    assert_eq!(received, [0, 1, 2, 3, 4]);
    // The status comes after the data, in trailers.
    let trailers = stream.trailers().await.unwrap().unwrap();
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");

    client.ready().await.unwrap();
    let mut failing = client
        .server_streaming(Request::new(note("", 500)), path, codec())
        .await
        .unwrap()
        .into_inner();
    let mut before_failure = 0;
    let status = loop {
        match failing.message().await {
            Ok(Some(_)) => before_failure += 1,
            Ok(None) => panic!("the stream ended without its error status"),
            Err(status) => break status,
        }
    };
    assert_eq!(before_failure, 3);
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "stopped after three");
}

#[tokio::test]
async fn a_bidirectional_stream_echoes_each_message() {
    let gateway = gateway_to(&notes_server().await, "public").await;
    let mut client = client(&gateway).await;
    let (sender, outgoing) = tokio::sync::mpsc::channel::<Note>(4);
    let outgoing = futures::stream::unfold(outgoing, |mut receiver| async move {
        receiver.recv().await.map(|note| (note, receiver))
    });

    client.ready().await.unwrap();
    let mut incoming = client
        .streaming(
            Request::new(outgoing),
            PathAndQuery::from_static("/test.Notes/Chat"),
            codec(),
        )
        .await
        .unwrap()
        .into_inner();
    // One at a time: each answer arrives before the next note is sent.
    for i in 0..3 {
        sender.send(note(&format!("line {i}"), i)).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), incoming.message())
            .await
            .expect("no echo within 5 s")
            .unwrap()
            .unwrap();
        assert_eq!(echoed, note(&format!("line {i}"), i));
    }
    drop(sender);
    assert!(incoming.message().await.unwrap().is_none());
}

#[tokio::test]
async fn the_gateways_refusals_are_grpc_statuses_for_grpc_clients() {
    let protected = gateway_to(&notes_server().await, "bearer").await;
    let mut client_of_protected = client(&protected).await;
    let unreachable = gateway_to(&dead_endpoint(), "public").await;
    let mut client_of_unreachable = client(&unreachable).await;

    let no_token = echo(&mut client_of_protected, Request::new(note("x", 1)))
        .await
        .unwrap_err();
    let mut with_token = Request::new(note("x", 1));
    with_token.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", protected.token()).parse().unwrap(),
    );
    let allowed = echo(&mut client_of_protected, with_token).await;
    let down = echo(&mut client_of_unreachable, Request::new(note("x", 1)))
        .await
        .unwrap_err();
    client_of_protected.ready().await.unwrap();
    let unrouted = client_of_protected
        .unary::<Note, Note, _>(
            Request::new(note("x", 1)),
            PathAndQuery::from_static("/elsewhere.Service/Call"),
            codec(),
        )
        .await
        .unwrap_err();

    assert_eq!(no_token.code(), Code::Unauthenticated, "{no_token:?}");
    assert_eq!(allowed.unwrap(), note("x", 1));
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    assert_eq!(unrouted.code(), Code::Unimplemented, "{unrouted:?}");
}
