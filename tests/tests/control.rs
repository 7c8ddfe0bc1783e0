//! `ringctl` against a running ringway: routes listed, added, removed and applied end to end
//! (a refused change changes nothing), changes while 200 tunnels move data (none dropped, no
//! byte corrupted, 100 changes a second for 10 s), every worker taking each change, the state
//! file across a restart, SIGHUP applying the config file's routes, protocol errors answered
//! while serving goes on, and who may use the socket.
//!
//! Origins greet with their name (`Origin::greeting`), so a tunnel's first bytes tell which
//! route table routed it. Every wait is bounded.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use rand::RngCore;
use ringctl::{Client, Reply, Request, RouteSpec};
use ringway_e2e::config::ConfigToml;
use ringway_e2e::origin::Origin;
use ringway_e2e::server::{temp_path, Ringway};
use ringway_e2e::ws::{self, read_bytes};
use ringway_e2e::STEP;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ringctl ARGS` succeeded; its stdout.
fn ctl_ok(server: &Ringway, args: &[&str]) -> String {
    let out = server.ringctl(args);
    assert!(
        out.status.success(),
        "ringctl {args:?} failed ({}): {}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `ringctl ARGS` was refused (exit 1); its stderr.
fn ctl_refused(server: &Ringway, args: &[&str]) -> String {
    let out: Output = server.ringctl(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "ringctl {args:?} should be refused: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// The greeting (8 bytes) of a fresh tunnel to `url`.
async fn greeting(url: &str) -> String {
    let mut c = ws::connect(url).await;
    let name = read_bytes(&mut c, 8, STEP).await;
    let _ = c.close(None).await;
    text(&name)
}

fn route_file(routes: &[(&str, std::net::SocketAddr)]) -> std::path::PathBuf {
    let mut s = String::from("# routes for ringctl routes apply\n");
    for (path, origin) in routes {
        s.push_str(&format!(
            "[[route]]\npath = \"{path}\"\norigin = \"{origin}\"\n"
        ));
    }
    let p = temp_path("toml");
    std::fs::write(&p, s).expect("write route file");
    p
}

fn spec(path: &str, origin: std::net::SocketAddr) -> RouteSpec {
    RouteSpec {
        name: None,
        host: None,
        sni: None,
        path: path.into(),
        origin: origin.to_string(),
        idle_timeout_ms: None,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_listed_added_removed_and_applied() {
    let a = Origin::greeting("origin-A").await;
    let b = Origin::greeting("origin-B").await;
    let server = Ringway::start(&ConfigToml::new().workers(2).route("/a", a.addr).build());

    let list = ctl_ok(&server, &["routes", "list"]);
    assert!(list.contains("version 1: 1 route(s)"), "{list}");
    assert!(
        list.contains("path = \"/a\"") && list.contains(&format!("origin = \"{}\"", a.addr)),
        "the route as written in a config file: {list}"
    );
    assert_eq!(ws::refusal_status(&server.url("/b")).await, 404);

    let out = ctl_ok(
        &server,
        &[
            "routes",
            "add",
            "--path",
            "/b",
            "--origin",
            &b.addr.to_string(),
        ],
    );
    assert!(out.contains(&format!("+ /b -> {}", b.addr)), "{out}");
    assert!(
        out.contains("applied 1 change(s): route table version 2 on 2 worker(s)"),
        "{out}"
    );
    for _ in 0..8 {
        assert_eq!(greeting(&server.url("/b")).await, "origin-B");
    }

    // A tunnel opened before the change keeps its origin (A greeted it) and keeps working.
    let mut before = ws::connect(&server.url("/a")).await;
    assert_eq!(read_bytes(&mut before, 8, STEP).await, b"origin-A");

    // apply: /a moves to B, /b goes, /c comes. A dry run changes nothing.
    let file = route_file(&[("/a", b.addr), ("/c", a.addr)]);
    let file_arg = file.to_str().expect("utf-8 path");
    let out = ctl_ok(&server, &["routes", "apply", "--dry-run", file_arg]);
    assert!(out.contains(&format!("- /b -> {}", b.addr)), "{out}");
    assert!(
        out.contains(&format!("~ /a -> {}\n  now /a -> {}", a.addr, b.addr)),
        "{out}"
    );
    assert!(out.contains(&format!("+ /c -> {}", a.addr)), "{out}");
    assert!(
        out.contains("dry run: 3 change(s), nothing applied"),
        "{out}"
    );
    assert_eq!(greeting(&server.url("/b")).await, "origin-B");
    let out = ctl_ok(&server, &["routes", "apply", file_arg]);
    assert!(
        out.contains("applied 3 change(s): route table version 3"),
        "{out}"
    );
    assert_eq!(greeting(&server.url("/a")).await, "origin-B");
    assert_eq!(greeting(&server.url("/c")).await, "origin-A");
    assert_eq!(ws::refusal_status(&server.url("/b")).await, 404);
    before
        .send(Message::binary(b"same origin".to_vec()))
        .await
        .unwrap();
    assert_eq!(read_bytes(&mut before, 11, STEP).await, b"same origin");
    drop(before);
    let out = ctl_ok(&server, &["routes", "apply", file_arg]);
    assert!(out.contains("no change (route table version 3)"), "{out}");

    // Refused changes change nothing.
    let err = ctl_refused(&server, &["routes", "remove", "/nope"]);
    assert!(
        err.contains("no route named \"/nope\" (routes: /a, /c)"),
        "{err}"
    );
    let err = ctl_refused(
        &server,
        &[
            "routes",
            "add",
            "--path",
            "/c/",
            "--origin",
            &b.addr.to_string(),
        ],
    );
    assert!(err.contains("route /c/ already exists"), "{err}");
    let err = ctl_refused(
        &server,
        &[
            "routes",
            "add",
            "--path",
            "/d",
            "--origin",
            "no-such-host.invalid:5432",
        ],
    );
    assert!(
        err.contains("`route.origin`") && err.contains("nothing applied"),
        "{err}"
    );
    let err = ctl_refused(
        &server,
        &["routes", "add", "--path", "d", "--origin", "127.0.0.1:1"],
    );
    assert!(err.contains("`route.path`"), "{err}");
    let bad = temp_path("toml");
    std::fs::write(
        &bad,
        format!("[[route]]\npath = \"/x\"\norigin = \"{}\"\n[[route]]\npath = \"/x/\"\norigin = \"{}\"\n", a.addr, b.addr),
    )
    .unwrap();
    let err = ctl_refused(&server, &["routes", "apply", bad.to_str().unwrap()]);
    assert!(
        err.contains("line 5: `route.path`")
            && err.contains("is the same route as path = \"/x\" at line 2")
            && err.contains("nothing applied"),
        "the file's lines: {err}"
    );
    std::fs::write(
        &bad,
        "[[route]]\npath = \"/x\"\norigin = \"127.0.0.1:1\"\nbogus = 1\n",
    )
    .unwrap();
    let err = ctl_refused(&server, &["routes", "apply", bad.to_str().unwrap()]);
    assert!(err.contains("line 4") && err.contains("bogus"), "{err}");
    let list = ctl_ok(&server, &["routes", "list"]);
    assert!(
        list.contains("version 3: 2 route(s)"),
        "unchanged after refusals: {list}"
    );
    assert_eq!(greeting(&server.url("/a")).await, "origin-B");

    let out = ctl_ok(&server, &["routes", "remove", "/c"]);
    assert!(out.contains(&format!("- /c -> {}", a.addr)), "{out}");
    assert_eq!(ws::refusal_status(&server.url("/c")).await, 404);

    let json = ctl_ok(&server, &["--json", "routes", "list"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    assert_eq!(v["reply"], "routes");
    assert_eq!(v["version"], 4);
    assert_eq!(v["routes"][0]["path"], "/a");
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(bad);
}

/// 200 tunnels echo random 4 KiB messages the whole time while the table changes 100 times a
/// second for 10 s; every so often, new tunnels must all reach the origin the last change
/// named, whichever worker takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_under_load_drop_no_tunnel_and_reach_every_worker() {
    const TUNNELS: usize = 200;
    const CHANGES_PER_SEC: u64 = 100;
    const SECONDS: u64 = 10;
    let echo = Origin::echo().await;
    let a = Origin::greeting("origin-A").await;
    let b = Origin::greeting("origin-B").await;
    let server = Ringway::start(
        &ConfigToml::new()
            .workers(2)
            .route("/load", echo.addr)
            .route("/who", a.addr)
            .build(),
    );
    let url = server.url("/load");
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicU64::new(0));
    let mut tunnels = Vec::new();
    for _ in 0..TUNNELS {
        let mut c = ws::connect(&url).await;
        let (stop, moved) = (stop.clone(), moved.clone());
        tunnels.push(tokio::spawn(async move {
            let mut msg = vec![0u8; 4096];
            let mut rounds = 0u64;
            let deadline = Instant::now() + Duration::from_secs(SECONDS * 4);
            while !stop.load(Ordering::Relaxed) {
                assert!(Instant::now() < deadline, "tunnel loop ran past its bound");
                rand::thread_rng().fill_bytes(&mut msg);
                c.send(Message::binary(msg.clone())).await.expect("send");
                let back = read_bytes(&mut c, msg.len(), STEP).await;
                assert!(back == msg, "a tunnel's bytes came back changed");
                moved.fetch_add(msg.len() as u64, Ordering::Relaxed);
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            c.close(None).await.expect("close");
            rounds
        }));
    }
    let mut client =
        Client::connect(server.control_socket()).expect("connect to the control socket");
    let base = vec![spec("/load", echo.addr)];
    let start = Instant::now();
    let mut changes = Vec::new();
    let mut checks = 0;
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(SECONDS) {
        let to_b = n % 2 == 0;
        let mut routes = base.clone();
        routes.push(spec("/who", if to_b { b.addr } else { a.addr }));
        let req = Request::RoutesApply {
            text: ringctl::routes_to_toml(&routes),
            source: "test".into(),
            dry_run: false,
        };
        let reply = tokio::task::block_in_place(|| client.call(&req)).expect("apply");
        let Reply::Applied { apply_us, .. } = reply else {
            panic!("not applied: {reply:?}");
        };
        changes.push(apply_us);
        n += 1;
        if n % 250 == 0 {
            // Every worker serves the change the reply reported: 16 new tunnels (spread over
            // both workers by the kernel) all reach the origin it named.
            let want = if to_b { "origin-B" } else { "origin-A" };
            let mut fresh = Vec::new();
            for _ in 0..16 {
                let mut c = ws::connect(&server.url("/who")).await;
                let name = read_bytes(&mut c, 8, STEP).await;
                assert_eq!(text(&name), want, "after change {n}");
                fresh.push(c);
            }
            // They were taken by both workers (tunnel ids start with the worker's number).
            let listed = tokio::task::block_in_place(|| {
                client.call(&Request::Tunnels {
                    route: Some("/who".into()),
                })
            })
            .expect("tunnels");
            let Reply::Tunnels { tunnels } = listed else {
                panic!("{listed:?}")
            };
            for w in ["0-", "1-"] {
                assert!(
                    tunnels.iter().any(|t| t.id.starts_with(w)),
                    "no new tunnel on worker {w}: {tunnels:?}"
                );
            }
            drop(fresh);
            checks += 1;
        }
        let next = start + Duration::from_micros(n * 1_000_000 / CHANGES_PER_SEC);
        tokio::time::sleep_until(next.into()).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut rounds = 0;
    for t in tunnels {
        rounds += t.await.expect("a tunnel failed while routes changed");
    }
    assert!(
        changes.len() as u64 >= CHANGES_PER_SEC * SECONDS * 8 / 10,
        "only {} changes made",
        changes.len()
    );
    assert!(checks >= 3, "new tunnels checked only {checks} times");
    let mut took = changes.clone();
    took.sort_unstable();
    println!(
        "{} changes; apply (arrival to the last worker's ack) p50 {} µs p99 {} µs max {} µs; \
         {rounds} echo rounds, {} MiB moved by {TUNNELS} tunnels",
        took.len(),
        took[took.len() / 2],
        took[took.len() * 99 / 100],
        took[took.len() - 1],
        moved.load(Ordering::Relaxed) >> 20
    );
    assert!(
        rounds >= TUNNELS as u64 * 10,
        "tunnels barely moved: {rounds} rounds"
    );
    ws::echo_once(&server.url("/load"), b"still serving").await;
}

/// The last applied table is kept in the state file and a restart starts from it; SIGHUP
/// applies the config file's routes again, as `routes apply` would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_file_outlives_a_restart_and_sighup_applies_the_config() {
    let a = Origin::greeting("origin-A").await;
    let b = Origin::greeting("origin-B").await;
    let dir = temp_path("ctl");
    let socket = dir.join("control.sock");
    let env = [("RINGWAY_CONTROL", socket.to_str().expect("utf-8 path"))];
    let config = ConfigToml::new().workers(2).route("/a", a.addr).build();
    let mut server = Ringway::start_with_env(&config, &env);
    ctl_ok(
        &server,
        &[
            "routes",
            "add",
            "--path",
            "/b",
            "--origin",
            &b.addr.to_string(),
        ],
    );
    let state = std::fs::read_to_string(dir.join("routes.toml")).expect("state file written");
    assert!(state.contains("path = \"/b\""), "{state}");
    let status = server.terminate(STEP).await;
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "the socket file is removed at exit");

    let server = Ringway::start_with_env(&config, &env);
    assert_eq!(
        greeting(&server.url("/b")).await,
        "origin-B",
        "routes from the state file"
    );
    let list = ctl_ok(&server, &["routes", "list"]);
    assert!(list.contains("2 route(s)"), "{list}");
    assert!(
        server.log().contains("routes from the state file"),
        "the start says where its routes came from"
    );

    server.signal("HUP");
    let deadline = Instant::now() + STEP;
    while !ctl_ok(&server, &["routes", "list"]).contains("1 route(s)") {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not apply the config's routes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ws::refusal_status(&server.url("/b")).await, 404);
    assert_eq!(greeting(&server.url("/a")).await, "origin-A");
    let state = std::fs::read_to_string(dir.join("routes.toml")).expect("state file");
    assert!(
        !state.contains("path = \"/b\""),
        "the state follows SIGHUP: {state}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// Garbage, another version, an unknown command and an endless line each get an error reply;
/// the connection (but for the endless line) and the tunnels go on being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_error_replies_and_serving_goes_on() {
    let echo = Origin::echo().await;
    let server = Ringway::start(&ConfigToml::echo(echo.addr).build());
    let mut tunnel = ws::connect(&server.url("/echo")).await;
    let stream = UnixStream::connect(server.control_socket()).expect("connect");
    stream.set_read_timeout(Some(STEP)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    let mut ask = |line: &str| -> serde_json::Value {
        w.write_all(line.as_bytes()).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).expect("a reply line");
        serde_json::from_str(&reply).expect("replies are JSON")
    };
    let r = ask("routes list\n");
    assert_eq!(r["reply"], "error");
    assert!(r["error"].as_str().unwrap().contains("not JSON"), "{r}");
    let r = ask("{\"v\":2,\"cmd\":\"routes-list\"}\n");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("unsupported control protocol version 2"),
        "{r}"
    );
    assert_eq!(r["v"], 1, "the reply says which version this side speaks");
    let r = ask("{\"cmd\":\"routes-list\"}\n");
    assert!(
        r["error"].as_str().unwrap().contains("no protocol version"),
        "{r}"
    );
    let r = ask("{\"v\":1,\"cmd\":\"routes-explode\"}\n");
    assert!(
        r["error"].as_str().unwrap().contains("routes-explode"),
        "{r}"
    );
    let r = ask("{\"v\":1,\"cmd\":\"routes-list\"}\n");
    assert_eq!(r["reply"], "routes", "the same connection still works: {r}");
    ws::echo_once(&server.url("/echo"), b"served meanwhile").await;
    tunnel
        .send(Message::binary(b"open tunnel".to_vec()))
        .await
        .unwrap();
    assert_eq!(read_bytes(&mut tunnel, 11, STEP).await, b"open tunnel");

    // A line without end: refused once it passes the limit, then the connection is closed.
    let mut s = UnixStream::connect(server.control_socket()).expect("connect");
    s.set_read_timeout(Some(STEP)).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut reply = Vec::new();
    for _ in 0..(ringctl::MAX_LINE / chunk.len() + 8) {
        if s.write_all(&chunk).is_err() {
            break; // closed by the server after its reply
        }
    }
    let _ = std::io::Read::read_to_end(&mut s, &mut reply);
    let reply = text(&reply);
    assert!(reply.contains("request longer than"), "{reply}");
    ws::echo_once(&server.url("/echo"), b"still serving").await;

    // ringctl with nobody at the socket: exit 2 and a clear reason.
    let gone = temp_path("sock");
    let out = ringway_e2e::server::run_ringctl(
        &["--socket", gone.to_str().unwrap(), "routes", "list"],
        STEP,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no control socket there"),
        "{}",
        text(&out.stderr)
    );
}

/// The socket is mode 0600 in a directory only its user may enter; a user that reaches it
/// anyway (an operator loosened the mode) is refused by its credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_its_user_may_use_the_control_socket() {
    let echo = Origin::echo().await;
    let server = Ringway::start(&ConfigToml::echo(echo.addr).build());
    let socket = server.control_socket();
    let mode = std::fs::metadata(socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let dir = socket.parent().unwrap();
    let dmode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dmode, 0o700, "the directory ringway made: {dmode:o}");
    assert!(
        rustix::process::geteuid().is_root(),
        "this test switches to user nobody with runuser: the test command runs as root"
    );
    // Only the socket's own mode stands in the way now.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let probe = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(5)\ntry:\n s.connect({:?})\nexcept PermissionError:\n print('EACCES'); sys.exit(0)\nprint(s.makefile().readline())",
        socket.to_str().unwrap()
    );
    let as_nobody = || {
        std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", "python3", "-c", &probe])
            .output()
            .expect("runuser (util-linux) and python3 are installed by the test command")
    };
    let out = as_nobody();
    assert_eq!(text(&out.stdout).trim(), "EACCES", "{}", text(&out.stderr));
    // Loosened by hand: the peer's credentials still keep nobody out.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody();
    let reply = text(&out.stdout);
    assert!(
        reply.contains("may not use this control socket"),
        "{reply}{}",
        text(&out.stderr)
    );
    assert!(server.ringctl(&["routes", "list"]).status.success());
}

fn stats(server: &Ringway, route: Option<&str>) -> Vec<ringctl::Merged> {
    let mut c = Client::connect(server.control_socket()).expect("control socket");
    let reply = c
        .call(&Request::Stats {
            route: route.map(str::to_string),
        })
        .expect("stats");
    let Reply::Stats { workers, .. } = reply else {
        panic!("not stats: {reply:?}");
    };
    ringctl::merge(&workers).expect("histograms merge")
}

/// Counts and bytes in `ringctl stats` equal what the clients did; its latencies are never
/// longer than what the clients measured around them (within the histograms' 1 %).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_match_what_the_clients_measured() {
    let echo = Origin::echo().await;
    let server = Ringway::start(
        &ConfigToml::echo(echo.addr)
            .workers(2)
            .route("/dead", Origin::refused())
            .build(),
    );
    let url = server.url("/echo");
    let mut sent = 0u64;
    let mut setup_us = Vec::new();
    let mut open = Vec::new();
    for i in 0..12u64 {
        let t = Instant::now();
        let mut c = ws::connect(&url).await;
        setup_us.push(t.elapsed().as_micros() as u64);
        for m in 0..3 {
            let msg = vec![(i + m) as u8; (i * 700 + m * 13 + 1) as usize];
            c.send(Message::binary(msg.clone())).await.unwrap();
            assert_eq!(read_bytes(&mut c, msg.len(), STEP).await, msg);
            sent += msg.len() as u64;
        }
        if i < 10 {
            let normal = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            c.close(Some(normal)).await.unwrap();
            assert_eq!(ws::read_close(&mut c).await.map(|c| c.0), Some(1000));
        } else {
            open.push(c); // two stay open
        }
    }
    for _ in 0..3 {
        assert_eq!(ws::refusal_status(&server.url("/nope")).await, 404);
    }
    for _ in 0..2 {
        assert_eq!(ws::refusal_status(&server.url("/dead")).await, 502);
    }
    // The closed tunnels' ends are accounted when their sockets are done: wait for them.
    let deadline = Instant::now() + STEP;
    let echo_stats = loop {
        let m = stats(&server, Some("/echo"));
        if m.first()
            .is_some_and(|e| e.counters.closes.values().sum::<u64>() == 10)
        {
            break m.into_iter().next().unwrap();
        }
        assert!(Instant::now() < deadline, "closes not accounted: {m:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let c = &echo_stats.counters;
    assert_eq!((c.open, c.total), (2, 12), "{c:?}");
    assert_eq!(
        (c.to_origin, c.to_client),
        (sent, sent),
        "payload bytes each way"
    );
    assert_eq!(c.closes.get("client: Close 1000"), Some(&10), "{c:?}");
    assert!(c.refusals.is_empty());
    let h = &echo_stats.histograms;
    for phase in ["setup", "upgrade", "connect", "first-byte"] {
        assert_eq!(h[phase].len(), 12, "{phase}: one sample per tunnel");
    }
    assert!(!h.contains_key("tls"), "no TLS on this listener");
    assert!(h["relay-to-origin"].len() >= 36 && h["relay-to-client"].len() >= 36);
    // The server's accept-to-101 lies inside the client's connect-to-101.
    setup_us.sort_unstable();
    let client_max = *setup_us.last().unwrap() as f64;
    assert!(
        h["setup"].max() as f64 <= client_max * 1.01,
        "server setup max {} µs > client-measured {client_max} µs",
        h["setup"].max()
    );
    assert!(h["setup"].value_at_quantile(0.5) as f64 <= setup_us[6] as f64 * 1.01);

    let all = stats(&server, None);
    let unrouted = all
        .iter()
        .find(|m| m.route == "-")
        .expect("unrouted refusals");
    assert_eq!(unrouted.counters.refusals.get("404"), Some(&3));
    let dead = all.iter().find(|m| m.route == "/dead").expect("/dead");
    assert_eq!(dead.counters.refusals.get("502"), Some(&2));
    assert_eq!(dead.counters.total, 0);

    let text = ctl_ok(&server, &["stats", "--route", "/echo"]);
    assert!(text.contains("route /echo: 2 open, 12 total"), "{text}");
    assert!(text.contains("ended: client: Close 1000 10"), "{text}");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("setup ")),
        "{text}"
    );
    let json = ctl_ok(&server, &["--json", "stats"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["reply"], "stats");
    assert_eq!(
        v["workers"].as_array().unwrap().len(),
        2,
        "one entry per worker"
    );
    drop(open);
}

/// `ringctl tunnels` lists each open tunnel with its bytes; `tunnels close ID` ends that one
/// (Close 1001) and no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_are_listed_and_the_right_one_is_closed() {
    let echo = Origin::echo().await;
    let server = Ringway::start(&ConfigToml::echo(echo.addr).workers(2).build());
    let url = server.url("/echo");
    let mut clients = Vec::new();
    for n in [100usize, 200, 300] {
        let mut c = ws::connect(&url).await;
        c.send(Message::binary(vec![7u8; n])).await.unwrap();
        assert_eq!(read_bytes(&mut c, n, STEP).await.len(), n);
        clients.push(c);
    }
    let mut ctl = Client::connect(server.control_socket()).unwrap();
    let reply = ctl.call(&Request::Tunnels { route: None }).unwrap();
    let Reply::Tunnels { tunnels } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(tunnels.len(), 3, "{tunnels:?}");
    let mut sizes: Vec<u64> = tunnels.iter().map(|t| t.to_origin).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [100, 200, 300]);
    assert!(tunnels
        .iter()
        .all(|t| t.state == "relaying" && t.route == "/echo"));
    assert!(tunnels.iter().all(|t| t.origin == echo.addr.to_string()));
    assert!(tunnels.iter().all(|t| t.client.starts_with("127.0.0.1:")));
    let text = ctl_ok(&server, &["tunnels", "--route", "/echo"]);
    assert!(text.contains("3 open tunnel(s)"), "{text}");
    assert!(ctl_ok(&server, &["tunnels", "--route", "/other"]).contains("0 open tunnel(s)"));

    let victim = tunnels.iter().find(|t| t.to_origin == 200).unwrap();
    let out = ctl_ok(&server, &["tunnels", "close", &victim.id]);
    assert!(out.contains("Close 1001"), "{out}");
    let (code, _) = ws::read_close(&mut clients[1])
        .await
        .expect("a Close with a code");
    assert_eq!(code, 1001);
    for i in [0, 2] {
        clients[i]
            .send(Message::binary(b"still here".to_vec()))
            .await
            .unwrap();
        assert_eq!(read_bytes(&mut clients[i], 10, STEP).await, b"still here");
    }
    let err = ctl_refused(&server, &["tunnels", "close", "0-99999-1"]);
    assert!(err.contains("no such tunnel"), "{err}");
    let err = ctl_refused(&server, &["tunnels", "close", "bogus"]);
    assert!(err.contains("not a tunnel id"), "{err}");
    let deadline = Instant::now() + STEP;
    loop {
        let Reply::Tunnels { tunnels } = ctl.call(&Request::Tunnels { route: None }).unwrap()
        else {
            panic!()
        };
        if tunnels.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "closed tunnel still listed: {tunnels:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/metrics` on the admin address, read by the Prometheus project's own parser
/// (`prometheus_client`, OpenMetrics), agrees with what the clients did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_the_metrics_page() {
    let echo = Origin::echo().await;
    let refused = Origin::refused();
    let config = ConfigToml::echo(echo.addr).workers(2).build()
        + "[admin]\nmetrics = \"127.0.0.1:0\"\n"
        + &format!(
            "[[route]]\npath = \"/pool\"\norigins = [{{ addr = \"{refused}\" }}, {{ addr = \"{}\" }}]\n",
            echo.addr
        );
    let server = Ringway::start(&config);
    let _pooled = ws::connect(&server.url("/pool")).await;
    let addr = server
        .stdout_before
        .iter()
        .find_map(|l| {
            l.strip_prefix("metrics on http://")?
                .strip_suffix("/metrics")
        })
        .expect("the metrics address is printed")
        .to_string();
    let mut bytes = 0;
    let mut open = Vec::new();
    for n in [10usize, 20, 30] {
        let mut c = ws::connect(&server.url("/echo")).await;
        c.send(Message::binary(vec![1u8; n])).await.unwrap();
        assert_eq!(read_bytes(&mut c, n, STEP).await.len(), n);
        bytes += n;
        open.push(c);
    }
    assert_eq!(ws::refusal_status(&server.url("/nope")).await, 404);
    let script = format!(
        r#"
import json, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
r = urllib.request.urlopen("http://{addr}/metrics", timeout=10)
assert r.headers["Content-Type"].startswith("application/openmetrics-text"), r.headers["Content-Type"]
out = []
for fam in text_string_to_metric_families(r.read().decode()):
    for s in fam.samples:
        out.append([fam.type, s.name, s.labels, s.value])
print(json.dumps(out))
"#
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "parser failed: {}", text(&out.stderr));
    let samples: Vec<(String, String, serde_json::Value, f64)> =
        serde_json::from_slice(&out.stdout).expect("JSON from the script");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .find(|(_, n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in {samples:?}"))
            .3
    };
    assert_eq!(value("ringway_tunnels_total", &[("route", "/echo")]), 3.0);
    assert_eq!(value("ringway_tunnels_open", &[("route", "/echo")]), 3.0);
    let to_origin = [("route", "/echo"), ("direction", "to_origin")];
    assert_eq!(
        value("ringway_tunnel_bytes_total", &to_origin),
        bytes as f64
    );
    let unrouted = [("route", "-"), ("status", "404")];
    assert_eq!(value("ringway_refusals_total", &unrouted), 1.0);
    // The pooled tunnel: a refused connect to the first origin, then the second.
    let (first, second) = (refused.to_string(), echo.addr.to_string());
    let failures = value(
        "ringway_origin_connect_failures_total",
        &[("origin", &first)],
    );
    assert_eq!(failures, 1.0);
    assert_eq!(
        value("ringway_origin_connects_total", &[("origin", &second)]),
        1.0
    );
    assert_eq!(value("ringway_origin_open", &[("origin", &second)]), 1.0);
    assert_eq!(value("ringway_origin_ejected", &[("origin", &first)]), 0.0);
    let connect_count = [("origin", second.as_str())];
    assert_eq!(
        value("ringway_origin_connect_seconds_count", &connect_count),
        1.0
    );
    let setup = [("route", "/echo"), ("phase", "setup")];
    assert_eq!(value("ringway_latency_seconds_count", &setup), 3.0);
    let inf = [("route", "/echo"), ("phase", "setup"), ("le", "+Inf")];
    assert_eq!(value("ringway_latency_seconds_bucket", &inf), 3.0);
    assert!(samples.iter().any(|(t, ..)| t == "histogram"));

    for (request, status) in [
        ("GET /other HTTP/1.1\r\n\r\n", "404"),
        ("POST /metrics HTTP/1.1\r\n\r\n", "405"),
    ] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(STEP)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut reply = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut reply);
        assert!(reply.starts_with(&format!("HTTP/1.1 {status} ")), "{reply}");
    }

    // Connections that never send a request cannot keep the page away for long: past the
    // 64 slots a scraper gets 503, and the idle ones are dropped after 10 s.
    let idle: Vec<std::net::TcpStream> = (0..64)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let scrape = |addr: &str| -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(STEP)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut reply = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut reply);
        reply
    };
    let busy = tokio::task::block_in_place(|| scrape(&addr));
    assert!(busy.starts_with("HTTP/1.1 503 "), "{busy}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = tokio::task::block_in_place(|| scrape(&addr));
        if reply.starts_with("HTTP/1.1 200 ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "idle connections kept /metrics away: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(idle);
    drop(open);
}

/// `ringctl hist export` writes an HdrHistogram interval log (V2 compressed) that an
/// independent reader (the hdrhistogram crate's log iterator) reads back with every sample;
/// `ringctl top` prints frames, and quits on `q` in a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hist_export_and_top() {
    use base64::Engine as _;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    let echo = Origin::echo().await;
    let server = Ringway::start(&ConfigToml::echo(echo.addr).workers(2).build());
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut c = ws::connect(&server.url("/echo")).await;
        c.send(Message::binary(vec![3u8; 100])).await.unwrap();
        assert_eq!(read_bytes(&mut c, 100, STEP).await.len(), 100);
        open.push(c);
    }
    let out = temp_path("hlog");
    let out_arg = out.to_str().unwrap().to_string();
    let said = ctl_ok(
        &server,
        &[
            "hist", "export", "--route", "/echo", "--phase", "setup", "--out", &out_arg,
        ],
    );
    assert!(said.contains("(5 sample(s), microseconds)"), "{said}");
    let log = std::fs::read(&out).expect("the log file");
    let mut histograms = Vec::new();
    for entry in IntervalLogIterator::new(&log) {
        if let LogEntry::Interval(h) = entry.expect("a valid interval log") {
            assert_eq!(
                h.tag().map(|t| t.as_str().to_string()),
                Some("setup".into())
            );
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(h.encoded_histogram())
                .unwrap();
            let hist: hdrhistogram::Histogram<u64> = Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .unwrap();
            histograms.push(hist);
        }
    }
    assert_eq!(histograms.len(), 1);
    assert_eq!(histograms[0].len(), 5, "every tunnel's setup");
    let err = ctl_refused(
        &server,
        &[
            "hist", "export", "--route", "/echo", "--phase", "nap", "--out", &out_arg,
        ],
    );
    assert!(err.contains("no phase \"nap\""), "{err}");
    let err = ctl_refused(
        &server,
        &[
            "hist", "export", "--route", "/x", "--phase", "setup", "--out", &out_arg,
        ],
    );
    assert!(err.contains("no figures for route \"/x\""), "{err}");
    let _ = std::fs::remove_file(&out);

    // Piped: a fixed number of frames.
    let frames = ctl_ok(&server, &["top", "--every", "0.2", "--iterations", "2"]);
    assert_eq!(frames.matches("ringway top:").count(), 2, "{frames}");
    let row = frames
        .lines()
        .find(|l| l.starts_with("/echo"))
        .expect(&frames);
    assert_eq!(
        row.split_whitespace().nth(1),
        Some("5"),
        "5 open tunnels: {row}"
    );

    // In a terminal (a pty): runs until `q` or Ctrl-C, then restores the terminal, exits 0.
    for key in ["q", "\\x03"] {
        let script = format!(
            r#"
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv({bin:?}, [{bin:?}, "--socket", {sock:?}, "top", "--every", "0.2"])
seen = b""
deadline = time.time() + 10
while b"ringway top" not in seen and time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.5)
    if r:
        seen += os.read(fd, 65536)
assert b"ringway top" in seen, seen
os.write(fd, b"{key}")
deadline = time.time() + 5
while time.time() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("exit", os.waitstatus_to_exitcode(status))
        sys.exit(0)
    try:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            os.read(fd, 65536)
    except OSError:
        pass
print("still running")
os.kill(pid, 9)
"#,
            bin = ringway_e2e::server::ringctl_binary().to_str().unwrap(),
            sock = server.control_socket().to_str().unwrap(),
            key = key,
        );
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("python3")
                .args(["-c", &script])
                .output()
                .expect("python3 runs")
        })
        .await
        .unwrap();
        assert_eq!(
            text(&out.stdout).trim(),
            "exit 0",
            "top quits on {key}: {}",
            text(&out.stderr)
        );
    }
    drop(open);
}
