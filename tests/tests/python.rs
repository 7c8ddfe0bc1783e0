//! Interoperability with a second third-party client, Python's `websockets` library: runs
//! `py/echo_client.py` against a fresh server and requires exit 0.
//!
//! A missing `websockets` module fails the test with install instructions; it is never skipped.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ringway_e2e::config::ConfigToml;
use ringway_e2e::origin::Origin;
use ringway_e2e::server::{run_command, Ringway};

fn python_has_websockets() {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import websockets; print(websockets.__version__)"]);
    let out = run_command(cmd, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "`python3 -c \"import websockets\"` failed: install python3-websockets \
         (`apt-get install python3-websockets`, or `pip install websockets` for the python3 on \
         PATH); stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_echoes_pings_and_closes() {
    python_has_websockets();
    let origin = Origin::echo().await;
    let server = Ringway::start(&ConfigToml::echo(origin.addr).build());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/echo_client.py");
    let url = server.url("/echo");
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(url);
        run_command(cmd, Duration::from_secs(90))
    })
    .await
    .expect("python runner thread");
    assert!(
        out.status.success(),
        "echo_client.py failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
