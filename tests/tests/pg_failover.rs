//! An origin pool of two real PostgreSQL servers, one stopped and started again under load:
//! psql sessions (each a new connection, through `ringway access` and a pool route with
//! PostgreSQL health checks) keep being served by the standby while the primary is down, with
//! no error but for a session the stop itself ended, and go back to the primary once it is up
//! and has passed its checks.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_e2e::postgres::{Postgres, PASSWORD, USER};
use ringway_e2e::server::{run_command, Ringway};

/// One psql session through `port`: the answering server's port, or the error.
fn server_port(port: u16) -> Result<u16, String> {
    let mut cmd = Command::new("psql");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER])
        .args([
            "-d",
            "postgres",
            "-At",
            "-c",
            "SELECT current_setting('port')",
        ])
        .env("PGPASSWORD", PASSWORD)
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "10");
    let out = run_command(cmd, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match (out.status.success(), text.parse()) {
        (true, Ok(p)) => Ok(p),
        _ => Err(format!("{text} {}", String::from_utf8_lossy(&out.stderr))),
    }
}

/// A session: when it started and ended, and what it got.
type Session = (Instant, Instant, Result<u16, String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_fails_over_while_postgresql_is_stopped_and_returns_when_it_starts() {
    let (primary, standby) = tokio::task::spawn_blocking(|| (Postgres::start(), Postgres::start()))
        .await
        .expect("clusters");
    let config = format!(
        "workers = 2\n[[listener]]\naddr = \"127.0.0.1:0\"\n[[route]]\npath = \"/db\"\n\
         origins = [{{ addr = \"127.0.0.1:{}\" }}, {{ addr = \"127.0.0.1:{}\", backup = true }}]\n\
         health_check = \"postgres\"\nhealth_interval_ms = 200\nhealth_timeout_ms = 200\n",
        primary.port, standby.port
    );
    let edge = Ringway::start(&config);
    let access = Ringway::start_access(&["--url", &edge.url("/db")]);
    let port = access.port;
    let (p1, p2) = (primary.port, standby.port);
    let result = tokio::task::spawn_blocking(move || {
        assert_eq!(server_port(port), Ok(p1), "the primary first");
        // Two clients in a loop, each session a new connection and a new tunnel.
        let stop = Arc::new(AtomicBool::new(false));
        let load: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut sessions: Vec<Session> = Vec::new();
                    while !stop.load(Ordering::Relaxed) && sessions.len() < 2000 {
                        let t = Instant::now();
                        let r = server_port(port);
                        sessions.push((t, Instant::now(), r));
                    }
                    sessions
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let stopping = Instant::now();
        primary.stop();
        let stopped = Instant::now();
        std::thread::sleep(Duration::from_millis(1500));
        primary.start_again();
        let started = Instant::now();
        // Back to the primary once it passes its checks (and any ejection ran out).
        let deadline = started + Duration::from_secs(20);
        let mut back = None;
        while back.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            if server_port(port) == Ok(p1) {
                back = Some(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let sessions: Vec<Session> = load.into_iter().flat_map(|h| h.join().unwrap()).collect();
        (primary, sessions, stopping, stopped, started, back)
    })
    .await
    .expect("load thread");
    let (primary, sessions, stopping, stopped, started, back) = result;
    let back = back.unwrap_or_else(|| {
        panic!(
            "the primary is back in rotation within 20 s of its start: {}",
            edge.log()
        )
    });
    // Errors only for sessions the stop itself cut (begun before the server was down).
    let errors: Vec<&Session> = sessions.iter().filter(|s| s.2.is_err()).collect();
    assert!(
        errors.iter().all(|s| s.0 < stopped),
        "a session begun after the primary was down failed: {errors:?}"
    );
    assert!(errors.len() <= 2, "at most the two in flight: {errors:?}");
    let down: Vec<&Session> = sessions
        .iter()
        .filter(|s| s.0 > stopped && s.1 < started)
        .collect();
    assert!(
        down.len() >= 5,
        "load went on while it was down: {}",
        down.len()
    );
    assert!(
        down.iter().all(|s| s.2 == Ok(p2)),
        "the standby served every session while the primary was down: {down:?}"
    );
    assert!(
        sessions.iter().any(|s| s.0 < stopping && s.2 == Ok(p1)),
        "the primary served before its stop"
    );
    let log = edge.log();
    assert!(
        log.contains("fails its health checks") || log.contains("origin ejected"),
        "the primary's fall is logged: {log}"
    );
    eprintln!(
        "{} sessions, {} errors (cut by the stop), {} served by the standby while the primary \
         was down; primary back {back:?} after its start",
        sessions.len(),
        errors.len(),
        down.len()
    );
    drop(primary);
}
