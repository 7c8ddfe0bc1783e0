//! `ringway`: WebSocket-to-TCP tunnels on a thread-per-core io_uring engine.
//!
//! `ringway run [--config FILE]` serves (without a config: the embedded default, a listener on
//! 127.0.0.1:8080 with `/echo` routed to a built-in echo origin); `ringway check --config FILE`
//! validates a config. The main thread parses the config, binds one SO_REUSEPORT listener per
//! worker and listener address, starts the pinned workers, then waits for SIGINT/SIGTERM and
//! flips the shared shutdown flag the workers poll on their tick.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{error, info, warn};

use ringway::config::Config;
use ringway::control;
use ringway::echo;
use ringway::tls::{self, SharedTls};
use ringway::worker::{AccessSetup, Worker, WorkerConfig};

#[derive(Parser)]
#[command(
    name = "ringway",
    version,
    about = "WebSocket-to-TCP tunnels on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format on stderr: `text` (for people) or `json` (one object per line, for log
    /// shippers). Levels and targets come from RUST_LOG (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve tunnels. Without --config: 127.0.0.1:8080, route /echo to a built-in echo origin.
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and exit (0: valid, 2: invalid).
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Host tuning: `tune check` compares this host with tuning/RUNBOOK.md.
    #[command(subcommand)]
    Tune(Tune),
    /// Turn a local TCP port into tunnels: every connection accepted on --listen is carried to
    /// the edge at --url over a WebSocket (psql, pgbench and any TCP client work unchanged).
    Access(AccessArgs),
}

#[derive(clap::Args)]
struct AccessArgs {
    /// Local address to accept TCP connections on, e.g. 127.0.0.1:5432.
    #[arg(long)]
    listen: SocketAddr,
    /// The edge: wss://HOST[:PORT]/PATH (or ws:// for a plain edge).
    #[arg(long)]
    url: String,
    /// PEM file of the CA (or certificate) to trust for the edge (default: the system's).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// TLS server name to send and verify (default: the URL's host).
    #[arg(long)]
    sni: Option<String>,
    /// An extra request header, 'Name: value' (repeatable), e.g. for authorization.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Accept any certificate from the edge. For tests only: anyone on the path can read
    /// and change the traffic.
    #[arg(long)]
    insecure_skip_verify: bool,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Keep K tunnels open and upgraded ahead of time (split over the workers), replaced
    /// every --warm-refresh-secs, so a local connection skips connect, TLS and upgrade.
    #[arg(long, default_value_t = 0)]
    warm: usize,
    /// Seconds after which a warm tunnel is replaced (keep it under the edge's idle timeout).
    #[arg(long, default_value_t = 50)]
    warm_refresh_secs: u64,
}

#[derive(Subcommand)]
enum Tune {
    /// Read the host (/proc, /sys, limits) and the config; print every deviation from
    /// tuning/RUNBOOK.md with the command that fixes it. Exit 0: nothing above info, 1:
    /// warnings, 2: errors (tunnels will be refused under load), 3: the config is invalid.
    Check {
        /// The config ringway runs with (workers, steering, polling); default: one worker per CPU.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Read the host under this directory instead of / (for fixture trees).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// One JSON array of findings instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn tune_check(config: Option<PathBuf>, root: PathBuf, json: bool) -> i32 {
    let plan = match config.as_ref().map(load).transpose() {
        Ok(c) => {
            let c = c.unwrap_or_else(|| {
                Config::parse("[[listener]]\naddr = \"127.0.0.1:0\"\n", "<defaults>")
                    .expect("the default config parses")
            });
            ringway::tune::Plan {
                workers: c.cpus.clone(),
                steer_by_cpu: c.engine.steer_by_cpu,
                busy_poll_us: c.engine.busy_poll_us,
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            return 3;
        }
    };
    let findings = ringway::tune::check(&root, &plan);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&findings).unwrap_or_default()
        );
    } else {
        print!("{}", ringway::tune::render(&findings));
    }
    ringway::tune::exit_code(&findings)
}

fn main() {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let code = match cli.command {
        Command::Check { config } => match load(&config).and_then(|c| tls_configs(&c).map(|_| c)) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "config ok: {} listener(s), {} route(s), {} worker(s)",
                    c.listeners.len(),
                    c.routes.routes().len(),
                    c.cpus.len()
                );
                0
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                2
            }
        },
        Command::Run { config } => {
            let loaded = match &config {
                Some(path) => load(path),
                None => embedded_default(),
            };
            for w in loaded.iter().flat_map(|c| &c.warnings) {
                tracing::warn!("{w}");
            }
            exit_code(loaded.and_then(|c| run(c, config.as_deref(), None)))
        }
        Command::Access(args) => exit_code(access(args)),
        Command::Tune(Tune::Check { config, root, json }) => tune_check(config, root, json),
    };
    std::process::exit(code);
}

/// 0, or 1 with the error (and its causes) on stderr.
fn exit_code(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// `ringway access`: one listener on `listen`; every accepted connection becomes a tunnel to the
/// edge on the same engine as `run`.
fn access(args: AccessArgs) -> anyhow::Result<()> {
    let AccessArgs {
        listen,
        url,
        ca,
        sni,
        headers,
        insecure_skip_verify,
        workers,
        warm,
        warm_refresh_secs,
    } = args;
    let warm_refresh = Duration::from_secs(warm_refresh_secs);
    let mut text = format!("[[listener]]\naddr = \"{listen}\"\n");
    if let Some(n) = workers {
        text = format!("workers = {n}\n{text}");
    }
    let config = Config::parse(&text, "<ringway access>")?;
    let options = ringway::access::AccessOptions {
        url: url.clone(),
        ca,
        sni,
        headers,
        insecure_skip_verify,
        connect_timeout: Duration::from_millis(config.timeouts.connect_ms),
        handshake_timeout: Duration::from_millis(config.timeouts.handshake_ms),
        close_timeout: Duration::from_millis(config.timeouts.close_ms),
        max_pending: config.limits.backpressure_bytes,
        warm: warm.div_ceil(config.cpus.len().max(1)),
        warm_refresh,
    };
    let setup = ringway::access::setup(&options).map_err(anyhow::Error::msg)?;
    if insecure_skip_verify {
        tracing::warn!("--insecure-skip-verify: the edge's certificate is not checked");
    }
    info!(edge = %setup.config.edge, url, "ringway access");
    run(config, None, Some(Arc::new(setup)))
}

fn load(path: &PathBuf) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    Ok(Config::parse(&text, &path.display().to_string())?)
}

fn embedded_default() -> anyhow::Result<Config> {
    let origin = echo::spawn().context("cannot start the built-in echo origin")?;
    let text = format!(
        "[[listener]]\naddr = \"127.0.0.1:8080\"\n\n[[route]]\npath = \"/echo\"\norigin = \"{origin}\"\nname = \"echo (built-in)\"\n"
    );
    Ok(Config::parse(&text, "<embedded default>")?)
}

/// One listening socket with SO_REUSEPORT, so every worker can bind its own on the same port.
fn listen(addr: SocketAddr) -> std::io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s)
}

/// Raises the soft open-files limit to the hard one: every tunnel holds two descriptors, and
/// the usual soft default (1024) would cap a worker at a few hundred tunnels.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!("cannot raise the open-files limit: {e}");
        }
    }
    let lim = getrlimit(Resource::Nofile);
    match lim.current {
        Some(n) => info!(
            open_files = n,
            "at most about {} tunnels (two descriptors each)",
            n / 2
        ),
        None => info!("open files unlimited"),
    }
}

/// Serves `config` (read from `path`; `None`: the embedded default) until a signal stops it;
/// with `access`, as `ringway access` (no routes, no control plane).
fn run(
    config: Config,
    path: Option<&std::path::Path>,
    access: Option<Arc<AccessSetup>>,
) -> anyhow::Result<()> {
    raise_fd_limit();
    let embedded = path.is_none() && access.is_none();
    let shutdown = Arc::new(AtomicBool::new(false));
    for l in &config.listeners {
        ensure_address_free(l.addr)?;
    }
    // Routes: the state file's (the last `ringctl` change) when there is one, else the config's.
    let start = control::start_routes(
        &config.control,
        config.routes.clone(),
        config.route_specs.clone(),
    )?;
    if let Some(state) = &start.from_state {
        warn!(
            state = %state.display(),
            routes = start.specs.len(),
            "routes from the state file (the last ringctl change), not from the config file; \
             `ringctl routes apply CONFIG` or SIGHUP applies the config file's routes"
        );
    }
    let routes = Arc::new(start.table);
    let (control, mut links) = if access.is_none() {
        let (h, links) = control::start(
            &config.control,
            config.metrics,
            routes.clone(),
            start.specs,
            config.cpus.len(),
        )?;
        (Some(h), links.into_iter().map(Some).collect())
    } else {
        (None, Vec::new())
    };
    links.resize_with(config.cpus.len(), || None);
    let tls = Arc::new(SharedTls::new(tls_configs(&config)?));
    // Bind every worker's listeners first, so a port-0 address resolves to one port for all.
    let mut per_worker: Vec<Vec<OwnedFd>> = config.cpus.iter().map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for l in &config.listeners {
        let mut addr = l.addr;
        for fds in per_worker.iter_mut() {
            let s = listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
            if addr.port() == 0 {
                addr = s
                    .local_addr()?
                    .as_socket()
                    .context("listener has no IP address")?;
            }
            fds.push(s.into());
        }
        let scheme = match (&access, &l.tls) {
            (Some(_), _) => "tcp",
            (None, _) if l.tcp.is_some() => "tcp",
            (None, Some(_)) => "wss",
            (None, None) => "ws",
        };
        bound.push((scheme, addr));
    }
    // Steer each connection to the worker on the CPU that received it, when worker i runs on
    // CPU i (the socket joined i-th is worker i's).
    let identity = config.cpus.iter().enumerate().all(|(i, c)| *c == Some(i));
    if config.engine.steer_by_cpu && !identity {
        bail!("`engine.steer_by_cpu` needs worker i on CPU i (workers = N or [0, 1, ...])");
    }
    if config.engine.steer_by_cpu && config.cpus.len() > 1 {
        for fd in &per_worker[0] {
            ringway_uring::steer_to_cpu(fd.as_fd())
                .context("`engine.steer_by_cpu`: the kernel refused SO_ATTACH_REUSEPORT_CBPF")?;
        }
    }
    let draining: Vec<Arc<AtomicUsize>> = config.cpus.iter().map(|_| Arc::default()).collect();
    let balance = (config.engine.balance && config.cpus.len() > 1 && access.is_none())
        .then(|| Arc::new(ringway::balance::Balance::new(config.cpus.len())));
    let mut handles = Vec::new();
    for (id, (cpu, listeners)) in config.cpus.iter().zip(per_worker).enumerate() {
        let wc = WorkerConfig {
            id,
            cpu: *cpu,
            listeners,
            tls: tls.clone(),
            access: access.clone(),
            routes: routes.clone(),
            tunnel: config.tunnel(),
            backpressure: config.limits.backpressure_bytes,
            send_stall: Duration::from_millis(config.timeouts.send_stall_ms),
            ring_entries: config.engine.ring_entries,
            buffers: config.engine.buffers,
            buffer_size: config.engine.buffer_size,
            shutdown: shutdown.clone(),
            shutdown_timeout: Duration::from_millis(config.timeouts.shutdown_ms),
            busy_poll: Duration::from_micros(config.engine.busy_poll_us),
            draining: draining[id].clone(),
            control: links[id].take(),
            latency_histograms: config.latency_histograms,
            l4: config
                .listeners
                .iter()
                .map(|l| {
                    l.tcp.as_ref().map(|t| {
                        let relay = ringway_proto::tcp::TcpConfig {
                            origin: t.origin,
                            connect_timeout: Duration::from_millis(config.timeouts.connect_ms),
                            idle_timeout: t.idle_timeout,
                        };
                        (relay, Arc::from(t.name.as_str()))
                    })
                })
                .collect(),
            splice: ringway::splice::SpliceConfig {
                // A read never brings more than a buffer less its headroom: a larger minimum
                // would never be met, so it means "full reads".
                min_bytes: config
                    .engine
                    .splice_min_bytes
                    .min(config.engine.buffer_size - ringway_uring::HEADROOM),
                pipe_size: config.engine.pipe_size,
                max_pipes: config.engine.max_pipes,
            },
            balance: balance.clone(),
            napi_busy_poll_us: config.engine.napi_busy_poll_us,
            workers: config.cpus.len(),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let h = std::thread::Builder::new()
            .name(format!("ringway-w{id}"))
            .spawn(move || {
                if let Some(cpu) = wc.cpu {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                        tracing::warn!(worker = id, cpu, "could not pin worker to cpu");
                    }
                }
                match Worker::new(wc) {
                    Ok(w) => {
                        let _ = ready_tx.send(Ok(()));
                        if let Err(e) = w.run() {
                            error!(worker = id, "worker failed: {e}");
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("worker {id} could not set up io_uring: {e}"),
            Err(_) => bail!("worker {id} died during setup"),
        }
        handles.push(h);
    }
    // Install the handler before announcing the port: a supervisor may signal at once.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let mut out = std::io::stdout().lock();
    if let Some(addr) = control.as_ref().and_then(|c| c.metrics) {
        writeln!(out, "metrics on http://{addr}/metrics")?;
    }
    for (scheme, addr) in &bound {
        writeln!(out, "listening on {scheme}://{addr}")?;
    }
    out.flush()?;
    drop(out);
    info!(
        workers = handles.len(),
        routes = routes.routes().len(),
        "ringway serving"
    );
    if embedded {
        let port = bound.first().map_or(8080, |(_, a)| a.port());
        eprintln!(
            "ringway: embedded default config. Try it:\n  python3 -m websockets ws://127.0.0.1:{port}/echo\n  (anything you send comes back from the built-in echo origin; Ctrl-C stops)"
        );
    }
    let stops = |sig: i32| {
        if sig != SIGHUP {
            return true;
        }
        reload_tls(&config, &tls);
        if let (Some(control), Some(path)) = (&control, path) {
            reload_routes(control, path);
        }
        false
    };
    let Some(first) = signals.forever().find(|&sig| stops(sig)) else {
        bail!("the signal handler stopped");
    };
    info!(
        signal = signal_name(first),
        "draining tunnels; a second SIGINT or SIGTERM exits at once"
    );
    shutdown.store(true, Ordering::Relaxed);
    // The workers drain in their own time; a joiner ends the signal loop when they are done.
    let handle = signals.handle();
    let joiner = std::thread::spawn(move || {
        for h in handles {
            let _ = h.join();
        }
        handle.close();
    });
    if let Some(second) = signals.forever().find(|&sig| stops(sig)) {
        let cut: usize = draining.iter().map(|d| d.load(Ordering::Relaxed)).sum();
        warn!(
            signal = signal_name(second),
            tunnels_cut = cut,
            "second signal during the drain: exiting now, cutting {cut} tunnel(s)"
        );
        std::process::exit(128 + second);
    }
    let _ = joiner.join();
    if let Some(c) = control {
        c.stop();
    }
    info!("ringway stopped");
    Ok(())
}

/// SIGHUP re-reads the config file's routes and applies them as `ringctl routes apply` would
/// (logged by the control thread; an invalid file changes nothing).
fn reload_routes(control: &control::Handle, path: &std::path::Path) {
    match std::fs::read_to_string(path) {
        Ok(text) => control.send(control::Command::Reload {
            text,
            source: path.display().to_string(),
        }),
        Err(e) => error!(
            "SIGHUP received: cannot read {}: {e}; routes not reloaded",
            path.display()
        ),
    }
}

/// SIGHUP reloads the listeners' certificates and keys: new connections get them, open ones
/// keep theirs. A file that fails to load keeps the old certificates, with the error logged.
fn reload_tls(config: &Config, tls: &SharedTls) {
    if config.listeners.iter().all(|l| l.tls.is_none()) {
        info!("SIGHUP received: no TLS listener, nothing to reload");
        return;
    }
    match tls_configs(config) {
        Ok(configs) => {
            tls.replace(configs);
            info!("SIGHUP received: TLS certificates reloaded; open tunnels keep theirs");
        }
        Err(e) => {
            error!("SIGHUP received: TLS certificates not reloaded, keeping the old ones: {e:#}")
        }
    }
}

/// Loads every TLS listener's certificates and keys (`None` for plain listeners).
fn tls_configs(config: &Config) -> anyhow::Result<Vec<Option<Arc<rustls::ServerConfig>>>> {
    config
        .listeners
        .iter()
        .map(|l| match &l.tls {
            None => Ok(None),
            Some(files) => tls::server_config(files).map(Some).map_err(|e| {
                anyhow::anyhow!("`listener.tls` at line {} ({}): {e}", l.tls_line, l.addr)
            }),
        })
        .collect()
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// Refuses to start on an address another process listens on. The workers' listeners share a
/// port through SO_REUSEPORT, which would also let a second ringway (same user) join the group
/// silently and take a share of the connections; a probe bound without SO_REUSEPORT conflicts
/// with any listener on the address, so it finds one. Port 0 picks a free port: nothing to check.
fn ensure_address_free(addr: SocketAddr) -> anyhow::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    // Connections of an earlier run in TIME_WAIT do not count.
    probe.set_reuse_address(true)?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "cannot listen on {addr}: another process already listens there (another ringway?); \
             `ss -ltnp 'sport = :{}'` shows which",
            addr.port()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot listen on {addr}")),
    }
}
