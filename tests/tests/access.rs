//! `ringway access` end to end: psql and pgbench (PostgreSQL's own tools, which speak only TCP)
//! through `ringway access` → `wss://` → `ringway` → a private PostgreSQL cluster; and the
//! errors a user meets, each logged and ending only that local connection: a refusal by the
//! edge (status and reason), a certificate from an unknown CA (which name, which reason), an
//! edge that cannot be reached.

use std::process::Command;
use std::time::Duration;

use ringway_e2e::config::ConfigToml;
use ringway_e2e::origin::Origin;
use ringway_e2e::postgres::{PostgresBehindEdge, PASSWORD, USER};
use ringway_e2e::server::{run_command, Ringway};
use ringway_e2e::tls::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LOG_WAIT: Duration = Duration::from_secs(5);

/// psql or pgbench against `port` (the access client's), with the test role's password.
fn pg_tool(program: &str, port: u16, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(program);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER])
        .args(args)
        .env("PGPASSWORD", PASSWORD)
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "10");
    let out = run_command(cmd, Duration::from_secs(300));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn psql(port: u16, sql: &str) -> String {
    let (ok, out) = pg_tool(
        "psql",
        port,
        &["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
    );
    assert!(ok, "psql {sql:?} failed: {out}");
    out.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_pgbench_through_ringway_access_over_wss() {
    let setup = PostgresBehindEdge::start().await;
    let (pg, pki, edge) = (&setup.pg, &setup.pki, &setup.edge);
    let url = setup.url();
    let ca = pki.ca().display().to_string();
    let access = Ringway::start_access(&["--url", &url, "--ca", &ca]);
    let port = access.port;
    let result = tokio::task::spawn_blocking(move || {
        // 10,000 rows in one transaction, read back, checksums computed on both sides.
        psql(
            port,
            "BEGIN; CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL); \
             INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 10000) i; COMMIT;",
        );
        let server_sum = psql(
            port,
            "SELECT encode(sha256(convert_to(string_agg(v, ',' ORDER BY id), 'UTF8')), 'hex') FROM t",
        );
        let rows = psql(port, "SELECT v FROM t ORDER BY id");
        let lines: Vec<&str> = rows.lines().collect();
        assert_eq!(lines.len(), 10_000);
        let client_sum = sha256_hex(lines.join(",").as_bytes());
        assert_eq!(server_sum, client_sum, "checksum of the rows read back");
        // A 1 MiB bytea round trip.
        psql(
            port,
            "CREATE TABLE b AS SELECT decode(string_agg(md5(i::text), ''), 'hex') AS blob \
             FROM generate_series(1, 65536) i",
        );
        assert_eq!(psql(port, "SELECT length(blob) FROM b"), "1048576");
        let hex = psql(port, "SELECT encode(blob, 'hex') FROM b");
        let sum = psql(port, "SELECT encode(sha256(blob), 'hex') FROM b");
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
            .collect();
        assert_eq!(bytes.len(), 1 << 20);
        assert_eq!(sha256_hex(&bytes), sum, "1 MiB bytea round trip");
        // COPY TO STDOUT of 51 MB.
        let (ok, out) = pg_tool(
            "psql",
            port,
            &[
                "-d",
                "postgres",
                "-c",
                "COPY (SELECT repeat(md5(i::text), 16) FROM generate_series(1, 100000) i) \
                 TO STDOUT",
            ],
        );
        assert!(ok, "COPY failed: {}", &out[..out.len().min(500)]);
        assert_eq!(out.len(), 100_000 * 513, "51.3 MB of COPY output");
        // pgbench: initialise, then select-only and TPC-B-like with 8 clients.
        let (ok, out) = pg_tool("pgbench", port, &["-i", "-s", "5", "-q", "postgres"]);
        assert!(ok, "pgbench -i failed: {out}");
        let mut tps = Vec::new();
        for (mode, per_client) in [("-S", "250"), ("", "60")] {
            let mut args = vec!["-c", "8", "-j", "2", "-t", per_client, "postgres"];
            if !mode.is_empty() {
                args.insert(0, mode);
            }
            let (ok, out) = pg_tool("pgbench", port, &args);
            assert!(ok, "pgbench {mode} failed: {out}");
            let expected = 8 * per_client.parse::<usize>().expect("count");
            assert!(
                out.contains(&format!(
                    "number of transactions actually processed: {expected}/{expected}"
                )),
                "{out}"
            );
            assert!(out.contains("number of failed transactions: 0 (0.000%)"), "{out}");
            tps.push(out.lines().filter(|l| l.starts_with("tps")).collect::<Vec<_>>().join(" "));
        }
        tps
    })
    .await;
    let tps = result.unwrap_or_else(|e| {
        panic!(
            "{e:?}\n--- access ---\n{}\n--- edge ---\n{}\n--- postgres ---\n{}",
            access.log_tail(),
            edge.log_tail(),
            pg.log()
        )
    });
    eprintln!("pgbench through ringway access: {tps:?}");
}

/// SHA-256 in hex, as PostgreSQL's `encode(sha256(...), 'hex')` prints it.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A local connection through access: what it reads before the end (nothing, for a failure).
async fn local_session(port: u16) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the access client accepts");
    let _ = s.write_all(b"\x00\x00\x00\x08\x04\xd2\x16\x2f").await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_errors_are_logged_in_words_and_end_only_that_connection() {
    let pki = TestPki::new();
    let leaf = pki.leaf("edge", "edge", &["localhost"]);
    let origin = Origin::echo().await;
    let edge = Ringway::start(&ConfigToml::echo(origin.addr).tls(&leaf.toml()).build());
    let ca = pki.ca().display().to_string();

    // No route for the path: the edge's 404, with its reason.
    let url = format!("wss://localhost:{}/nope", edge.port);
    let access = Ringway::start_access(&["--url", &url, "--ca", &ca]);
    assert!(local_session(access.port).await.is_empty());
    let line = access
        .await_log_line(&["tunnel closed", "404"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no 404 line:\n{}", access.log_tail()));
    assert!(
        line.contains("the edge answered 404 Not Found: no route for this path"),
        "{line}"
    );
    // The same client still works for a good path (each connection is its own tunnel).
    let good = Ringway::start_access(&[
        "--url",
        &format!("wss://localhost:{}/echo", edge.port),
        "--ca",
        &ca,
    ]);
    let mut s = TcpStream::connect(("127.0.0.1", good.port))
        .await
        .expect("connect");
    s.write_all(b"through the tunnel").await.expect("send");
    let mut buf = [0u8; 18];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&buf, b"through the tunnel");

    // A certificate from a CA the client does not trust.
    let other = TestPki::new();
    let untrusted = Ringway::start_access(&[
        "--url",
        &format!("wss://localhost:{}/echo", edge.port),
        "--ca",
        &other.ca().display().to_string(),
    ]);
    assert!(local_session(untrusted.port).await.is_empty());
    let line = untrusted
        .await_log_line(&["tunnel closed", "TLS with the edge failed"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no TLS line:\n{}", untrusted.log_tail()));
    assert!(line.contains("UnknownIssuer"), "{line}");

    // A name the certificate does not carry.
    let wrong_name = Ringway::start_access(&[
        "--url",
        &format!("wss://localhost:{}/echo", edge.port),
        "--ca",
        &ca,
        "--sni",
        "db.example",
    ]);
    assert!(local_session(wrong_name.port).await.is_empty());
    let line = wrong_name
        .await_log_line(&["tunnel closed", "TLS with the edge failed"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no name line:\n{}", wrong_name.log_tail()));
    assert!(
        line.contains("not valid for name \\\"db.example\\\""),
        "{line}"
    );

    // An edge whose certificate expired.
    let old = pki.leaf_with("old", "old", &["localhost"], true);
    let stale_edge = Ringway::start(&ConfigToml::echo(origin.addr).tls(&old.toml()).build());
    let stale = Ringway::start_access(&[
        "--url",
        &format!("wss://localhost:{}/echo", stale_edge.port),
        "--ca",
        &ca,
    ]);
    assert!(local_session(stale.port).await.is_empty());
    let line = stale
        .await_log_line(&["tunnel closed", "TLS with the edge failed"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no expiry line:\n{}", stale.log_tail()));
    assert!(line.contains("expired"), "{line}");

    // Nothing listens at the edge address.
    let dead = Origin::refused();
    let unreachable = Ringway::start_access(&["--url", &format!("ws://{dead}/db")]);
    assert!(local_session(unreachable.port).await.is_empty());
    let line = unreachable
        .await_log_line(&["tunnel closed", "cannot reach the edge"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no unreachable line:\n{}", unreachable.log_tail()));
    assert!(line.contains("Connection refused"), "{line}");
}

/// `--warm 2`: two tunnels are opened and upgraded before any local connection; a local
/// connection takes one (its bytes flow at once) and another is opened in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_tunnels_are_open_before_the_local_connection_and_refilled() {
    let pki = TestPki::new();
    let leaf = pki.leaf("edge", "edge", &["localhost"]);
    let origin = Origin::echo().await;
    let edge = Ringway::start_with(
        &ConfigToml::echo(origin.addr).tls(&leaf.toml()).build(),
        &[],
        &[("RUST_LOG", "info,ringway::tunnel=debug")],
    );
    let ca = pki.ca().display().to_string();
    let url = format!("wss://localhost:{}/echo", edge.port);
    let access = Ringway::start_access(&["--url", &url, "--ca", &ca, "--warm", "2"]);
    let opened = |log: &str| log.lines().filter(|l| l.contains("tunnel open")).count();
    let deadline = tokio::time::Instant::now() + LOG_WAIT;
    while opened(&edge.log()) < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        opened(&edge.log()),
        2,
        "two warm tunnels before any local connection:\n{}",
        edge.log_tail()
    );
    let mut s = TcpStream::connect(("127.0.0.1", access.port))
        .await
        .expect("connect");
    s.write_all(b"warm").await.expect("send");
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&buf, b"warm");
    let deadline = tokio::time::Instant::now() + LOG_WAIT;
    while opened(&edge.log()) < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        opened(&edge.log()),
        3,
        "the taken tunnel is replaced:\n{}",
        edge.log_tail()
    );
    drop(s);
    let line = access
        .await_log_line(&["tunnel closed", "closed_by=\"local\""], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no close line:\n{}", access.log_tail()));
    assert!(
        line.contains("to_origin=4") && line.contains("to_client=4"),
        "{line}"
    );
}
