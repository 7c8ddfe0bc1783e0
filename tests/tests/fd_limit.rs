//! ringway raises its soft open-files limit to the hard limit at start: started under a soft
//! limit of 256 descriptors (through a `sh` wrapper running `ulimit -S -n 256`), it must still
//! hold 300 open tunnels (600 descriptors) and echo on each.
//!
//! In its own test binary because it points `RINGWAY_BIN` at the wrapper for the whole process.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use futures_util::SinkExt;
use ringway_e2e::config::ConfigToml;
use ringway_e2e::origin::Origin;
use ringway_e2e::server::{binary, temp_path, Ringway};
use ringway_e2e::ws::{self, read_bytes};
use ringway_e2e::STEP;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

const TUNNELS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_fd_limit_is_raised_to_the_hard_limit() {
    let hard: usize = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "ulimit -H -n"])
            .output()
            .expect("run sh")
            .stdout,
    )
    .expect("utf-8")
    .trim()
    .parse()
    .unwrap_or(usize::MAX);
    assert!(
        hard >= 4 * TUNNELS,
        "hard open-files limit {hard} too low for this test"
    );
    let real = binary();
    let wrapper = temp_path("sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nulimit -S -n 256 || exit 99\nexec '{}' \"$@\"\n",
            real.display()
        ),
    )
    .expect("write wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // This test binary runs only this test, so no other test sees the changed variable.
    std::env::set_var("RINGWAY_BIN", &wrapper);

    let origin = Origin::echo().await;
    let server = Ringway::start(&ConfigToml::echo(origin.addr).build());
    let url = server.url("/echo");
    let mut clients = Vec::with_capacity(TUNNELS);
    for i in 0..TUNNELS {
        let ws = timeout(Duration::from_secs(10), ws::connect(&url))
            .await
            .unwrap_or_else(|_| panic!("tunnel {i} did not open"));
        clients.push(ws);
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        let msg = format!("tunnel {i}").into_bytes();
        timeout(STEP, ws.send(Message::binary(msg.clone())))
            .await
            .expect("send timed out")
            .expect("send");
        assert_eq!(read_bytes(ws, msg.len(), STEP).await, msg, "tunnel {i}");
    }
    drop(clients);
    let _ = std::fs::remove_file(&wrapper);
}
