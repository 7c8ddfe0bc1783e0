//! NIC queue locality, tested on a two-queue veth pair: the test makes a network namespace with
//! one end of the pair in it (GRO on the receiving end, so veth delivers through its per-queue
//! NAPI instances), runs ringway on the outer end with NAPI busy polling registered
//! (`[engine] napi_busy_poll_us`), and connects 16 clients from inside the namespace. Every
//! tunnel carries bytes, and `ringctl tunnels` reports for each the NIC queue (NAPI id) and the
//! CPU its packets arrive on, next to its worker's CPU; the 16 connections arrive over both
//! queues.
//!
//! Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for `ip netns`), `ip` (iproute2) and `ethtool`,
//! which the README's test command installs. Without the privileges the test fails, saying so,
//! unless `RINGWAY_TEST_NO_NETNS=1` asks to skip it knowingly; a missing tool is a failure.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringway_e2e::origin::Origin;
use ringway_e2e::server::Ringway;

const CLIENTS: usize = 16;

/// Runs a command; its failure message, if any.
fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (the test command installs it): {e}", args[0]));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespace and the veth pair, removed on drop.
struct Net {
    ns: String,
    outer: String,
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.outer]);
        let _ = run(&["ip", "netns", "del", &self.ns]);
    }
}

/// Makes the namespace and a two-queue veth pair between it and here; returns it with the
/// outer and inner addresses, or why it cannot (no privileges).
fn make_net() -> Result<(Net, String, String), String> {
    let id = std::process::id() % 10_000;
    let net = Net {
        ns: format!("rwnapi{id}"),
        outer: format!("rwo{id}"),
    };
    let inner = format!("rwi{id}");
    let subnet = format!("10.213.{}", id % 250);
    let (outer_ip, inner_ip) = (format!("{subnet}.1"), format!("{subnet}.2"));
    run(&["ip", "netns", "add", &net.ns])?;
    let ns = net.ns.as_str();
    for step in [
        vec![
            "ip",
            "link",
            "add",
            &net.outer,
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
            "type",
            "veth",
            "peer",
            "name",
            &inner,
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
        ],
        vec!["ip", "link", "set", &inner, "netns", ns],
        vec![
            "ip",
            "addr",
            "add",
            &format!("{outer_ip}/24"),
            "dev",
            &net.outer,
        ],
        vec!["ip", "link", "set", &net.outer, "up"],
        vec![
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{inner_ip}/24"),
            "dev",
            &inner,
        ],
        vec!["ip", "-n", ns, "link", "set", &inner, "up"],
        vec!["ip", "-n", ns, "link", "set", "lo", "up"],
        // veth hands packets to the receiving queue's NAPI instance only with GRO on there and
        // unsegmented packets from the sender.
        vec!["ethtool", "-K", &net.outer, "gro", "on"],
        vec![
            "ip", "netns", "exec", ns, "ethtool", "-K", &inner, "tso", "off", "gso", "off",
        ],
    ] {
        run(&step)
            .map_err(|e| panic!("setting up the veth pair: {e}"))
            .ok();
    }
    Ok((net, outer_ip, inner_ip))
}

/// Opens `CLIENTS` connections from inside the namespace, echoes 64 KiB on each, prints
/// `ready`, and holds them until its stdin closes.
const CLIENT: &str = r#"
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = []
for i in range(n):
    c = socket.create_connection((host, port), timeout=10)
    data = bytes([i]) * 65536
    c.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = c.recv(65536)
        if not chunk:
            sys.exit("closed early")
        got += chunk
    assert got == data, "echo differs"
    conns.append(c)
print("ready", flush=True)
sys.stdin.read()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_a_two_queue_veth_report_their_queue_and_cpu() {
    let (net, outer_ip, _inner_ip) = match make_net() {
        Ok(n) => n,
        Err(why) if std::env::var_os("RINGWAY_TEST_NO_NETNS").is_some() => {
            eprintln!(
                "skipped, as RINGWAY_TEST_NO_NETNS asks: cannot make a network namespace: {why}"
            );
            return;
        }
        Err(why) => panic!(
            "cannot make a network namespace (needs root: CAP_NET_ADMIN and CAP_SYS_ADMIN): {why}; \
             run the tests as root, or set RINGWAY_TEST_NO_NETNS=1 to skip this test knowingly"
        ),
    };
    let echo = Origin::echo().await;
    let config = format!(
        "workers = [0, 1]\n[engine]\nnapi_busy_poll_us = 50\n[[listener]]\naddr = \"{outer_ip}:0\"\nmode = \"tcp\"\norigin = \"{}\"\n",
        echo.addr
    );
    let server = Ringway::start(&config);
    let port = server.addr().port().to_string();
    let n = CLIENTS.to_string();
    let mut client = Command::new("ip")
        .args([
            "netns", "exec", &net.ns, "python3", "-c", CLIENT, &outer_ip, &port, &n,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 in the namespace");
    let mut line = String::new();
    let stdout = client.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        line
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if reader.is_finished() {
        line = reader.join().unwrap();
    }
    assert_eq!(
        line.trim(),
        "ready",
        "every tunnel echoed 64 KiB over the veth pair"
    );

    let out = server.ringctl(&["--json", "tunnels"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ringctl --json");
    let tunnels = v["tunnels"].as_array().expect("a tunnel list").clone();
    assert_eq!(tunnels.len(), CLIENTS, "{v}");
    let mut queues = std::collections::BTreeSet::new();
    for t in &tunnels {
        let napi = t["napi_id"].as_u64().unwrap_or(0);
        assert!(
            napi > 0,
            "a NAPI id for each connection over the veth pair: {t}"
        );
        queues.insert(napi);
        assert!(t["incoming_cpu"].as_u64().is_some(), "{t}");
        assert!(
            t["worker_cpu"].as_u64().is_some(),
            "workers are pinned: {t}"
        );
    }
    assert!(
        queues.len() >= 2,
        "{CLIENTS} connections arrive over both receive queues: {queues:?}"
    );
    let text = String::from_utf8_lossy(&server.ringctl(&["tunnels"]).stdout).to_string();
    assert!(
        text.contains("receive on their worker's CPU") && text.contains("napi"),
        "{text}"
    );
    eprintln!("{text}");
    let _ = client.stdin.take().map(|mut s| s.write_all(b""));
    let _ = client.kill();
    let _ = client.wait();
    drop(net);
}
