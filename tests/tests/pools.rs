//! Origin pools (`[[route]] origins = [...]`): failover to a standby while the primary refuses,
//! with no client-visible error and the primary's ejection logged once per worker; least
//! connections and power of two choices spread held tunnels; past the panic threshold a
//! recovered origin serves at once although its ejection has not run out; and the config
//! refuses what cannot work, naming the key and line. Limits: past an origin's
//! `max_connections` or a route's `max_tunnels`, new tunnels get 503 with Retry-After before
//! any origin connect, and no open tunnel is cut.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use ringway_e2e::attack::CountingOrigin;
use ringway_e2e::origin::{Origin, Staller, Unanswering, SSL_REQUEST};
use ringway_e2e::server::{refused_config, Ringway};
use ringway_e2e::ws::{connect, read_bytes, refusal_status, try_connect};
use ringway_e2e::STEP;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

fn pool_config(workers: u32, policy: &str, origins: &[(SocketAddr, bool)]) -> String {
    let list: Vec<String> = origins
        .iter()
        .map(|(a, backup)| match backup {
            true => format!("{{ addr = \"{a}\", backup = true }}"),
            false => format!("{{ addr = \"{a}\" }}"),
        })
        .collect();
    format!(
        "workers = {workers}\n[[listener]]\naddr = \"127.0.0.1:0\"\n[[route]]\npath = \"/db\"\npolicy = \"{policy}\"\norigins = [{}]\n",
        list.join(", ")
    )
}

/// Opens a tunnel to `/db` and returns it with the name its origin greeted it with.
async fn greeted(server: &Ringway, len: usize) -> (ringway_e2e::ws::Client, String) {
    let mut ws = connect(&server.url("/db")).await;
    let name = read_bytes(&mut ws, len, STEP).await;
    (ws, String::from_utf8(name).expect("a name"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_moves_new_tunnels_to_the_standby_while_the_primary_refuses() {
    let primary = Origin::refused();
    let standby = Origin::greeting("standby").await;
    let server = Ringway::start(&pool_config(
        2,
        "failover",
        &[(primary, false), (standby.addr, true)],
    ));
    for _ in 0..40 {
        let (_ws, name) = greeted(&server, 7).await;
        assert_eq!(name, "standby", "no client sees the primary's refusal");
    }
    let log = server.log();
    let ejections = log
        .lines()
        .filter(|l| l.contains("origin ejected") && l.contains(&primary.to_string()))
        .count();
    assert!(
        (1..=2).contains(&ejections),
        "ejected once per worker that saw it fail, with the evidence: {log}"
    );
    assert!(
        log.contains("3 connect failures in a row") && log.contains("Connection refused"),
        "{log}"
    );
    // ringctl stats: per origin, its state on the workers, connects and failures.
    let out = server.ringctl(&["stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let row = |addr: SocketAddr| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(&addr.to_string()))
            .unwrap_or_else(|| panic!("no row for {addr}: {text}"));
        line.split_whitespace().map(str::to_string).collect()
    };
    let p = row(primary);
    assert!(p[1].starts_with("ejected"), "{text}");
    let failed: u64 = p[5].parse().unwrap();
    assert!((3..=6).contains(&failed), "{text}");
    let s = row(standby.addr);
    assert_eq!((s[1].as_str(), s[4].as_str()), ("healthy", "40"), "{text}");
    // A table without the pool: its origins leave the figures (no stale ejected origin for an
    // alert to fire on).
    let file = ringway_e2e::server::temp_path("toml");
    let table = format!(
        "[[route]]\npath = \"/other\"\norigin = \"{}\"\n",
        standby.addr
    );
    std::fs::write(&file, table).unwrap();
    let out = server.ringctl(&["routes", "apply", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = connect(&server.url("/other")).await;
    let out = server.ringctl(&["stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(&primary.to_string()), "{text}");
    let _ = std::fs::remove_file(file);
}

/// Warm connections never take the descriptors tunnels need: under an open-files limit of 400,
/// `warm_connections = 1000` is capped (a tenth of the worker's share, logged once), and
/// tunnels on the pooled route and on another route are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_connections_are_capped_by_the_open_files_limit() {
    let origin = CountingOrigin::echo().await;
    let config = format!(
        "workers = 1\n[[listener]]\naddr = \"127.0.0.1:0\"\n[[route]]\npath = \"/db\"\n\
         origins = [{{ addr = \"{0}\" }}]\nwarm_connections = 1000\n\
         [[route]]\npath = \"/plain\"\norigin = \"{0}\"\n",
        origin.addr
    );
    let server = Ringway::start_wrapped(&config, &["prlimit", "--nofile=400:400", "--"]);
    server
        .await_log_line(&["warm origin connections capped", "cap=40"], STEP)
        .await
        .unwrap_or_else(|| panic!("the cap is logged: {}", server.log()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        origin.accepted() <= 40,
        "{} warm connections",
        origin.accepted()
    );
    let mut open = Vec::new();
    for path in ["/db", "/plain"].iter().cycle().take(40) {
        let mut ws = connect(&server.url(path)).await;
        ws.send(Message::binary(b"ok".to_vec())).await.unwrap();
        assert_eq!(read_bytes(&mut ws, 2, STEP).await, b"ok");
        open.push(ws);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_and_two_choices_spread_held_tunnels() {
    let (a, b, c) = (
        Origin::greeting("a").await,
        Origin::greeting("b").await,
        Origin::greeting("c").await,
    );
    let server = Ringway::start(&pool_config(
        1,
        "least-connections",
        &[(a.addr, false), (b.addr, false)],
    ));
    let mut held = Vec::new();
    let mut count = std::collections::HashMap::new();
    for _ in 0..20 {
        let (ws, name) = greeted(&server, 1).await;
        *count.entry(name).or_insert(0) += 1;
        held.push(ws);
    }
    assert_eq!((count["a"], count["b"]), (10, 10), "{count:?}");
    drop(held);
    drop(server);

    let server = Ringway::start(&pool_config(
        1,
        "power-of-two-choices",
        &[(a.addr, false), (b.addr, false), (c.addr, false)],
    ));
    let mut held = Vec::new();
    let mut count = std::collections::HashMap::new();
    for _ in 0..30 {
        let (ws, name) = greeted(&server, 1).await;
        *count.entry(name).or_insert(0) += 1;
        held.push(ws);
    }
    for name in ["a", "b", "c"] {
        let n = count.get(name).copied().unwrap_or(0);
        assert!(
            (7..=13).contains(&n),
            "two choices keep the load even: {count:?}"
        );
    }
}

/// Both origins refuse: every tunnel gets 502 (each tried both) and both are ejected, which is
/// past the 50 % panic threshold, so health is ignored: once one comes back, the next tunnel
/// reaches it at once, although its ejection (5 s) has not run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_panic_threshold_a_recovered_origin_serves_at_once() {
    let (one, two) = (Origin::refused(), Origin::refused());
    let server = Ringway::start(&pool_config(1, "failover", &[(one, false), (two, false)]));
    let start = Instant::now();
    for _ in 0..4 {
        assert_eq!(refusal_status(&server.url("/db")).await, 502);
    }
    let log = server.log();
    assert_eq!(log.matches("origin ejected").count(), 2, "{log}");
    let _back = Origin::greeting_at("two", two).await;
    let (_ws, name) = greeted(&server, 3).await;
    assert_eq!(name, "two");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5), // a first ejection's length
        "served before any ejection ran out"
    );
}

/// The 503 of a refused upgrade, with its Retry-After.
async fn refused_with_retry_after(url: &str) -> (u16, Option<String>) {
    match try_connect(url, &[]).await {
        Ok((_, resp)) => panic!("expected a refusal, got {}", resp.status()),
        Err(WsError::Http(resp)) => (
            resp.status().as_u16(),
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        ),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cap_gives_503_before_any_connect_and_cuts_no_open_tunnel() {
    let origin = CountingOrigin::echo().await;
    let other = CountingOrigin::echo().await;
    let config = format!(
        "workers = 1\n[[listener]]\naddr = \"127.0.0.1:0\"\n\
         [[route]]\npath = \"/db\"\norigins = [{{ addr = \"{}\", max_connections = 3 }}]\n\
         [[route]]\npath = \"/capped\"\norigin = \"{}\"\nmax_tunnels = 2\n",
        origin.addr, other.addr
    );
    let server = Ringway::start(&config);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect(&server.url("/db")).await);
    }
    let (status, after) = refused_with_retry_after(&server.url("/db")).await;
    assert_eq!((status, after.as_deref()), (503, Some("1")));
    assert_eq!(
        origin.accepted(),
        3,
        "the refused tunnel never reached the origin"
    );
    for ws in &mut open {
        ws.send(Message::binary(b"still here".to_vec()))
            .await
            .unwrap();
        assert_eq!(
            read_bytes(ws, 10, STEP).await,
            b"still here",
            "no open tunnel is cut"
        );
    }
    let mut first = open.remove(0);
    let _ = first.close(None).await;
    drop(first);
    let deadline = Instant::now() + STEP;
    let mut again = None;
    while again.is_none() && Instant::now() < deadline {
        match try_connect(&server.url("/db"), &[]).await {
            Ok((ws, _)) => again = Some(ws),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    assert!(
        again.is_some(),
        "a tunnel that ended makes room for the next"
    );

    let a = connect(&server.url("/capped")).await;
    let b = connect(&server.url("/capped")).await;
    let (status, after) = refused_with_retry_after(&server.url("/capped")).await;
    assert_eq!((status, after.as_deref()), (503, Some("1")));
    assert_eq!(other.accepted(), 2);
    drop((a, b));
    let out = server.ringctl(&["stats", "--route", "/capped"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("refused: 503 1"), "{text}");
}

/// One tunnel through `/db`: how long its 101 took, and its origin's name or the refusal's
/// status.
async fn timed(server: &Ringway) -> (Duration, Result<String, u16>) {
    let start = Instant::now();
    match try_connect(&server.url("/db"), &[]).await {
        Ok((mut ws, _)) => {
            let took = start.elapsed();
            let name = read_bytes(&mut ws, 1, STEP).await;
            (took, Ok(String::from_utf8(name).expect("a name")))
        }
        Err(WsError::Http(resp)) => (start.elapsed(), Err(resp.status().as_u16())),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

/// `n` tunnels, six at a time.
async fn batch(server: &std::sync::Arc<Ringway>, n: usize) -> Vec<(Duration, Result<String, u16>)> {
    let mut out = Vec::new();
    for _ in 0..n.div_ceil(6) {
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let s = server.clone();
                tokio::spawn(async move { timed(&s).await })
            })
            .collect();
        for t in tasks {
            out.push(t.await.expect("tunnel task"));
        }
    }
    out
}

/// A primary whose path stalls 3 connects in 10 (its SYNs dropped; it never refuses), in a
/// pool of three. Without racing and ejection (`race_after_ms = 0`, and
/// `max_ejected_percent = 0`, which turns health off), a stalled tunnel waits out the connect
/// timeout and gets 504. With them, no client sees an error, the slowest 101 is bounded by the
/// race delay, and the primary is ejected as a latency outlier while its TCP health checks pass
/// (it answers most connects); once its path heals it is back in rotation after the ejection
/// and stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_staller_is_raced_and_ejected_as_a_latency_outlier_then_returns() {
    let mut staller = Staller::start("S", 3).await;
    let (a, b) = (Origin::greeting("A").await, Origin::greeting("B").await);
    let config = |extra: &str| {
        format!(
            "workers = 1\n[timeouts]\nconnect_ms = 1000\n[[listener]]\naddr = \"127.0.0.1:0\"\n\
             [[route]]\npath = \"/db\"\norigins = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}, \
             {{ addr = \"{}\" }}]\n{extra}\n",
            staller.addr, a.addr, b.addr
        )
    };
    let off = std::sync::Arc::new(Ringway::start(&config(
        "race_after_ms = 0\nmax_ejected_percent = 0",
    )));
    let runs = batch(&off, 60).await;
    let errors: Vec<u16> = runs.iter().filter_map(|r| r.1.clone().err()).collect();
    assert!(
        errors.len() >= 5 && errors.iter().all(|&s| s == 504),
        "without racing, stalled connects time out: {errors:?}"
    );
    drop(off);

    // With TCP health checks, which the staller passes (7 connects in 10 complete).
    let on = std::sync::Arc::new(Ringway::start(&config(
        "health_check = \"tcp\"\nhealth_interval_ms = 1000\nhealth_timeout_ms = 500",
    )));
    let mut runs = Vec::new();
    let staller_addr = staller.addr.to_string();
    for _ in 0..50 {
        runs.extend(batch(&on, 6).await);
        if on.log().contains("connects took over") {
            break;
        }
    }
    let log = on.log();
    let ejected = log
        .lines()
        .find(|l| l.contains("origin ejected") && l.contains(&staller_addr))
        .unwrap_or_else(|| panic!("the staller is ejected after {} tunnels: {log}", runs.len()));
    assert!(ejected.contains("connects took over"), "{ejected}");
    let before = &log[..log.find(ejected).unwrap()];
    assert!(
        !before.contains("fails its health checks"),
        "ejected by its latency while its health checks pass: {log}"
    );
    let errors = runs.iter().filter(|r| r.1.is_err()).count();
    let mut times: Vec<Duration> = runs.iter().map(|r| r.0).collect();
    times.sort();
    assert_eq!(errors, 0, "no client-visible error with racing");
    assert!(
        times[times.len() - 1] < Duration::from_millis(600),
        "racing bounds the slowest 101 (connect timeout 1 s): {:?}",
        &times[times.len().saturating_sub(10)..]
    );
    let after = batch(&on, 24).await;
    assert!(
        after.iter().all(|r| r.1.as_deref() == Ok("A")),
        "the ejected primary gets no tunnel: {after:?}"
    );

    staller.recover();
    let healed = Instant::now();
    let mut back = false;
    while !back && healed.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        back = timed(&on).await.1.as_deref() == Ok("S");
    }
    assert!(back, "the healed primary is back after its ejection");
    let later = batch(&on, 60).await;
    assert!(later.iter().all(|r| r.1.as_deref() == Ok("S")), "{later:?}");
    let ejections = on
        .log()
        .lines()
        .filter(|l| l.contains("origin ejected") && l.contains(&staller_addr))
        .count();
    assert_eq!(ejections, 1, "a healed origin stays in");
}

/// Active health checks find origins no tunnel has tried: with `health_check = "postgres"`, an
/// origin that answers the SSLRequest with something other than S or N (not PostgreSQL, or a
/// port taken by another service), one whose connects never complete, one that accepts and
/// never answers (a hung server whose TCP stack still works: connects alone would pass it) and
/// one that answers slower than the check's timeout are out of rotation before the first tunnel, each logged with its evidence; tunnels go straight to the one that answers
/// `N`, with no failed connect and no race on the way. `ringctl stats` shows who is out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_out_origins_before_any_tunnel_tries_them() {
    let wrong = Origin::greeting("HTTP/1.1 400 Bad Request\r\n\r\n").await;
    let silent = Unanswering::start().await;
    let mute = Origin::mute().await;
    let slow = Origin::slow_ssl_refusing(Duration::from_millis(400), b'N').await;
    let pg = Origin::ssl_refusing(b'N').await;
    let list: Vec<String> = [wrong.addr, silent.addr, mute.addr, slow.addr, pg.addr]
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    let config = format!(
        "workers = 2\n[[listener]]\naddr = \"127.0.0.1:0\"\n[[route]]\npath = \"/db\"\n\
         origins = [{}]\nmax_ejected_percent = 100\nhealth_check = \"postgres\"\n\
         health_interval_ms = 100\nhealth_timeout_ms = 100\nwarm_connections = 2\n",
        list.join(", ")
    );
    let server = Ringway::start(&config);
    for (addr, why) in [
        (wrong.addr, "not S or N"),
        (silent.addr, "no answer within 100 ms"),
        (mute.addr, "no answer within 100 ms"),
        (slow.addr, "no answer within 100 ms"),
    ] {
        let line = server
            .await_log_line(&["fails its health checks", &addr.to_string()], STEP)
            .await
            .unwrap_or_else(|| panic!("{addr} is checked out: {}", server.log()));
        assert!(line.contains(why), "{line}");
    }
    // Both workers have all four out (each checks on its own).
    let deadline = Instant::now() + STEP;
    while server.log().matches("fails its health checks").count() < 8 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..20 {
        let start = Instant::now();
        let mut ws = connect(&server.url("/db")).await;
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "no wait on a bad origin"
        );
        ws.send(Message::binary(SSL_REQUEST.to_vec()))
            .await
            .unwrap();
        assert_eq!(
            read_bytes(&mut ws, 1, STEP).await,
            b"N",
            "reached the PostgreSQL one"
        );
    }
    // Per origin: its state, and warm connections (one per worker) only to the origin in
    // rotation: those to the one that answered wrong are dropped, those connecting to the
    // silent one given up (on the workers' next tick).
    let expected = |text: &str| {
        [
            (wrong.addr, "ejected"),
            (silent.addr, "ejected"),
            (mute.addr, "ejected"),
            (slow.addr, "ejected"),
            (pg.addr, "healthy"),
        ]
        .iter()
        .all(|(addr, state)| {
            text.lines()
                .find(|l| l.starts_with(&addr.to_string()))
                .is_some_and(|row| {
                    let cols: Vec<&str> = row.split_whitespace().collect();
                    let warm = cols[cols.len() - 1];
                    cols[1] == *state && (warm == "0/0") == (*addr != pg.addr)
                })
        })
    };
    let deadline = Instant::now() + STEP;
    let mut text = String::new();
    while !expected(&text) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = String::from_utf8_lossy(&server.ringctl(&["stats"]).stdout).to_string();
    }
    assert!(expected(&text), "{text}");
    assert!(
        !server.log().contains("Connection refused") && !server.log().contains("racing"),
        "no tunnel tried a bad origin"
    );
}

/// A tunnel carried by the connect that won a race counts once against its origin: three held
/// raced tunnels fill an origin's `max_connections = 3` (the fourth has nowhere to go but the
/// silent primary, and gets 504 at the connect timeout), and `ringctl stats` shows them open
/// there and none on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raced_tunnel_counts_once_against_its_origin() {
    let silent = Unanswering::start().await;
    let b = Origin::greeting("B").await;
    let config = format!(
        "workers = 1\n[timeouts]\nconnect_ms = 400\n[[listener]]\naddr = \"127.0.0.1:0\"\n\
         [[route]]\npath = \"/db\"\norigins = [{{ addr = \"{}\" }}, \
         {{ addr = \"{}\", max_connections = 3 }}]\nrace_after_ms = 5\nmax_ejected_percent = 0\n",
        silent.addr, b.addr
    );
    let server = Ringway::start(&config);
    let mut held = Vec::new();
    for _ in 0..3 {
        let (ws, name) = greeted(&server, 1).await;
        assert_eq!(name, "B");
        held.push(ws);
    }
    assert_eq!(refusal_status(&server.url("/db")).await, 504);
    let out = server.ringctl(&["stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let open = |addr: SocketAddr| {
        let row = text
            .lines()
            .find(|l| l.starts_with(&addr.to_string()))
            .unwrap_or_else(|| panic!("no row for {addr}: {text}"));
        row.split_whitespace().nth(2).map(str::to_string)
    };
    assert_eq!(open(b.addr).as_deref(), Some("3"), "{text}");
    assert_eq!(open(silent.addr).as_deref(), Some("0"), "{text}");
    drop(held);
}

/// Warm origin connections: with `warm_connections = 2` (one worker) two connections to the
/// origin are open before any tunnel; a tunnel takes one (`ringctl stats` counts it used) and
/// the slot is refilled; every `warm_max_age_ms` they are replaced (the origin sees them end
/// and new ones arrive), and a tunnel made of a warm connection is not cut by a refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_connections_are_used_and_refreshed() {
    let origin = CountingOrigin::echo().await;
    let config = format!(
        "workers = 1\n[[listener]]\naddr = \"127.0.0.1:0\"\n[[route]]\npath = \"/db\"\n\
         origins = [{{ addr = \"{}\" }}]\nwarm_connections = 2\nwarm_max_age_ms = 400\n",
        origin.addr
    );
    let server = Ringway::start(&config);
    let deadline = Instant::now() + STEP;
    while origin.accepted() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        origin.accepted(),
        2,
        "two warm connections before any tunnel"
    );
    let mut ws = connect(&server.url("/db")).await;
    ws.send(Message::binary(b"warm".to_vec())).await.unwrap();
    assert_eq!(read_bytes(&mut ws, 4, STEP).await, b"warm");
    let stats = |server: &Ringway| {
        let out = server.ringctl(&["stats"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let row = text
            .lines()
            .find(|l| l.starts_with(&origin.addr.to_string()))
            .unwrap_or_else(|| panic!("no row: {text}"))
            .to_string();
        (row.split_whitespace().last().unwrap().to_string(), text)
    };
    let (warm, text) = stats(&server);
    assert!(
        warm.ends_with("/1"),
        "the tunnel used a warm connection: {text}"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        origin.accepted() >= 2 + 1 + 4 && origin.ended() >= 4,
        "refreshed every 400 ms: {} accepted, {} ended",
        origin.accepted(),
        origin.ended()
    );
    let (warm, text) = stats(&server);
    assert!(warm.starts_with("2/"), "{text}");
    ws.send(Message::binary(b"still".to_vec())).await.unwrap();
    assert_eq!(
        read_bytes(&mut ws, 5, STEP).await,
        b"still",
        "not cut by a refresh"
    );
}

/// An origin that resets each tunnel before its first byte (a backend that dies as soon as it is
/// asked anything) while its connects succeed: three such tunnels eject it (passive health sees
/// more than connects), and from then on tunnels go to its peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_resets_before_its_first_byte_is_ejected() {
    let resetter = Origin::reset_after(8).await;
    let pg = Origin::ssl_refusing(b'N').await;
    let server = Ringway::start(&pool_config(
        1,
        "failover",
        &[(resetter.addr, false), (pg.addr, false)],
    ));
    let mut failed = 0;
    for _ in 0..12 {
        let mut ws = connect(&server.url("/db")).await;
        ws.send(Message::binary(SSL_REQUEST.to_vec()))
            .await
            .unwrap();
        let answer = tokio::time::timeout(STEP, futures_util::StreamExt::next(&mut ws)).await;
        match answer {
            Ok(Some(Ok(Message::Binary(b)))) if b.as_ref() == b"N" => {}
            _ => failed += 1,
        }
    }
    assert_eq!(
        failed,
        3,
        "the tunnels before its ejection: {}",
        server.log()
    );
    let line = server
        .await_log_line(&["origin ejected", &resetter.addr.to_string()], STEP)
        .await
        .expect("ejected");
    assert!(line.contains("before its first byte"), "{line}");
}

/// Two origins whose connects hang at the head of a pool of three: each race delay gives the
/// racing connect up for the next origin, so every tunnel reaches the third within a few race
/// delays instead of getting 504 at the connect timeout (before either is ejected, and after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hung_origins_cost_two_race_delays_not_the_connect_timeout() {
    let (h0, h1) = (Unanswering::start().await, Unanswering::start().await);
    let a = Origin::greeting("A").await;
    let config = format!(
        "workers = 1\n[timeouts]\nconnect_ms = 3000\n[[listener]]\naddr = \"127.0.0.1:0\"\n\
         [[route]]\npath = \"/db\"\norigins = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}, \
         {{ addr = \"{}\" }}]\nrace_after_ms = 20\n",
        h0.addr, h1.addr, a.addr
    );
    let server = std::sync::Arc::new(Ringway::start(&config));
    let runs = batch(&server, 12).await;
    let slowest = runs.iter().map(|r| r.0).max().unwrap();
    assert!(
        runs.iter().all(|r| r.1.as_deref() == Ok("A")),
        "every tunnel reaches the live origin: {runs:?}"
    );
    assert!(
        slowest < Duration::from_millis(1000),
        "within a few race delays, not the 3 s connect timeout: {slowest:?}"
    );
}

#[test]
fn the_config_refuses_pools_that_cannot_work() {
    for (route, key, want) in [
        (
            "origin = \"127.0.0.1:1\"\norigins = [{ addr = \"127.0.0.1:2\" }]",
            "route.origin",
            "not both",
        ),
        ("", "route.origin", "a route needs `origin"),
        (
            "origins = [{ addr = \"127.0.0.1:1\" }]\npolicy = \"random\"",
            "route.policy",
            "\"random\" is not a policy",
        ),
        (
            "origins = [{ addr = \"127.0.0.1:1\", backup = true }]",
            "route.origins",
            "every origin is a backup",
        ),
        (
            "origins = [{ addr = \"127.0.0.1:1\" }, { addr = \"127.0.0.1:1\" }]",
            "route.origins",
            "listed twice",
        ),
        (
            "origin = \"127.0.0.1:1\"\npolicy = \"failover\"",
            "route.policy",
            "only a route with `origins`",
        ),
        (
            "origins = [{ addr = \"127.0.0.1:1\" }]\nmax_ejected_percent = 101",
            "route.max_ejected_percent",
            "at most 100",
        ),
        (
            "origin = \"127.0.0.1:1\"\nrace_after_ms = 5",
            "route.race_after_ms",
            "only a route with `origins`",
        ),
        (
            "origins = [{ addr = \"127.0.0.1:1\" }]\nhealth_check = \"http\"",
            "route.health_check",
            "\"http\" is not a check",
        ),
        (
            "origins = [{ addr = \"127.0.0.1:1\" }]\nhealth_interval_ms = 100",
            "route.health_interval_ms",
            "needs `health_check",
        ),
        (
            "origins = [{ addr = \"127.0.0.1:1\" }]\nhealth_check = \"tcp\"\nhealth_timeout_ms = 9000",
            "route.health_timeout_ms",
            "longer than the interval",
        ),
        (
            "origins = [{ addr = \"127.0.0.1:1\" }]\nhealth_check = \"tcp\"\nhealth_interval_ms = 50",
            "route.health_interval_ms",
            "from 100 to",
        ),
        (
            "origins = [{ addr = \"127.0.0.1:1\" }]\nwarm_max_age_ms = 10",
            "route.warm_max_age_ms",
            "at least 100",
        ),
        (
            "origin = \"127.0.0.1:1\"\nwarm_connections = 2",
            "route.warm_connections",
            "only a route with `origins`",
        ),
        (
            "origin = \"127.0.0.1:1\"\nmax_tunnels = 0",
            "route.max_tunnels",
            "at least 1",
        ),
        (
            "origins = [{ addr = \"127.0.0.1:1\", max_connections = 0 }]",
            "route.origins",
            "a limit must be at least 1",
        ),
    ] {
        let err = refused_config(&format!(
            "[[listener]]\naddr = \"127.0.0.1:0\"\n[[route]]\npath = \"/db\"\n{route}\n"
        ));
        assert!(
            err.contains(&format!("`{key}`")) && err.contains("line ") && err.contains(want),
            "{route}: {err}"
        );
    }
}
