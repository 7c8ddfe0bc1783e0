//! Runs the `ringway` binary as a child process: writes the config to a unique temp file, spawns
//! `ringway run --config FILE`, and learns the port from the first stdout line
//! `listening on ws://127.0.0.1:PORT` (read by a thread, waited for at most 10 s).
//!
//! Invariants: the binary is `$RINGWAY_BIN` or `<workspace>/target/debug/ringway`, and a missing
//! binary panics with the command that builds it; the server's stderr goes to a log file whose
//! tail is printed when a test panics; dropping a [`Ringway`] kills and reaps the child and
//! removes its temp files; every wait on the child is bounded.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the server may take to print its `listening on` line.
const STARTUP: Duration = Duration::from_secs(10);
/// How much of the server's stderr log is shown when a test fails.
const LOG_TAIL: usize = 8 * 1024;

/// The path of the binary under test; panics (never skips) if it does not exist.
pub fn binary() -> PathBuf {
    let path = match std::env::var_os("RINGWAY_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ has a parent: the workspace root")
            .join("target/debug/ringway"),
    };
    assert!(
        path.is_file(),
        "ringway binary not found at {}: run `cargo build -p ringway` first \
         (or point RINGWAY_BIN at a built binary)",
        path.display()
    );
    path
}

/// A fresh path in the system temp dir: `ringway-e2e-<pid>-<n>-<nanos>.<ext>`.
pub fn temp_path(ext: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "ringway-e2e-{}-{n}-{nanos}.{ext}",
        std::process::id()
    ))
}

/// Writes `config` to a fresh temp file and returns its path (the caller removes it).
pub fn write_config(config: &str) -> PathBuf {
    let path = temp_path("toml");
    fs::write(&path, config).expect("write temp config");
    path
}

/// A running `ringway` child process.
#[derive(Debug)]
pub struct Ringway {
    /// Port of the first listener.
    pub port: u16,
    child: Child,
    config_path: Option<PathBuf>,
    log_path: PathBuf,
    /// Its control socket: `$RINGWAY_CONTROL` as the test gave it, else a fresh directory of
    /// its own (removed on drop), so parallel instances never share a socket or state file.
    control: PathBuf,
    own_control_dir: Option<PathBuf>,
    /// What it printed before its first `listening on` line (e.g. `metrics on http://...`).
    pub stdout_before: Vec<String>,
}

impl Ringway {
    /// `ringway run --config FILE` with `config` written to a temp file. Blocks up to 10 s.
    pub fn start(config: &str) -> Ringway {
        let config_path = write_config(config);
        let args = [
            "run",
            "--config",
            config_path.to_str().expect("utf-8 temp path"),
        ];
        Self::spawn(&args, Some(config_path.clone()))
    }

    /// `ringway run` with no config: the embedded default (127.0.0.1:8080, `/echo` to a
    /// built-in echo origin). Blocks up to 10 s.
    pub fn start_default() -> Ringway {
        Self::spawn(&["run"], None)
    }

    /// Like [`Ringway::start`], with extra environment variables for the server process.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Ringway {
        let config_path = write_config(config);
        let args = [
            "run",
            "--config",
            config_path.to_str().expect("utf-8 temp path"),
        ];
        Self::spawn_env(&args, Some(config_path.clone()), env)
    }

    /// `ringway [ARGS] run --config FILE` (e.g. `--log-format json`), with extra environment
    /// variables. Blocks up to 10 s.
    pub fn start_with(config: &str, args: &[&str], env: &[(&str, &str)]) -> Ringway {
        let config_path = write_config(config);
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "run",
            "--config",
            config_path.to_str().expect("utf-8 temp path"),
        ]);
        Self::spawn_env(&all, Some(config_path.clone()), env)
    }

    /// `ringway access --listen 127.0.0.1:0 ARGS` (a local TCP port carried to an edge).
    /// Blocks up to 10 s.
    pub fn start_access(args: &[&str]) -> Ringway {
        let mut all = vec!["access", "--listen", "127.0.0.1:0", "--workers", "1"];
        all.extend_from_slice(args);
        Self::spawn_env(&all, None, &[])
    }

    /// Like [`Ringway::start`], run through `wrapper` (a program and its arguments that end by
    /// executing the ringway binary, given as their last argument, with the rest of the
    /// command line: `unshare --mount -- sh -c '...; exec "$0" "$@"'`, say).
    pub fn start_wrapped(config: &str, wrapper: &[&str]) -> Ringway {
        let config_path = write_config(config);
        let args = [
            "run",
            "--config",
            config_path.to_str().expect("utf-8 temp path"),
        ];
        Self::spawn_with(Some(wrapper), &args, Some(config_path.clone()), &[])
    }

    fn spawn(args: &[&str], config_path: Option<PathBuf>) -> Ringway {
        Self::spawn_env(args, config_path, &[])
    }

    fn spawn_env(args: &[&str], config_path: Option<PathBuf>, env: &[(&str, &str)]) -> Ringway {
        Self::spawn_with(None, args, config_path, env)
    }

    fn spawn_with(
        wrapper: Option<&[&str]>,
        args: &[&str],
        config_path: Option<PathBuf>,
        env: &[(&str, &str)],
    ) -> Ringway {
        let log_path = temp_path("log");
        let log = fs::File::create(&log_path).expect("create server log file");
        let given = env.iter().find(|(k, _)| *k == "RINGWAY_CONTROL");
        let (control, own_control_dir) = match given {
            Some((_, v)) => (PathBuf::from(v), None),
            None => {
                let dir = temp_path("ctl");
                (dir.join("control.sock"), Some(dir))
            }
        };
        let mut cmd = match wrapper {
            Some([program, rest @ ..]) => {
                let mut c = Command::new(program);
                c.args(rest).arg(binary());
                c
            }
            _ => Command::new(binary()),
        };
        let mut child = cmd
            .env("RINGWAY_CONTROL", &control)
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn ringway");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        // Reads every stdout line for the life of the child, so the pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Ringway {
            port: 0,
            child,
            config_path,
            log_path,
            control,
            own_control_dir,
            stdout_before: Vec::new(),
        };
        server.port = server.await_listening(&rx);
        server
    }

    /// Waits for `listening on ws://127.0.0.1:PORT` and returns PORT; panics with the log on
    /// timeout, early exit or a malformed line.
    fn await_listening(&mut self, rx: &mpsc::Receiver<String>) -> u16 {
        let deadline = Instant::now() + STARTUP;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    // `listening on SCHEME://ADDR` (any address: most tests bind 127.0.0.1).
                    let addr = line
                        .strip_prefix("listening on ")
                        .and_then(|rest| rest.split_once("://"))
                        .map(|(_, addr)| addr.trim_end());
                    if let Some(addr) = addr {
                        match addr.parse::<SocketAddr>() {
                            Ok(a) if a.port() != 0 => {
                                self.stdout_before = seen;
                                return a.port();
                            }
                            _ => panic!("bad listening line {line:?}"),
                        }
                    }
                    seen.push(line);
                    assert!(seen.len() < 1000, "ringway printed 1000 stdout lines without `listening on`");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "ringway printed no `listening on ws://127.0.0.1:PORT` line within {STARTUP:?}; \
                     stdout so far: {seen:?}"
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit_blocking(Duration::from_secs(2));
                    panic!(
                        "ringway closed stdout before `listening on` (exit: {status:?}); \
                         stdout: {seen:?}"
                    )
                }
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The control socket `ringctl` reaches this instance on.
    pub fn control_socket(&self) -> &Path {
        &self.control
    }

    /// Runs `ringctl --socket SOCKET ARGS` to completion (at most 30 s).
    /// Bytes moved by splice(2) so far, over every route ([`spliced_bytes`] of `ringctl stats`).
    pub fn spliced_bytes(&self) -> u64 {
        spliced_bytes(&String::from_utf8_lossy(&self.ringctl(&["stats"]).stdout))
    }

    pub fn ringctl(&self, args: &[&str]) -> Output {
        let socket = self.control.to_str().expect("utf-8 temp path");
        let mut all = vec!["--socket", socket];
        all.extend_from_slice(args);
        run_ringctl(&all, Duration::from_secs(30))
    }

    /// Sends SIGTERM through `kill -TERM PID`.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends `SIG{name}` (e.g. "INT") through `kill -NAME PID`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -{name} {} failed: {status}",
            self.pid()
        );
    }

    /// Polls for the child's exit for at most `bound`; `None` if it is still running.
    pub async fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on ringway") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn wait_exit_blocking(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait at most `bound` for the exit; panics if it does not come.
    pub async fn terminate(&mut self, bound: Duration) -> ExitStatus {
        self.sigterm();
        match self.wait_exit(bound).await {
            Some(status) => status,
            None => panic!("ringway did not exit within {bound:?} of SIGTERM"),
        }
    }

    /// Everything the server wrote to stderr so far (its log).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Polls the log for at most `bound` until a line contains every one of `needles`; returns
    /// that line, or `None`.
    pub async fn await_log_line(&self, needles: &[&str], bound: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return Some(line.to_string());
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last few KiB of the server's stderr; printed by `Drop` when a test panics.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(&self.log_path) {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            let start = bytes.len().saturating_sub(LOG_TAIL);
            text = String::from_utf8_lossy(&bytes[start..]).into_owned();
        }
        format!(
            "--- ringway stderr (tail of {}) ---\n{text}--- end ---",
            self.log_path.display()
        )
    }
}

impl Drop for Ringway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.wait_exit_blocking(Duration::from_secs(5));
        if let Some(p) = &self.config_path {
            let _ = fs::remove_file(p);
        }
        if !std::thread::panicking() {
            let _ = fs::remove_file(&self.log_path);
        }
        if let Some(d) = &self.own_control_dir {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// The `ringctl` binary next to the ringway under test; panics (never skips) if it is missing.
pub fn ringctl_binary() -> PathBuf {
    let path = binary().with_file_name("ringctl");
    assert!(
        path.is_file(),
        "ringctl binary not found at {}: run `cargo build -p ringctl` first",
        path.display()
    );
    path
}

/// Runs `ringctl ARGS` to completion (at most `bound`, then it is killed).
pub fn run_ringctl(args: &[&str], bound: Duration) -> Output {
    let mut cmd = Command::new(ringctl_binary());
    cmd.args(args);
    run_command(cmd, bound)
}

/// The `(N B spliced)` figures of `ringctl stats` output, summed over its routes (0: none).
pub fn spliced_bytes(stats: &str) -> u64 {
    stats
        .split(" B spliced)")
        .filter_map(|before| before.rsplit_once('(')?.1.parse::<u64>().ok())
        .sum()
}

/// Runs `ringway check` on `config` (written to a temporary file), which must be refused with
/// exit 2; returns its stderr.
pub fn refused_config(config: &str) -> String {
    let path = write_config(config);
    let out = run_to_exit(
        &["check", "--config", path.to_str().expect("utf-8 temp path")],
        Duration::from_secs(10),
    );
    let _ = std::fs::remove_file(&path);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "config must be refused with exit 2; stdout: {stdout:?} stderr: {stderr:?}"
    );
    stderr
}

/// Runs the binary with `args` to completion (at most `bound`, then it is killed) and returns
/// its output. For one-shot commands such as `ringway check`.
pub fn run_to_exit(args: &[&str], bound: Duration) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args);
    // A `run` that starts gets a control socket of its own, never the user's default one.
    let dir = temp_path("ctl");
    cmd.env("RINGWAY_CONTROL", dir.join("control.sock"));
    let out = run_command(cmd, bound);
    let _ = fs::remove_dir_all(dir);
    out
}

/// Runs `cmd` with stdin closed and stdout/stderr captured, killing it (`kill -KILL PID`) and
/// panicking if it has not exited within `bound`.
pub fn run_command(mut cmd: Command, bound: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(bound) {
        Ok(out) => out.unwrap_or_else(|e| panic!("wait for {shown}: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{shown} did not exit within {bound:?}");
        }
    }
}
