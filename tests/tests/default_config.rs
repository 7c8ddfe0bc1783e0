//! `ringway run` with no `--config` uses the embedded default: 127.0.0.1:8080 with `/echo` routed
//! to a built-in echo origin.
//!
//! Port 8080 on this machine may be taken (by the README's first command, still running, say),
//! so the test does not use it: it runs ringway and a third-party client (Python websockets) in a
//! network namespace of their own (`unshare -rn`, util-linux; `ip` from iproute2 brings its
//! loopback up), where 127.0.0.1:8080 is always free. Both tools are needed and checked loudly.

use std::process::Command;
use std::time::Duration;

use ringway_e2e::server::{binary, run_command};

const SCRIPT: &str = r#"
set -u
ip link set lo up || { echo "cannot bring lo up in the namespace"; exit 97; }
out=$(mktemp)
"$RINGWAY" run >"$out" 2>/dev/null &
rw=$!
for _ in $(seq 1 100); do
  grep -q 'listening on' "$out" && break
  sleep 0.1
done
cat "$out"
python3 - <<'EOF'
import asyncio, websockets
async def main():
    async with websockets.connect("ws://127.0.0.1:8080/echo") as ws:
        await ws.send(b"embedded default echo")
        got = await asyncio.wait_for(ws.recv(), 10)
        assert got == b"embedded default echo", got
        print("echo ok")
asyncio.run(main())
EOF
kill -TERM "$rw"
wait "$rw"
echo "exit=$?"
"#;

#[test]
fn run_without_config_serves_builtin_echo_on_8080() {
    // Taken on the host for the length of the test (unless something else already holds it):
    // the namespace must make that irrelevant.
    let _host_8080 = std::net::TcpListener::bind("127.0.0.1:8080");
    let unshare = Command::new("unshare").arg("--version").output();
    assert!(
        unshare.is_ok_and(|o| o.status.success()),
        "this test needs `unshare` (util-linux) to get a network namespace with a free port 8080"
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-rn", "sh", "-c", SCRIPT])
        .env("RINGWAY", binary());
    let out = run_command(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "unshare -rn failed ({}): {stdout}{stderr}",
        out.status
    );
    assert!(
        stdout.contains("listening on ws://127.0.0.1:8080\n"),
        "embedded default must listen on 127.0.0.1:8080: {stdout}{stderr}"
    );
    assert!(
        stdout.contains("echo ok"),
        "the built-in echo must answer: {stdout}{stderr}"
    );
    assert!(
        stdout.contains("exit=0"),
        "exit status after SIGTERM must be 0: {stdout}{stderr}"
    );
}
