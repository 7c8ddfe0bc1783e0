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
    // And on the edge's side: the client's alert, in its close line.
    edge.await_log_line(&["TLS session failed", "UnknownCA"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no unknown-CA line at the edge:\n{}", edge.log_tail()));

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
    edge.await_log_line(&["TLS session failed", "BadCertificate"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no bad-certificate line at the edge:\n{}", edge.log_tail()));

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
    stale_edge
        .await_log_line(&["TLS session failed", "CertificateExpired"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no expiry line at the edge:\n{}", stale_edge.log_tail()));

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

/// A `wss://` edge in front of an echo origin that logs every tunnel it opens: its PKI and
/// origin (kept alive by the caller), the edge, the CA file to trust and the URL of `/echo`.
async fn logging_tls_edge() -> (TestPki, Origin, Ringway, String, String) {
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
    (pki, origin, edge, ca, url)
}

/// `--warm 2`: two tunnels are opened and upgraded before any local connection; a local
/// connection takes one (its bytes flow at once) and another is opened in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_tunnels_are_open_before_the_local_connection_and_refilled() {
    let (_pki, _origin, edge, ca, url) = logging_tls_edge().await;
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

/// Writes `msg` on `s` and reads its echo back within 10 s.
async fn echo_on(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.expect("send");
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(buf, msg);
}

/// In one access process, a tunnel the edge refuses with a 5xx ends only that local connection,
/// logged with the status and reason, while the tunnel already open keeps carrying bytes and a
/// later connection is served once the edge has room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tunnel_ends_only_its_own_connection_in_the_same_process() {
    let pki = TestPki::new();
    let leaf = pki.leaf("edge", "edge", &["localhost"]);
    let origin = Origin::echo().await;
    // The route takes one tunnel at a time: the second is refused with 503.
    let config = format!(
        "{}max_tunnels = 1\n",
        ConfigToml::echo(origin.addr).tls(&leaf.toml()).build()
    );
    let edge = Ringway::start(&config);
    let ca = pki.ca().display().to_string();
    let url = format!("wss://localhost:{}/echo", edge.port);
    let access = Ringway::start_access(&["--url", &url, "--ca", &ca]);

    let mut first = TcpStream::connect(("127.0.0.1", access.port))
        .await
        .expect("connect");
    echo_on(&mut first, b"the first tunnel").await;
    assert!(local_session(access.port).await.is_empty());
    let line = access
        .await_log_line(&["tunnel closed", "503"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no 503 line:\n{}", access.log_tail()));
    assert!(
        line.contains("the edge answered 503 Service Unavailable"),
        "{line}"
    );
    echo_on(&mut first, b"still carried after the refusal").await;
    drop(first);
    // The edge has room again once the first tunnel is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(("127.0.0.1", access.port))
            .await
            .expect("connect");
        s.write_all(b"again").await.expect("send");
        let mut buf = [0u8; 5];
        let got = tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await;
        if matches!(got, Ok(Ok(_))) && &buf == b"again" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no tunnel after the first one closed:\n{}",
            access.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `--header` lines reach the edge in the upgrade request (as an authorizing proxy would see
/// them), and `--insecure-skip-verify` carries a tunnel to an edge whose CA nobody gave it,
/// warning that it does so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_reach_the_edge_and_insecure_skip_verify_accepts_any_certificate() {
    // A bare listener as the edge: it records the upgrade request.
    let fake_edge = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let edge_addr = fake_edge.local_addr().expect("addr");
    let access = Ringway::start_access(&[
        "--url",
        &format!("ws://{edge_addr}/db"),
        "--header",
        "Authorization: Bearer test-token",
        "--header",
        "X-Tenant: blue",
    ]);
    let mut local = TcpStream::connect(("127.0.0.1", access.port))
        .await
        .expect("connect");
    local.write_all(b"hello").await.expect("send");
    let (mut upstream, _) = tokio::time::timeout(Duration::from_secs(10), fake_edge.accept())
        .await
        .expect("access dials the edge in time")
        .expect("accept");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(10), upstream.read_exact(&mut byte))
            .await
            .expect("request head in time")
            .expect("request head");
        head.push(byte[0]);
        assert!(head.len() < 8192, "no end of the request head");
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("GET /db HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains("\r\nAuthorization: Bearer test-token\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nX-Tenant: blue\r\n"), "{head}");

    // An edge with a certificate from a CA the access client was not given.
    let pki = TestPki::new();
    let leaf = pki.leaf("edge", "edge", &["localhost"]);
    let origin = Origin::echo().await;
    let edge = Ringway::start(&ConfigToml::echo(origin.addr).tls(&leaf.toml()).build());
    let insecure = Ringway::start_access(&[
        "--url",
        &format!("wss://localhost:{}/echo", edge.port),
        "--insecure-skip-verify",
    ]);
    let mut s = TcpStream::connect(("127.0.0.1", insecure.port))
        .await
        .expect("connect");
    echo_on(&mut s, b"no certificate check").await;
    insecure
        .await_log_line(&["--insecure-skip-verify"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no warning:\n{}", insecure.log_tail()));
}

/// `--warm-refresh-secs`: an idle warm tunnel is replaced when it is that old (before the edge's
/// idle timeout would end it), the old one closed by the client side, and a local connection
/// still gets a tunnel that carries bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_tunnels_are_replaced_when_they_are_refresh_secs_old() {
    let (_pki, _origin, edge, ca, url) = logging_tls_edge().await;
    let access = Ringway::start_access(&[
        "--url",
        &url,
        "--ca",
        &ca,
        "--warm",
        "1",
        "--warm-refresh-secs",
        "1",
    ]);
    let count = |needle: &str| edge.log().lines().filter(|l| l.contains(needle)).count();
    // One at the start, then one more each second: three opens and two closes within 5 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while (count("tunnel open") < 3 || count("tunnel closed") < 2)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        count("tunnel open") >= 3 && count("tunnel closed") >= 2,
        "warm tunnels replaced every second:\n{}",
        edge.log_tail()
    );
    let closed: Vec<String> = edge
        .log()
        .lines()
        .filter(|l| l.contains("tunnel closed"))
        .map(str::to_string)
        .collect();
    assert!(
        closed.iter().all(|l| l.contains("closed_by=\"client\"")),
        "the access side ends the old ones: {closed:?}"
    );
    let mut s = TcpStream::connect(("127.0.0.1", access.port))
        .await
        .expect("connect");
    echo_on(&mut s, b"after refreshes").await;
}
