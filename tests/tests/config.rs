//! `ringway check --config FILE`: a valid config prints "config ok" and exits 0; an invalid one
//! exits 2 with an error on stderr naming the offending key (and, for an unknown key, its line).
//!
//! These tests run the binary to completion with a bound; no server is started.

use std::time::Duration;

use ringway_e2e::server::{run_to_exit, write_config};

const BOUND: Duration = Duration::from_secs(10);

struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check(config: &str) -> Checked {
    let path = write_config(config);
    let out = run_to_exit(
        &["check", "--config", path.to_str().expect("utf-8 temp path")],
        BOUND,
    );
    let _ = std::fs::remove_file(&path);
    Checked {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn check_accepts_a_good_config() {
    let config = r#"workers = 1
[limits]
max_header_bytes = 8192
max_message_bytes = 67108864
[timeouts]
handshake_ms = 10000
connect_ms = 5000
shutdown_ms = 5000
[[listener]]
addr = "127.0.0.1:0"
[[route]]
path = "/echo"
origin = "127.0.0.1:9"
[[route]]
path = "/db"
origin = "127.0.0.1:5432"
host = "example.com"
idle_timeout_ms = 30000
"#;
    let r = check(config);
    assert_eq!(
        r.code,
        Some(0),
        "good config rejected; stderr: {}",
        r.stderr
    );
    assert!(
        r.stdout.contains("config ok"),
        "stdout lacks `config ok`: {:?}",
        r.stdout
    );
}

#[test]
fn check_rejects_unknown_key_naming_key_and_line() {
    let config = r#"# line 1
workers = 1
bogus = 1
[[listener]]
addr = "127.0.0.1:0"
[[route]]
path = "/echo"
origin = "127.0.0.1:9"
"#;
    let r = check(config);
    assert_eq!(
        r.code,
        Some(2),
        "unknown key must exit 2; stdout: {:?} stderr: {:?}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stderr.contains("bogus"),
        "stderr must name the key `bogus`: {:?}",
        r.stderr
    );
    assert!(
        r.stderr.contains("line 3"),
        "stderr must name `line 3`: {:?}",
        r.stderr
    );
}

#[test]
fn check_rejects_bad_listener_addr_naming_the_key() {
    let config = r#"workers = 1
[[listener]]
addr = "nope"
[[route]]
path = "/echo"
origin = "127.0.0.1:9"
"#;
    let r = check(config);
    assert_eq!(
        r.code,
        Some(2),
        "bad addr must exit 2; stdout: {:?} stderr: {:?}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stderr.contains("addr"),
        "stderr must name the key `addr`: {:?}",
        r.stderr
    );
}
