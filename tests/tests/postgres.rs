//! PostgreSQL through ringway for real: a private cluster (scram-sha-256) behind a `wss://`
//! listener, reached by a Postgres driver that speaks the wire protocol over a WebSocket, the
//! way serverless runtimes do (pg8000 from PyPI over Python `websockets`, no access client in
//! between): login with SCRAM, 10,000 rows in one transaction with checksums compared on both
//! sides, a 1 MiB bytea round trip and a 51 MB `COPY ... TO STDOUT`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ringway_e2e::postgres::{PostgresBehindEdge, PASSWORD, USER};
use ringway_e2e::server::run_command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_postgres_driver_reaches_postgresql_through_wss() {
    let setup = PostgresBehindEdge::start().await;
    let (pg, pki, server) = (&setup.pg, &setup.pki, &setup.edge);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/pg_ws.py");
    let url = format!("{}?database=postgres", setup.url());
    let ca = pki.ca().display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args([url.as_str(), ca.as_str(), USER, PASSWORD, "postgres"]);
        run_command(cmd, Duration::from_secs(180))
    })
    .await
    .expect("python runner thread");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ok"),
        "pg_ws.py failed ({}):\n{stdout}{stderr}\n--- postgres log ---\n{}\n{}",
        out.status,
        pg.log(),
        server.log_tail()
    );
    eprintln!("{stdout}");
    let line = server
        .await_log_line(&["tunnel closed", "route=\"/db\""], Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no close line:\n{}", server.log_tail()));
    assert!(line.contains("closed_by=\"client\""), "{line}");
}

/// The README's Python example ("PostgreSQL behind ringway"), taken from README.md as it is and
/// run against the same kind of edge: it must work as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_python_example_works_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("read README.md");
    let section = readme
        .split("\n## PostgreSQL behind ringway\n")
        .nth(1)
        .expect("README has a \"PostgreSQL behind ringway\" section");
    let block = section
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("that section has a ```python block");
    assert!(
        block.contains("pg8000") && block.contains("EDGE_URL"),
        "{block}"
    );

    let setup = PostgresBehindEdge::start().await;
    let (pg, pki, server) = (&setup.pg, &setup.pki, &setup.edge);
    let dir = std::env::temp_dir().join(format!("ringway-readme-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let script = dir.join("example.py");
    std::fs::write(&script, block).expect("write the example");
    let (url, ca) = (setup.url(), pki.ca().display().to_string());
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .env("EDGE_URL", url)
            .env("EDGE_CA", ca)
            .env("PGUSER", USER)
            .env("PGPASSWORD", PASSWORD)
            .env("PGDATABASE", "postgres");
        run_command(cmd, Duration::from_secs(60))
    })
    .await
    .expect("python runner thread");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.starts_with("PostgreSQL "),
        "the README example failed ({}):\n{stdout}{stderr}\n--- postgres log ---\n{}\n{}",
        out.status,
        pg.log(),
        server.log_tail()
    );
}
