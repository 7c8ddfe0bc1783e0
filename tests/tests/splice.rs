//! Splicing in WebSocket tunnels: the origin's bytes toward a ws:// client go origin → pipe →
//! client with a frame header written in front of each read, never through user space. Held to
//! tokio-tungstenite (a client nobody here wrote): every frame it reads must be whole and valid
//! while pings and the closing handshake interleave with the spliced frames; the bytes come back
//! exact; the figures count spliced bytes; with splicing off nothing is spliced.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use ringway_e2e::config::ConfigToml;
use ringway_e2e::origin::Origin;
use ringway_e2e::server::Ringway;
use ringway_e2e::ws::{connect, read_bytes, read_close};
use ringway_e2e::STEP;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

/// Sends `data` in 64 KiB Binary messages with a Ping after every fourth, while reading the
/// echo back; returns what came back.
async fn echo_with_pings(server: &Ringway, data: &[u8]) -> Vec<u8> {
    let ws = connect(&server.url("/echo")).await;
    let (mut tx, mut rx) = ws.split();
    let out = data.to_vec();
    let writer = tokio::spawn(async move {
        for (i, chunk) in out.chunks(64 * 1024).enumerate() {
            tx.send(Message::binary(chunk.to_vec()))
                .await
                .expect("send");
            if i % 4 == 3 {
                tx.send(Message::Ping(vec![i as u8].into()))
                    .await
                    .expect("ping");
            }
        }
        tx
    });
    let back = read_bytes(&mut rx, data.len(), STEP * 2).await;
    let mut tx = timeout(STEP, writer).await.expect("writer").expect("join");
    tx.send(Message::Close(None)).await.expect("close");
    let close = read_close(&mut rx).await;
    assert!(close.as_ref().is_none_or(|(c, _)| *c == 1000), "{close:?}");
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_bytes_are_spliced_into_whole_frames() {
    let echo = Origin::echo().await;
    let server = Ringway::start(&ConfigToml::echo(echo.addr).build());
    let mut data = vec![0u8; 4 << 20];
    rand::thread_rng().fill_bytes(&mut data);
    let back = echo_with_pings(&server, &data).await;
    assert!(back == data, "4 MiB came back changed");
    let spliced = server.spliced_bytes();
    assert!(spliced > 0, "bulk origin bytes go through a pipe");
    assert!(
        spliced < (4 << 20) + (4 << 20) / 100,
        "{spliced}: only the client-bound bytes (and their frame headers) are spliced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splicing_off_copies_everything() {
    let echo = Origin::echo().await;
    let config = format!(
        "{}[engine]\nsplice_min_bytes = 0\n",
        ConfigToml::echo(echo.addr).build()
    );
    let server = Ringway::start(&config);
    let mut data = vec![0u8; 1 << 20];
    rand::thread_rng().fill_bytes(&mut data);
    assert!(echo_with_pings(&server, &data).await == data);
    assert_eq!(server.spliced_bytes(), 0);
}

/// The origin answers 3 MiB in one write and closes: every byte arrives in whole frames, then
/// the Close (1000) that its EOF causes, never inside a frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_answers_then_closes_delivers_every_byte_then_the_close() {
    let n = 3 << 20;
    let origin = Origin::echo_then_close(n).await;
    let server = Ringway::start(&ConfigToml::echo(origin.addr).build());
    let mut data = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut data);
    let ws = connect(&server.url("/echo")).await;
    let (mut tx, mut rx) = ws.split();
    let out = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in out.chunks(256 * 1024) {
            tx.send(Message::binary(chunk.to_vec()))
                .await
                .expect("send");
        }
        tx
    });
    let back = read_bytes(&mut rx, n, STEP * 2).await;
    assert!(back == data, "3 MiB came back changed");
    let close = read_close(&mut rx).await;
    assert_eq!(close.map(|c| c.0), Some(1000));
    drop(timeout(Duration::from_secs(1), writer).await);
    assert!(server.spliced_bytes() > 0);
}
