//! Helpers around tokio-tungstenite, the third-party client the tests hold the server to: connect
//! with a bound, read echoed bytes back across however the server re-frames them, and a one-shot
//! echo used to prove a server still serves after a hostile client.
//!
//! Invariant: a tunnel is a byte stream, so readers accumulate Binary messages until they have the
//! expected byte count and fail on anything else (Text, Close, EOF); Ping/Pong are skipped. Every
//! read is bounded by a deadline.

use std::time::Duration;

use futures_util::{SinkExt, Stream, StreamExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderName;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::STEP;

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects (handshake included) within [`STEP`]; panics with the reason on failure.
pub async fn connect(url: &str) -> Client {
    connect_with(url, &[]).await.0
}

/// Connects with extra request headers; returns the client and the 101 response.
pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> (Client, Response) {
    match try_connect(url, headers).await {
        Ok(pair) => pair,
        Err(e) => panic!("websocket connect to {url} failed: {e}"),
    }
}

/// Like [`connect_with`] but hands back the error (e.g. `WsError::Http` for a refusal).
pub async fn try_connect(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, Response), WsError> {
    let mut req = url.into_client_request()?;
    for (name, value) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            value.parse().expect("header value is visible ASCII"),
        );
    }
    match timeout(STEP, tokio_tungstenite::connect_async(req)).await {
        Ok(r) => r,
        Err(_) => panic!("websocket connect to {url} timed out after {STEP:?}"),
    }
}

/// The HTTP status of a refused upgrade; panics if the upgrade succeeded or failed otherwise.
pub async fn refusal_status(url: &str) -> u16 {
    match try_connect(url, &[]).await {
        Ok((_, resp)) => panic!("expected a refusal from {url}, got {}", resp.status()),
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal from {url}, got error: {e}"),
    }
}

/// Reads Binary messages until exactly `n` bytes have arrived, within `bound`.
pub async fn read_bytes<S>(stream: &mut S, n: usize, bound: Duration) -> Vec<u8>
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut got = Vec::with_capacity(n);
    let read = async {
        while got.len() < n {
            match stream.next().await {
                Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => panic!(
                    "expected binary echo ({} of {n} bytes so far), got {other:?}",
                    got.len()
                ),
                Some(Err(e)) => panic!("read error after {} of {n} bytes: {e}", got.len()),
                None => panic!("stream ended after {} of {n} bytes", got.len()),
            }
        }
    };
    if timeout(bound, read).await.is_err() {
        panic!("only {} of {n} echoed bytes within {bound:?}", got.len());
    }
    assert_eq!(
        got.len(),
        n,
        "server sent more bytes than the tunnel carried"
    );
    got
}

/// Reads until the server's Close (skipping Ping/Pong) within `STEP`; fails on data or EOF.
pub async fn read_close<S>(stream: &mut S) -> Option<(u16, String)>
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let read = async {
        for _ in 0..64 {
            match stream.next().await {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => panic!("expected Close, got {other:?}"),
                Some(Err(e)) => panic!("expected Close, got error: {e}"),
                None => panic!("stream ended without a Close frame"),
            }
        }
        panic!("64 control frames without a Close");
    };
    match timeout(STEP, read).await {
        Ok(close) => close,
        Err(_) => panic!("no Close frame within {STEP:?}"),
    }
}

/// Opens a fresh tunnel at `url`, sends `payload` as one Binary message, checks the echo
/// byte-exact, and closes with 1000.
pub async fn echo_once(url: &str, payload: &[u8]) {
    let mut ws = connect(url).await;
    timeout(STEP, ws.send(Message::binary(payload.to_vec())))
        .await
        .expect("send timed out")
        .expect("send");
    let got = read_bytes(&mut ws, payload.len(), STEP).await;
    assert!(got == payload, "echo differs from what was sent");
    let _ = timeout(STEP, ws.close(None)).await;
}

/// Proves the server at `port` still serves `/echo` after some hostile client (1,000 bytes, under
/// every `max_message_bytes` the tests configure).
pub async fn assert_still_serves(port: u16) {
    let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
    echo_once(&format!("ws://127.0.0.1:{port}/echo"), &payload).await;
}
