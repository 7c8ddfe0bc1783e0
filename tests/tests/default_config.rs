//! `ringway run` with no `--config` uses the embedded default: 127.0.0.1:8080 with `/echo` routed
//! to a built-in echo origin.
//!
//! This is the only test in the suite that uses a fixed port, and it lives alone in this file so
//! that its test binary never runs it beside another test (cargo runs test binaries one after
//! another). It first checks that 8080 is free, so a foreign listener fails it with a clear message.

use std::net::TcpListener;
use std::time::Duration;

use ringway_e2e::server::Ringway;
use ringway_e2e::ws;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_config_serves_builtin_echo_on_8080() {
    match TcpListener::bind("127.0.0.1:8080") {
        Ok(probe) => drop(probe),
        Err(e) => {
            panic!("127.0.0.1:8080 is taken by another process ({e}); free it to run this test")
        }
    }
    let mut server = Ringway::start_default();
    assert_eq!(
        server.port, 8080,
        "embedded default must listen on 127.0.0.1:8080"
    );
    ws::echo_once("ws://127.0.0.1:8080/echo", b"embedded default echo").await;
    let status = server.terminate(Duration::from_secs(10)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
}
