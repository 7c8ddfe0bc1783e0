//! The control plane: one thread serves the control socket (`ringctl`), builds route tables
//! and hands them to the workers.
//!
//! The control thread never touches a worker's ring. It sends each worker an immutable table
//! (an `Arc`) through a channel and writes the worker's eventfd, which the worker's ring polls
//! ([`WorkerLink`]); the worker swaps the table in on that completion, records the version it
//! now serves and writes the control thread's acknowledgement eventfd. A change is replied to
//! once every worker serves it, so when `ringctl routes apply` returns, every new tunnel on
//! every worker uses the new table. Tunnels already routed keep the table (and origin) they
//! were routed with.
//!
//! Requests and replies are [`ringctl`] protocol lines. A malformed request or one of another
//! protocol version gets an error reply and the connection stays usable; a line longer than
//! [`ringctl::MAX_LINE`] gets an error reply and the connection is closed. Only the user
//! running ringway (or root) may connect: the socket is mode 0600 and the peer's credentials
//! are checked.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use ringctl::{OriginReport, Reply, Request, RouteReport, RouteSpec, TunnelInfo};
use ringway_proto::route::RouteTable;
use rustix::event::{eventfd, EventfdFlags};
use tracing::{info, warn};

use crate::config::{self, ControlFiles};

/// News for one worker.
pub enum ToWorker {
    Routes(Arc<RouteTable>),
    Query(Query),
}

/// Every worker's route reports and origin reports.
type Figures = (Vec<Vec<RouteReport>>, Vec<Vec<OriginReport>>);

/// A question for a worker, answered with an [`Answer`] carrying the same `id`.
#[derive(Clone, Debug)]
pub enum Query {
    Stats { id: u64 },
    Tunnels { id: u64, route: Option<String> },
    Close { id: u64, slot: u32, gen: u32 },
}

/// A worker's answer.
pub enum Answer {
    Stats {
        id: u64,
        reports: Vec<RouteReport>,
        origins: Vec<OriginReport>,
    },
    Tunnels {
        id: u64,
        tunnels: Vec<TunnelInfo>,
    },
    Closed {
        id: u64,
        found: bool,
    },
}

impl Answer {
    fn id(&self) -> u64 {
        match self {
            Answer::Stats { id, .. } | Answer::Tunnels { id, .. } | Answer::Closed { id, .. } => {
                *id
            }
        }
    }
}

/// A worker's end of the control link.
pub struct WorkerLink {
    rx: mpsc::Receiver<ToWorker>,
    wake: OwnedFd,
    applied: Arc<AtomicU64>,
    acks: Arc<OwnedFd>,
    answers: mpsc::Sender<Answer>,
}

impl WorkerLink {
    /// The eventfd the worker's ring polls for readability.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// On the wake-up: clears the eventfd and takes everything sent; the newest route table,
    /// if one came, and the questions in order.
    pub fn receive(&mut self) -> (Option<Arc<RouteTable>>, Vec<Query>) {
        let mut counter = [0u8; 8];
        let _ = rustix::io::read(&self.wake, &mut counter); // EAGAIN: already cleared
        let mut newest = None;
        let mut queries = Vec::new();
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                ToWorker::Routes(t) => newest = Some(t),
                ToWorker::Query(q) => queries.push(q),
            }
        }
        (newest, queries)
    }

    /// Hands an answer to the control thread.
    pub fn answer(&self, a: Answer) {
        if self.answers.send(a).is_ok() {
            let _ = rustix::io::write(&*self.acks, &1u64.to_ne_bytes());
        }
    }

    /// Tells the control thread this worker now serves table `version`.
    pub fn acknowledge(&self, version: u64) {
        self.applied.store(version, Ordering::Release);
        let _ = rustix::io::write(&*self.acks, &1u64.to_ne_bytes());
    }
}

/// The control thread's end of one worker's link.
struct WorkerEnd {
    tx: mpsc::Sender<ToWorker>,
    wake: OwnedFd,
    applied: Arc<AtomicU64>,
}

/// What the main thread asks of the control thread.
pub enum Command {
    /// SIGHUP: apply the config file's routes, as `ringctl routes apply` would.
    Reload { text: String, source: String },
}

/// The main thread's handle on the control thread.
pub struct Handle {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    socket: PathBuf,
    /// Where `/metrics` is served (the bound address: port 0 resolved).
    pub metrics: Option<std::net::SocketAddr>,
}

impl Handle {
    pub fn send(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Stops the control thread and removes the socket file.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The routes the process starts with: the state file's when it has one, else the config's.
pub struct StartRoutes {
    pub table: RouteTable,
    pub specs: Vec<RouteSpec>,
    /// The state file they came from, if any.
    pub from_state: Option<PathBuf>,
}

/// Reads the state file when present: the routes last applied with `ringctl`. A state file
/// that no longer validates stops the start (its path and how to recover in the error).
pub fn start_routes(
    files: &ControlFiles,
    table: RouteTable,
    specs: Vec<RouteSpec>,
) -> anyhow::Result<StartRoutes> {
    let Some(state) = &files.state else {
        return Ok(StartRoutes {
            table,
            specs,
            from_state: None,
        });
    };
    let text = match std::fs::read_to_string(state) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(StartRoutes {
                table,
                specs,
                from_state: None,
            })
        }
        Err(e) => anyhow::bail!(
            "cannot read the route state file {}: {e} (remove it to start from the config \
             file's routes)",
            state.display()
        ),
    };
    let source = state.display().to_string();
    let (table, specs) = config::parse_routes(&text, &source, 1).map_err(|e| {
        anyhow::anyhow!(
            "route state file: {e} (it holds the routes last applied with ringctl; fix or \
             remove it to start from the config file's routes)"
        )
    })?;
    Ok(StartRoutes {
        table,
        specs,
        from_state: Some(state.clone()),
    })
}

/// Binds the control socket (mode 0600), makes one link per worker and starts the control
/// thread. `table`/`specs`: what the workers start with.
pub fn start(
    files: &ControlFiles,
    metrics: Option<std::net::SocketAddr>,
    table: Arc<RouteTable>,
    specs: Vec<RouteSpec>,
    workers: usize,
) -> anyhow::Result<(Handle, Vec<WorkerLink>)> {
    let listener = bind(&files.socket)?;
    let metrics = match metrics {
        None => None,
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| anyhow::anyhow!("`admin.metrics`: cannot listen on {addr}: {e}"))?;
            l.set_nonblocking(true)?;
            Some(TcpListener::from_std(l))
        }
    };
    let acks = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
    let (answers_tx, answers) = mpsc::channel();
    let mut links = Vec::new();
    let mut ends = Vec::new();
    for _ in 0..workers {
        let (tx, rx) = mpsc::channel();
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let applied = Arc::new(AtomicU64::new(table.version()));
        ends.push(WorkerEnd {
            tx,
            wake: wake.try_clone()?,
            applied: applied.clone(),
        });
        links.push(WorkerLink {
            rx,
            wake,
            applied,
            acks: acks.clone(),
            answers: answers_tx.clone(),
        });
    }
    let metrics_addr = match &metrics {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let mut plane = Plane {
        poll,
        listener,
        metrics,
        acks,
        workers: ends,
        clients: HashMap::new(),
        next_token: FIRST_CLIENT,
        version: table.version(),
        specs,
        state: files.state.clone(),
        pending: Vec::new(),
        stats_cache: None,
        answers,
        queries: Vec::new(),
        next_query: 1,
        commands: rx,
        stop: stop.clone(),
        table: table.clone(),
        resolve_every: files.resolve_every,
        next_resolve: Instant::now() + files.resolve_every.unwrap_or_default(),
    };
    plane.register()?;
    let thread = std::thread::Builder::new()
        .name("ringway-control".into())
        .spawn(move || plane.run())?;
    info!(socket = %files.socket.display(), "control socket ready");
    Ok((
        Handle {
            tx,
            waker,
            stop,
            thread: Some(thread),
            socket: files.socket.clone(),
            metrics: metrics_addr,
        },
        links,
    ))
}

/// Binds `path` with mode 0600: bound under a temporary name, restricted, then renamed into
/// place, so the path never exists with a looser mode. A live socket there (another ringway)
/// is an error; a stale one (nobody listening) is replaced; any other file is left alone.
fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "`control.socket`: cannot create {}: {e} (set `[control] socket` to a \
                         path this user may create)",
                        dir.display()
                    )
                })?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "`control.socket`: {} is served by another running process (another \
                     ringway?); give each instance its own `[control] socket`",
                    path.display()
                );
            }
            std::fs::remove_file(path)?; // stale: nobody listens
        }
        Ok(_) => anyhow::bail!(
            "`control.socket`: {} exists and is not a socket; remove it or choose another path",
            path.display()
        ),
        Err(_) => {}
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)
        .map_err(|e| anyhow::anyhow!("`control.socket`: cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(listener)
}

const LISTENER: Token = Token(0);
const ACKS: Token = Token(1);
const WAKER: Token = Token(2);
const METRICS: Token = Token(3);
/// The longest HTTP request head `/metrics` reads.
const MAX_HTTP_HEAD: usize = 8 * 1024;
const FIRST_CLIENT: usize = 16;
/// Control connections served at once; more are refused with an error line.
const MAX_CLIENTS: usize = 64;
/// A control connection with nothing in flight is dropped after this long without a byte
/// (`ringctl top` asks every second or so).
const CLIENT_IDLE: Duration = Duration::from_secs(60);
/// A `/metrics` connection must send its request within this.
const HTTP_IDLE: Duration = Duration::from_secs(10);
/// How long the workers' figures are served again instead of asked for anew.
const STATS_FRESH: Duration = Duration::from_millis(250);
/// How long a change waits for every worker to take it before the reply says which did not.
const APPLY_DEADLINE: Duration = Duration::from_secs(2);

/// A control connection (Unix socket, JSON lines) or a `/metrics` one (TCP, HTTP).
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Client {
    stream: Stream,
    /// An HTTP client of `/metrics`: one request, answered with the figures, then closed.
    http: bool,
    input: Vec<u8>,
    output: Vec<u8>,
    /// A change is waiting for the workers: later requests wait their turn.
    waiting: bool,
    /// Close once the output is written.
    closing: bool,
    /// The client has closed its side: dropped once its replies are written.
    eof: bool,
    /// Its last read or write; a client quiet for [`CLIENT_IDLE`] (an HTTP client for
    /// [`HTTP_IDLE`]) is dropped, so idle connections cannot hold every slot.
    active: Instant,
}

/// A question sent to `expected` workers, replied to when all answered.
struct PendingQuery {
    id: u64,
    client: Token,
    /// Stats: the route asked for (workers always report every route).
    route: Option<String>,
    expected: usize,
    answers: Vec<Answer>,
    started: Instant,
}

/// A change sent to the workers, replied to when all serve it.
struct Pending {
    client: Option<Token>,
    version: u64,
    reply: Reply,
    started: Instant,
    /// When the table was handed to the workers.
    sent: Instant,
}

struct Plane {
    poll: Poll,
    listener: UnixListener,
    /// `[admin] metrics`: HTTP clients asking for `/metrics`.
    metrics: Option<TcpListener>,
    acks: Arc<OwnedFd>,
    workers: Vec<WorkerEnd>,
    clients: HashMap<Token, Client>,
    next_token: usize,
    /// The version of the newest table sent to the workers.
    version: u64,
    /// That table as written.
    specs: Vec<RouteSpec>,
    state: Option<PathBuf>,
    pending: Vec<Pending>,
    /// The last figures every worker gave, and when (see [`Plane::cached_stats`]).
    stats_cache: Option<(Instant, Figures)>,
    answers: mpsc::Receiver<Answer>,
    /// Questions sent to workers, waiting for their answers.
    queries: Vec<PendingQuery>,
    next_query: u64,
    commands: mpsc::Receiver<Command>,
    stop: Arc<AtomicBool>,
    /// The newest table sent to the workers, and how often (and when next) its origins' host
    /// names are resolved again.
    table: Arc<RouteTable>,
    resolve_every: Option<Duration>,
    next_resolve: Instant,
}

impl Plane {
    fn register(&mut self) -> io::Result<()> {
        let registry = self.poll.registry();
        registry.register(&mut self.listener, LISTENER, Interest::READABLE)?;
        if let Some(m) = &mut self.metrics {
            registry.register(m, METRICS, Interest::READABLE)?;
        }
        let fd = self.acks.as_raw_fd();
        registry.register(&mut SourceFd(&fd), ACKS, Interest::READABLE)
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        while !self.stop.load(Ordering::Acquire) {
            let mut timeout = if self.pending.is_empty() && self.queries.is_empty() {
                Duration::from_secs(1) // idle clients are looked at every second
            } else {
                Duration::from_millis(50)
            };
            if self.resolve_every.is_some() {
                timeout = timeout.min(self.next_resolve.saturating_duration_since(Instant::now()));
            }
            let timeout = Some(timeout);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!("control socket: poll failed: {e}; control plane stopped");
                    return;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    METRICS => self.accept_http(),
                    ACKS => {
                        let mut counter = [0u8; 8];
                        let _ = rustix::io::read(&*self.acks, &mut counter);
                        while let Ok(a) = self.answers.try_recv() {
                            if let Some(q) = self.queries.iter_mut().find(|q| q.id == a.id()) {
                                q.answers.push(a);
                            }
                        }
                    }
                    WAKER => self.commands(),
                    t => self.serve(t, ev.is_readable(), ev.is_writable()),
                }
            }
            let now = Instant::now();
            self.settle(now);
            self.settle_queries(now);
            self.drop_idle(now);
            if let Some(every) = self.resolve_every.filter(|_| now >= self.next_resolve) {
                self.resolve_again();
                self.next_resolve = Instant::now() + every;
            }
        }
    }

    /// Resolves the routes' origin host names again; when an address changed, the workers get
    /// the new table (new tunnels go to the new address, open ones keep theirs). Resolution
    /// blocks this thread (a slow DNS delays `ringctl` answers, never a worker).
    fn resolve_again(&mut self) {
        let named = |a: &str| !a.is_empty() && a.parse::<std::net::SocketAddr>().is_err();
        let any = self
            .specs
            .iter()
            .any(|s| named(&s.origin) || s.origins.iter().any(|o| named(&o.addr)));
        if !any {
            return;
        }
        let version = self.version + 1;
        let table = match config::build_routes(&self.specs, version) {
            Ok(t) => t,
            Err(e) => {
                warn!("origin names not resolved again ({e}); the addresses in use are kept");
                return;
            }
        };
        if table.routes() == self.table.routes() {
            return;
        }
        for (new, old) in table.routes().iter().zip(self.table.routes()) {
            let addrs = |r: &ringway_proto::route::Route| -> Vec<std::net::SocketAddr> {
                match &r.pool {
                    Some(p) => p.origins.iter().map(|o| o.addr).collect(),
                    None => vec![r.origin],
                }
            };
            let (now, was) = (addrs(new), addrs(old));
            if now != was {
                info!(
                    version,
                    route = new.name,
                    now = ?now,
                    was = ?was,
                    "origin address changed: new tunnels go to the new address"
                );
            }
        }
        let table = Arc::new(table);
        for w in &self.workers {
            if w.tx.send(ToWorker::Routes(table.clone())).is_ok() {
                let _ = rustix::io::write(&w.wake, &1u64.to_ne_bytes());
            }
        }
        self.version = version;
        self.table = table;
        self.stats_cache = None;
    }

    fn accept(&mut self) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("control socket: accept failed: {e}");
                    return;
                }
            };
            if let Err(why) = peer_allowed(&stream) {
                warn!("control socket: refused a connection: {why}");
                let line = ringctl::encode(&Reply::Error { error: why });
                let _ = stream.write(line.as_bytes());
                continue;
            }
            if self.clients.len() >= MAX_CLIENTS {
                let line = ringctl::encode(&Reply::Error {
                    error: format!("too many control connections (at most {MAX_CLIENTS})"),
                });
                let _ = stream.write(line.as_bytes());
                continue;
            }
            self.add_client(Stream::Unix(stream), false);
        }
    }

    fn accept_http(&mut self) {
        loop {
            let Some(listener) = &self.metrics else {
                return;
            };
            let (mut stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("metrics: accept failed: {e}");
                    return;
                }
            };
            if self.clients.len() >= MAX_CLIENTS {
                let busy = crate::metrics::response(503, "text/plain", "too many connections\n");
                let _ = stream.write(&busy);
                continue;
            }
            self.add_client(Stream::Tcp(stream), true);
        }
    }

    fn add_client(&mut self, mut stream: Stream, http: bool) {
        {
            let token = Token(self.next_token);
            self.next_token += 1;
            let interest = Interest::READABLE | Interest::WRITABLE;
            if self
                .poll
                .registry()
                .register(stream.source(), token, interest)
                .is_err()
            {
                return;
            }
            self.clients.insert(
                token,
                Client {
                    stream,
                    http,
                    input: Vec::new(),
                    output: Vec::new(),
                    waiting: false,
                    closing: false,
                    eof: false,
                    active: Instant::now(),
                },
            );
        }
    }

    fn commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Reload { text, source } => {
                    let req = Request::RoutesApply {
                        text,
                        source: source.clone(),
                        dry_run: false,
                    };
                    match self.handle(None, req) {
                        Some(Reply::Error { error }) => {
                            warn!("SIGHUP: routes of {source} not applied: {error}")
                        }
                        Some(Reply::Applied { changes, .. }) if changes.is_empty() => {
                            info!("SIGHUP: routes of {source} unchanged")
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Reads, answers and writes for one client.
    fn serve(&mut self, token: Token, readable: bool, _writable: bool) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        let mut eof = false;
        if readable {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match client.stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => client.input.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
                if client.input.len() > ringctl::MAX_LINE {
                    break;
                }
            }
        }
        self.answer(token);
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        client.eof |= eof;
        client.active = Instant::now();
        self.flush_or_drop(token);
    }

    /// Writes what the client has queued; drops it once nothing is left to say.
    fn flush_or_drop(&mut self, token: Token) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        flush(client);
        let quiet = client.output.is_empty() && !client.waiting;
        if quiet && (client.closing || client.eof) {
            self.drop_client(token);
        }
    }

    /// Answers every complete line the client sent, in order, stopping at a change that waits
    /// for the workers.
    fn answer(&mut self, token: Token) {
        loop {
            let Some(client) = self.clients.get_mut(&token) else {
                return;
            };
            if client.waiting || client.closing {
                return;
            }
            if client.http {
                self.answer_http(token);
                return;
            }
            let Some(end) = client.input.iter().position(|&b| b == b'\n') else {
                if client.input.len() > ringctl::MAX_LINE {
                    let error = format!(
                        "request longer than {} bytes; closing this connection",
                        ringctl::MAX_LINE
                    );
                    client
                        .output
                        .extend_from_slice(ringctl::encode(&Reply::Error { error }).as_bytes());
                    client.input.clear();
                    client.closing = true;
                }
                return;
            };
            let line: Vec<u8> = client.input.drain(..=end).collect();
            let reply = match std::str::from_utf8(&line) {
                Err(_) => Some(Reply::Error {
                    error: "malformed message: not UTF-8".into(),
                }),
                Ok(text) => match ringctl::decode::<Request>(text.trim_end()) {
                    Err(error) => Some(Reply::Error { error }),
                    Ok(req) => self.handle(Some(token), req),
                },
            };
            let Some(client) = self.clients.get_mut(&token) else {
                return;
            };
            match reply {
                Some(r) => client
                    .output
                    .extend_from_slice(ringctl::encode(&r).as_bytes()),
                None => client.waiting = true,
            }
        }
    }

    /// A `/metrics` client: once its request head is in, the figures are asked of every worker
    /// (replied to by `settle_queries`), or the error is answered.
    fn answer_http(&mut self, token: Token) {
        let cached = self.cached_stats(None, Instant::now());
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        let head_end = client.input.windows(4).position(|w| w == b"\r\n\r\n");
        let status = match head_end {
            None if client.input.len() > MAX_HTTP_HEAD => 431,
            None => return,
            Some(_) => match crate::metrics::check_request(&client.input) {
                Ok(()) => {
                    client.input.clear();
                    if let Some(cached) = cached {
                        client.output = http_reply(cached);
                        client.closing = true;
                        return;
                    }
                    client.waiting = true;
                    let q = Query::Stats {
                        id: self.next_query,
                    };
                    self.ask(token, None, None, q);
                    return;
                }
                Err(status) => status,
            },
        };
        let phrase = ringway_proto::ws::handshake::reason_phrase(status);
        let body = format!("{status} {phrase}: only GET /metrics is served here\n");
        client.output = crate::metrics::response(status, "text/plain", &body);
        client.input.clear();
        client.closing = true;
    }

    /// One request; `None`: a change now waits for the workers (replied to by `settle`).
    fn handle(&mut self, client: Option<Token>, req: Request) -> Option<Reply> {
        let started = Instant::now();
        if let Request::Stats { route } = &req {
            if let Some(reply) = self.cached_stats(route.as_deref(), started) {
                return Some(reply);
            }
            let q = Query::Stats {
                id: self.next_query,
            };
            return self.ask(client?, None, route.clone(), q);
        }
        if let Request::Tunnels { route } = &req {
            let q = Query::Tunnels {
                id: self.next_query,
                route: route.clone(),
            };
            return self.ask(client?, None, None, q);
        }
        if let Request::TunnelsClose { id } = &req {
            let client = client?;
            let Some((worker, slot, gen)) = parse_tunnel_id(id) else {
                return Some(error(format!(
                    "{id:?} is not a tunnel id (W-SLOT-GEN, as `ringctl tunnels` lists them)"
                )));
            };
            if worker >= self.workers.len() {
                return Some(error(format!(
                    "no tunnel {id} (there is no worker {worker})"
                )));
            }
            let q = Query::Close {
                id: self.next_query,
                slot,
                gen,
            };
            return self.ask(client, Some(worker), None, q);
        }
        let (specs, dry_run) = match req {
            Request::Stats { .. } | Request::Tunnels { .. } | Request::TunnelsClose { .. } => {
                unreachable!("answered above")
            }
            Request::RoutesList => {
                return Some(Reply::Routes {
                    version: self.version,
                    routes: self.specs.clone(),
                })
            }
            Request::RoutesAdd { route } => {
                let key = route.key();
                if let Some(same) = self.specs.iter().find(|r| r.key() == key) {
                    return Some(error(format!(
                        "route {} already exists ({same}); remove it first, or change it with \
                         `ringctl routes apply`",
                        route.display_name()
                    )));
                }
                let mut specs = self.specs.clone();
                specs.push(*route);
                (specs, false)
            }
            Request::RoutesRemove { name } => {
                let Some(i) = self.specs.iter().position(|r| r.display_name() == name) else {
                    let names: Vec<String> =
                        self.specs.iter().map(RouteSpec::display_name).collect();
                    return Some(error(format!(
                        "no route named {name:?} (routes: {})",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    )));
                };
                let mut specs = self.specs.clone();
                specs.remove(i);
                (specs, false)
            }
            Request::RoutesApply {
                text,
                source,
                dry_run,
            } => match config::parse_routes(&text, &source, self.version + 1) {
                Ok((_, specs)) => (specs, dry_run),
                Err(e) => return Some(error(format!("{e}; nothing applied"))),
            },
        };
        let changes = ringctl::diff(&self.specs, &specs);
        let version = self.version + 1;
        // Validated and resolved again as a whole (an added route's origin, every origin's
        // name): the table the workers get.
        let table = match config::build_routes(&specs, version) {
            Ok(t) => t,
            Err(e) => return Some(error(format!("{e}; nothing applied"))),
        };
        let workers = self.workers.len();
        if dry_run || changes.is_empty() {
            return Some(Reply::Applied {
                version: self.version,
                changes,
                workers,
                apply_us: 0,
                propagate_us: 0,
                dry_run,
            });
        }
        if let Some(state) = &self.state {
            if let Err(e) = write_state(state, &specs) {
                return Some(error(format!(
                    "cannot write the route state file {}: {e}; nothing applied",
                    state.display()
                )));
            }
        }
        let table = Arc::new(table);
        self.table = table.clone();
        self.stats_cache = None; // figures of the old table's routes and origins
        let sent = Instant::now();
        for w in &self.workers {
            // A worker that has exited (shutdown) no longer receives: it serves nothing new.
            if w.tx.send(ToWorker::Routes(table.clone())).is_ok() {
                let _ = rustix::io::write(&w.wake, &1u64.to_ne_bytes());
            }
        }
        self.version = version;
        self.specs = specs;
        for c in &changes {
            info!(
                version,
                "route change: {}",
                c.to_string().replace('\n', " ")
            );
        }
        self.pending.push(Pending {
            client,
            version,
            reply: Reply::Applied {
                version,
                changes,
                workers,
                apply_us: 0,
                propagate_us: 0,
                dry_run: false,
            },
            started,
            sent,
        });
        None
    }

    /// Replies to the changes every worker now serves (or that waited too long).
    fn settle(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            let behind: Vec<usize> = self
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| w.applied.load(Ordering::Acquire) < p.version)
                .map(|(i, _)| i)
                .collect();
            let late = now.duration_since(p.started) >= APPLY_DEADLINE;
            if !behind.is_empty() && !late {
                i += 1;
                continue;
            }
            let p = self.pending.remove(i);
            let reply = if behind.is_empty() {
                match p.reply {
                    Reply::Applied {
                        version,
                        changes,
                        workers,
                        dry_run,
                        ..
                    } => Reply::Applied {
                        version,
                        changes,
                        workers,
                        apply_us: now.duration_since(p.started).as_micros() as u64,
                        propagate_us: now.duration_since(p.sent).as_micros() as u64,
                        dry_run,
                    },
                    r => r,
                }
            } else {
                error(format!(
                    "route table version {} was sent to every worker, but worker(s) {behind:?} \
                     had not taken it after {} s (stopping?)",
                    p.version,
                    APPLY_DEADLINE.as_secs()
                ))
            };
            let Some(token) = p.client else { continue };
            if let Some(client) = self.clients.get_mut(&token) {
                client
                    .output
                    .extend_from_slice(ringctl::encode(&reply).as_bytes());
                client.waiting = false;
                self.answer(token);
                self.flush_or_drop(token);
            }
        }
    }

    /// Sends `q` to one worker or all; the reply waits for the answers.
    fn ask(
        &mut self,
        client: Token,
        only: Option<usize>,
        route: Option<String>,
        q: Query,
    ) -> Option<Reply> {
        let id = self.next_query;
        self.next_query += 1;
        let mut expected = 0;
        for (i, w) in self.workers.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            if w.tx.send(ToWorker::Query(q.clone())).is_ok() {
                let _ = rustix::io::write(&w.wake, &1u64.to_ne_bytes());
                expected += 1;
            }
        }
        self.queries.push(PendingQuery {
            id,
            client,
            expected,
            answers: Vec::new(),
            started: Instant::now(),
            route,
        });
        None
    }

    /// The workers' figures when a fresh enough copy is at hand: every stats request and
    /// scrape within [`STATS_FRESH`] of the last answer is served from it, so a flood of them
    /// costs the workers one walk of their tunnels per interval, not one per request.
    fn cached_stats(&self, route: Option<&str>, now: Instant) -> Option<Reply> {
        let (at, (workers, origins)) = self.stats_cache.as_ref()?;
        (now.duration_since(*at) < STATS_FRESH).then(|| stats_reply(workers, origins, route))
    }

    /// Replies to the questions every asked worker has answered (or that waited too long).
    fn settle_queries(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.queries.len() {
            let q = &self.queries[i];
            let late = now.duration_since(q.started) >= APPLY_DEADLINE;
            if q.answers.len() < q.expected && !late {
                i += 1;
                continue;
            }
            let q = self.queries.remove(i);
            let reply = if q.answers.len() < q.expected {
                error(format!(
                    "only {} of {} worker(s) answered within {} s (stopping?)",
                    q.answers.len(),
                    q.expected,
                    APPLY_DEADLINE.as_secs()
                ))
            } else {
                match combine(q.answers) {
                    Reply::Stats { workers, origins } => {
                        let reply = stats_reply(&workers, &origins, q.route.as_deref());
                        self.stats_cache = Some((now, (workers, origins)));
                        reply
                    }
                    other => other,
                }
            };
            if let Some(client) = self.clients.get_mut(&q.client) {
                if client.http {
                    client.output = http_reply(reply);
                    client.closing = true;
                } else {
                    client
                        .output
                        .extend_from_slice(ringctl::encode(&reply).as_bytes());
                }
                client.waiting = false;
                self.answer(q.client);
                self.flush_or_drop(q.client);
            }
        }
    }

    /// Drops clients quiet for too long with nothing in flight for them.
    fn drop_idle(&mut self, now: Instant) {
        let idle: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                let limit = if c.http { HTTP_IDLE } else { CLIENT_IDLE };
                !c.waiting && now.duration_since(c.active) >= limit
            })
            .map(|(t, _)| *t)
            .collect();
        for t in idle {
            self.drop_client(t);
        }
    }

    fn drop_client(&mut self, token: Token) {
        if let Some(mut c) = self.clients.remove(&token) {
            let _ = self.poll.registry().deregister(c.stream.source());
        }
        for p in &mut self.pending {
            if p.client == Some(token) {
                p.client = None;
            }
        }
    }
}

fn error(error: String) -> Reply {
    Reply::Error { error }
}

/// The figures as a `/metrics` page, or 503 when the workers did not answer.
fn http_reply(reply: Reply) -> Vec<u8> {
    let merged = match reply {
        Reply::Stats { workers, origins } => {
            ringctl::merge(&workers).and_then(|m| Ok((m, ringctl::merge_origins(&origins)?)))
        }
        Reply::Error { error } => Err(error),
        _ => Err("unexpected answer".into()),
    };
    match merged {
        Ok((m, origins)) => {
            let page = crate::metrics::render(m, origins);
            crate::metrics::response(200, crate::metrics::CONTENT_TYPE, &page)
        }
        Err(e) => crate::metrics::response(503, "text/plain", &format!("{e}\n")),
    }
}

/// `workers`' figures, only `route` when given (with every pooled origin's).
fn stats_reply(
    workers: &[Vec<RouteReport>],
    origins: &[Vec<OriginReport>],
    route: Option<&str>,
) -> Reply {
    let workers = workers
        .iter()
        .map(|w| {
            w.iter()
                .filter(|r| route.is_none_or(|n| n == r.route))
                .cloned()
                .collect()
        })
        .collect();
    Reply::Stats {
        workers,
        origins: origins.to_vec(),
    }
}

/// `W-SLOT-GEN`.
fn parse_tunnel_id(id: &str) -> Option<(usize, u32, u32)> {
    let mut it = id.split('-');
    let w = it.next()?.parse().ok()?;
    let slot = it.next()?.parse().ok()?;
    let gen = it.next()?.parse().ok()?;
    it.next().is_none().then_some((w, slot, gen))
}

/// The workers' answers to one question as one reply (they are all of one kind).
fn combine(answers: Vec<Answer>) -> Reply {
    let mut workers = Vec::new();
    let mut origins = Vec::new();
    let mut tunnels = Vec::new();
    let mut closed = None;
    for a in answers {
        match a {
            Answer::Stats {
                reports,
                origins: o,
                ..
            } => {
                workers.push(reports);
                origins.push(o);
            }
            Answer::Tunnels { tunnels: t, .. } => tunnels.extend(t),
            Answer::Closed { found, .. } => closed = Some(found),
        }
    }
    match closed {
        Some(true) => Reply::TunnelClosed { id: String::new() },
        Some(false) => error("no such tunnel (it may have ended already)".into()),
        None if !tunnels.is_empty() || workers.is_empty() => {
            tunnels.sort_by_key(|t| std::cmp::Reverse(t.age_ms));
            Reply::Tunnels { tunnels }
        }
        None => Reply::Stats { workers, origins },
    }
}

fn flush(client: &mut Client) {
    while !client.output.is_empty() {
        match client.stream.write(&client.output) {
            Ok(0) => return,
            Ok(n) => {
                client.output.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return, // WouldBlock: the writable event comes back
        }
    }
}

/// Only this process's user (or root) may use the control socket. The mode (0600) says so
/// already; the peer's credentials are checked as well, in case the socket's directory or
/// mode were changed.
fn peer_allowed(stream: &UnixStream) -> Result<(), String> {
    let cred = rustix::net::sockopt::socket_peercred(stream.as_fd())
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    let me = rustix::process::geteuid();
    let uid = cred.uid;
    if uid == me || uid.is_root() {
        Ok(())
    } else {
        Err(format!(
            "user {} may not use this control socket (only user {} and root)",
            uid.as_raw(),
            me.as_raw()
        ))
    }
}

/// Writes the route table to `path` atomically: a temporary file in the same directory,
/// fsynced, renamed over `path`, and the directory fsynced.
pub fn write_state(path: &Path, specs: &[RouteSpec]) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let text = format!(
        "# Routes last applied with ringctl. ringway starts from this file when it exists;\n\
         # remove it to start from the config file's routes.\n{}",
        ringctl::routes_to_toml(specs)
    );
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(d) = dir {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, origin: &str) -> RouteSpec {
        RouteSpec {
            name: None,
            host: None,
            sni: None,
            path: path.into(),
            origin: origin.into(),
            idle_timeout_ms: None,
            ..Default::default()
        }
    }

    #[test]
    fn the_state_file_is_a_route_file() {
        let dir = std::env::temp_dir().join(format!("ringway-state-{}", std::process::id()));
        let path = dir.join("routes.toml");
        let specs = vec![spec("/a", "127.0.0.1:1"), spec("/b", "127.0.0.1:2")];
        write_state(&path, &specs).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let (table, back) = config::parse_routes(&text, "state", 1).unwrap();
        assert_eq!(back, specs);
        assert_eq!(table.routes().len(), 2);
        // An empty table is a valid state too.
        write_state(&path, &[]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(config::parse_routes(&text, "state", 1)
            .unwrap()
            .1
            .is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_worker_takes_the_newest_table_and_acknowledges_it() {
        let files = ControlFiles {
            socket: std::env::temp_dir()
                .join(format!("ringway-ctl-test-{}", std::process::id()))
                .join("control.sock"),
            state: None,
            resolve_every: None,
        };
        let table = Arc::new(config::build_routes(&[spec("/a", "127.0.0.1:1")], 1).unwrap());
        let (handle, mut links) =
            start(&files, None, table, vec![spec("/a", "127.0.0.1:1")], 2).unwrap();
        let mut client = ringctl::Client::connect(&files.socket).unwrap();
        let Reply::Routes { version, routes } = client.call(&Request::RoutesList).unwrap() else {
            panic!("not a route list");
        };
        assert_eq!((version, routes.len()), (1, 1));
        // The workers here are the test: take the table when woken, then acknowledge.
        let workers: Vec<_> = links
            .drain(..)
            .map(|mut link| {
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    loop {
                        if let (Some(t), _) = link.receive() {
                            link.acknowledge(t.version());
                            return t.routes().len();
                        }
                        assert!(Instant::now() < deadline, "no table came");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        let reply = client
            .call(&Request::RoutesAdd {
                route: Box::new(spec("/b", "127.0.0.1:2")),
            })
            .unwrap();
        let Reply::Applied {
            version, changes, ..
        } = reply
        else {
            panic!("not applied: {reply:?}");
        };
        assert_eq!(version, 2);
        assert_eq!(changes.len(), 1);
        for w in workers {
            assert_eq!(w.join().unwrap(), 2);
        }
        let e = client
            .call_raw("{\"v\":7,\"cmd\":\"routes-list\"}\n")
            .unwrap_err();
        assert!(e.to_string().contains("version 7"), "{e}");
        // The connection is still served after the error.
        assert!(client.call(&Request::RoutesList).is_ok());
        handle.stop();
        assert!(!files.socket.exists(), "socket removed on stop");
    }
}
