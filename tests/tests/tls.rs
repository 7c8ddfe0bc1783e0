//! wss:// end to end, against third-party TLS stacks: Python's `ssl` + `websockets` (echo of
//! every size, a ping, Close 1000; certificates reloaded on SIGHUP while a tunnel stays open)
//! and `openssl s_client` (chain, protocol, ALPN, SNI, session resumption, TLS 1.1 refused).
//! Certificates come from a test CA made per test (rcgen). Also: `ringway check` names a
//! missing or mismatched file, plain HTTP on a TLS port is refused with an alert, and 2,000
//! handshakes that never finish neither block a real client nor outlive the handshake timeout.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringway_e2e::config::ConfigToml;
use ringway_e2e::origin::Origin;
use ringway_e2e::server::{run_command, run_to_exit, write_config, Ringway};
use ringway_e2e::tls::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LOG_WAIT: Duration = Duration::from_secs(5);

fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("py/wss_client.py")
        .display()
        .to_string()
}

async fn python(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("python3");
        cmd.arg(script()).args(args);
        run_command(cmd, Duration::from_secs(90))
    })
    .await
    .expect("python runner thread")
}

/// `openssl s_client` with `args`; its stdin ends after a second, so it reads what the server
/// sends after the handshake (TLS 1.3 session tickets) before it quits. Returns stdout + stderr.
async fn s_client(port: u16, args: &[&str]) -> String {
    let mut all = vec![
        "-c".to_string(),
        "sleep 1 | openssl s_client \"$@\"".into(),
        "sh".into(),
        "-connect".into(),
        format!("127.0.0.1:{port}"),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("sh");
        cmd.args(&all);
        run_command(cmd, Duration::from_secs(30))
    })
    .await
    .expect("openssl runner thread");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tls_server(origin: std::net::SocketAddr, tls: &str) -> Ringway {
    Ringway::start(&ConfigToml::echo(origin).tls(tls).build())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_over_wss_echoes_every_size_and_closes_1000() {
    let pki = TestPki::new();
    let leaf = pki.leaf("edge", "edge", &["localhost"]);
    let origin = Origin::echo().await;
    let server = tls_server(origin.addr, &leaf.toml());
    let url = format!("wss://localhost:{}/echo", server.port);
    let out = python(vec!["echo".into(), url, pki.ca().display().to_string()]).await;
    assert!(
        out.status.success(),
        "wss_client.py echo failed ({}):\n{}{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log_tail()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok 1000"));
    let line = server
        .await_log_line(&["tunnel closed"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no close line:\n{}", server.log_tail()));
    assert!(line.contains("reason=\"client sent Close 1000"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_sees_the_chain_tls13_alpn_and_a_resumed_session() {
    let pki = TestPki::new();
    let leaf = pki.leaf("edge", "edge", &["localhost"]);
    let origin = Origin::echo().await;
    let server = tls_server(origin.addr, &leaf.toml());
    let ca = pki.ca().display().to_string();
    let session = pki.dir.join("session.pem").display().to_string();
    let first = s_client(
        server.port,
        &[
            "-servername",
            "localhost",
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-alpn",
            "http/1.1",
            "-sess_out",
            &session,
        ],
    )
    .await;
    for want in [
        "Verify return code: 0 (ok)",
        "ALPN protocol: http/1.1",
        "New, TLSv1.3",
        "CN = edge",
    ] {
        assert!(first.contains(want), "{want:?} missing:\n{first}");
    }
    let again = s_client(
        server.port,
        &[
            "-servername",
            "localhost",
            "-CAfile",
            &ca,
            "-sess_in",
            &session,
        ],
    )
    .await;
    assert!(
        again.contains("Reused, TLSv1.3"),
        "the ticket resumes the session:\n{again}"
    );
    // TLS 1.2 works too, and resumes as well.
    let session12 = pki.dir.join("session12.pem").display().to_string();
    for (session_flag, want) in [
        ("-sess_out", "New, TLSv1.2"),
        ("-sess_in", "Reused, TLSv1.2"),
    ] {
        let out = s_client(
            server.port,
            &[
                "-servername",
                "localhost",
                "-CAfile",
                &ca,
                "-tls1_2",
                session_flag,
                &session12,
            ],
        )
        .await;
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_for_the_name_and_the_default_for_others() {
    let pki = TestPki::new();
    let default = pki.leaf("edge", "default-cert", &["localhost"]);
    let db = pki.leaf("db", "db-cert", &["db.test"]);
    let origin = Origin::echo().await;
    let config = ConfigToml::echo(origin.addr).build().replace(
        "addr = \"127.0.0.1:0\"\n",
        &format!(
            "addr = \"127.0.0.1:0\"\n[listener.tls]\ncert = \"{}\"\nkey = \"{}\"\n\
             [[listener.tls.sni]]\nnames = [\"db.test\"]\ncert = \"{}\"\nkey = \"{}\"\n",
            default.cert.display(),
            default.key.display(),
            db.cert.display(),
            db.key.display()
        ),
    );
    let server = Ringway::start(&config);
    let ca = pki.ca().display().to_string();
    let for_db = s_client(server.port, &["-servername", "db.test", "-CAfile", &ca]).await;
    assert!(
        for_db.contains("CN = db-cert") && for_db.contains("Verify return code: 0 (ok)"),
        "{for_db}"
    );
    let other = s_client(server.port, &["-servername", "other.test", "-CAfile", &ca]).await;
    assert!(other.contains("CN = default-cert"), "{other}");
}

/// Two routes on one path: one for connections whose SNI is `db.test`, one for any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_may_match_on_the_tls_server_name() {
    let pki = TestPki::new();
    let leaf = pki.leaf("edge", "edge", &["db.test", "other.test"]);
    let origin = Origin::echo().await;
    let refused = Origin::refused();
    let config = format!(
        "workers = 1\n[[listener]]\naddr = \"127.0.0.1:0\"\ntls = {{ {} }}\n\
         [[route]]\npath = \"/echo\"\nsni = \"db.test\"\norigin = \"{}\"\n\
         [[route]]\npath = \"/echo\"\norigin = \"{}\"\n",
        leaf.toml(),
        origin.addr,
        refused
    );
    let server = Ringway::start(&config);
    let ca = pki.ca().display().to_string();
    let via = |name: &str| format!("wss://{name}:{}/echo", server.port);
    let out = python(vec!["route".into(), via("db.test"), ca.clone()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("echo ping"),
        "SNI db.test takes its route: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = python(vec!["route".into(), via("other.test"), ca]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("refused 502"),
        "another name takes the other route: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_1_and_plain_http_on_a_tls_port_are_refused_and_logged() {
    let pki = TestPki::new();
    let leaf = pki.leaf("edge", "edge", &["localhost"]);
    let origin = Origin::echo().await;
    let server = tls_server(origin.addr, &leaf.toml());
    let old = s_client(
        server.port,
        &[
            "-servername",
            "localhost",
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ],
    )
    .await;
    assert!(
        old.contains("alert handshake failure") || old.contains("alert protocol version"),
        "TLS 1.1 must be refused with an alert:\n{old}"
    );
    assert!(!old.contains("New, TLSv1.1, Cipher is"), "{old}");
    let line = server
        .await_log_line(&["tunnel closed", "TLS session failed"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no TLS failure line:\n{}", server.log_tail()));
    assert!(
        line.contains("client offers only TLS 1.1 (ringway speaks TLS 1.2 and 1.3)"),
        "the log says why: {line}"
    );
    assert!(line.contains("closed_by=\"client\""), "{line}");

    // A plain upgrade request on the TLS port: an alert record, then the connection ends.
    let mut s = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply))
        .await
        .expect("the server ends the connection")
        .ok();
    assert_eq!(reply.first(), Some(&0x15), "a TLS alert: {reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificates_while_open_tunnels_keep_theirs() {
    let pki = TestPki::new();
    let leaf = pki.leaf("edge", "first", &["localhost"]);
    let origin = Origin::echo().await;
    let server = tls_server(origin.addr, &leaf.toml());
    let url = format!("wss://localhost:{}/echo", server.port);
    let mut child = Command::new("python3")
        .args([
            script(),
            "reload".into(),
            url,
            pki.ca().display().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let ready =
        tokio::task::spawn_blocking(move || stdout.read_line(&mut line).map(|_| (line, stdout)));
    let (line, mut stdout) = tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .expect("python printed ready")
        .expect("reader thread")
        .expect("read stdout");
    assert_eq!(line.trim(), "ready first", "{line}");
    // New files under the same paths, then SIGHUP.
    let second = pki.leaf("edge", "second", &["localhost"]);
    assert_eq!(second.cert, leaf.cert);
    server.signal("HUP");
    // The worker takes the new certificates on its next tick.
    server
        .await_log_line(&["TLS certificates reloaded", "worker=0"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no reload line:\n{}", server.log_tail()));
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "go").expect("tell python to go on");
    drop(stdin);
    let rest = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        for l in (&mut stdout).lines().take(2) {
            rest.push_str(&l.unwrap_or_default());
            rest.push('\n');
        }
        let status = child.wait();
        (rest, status)
    });
    let (rest, status) = tokio::time::timeout(Duration::from_secs(30), rest)
        .await
        .expect("python finished")
        .expect("reader thread");
    assert!(
        status.is_ok_and(|s| s.success()),
        "python failed after the reload: {rest}"
    );
    assert!(
        rest.contains("new second"),
        "a new tunnel gets the new certificate: {rest}"
    );
    assert!(
        rest.contains("old first"),
        "the open tunnel kept its session: {rest}"
    );

    // A reload that fails (the certificate file is no PEM now) keeps the certificates in use.
    std::fs::write(&leaf.cert, "not a certificate\n").expect("break the certificate file");
    server.signal("HUP");
    let line = server
        .await_log_line(
            &["TLS certificates not reloaded, keeping the old ones"],
            LOG_WAIT,
        )
        .await
        .unwrap_or_else(|| panic!("no failed-reload line:\n{}", server.log_tail()));
    assert!(
        line.contains(&*leaf.cert.display().to_string()),
        "names the file: {line}"
    );
    let still = s_client(
        server.port,
        &[
            "-servername",
            "localhost",
            "-CAfile",
            &pki.ca().display().to_string(),
        ],
    )
    .await;
    assert!(
        still.contains("CN = second") && still.contains("Verify return code: 0 (ok)"),
        "new connections still get the last good certificate:\n{still}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_missing_or_mismatched_certificate_file() {
    let pki = TestPki::new();
    let a = pki.leaf("a", "a", &["localhost"]);
    let b = pki.leaf("b", "b", &["localhost"]);
    let not_pem = pki.dir.join("not-pem.pem");
    std::fs::write(&not_pem, "this is no certificate\n").expect("write");
    let origin = Origin::refused();
    let cases = [
        (
            format!(
                "cert = \"{}/missing.pem\", key = \"{}\"",
                pki.dir.display(),
                a.key.display()
            ),
            "missing.pem",
            "cannot read certificate",
        ),
        (
            format!(
                "cert = \"{}\", key = \"{}\"",
                a.cert.display(),
                b.key.display()
            ),
            "b.key",
            "the key does not belong to the certificate",
        ),
        (
            format!(
                "cert = \"{}\", key = \"{}/missing.key\"",
                a.cert.display(),
                pki.dir.display()
            ),
            "missing.key",
            "cannot read private key",
        ),
        (
            format!(
                "cert = \"{}\", key = \"{}\"",
                not_pem.display(),
                a.key.display()
            ),
            "not-pem.pem",
            "no certificate in it",
        ),
        (
            // A certificate where the key should be.
            format!(
                "cert = \"{}\", key = \"{}\"",
                a.cert.display(),
                a.cert.display()
            ),
            "a.pem",
            "no PEM private key in it",
        ),
    ];
    for (tls, file, words) in cases {
        let path = write_config(&ConfigToml::echo(origin).tls(&tls).build());
        let out = run_to_exit(
            &["check", "--config", path.to_str().expect("utf-8")],
            Duration::from_secs(10),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(file) && stderr.contains(words) && stderr.contains("listener.tls"),
            "{stderr}"
        );
    }
}

/// 2,000 connections that send half a ClientHello and stop: a real client is still served at
/// once, and every stalled one is closed after the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_neither_block_clients_nor_outlive_the_handshake_timeout() {
    const STALLED: usize = 2000;
    const HANDSHAKE_MS: u64 = 3000;
    ringway_e2e::raise_fd_limit(4 * STALLED as u64);
    let pki = TestPki::new();
    let leaf = pki.leaf("edge", "edge", &["localhost"]);
    let origin = Origin::echo().await;
    let server = Ringway::start(
        &ConfigToml::echo(origin.addr)
            .workers(2)
            .timeout("handshake_ms", HANDSHAKE_MS)
            .tls(&leaf.toml())
            .build(),
    );
    let started = Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    for i in 0..STALLED {
        let mut s = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap_or_else(|e| panic!("stalled connection {i}: {e}"));
        // A handshake record header announcing 512 bytes, and 10 of them.
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
            .await
            .expect("send half a ClientHello");
        stalled.push(s);
    }
    let opened = started.elapsed();
    let out = python(vec![
        "echo".into(),
        format!("wss://localhost:{}/echo", server.port),
        pki.ca().display().to_string(),
    ])
    .await;
    assert!(
        out.status.success(),
        "a real client beside {STALLED} stalled handshakes: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every stalled connection is ended by the server after the handshake timeout.
    let deadline = started + opened + Duration::from_millis(HANDSHAKE_MS) + Duration::from_secs(10);
    for (i, s) in stalled.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = [0u8; 64];
        let ended = tokio::time::timeout(left, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // an alert or a 408 over nothing: keep reading to the end
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "stalled connection {i} still open {:?} after the start",
            started.elapsed()
        );
    }
}
