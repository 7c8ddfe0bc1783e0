//! `ringway check --config FILE`: a valid config prints "config ok" and exits 0; an invalid one
//! exits 2 with an error on stderr naming the offending key and its line, and for a route no
//! request can match, a CPU the process may not use, a duplicate route or the one-bracket
//! `[listener]` slip, what to write instead. A config with no routes is valid with a warning,
//! which `run` logs too.
//!
//! These tests run the binary to completion with a bound; only the `run` warning test starts a
//! server.

use std::time::Duration;

use ringway_e2e::config::ConfigToml;
use ringway_e2e::server::{refused_config as refused, run_to_exit, write_config, Ringway};

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

/// Asserts `stderr` holds every one of `needles`.
fn assert_says(stderr: &str, needles: &[&str]) {
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}: {stderr:?}");
    }
}

/// Lines 1-3: workers and the listener; lines 4-7: one route, `host` on line 7.
fn with_host(host: &str) -> String {
    format!(
        "workers = 1\n[[listener]]\naddr = \"127.0.0.1:0\"\n[[route]]\npath = \"/db\"\n\
         origin = \"127.0.0.1:5432\"\nhost = {host:?}\n"
    )
}

/// Lines 1-3: workers and the listener; lines 4-6: one route, `path` on line 5.
fn with_path(path: &str) -> String {
    format!(
        "workers = 1\n[[listener]]\naddr = \"127.0.0.1:0\"\n[[route]]\npath = {path:?}\n\
         origin = \"127.0.0.1:5432\"\n"
    )
}

#[test]
fn check_refuses_a_host_with_a_port_and_says_how_to_write_it() {
    let e = refused(&with_host("localhost:8183"));
    assert_says(
        &e,
        &[
            "line 7",
            "`route.host`",
            "\"localhost:8183\" can never match",
            "without its port",
            "write host = \"localhost\"",
        ],
    );
}

#[test]
fn check_refuses_a_host_with_a_scheme_or_path_and_says_how_to_write_it() {
    let e = refused(&with_host("https://example.com"));
    assert_says(
        &e,
        &[
            "line 7",
            "`route.host`",
            "no scheme",
            "write host = \"example.com\"",
        ],
    );
    let e = refused(&with_host("example.com/x"));
    assert_says(
        &e,
        &[
            "line 7",
            "`route.host`",
            "no path",
            "write host = \"example.com\"",
        ],
    );
    let e = refused(&with_host(""));
    assert_says(&e, &["line 7", "`route.host`", "leave `host` out"]);
}

#[test]
fn check_refuses_a_path_with_a_query_or_fragment_and_says_how_to_write_it() {
    let e = refused(&with_path("/db?x=1"));
    assert_says(
        &e,
        &[
            "line 5",
            "`route.path`",
            "query string",
            "write path = \"/db\"",
        ],
    );
    let e = refused(&with_path("/db#a"));
    assert_says(
        &e,
        &["line 5", "`route.path`", "fragment", "write path = \"/db\""],
    );
    let e = refused(&with_path("/my db"));
    assert_says(&e, &["line 5", "`route.path`", "write path = \"/my%20db\""]);
}

#[test]
fn check_warns_that_zero_routes_refuse_every_upgrade() {
    let r = check("workers = 1\n[[listener]]\naddr = \"127.0.0.1:0\"\n");
    assert_eq!(
        r.code,
        Some(0),
        "zero routes is valid; stderr: {}",
        r.stderr
    );
    assert!(r.stdout.contains("config ok"), "{:?}", r.stdout);
    assert_says(&r.stderr, &["warning:", "no `[[route]]`", "404"]);
}

#[test]
fn run_logs_that_zero_routes_refuse_every_upgrade() {
    let server = Ringway::start(&ConfigToml::new().build());
    let log = server.log_tail();
    assert_says(&log, &["WARN", "no `[[route]]`", "404"]);
}

#[test]
fn check_refuses_a_cpu_that_does_not_exist_and_lists_those_available() {
    let e = refused(
        "# pinned\nworkers = [100000]\n[[listener]]\naddr = \"127.0.0.1:0\"\n[[route]]\n\
         path = \"/echo\"\norigin = \"127.0.0.1:9\"\n",
    );
    assert_says(
        &e,
        &["line 2", "`workers`", "CPU 100000", "available CPUs: "],
    );
}

#[test]
fn check_names_both_lines_of_a_duplicate_route_as_written() {
    let config = r#"workers = 1
[[listener]]
addr = "127.0.0.1:0"
[[route]]
path = "/db"
origin = "127.0.0.1:5432"
[[route]]
path = "/db/"
origin = "127.0.0.1:5433"
"#;
    let e = refused(config);
    assert_says(
        &e,
        &[
            "line 8",
            "`route.path`",
            "route path = \"/db/\" is the same route as path = \"/db\" at line 5",
        ],
    );
}

#[test]
fn check_explains_single_bracket_listener_and_route() {
    let e = refused("workers = 1\n[listener]\naddr = \"127.0.0.1:0\"\n");
    assert_says(
        &e,
        &[
            "line 2",
            "`[listener]` is a single table; listeners are an array of tables: write `[[listener]]`",
        ],
    );
    let e = refused(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n[route]\npath = \"/db\"\norigin = \"127.0.0.1:1\"\n",
    );
    assert_says(
        &e,
        &[
            "line 3",
            "`[route]` is a single table; routes are an array of tables: write `[[route]]`",
        ],
    );
}
