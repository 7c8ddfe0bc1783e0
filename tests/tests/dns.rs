//! Origin host names are resolved again while ringway runs (`[control] resolve_ms`): when a
//! name's address changes, new tunnels go to the new address and open ones keep theirs.
//!
//! The name lives in a hosts file of the test's own: ringway runs in a mount namespace of its
//! own (`unshare --mount`, needs root, as the test command runs) where that file is bind-mounted
//! over /etc/hosts, and the test rewrites it in place. The two origins listen on 127.0.0.1 and
//! 127.0.0.2 (both loopback) on one port.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use ringway_e2e::origin::Origin;
use ringway_e2e::server::{temp_path, Ringway};
use ringway_e2e::ws::{connect, read_bytes};
use ringway_e2e::STEP;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_address_takes_new_tunnels_and_cuts_no_open_one() {
    assert!(
        rustix::process::geteuid().is_root(),
        "needs root for a mount namespace (the test command runs as root)"
    );
    let one = Origin::greeting("one").await;
    let port = one.addr.port();
    let two = Origin::greeting_at("two", SocketAddr::from(([127, 0, 0, 2], port))).await;
    let hosts = temp_path("hosts");
    let write_hosts = |ip: &str| {
        // In place: the bind mount follows the file's inode, not its name.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .create(true)
            .open(&hosts)
            .expect("hosts file");
        writeln!(f, "{ip} db.ringway.test").expect("write hosts");
    };
    write_hosts("127.0.0.1");
    let config = format!(
        "workers = 2\n[control]\nresolve_ms = 100\n[[listener]]\naddr = \"127.0.0.1:0\"\n\
         [[route]]\npath = \"/db\"\norigin = \"db.ringway.test:{port}\"\n"
    );
    let script = format!(
        "mount --bind {} /etc/hosts && exec \"$0\" \"$@\"",
        hosts.display()
    );
    let server =
        Ringway::start_wrapped(&config, &["unshare", "--mount", "--", "sh", "-c", &script]);
    let mut open = connect(&server.url("/db")).await;
    assert_eq!(read_bytes(&mut open, 3, STEP).await, b"one");

    write_hosts("127.0.0.2");
    let changed = Instant::now();
    let mut moved = false;
    while !moved && changed.elapsed() < STEP {
        let mut ws = connect(&server.url("/db")).await;
        let mut name = read_bytes(&mut ws, 3, STEP).await;
        if name == b"two" {
            moved = true;
        } else {
            name.clear();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(moved, "new tunnels reach the new address: {}", server.log());
    assert!(
        changed.elapsed() < Duration::from_secs(3),
        "within a few resolve intervals: {:?}",
        changed.elapsed()
    );
    let line = server
        .await_log_line(&["origin address changed", "127.0.0.2"], STEP)
        .await
        .unwrap_or_else(|| panic!("the change is logged: {}", server.log()));
    assert!(line.contains("127.0.0.1"), "with the old address: {line}");
    for _ in 0..10 {
        let mut ws = connect(&server.url("/db")).await;
        assert_eq!(
            read_bytes(&mut ws, 3, STEP).await,
            b"two",
            "every worker has it"
        );
    }
    open.send(Message::binary(b"still".to_vec())).await.unwrap();
    assert_eq!(
        read_bytes(&mut open, 5, STEP).await,
        b"still",
        "the open tunnel keeps its origin"
    );
    drop(two);
    let _ = std::fs::remove_file(&hosts);
}
