//! A private PostgreSQL cluster for one test: `initdb` into a temporary directory with
//! scram-sha-256 password authentication for TCP, started with `pg_ctl` on a free loopback port
//! (never the system's cluster, never a fixed port), stopped and removed on drop.
//!
//! PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user that
//! Debian's package creates (through `runuser`). A missing server is a panic naming the package
//! the README's test command installs; the test is never skipped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::config::ConfigToml;
use crate::server::{run_command, temp_path, Ringway};
use crate::tls::TestPki;

/// The role the tests log in as.
pub const USER: &str = "ringway";
/// Its password (scram-sha-256 over TCP).
pub const PASSWORD: &str = "tunnel-test-password";

/// A running cluster.
pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl Postgres {
    /// initdb + start; panics with the server log if it does not come up within 60 s.
    pub fn start() -> Postgres {
        let bin = server_bin();
        let dir = temp_path("pg");
        std::fs::create_dir_all(&dir).expect("create the cluster directory");
        std::fs::write(dir.join("pwfile"), PASSWORD).expect("write the password file");
        as_postgres_owner(&dir);
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = Postgres { port, dir, bin };
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                USER,
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                &format!("--pwfile={}", path(&pg.dir.join("pwfile"))),
                "--no-sync",
            ],
        );
        pg.start_again();
        pg
    }

    /// Starts the (stopped) server again on its port; waits until it accepts connections.
    pub fn start_again(&self) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &[
                "-D",
                path(&data),
                "-l",
                path(&self.dir.join("server.log")),
                "-w",
                "-t",
                "60",
                "-o",
                &format!(
                    "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
                    self.port,
                    path(&self.dir)
                ),
                "start",
            ],
        );
    }

    /// Stops the server as an operator would for maintenance (`pg_ctl stop -m fast`: open
    /// sessions are ended, new connections refused); returns once it is down.
    pub fn stop(&self) {
        let data = self.dir.join("data");
        self.run("pg_ctl", &["-D", path(&data), "-m", "fast", "-w", "stop"]);
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// A PostgreSQL program from the server's bin directory, run as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    /// Runs `program` with `args`; panics with its output and the server log on failure.
    fn run(&self, program: &str, args: &[&str]) {
        let mut cmd = self.command(program);
        cmd.args(args);
        let out = run_command(cmd, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "{program} failed ({}):\n{}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .command("pg_ctl")
            .args(["-D", path(&data), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A cluster published by a `ringway` with a `wss://` listener: route `/db` → the cluster,
/// a certificate for `localhost` from a test CA (`pki.ca()` is what clients trust).
pub struct PostgresBehindEdge {
    pub edge: Ringway,
    pub pki: TestPki,
    pub pg: Postgres,
}

impl PostgresBehindEdge {
    pub async fn start() -> PostgresBehindEdge {
        let pg = tokio::task::spawn_blocking(Postgres::start)
            .await
            .expect("cluster thread");
        let pki = TestPki::new();
        let leaf = pki.leaf("edge", "edge", &["localhost"]);
        let origin = format!("127.0.0.1:{}", pg.port).parse().expect("addr");
        let edge = Ringway::start(
            &ConfigToml::new()
                .route("/db", origin)
                .tls(&leaf.toml())
                .build(),
        );
        PostgresBehindEdge { edge, pki, pg }
    }

    /// `wss://localhost:PORT/db`.
    pub fn url(&self) -> String {
        format!("wss://localhost:{}/db", self.edge.port)
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temporary path")
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb` (Debian's layout), or the
/// directory of `initdb` on PATH.
fn server_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    let which = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    match which {
        Some(o) => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
            .parent()
            .expect("initdb's directory")
            .to_path_buf(),
        None => panic!(
            "no PostgreSQL server (initdb) found: install Debian's `postgresql` package \
             (the README's test command does)"
        ),
    }
}

/// As root, hands the cluster directory to the `postgres` user.
fn as_postgres_owner(dir: &Path) {
    if !is_root() {
        return;
    }
    let out = Command::new("chown")
        .args(["-R", "postgres:postgres", path(dir)])
        .output()
        .expect("run chown");
    assert!(
        out.status.success(),
        "chown postgres {}: {} (Debian's postgresql package creates the postgres user)",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
