//! In-process TCP origins for the tunnel's far side, bound on 127.0.0.1:0 inside the test's tokio
//! runtime: a plain echo, an echo that closes its write side after N bytes, an address that
//! refuses connections, one whose connects never complete, and a staller that leaves a share of
//! its connects hanging (a switch that drops some flows).
//!
//! Invariant: dropping an [`Origin`] aborts its accept loop and, through the `JoinSet` it owns,
//! every connection task, so nothing outlives the test. Connection tasks bound each wait.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

/// How long an origin connection lives at most; tests are far shorter.
const CONN_LIFETIME: Duration = Duration::from_secs(180);

/// An origin that never answers a connect: a listener whose accept queue is full, so the
/// kernel drops further SYNs and connects hang. Held until dropped.
#[derive(Debug)]
pub struct Unanswering {
    pub addr: SocketAddr,
    _listener: StdListener,
    _held: Vec<TcpStream>,
}

impl Unanswering {
    /// Fills a fresh listener's accept queue; panics if it cannot (then connects would not hang).
    pub async fn start() -> Unanswering {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let mut held = Vec::new();
        for _ in 0..5000 {
            match timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => held.push(s),
                Ok(Err(e)) => panic!("filling the origin's accept queue: {e}"),
                Err(_) => {
                    return Unanswering {
                        addr,
                        _listener: listener,
                        _held: held,
                    }
                }
            }
        }
        panic!("could not fill the accept queue of a test listener");
    }
}

/// An origin that leaves a share of its connects hanging, as a half-broken path does: `n` of
/// every ten SYNs meet a full accept queue and are dropped by the kernel, the rest are
/// accepted and greeted with the origin's name, then echoed. It is ten listeners on one port
/// (`SO_REUSEPORT`: the kernel spreads connections over them by a hash of the flow); `n` of
/// them have a backlog of 0 and are not accepted from until [`Staller::recover`].
#[derive(Debug)]
pub struct Staller {
    pub addr: SocketAddr,
    stalled: Vec<StdListener>,
    /// The connections that filled the stalled listeners' queues.
    fillers: Vec<TcpStream>,
    name: &'static str,
    serving: Vec<Origin>,
}

impl Staller {
    pub async fn start(name: &'static str, stalled_of_ten: usize) -> Staller {
        let mut addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let (mut stalled, mut serving) = (Vec::new(), Vec::new());
        for i in 0..10 {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            s.set_reuse_port(true).expect("SO_REUSEPORT");
            s.bind(&addr.into())
                .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            addr = s.local_addr().expect("addr").as_socket().expect("inet");
            let listener: StdListener = s.into();
            if i < stalled_of_ten {
                socket2::SockRef::from(&listener).listen(0).expect("listen");
                stalled.push(listener);
            } else {
                socket2::SockRef::from(&listener)
                    .listen(128)
                    .expect("listen");
                listener.set_nonblocking(true).expect("nonblocking");
                let l = TcpListener::from_std(listener).expect("tokio listener");
                serving.push(Origin::serve_listener(l, Behaviour::Greet(name)));
            }
        }
        // Fill each stalled listener's one-place queue, so that from now on every connect that
        // hashes to one hangs at its SYN (none is accepted and left unanswered): a connect that
        // completes and is not greeted is a filler.
        let mut fillers = Vec::new();
        for _ in 0..1000 {
            if fillers.len() == stalled_of_ten {
                break;
            }
            let Ok(Ok(mut s)) = timeout(Duration::from_millis(100), TcpStream::connect(addr)).await
            else {
                continue; // hashed to a full one
            };
            let mut b = [0u8; 1];
            if !matches!(
                timeout(Duration::from_millis(200), s.read(&mut b)).await,
                Ok(Ok(1))
            ) {
                fillers.push(s);
            }
        }
        assert_eq!(fillers.len(), stalled_of_ten, "filling the stalled queues");
        Staller {
            addr,
            stalled,
            fillers,
            name,
            serving,
        }
    }

    /// The path heals: the stalled listeners are accepted from too.
    pub fn recover(&mut self) {
        self.fillers.clear();
        for listener in self.stalled.drain(..) {
            // A listen(2) again sets a listening socket's backlog: room for bursts, as the others.
            socket2::SockRef::from(&listener)
                .listen(128)
                .expect("listen");
            listener.set_nonblocking(true).expect("nonblocking");
            let l = TcpListener::from_std(listener).expect("tokio listener");
            self.serving
                .push(Origin::serve_listener(l, Behaviour::Greet(self.name)));
        }
    }
}

/// A running origin; its tasks stop when it is dropped.
#[derive(Debug)]
pub struct Origin {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Echo,
    EchoThenClose(usize),
    Greet(&'static str),
    SslRefusing(u8),
    /// Answers each SSLRequest only after this long.
    SlowSsl(Duration, u8),
    /// Accepts, reads and never writes.
    Mute,
    /// Reads this many bytes, then resets the connection.
    ResetAfter(usize),
}

/// PostgreSQL's `SSLRequest`.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

impl Origin {
    /// Echoes every byte back; on EOF from the tunnel it half-closes its own write side.
    pub async fn echo() -> Origin {
        Self::spawn(Behaviour::Echo).await
    }

    /// Reads exactly `n` bytes, echoes them, then shuts its write side (the tunnel sees EOF) and
    /// drains the read side until EOF so the kernel never answers unread data with RST.
    pub async fn echo_then_close(n: usize) -> Origin {
        Self::spawn(Behaviour::EchoThenClose(n)).await
    }

    /// Writes `name` as soon as a tunnel connects, then echoes: a client learns which origin
    /// its route led to from its first bytes.
    pub async fn greeting(name: &'static str) -> Origin {
        Self::spawn(Behaviour::Greet(name)).await
    }

    /// Answers every 8-byte `SSLRequest` it reads with `answer` (`N` as a PostgreSQL server
    /// without TLS does), and echoes anything else.
    pub async fn ssl_refusing(answer: u8) -> Origin {
        Self::spawn(Behaviour::SslRefusing(answer)).await
    }

    /// Like [`Origin::ssl_refusing`], answering each request only after `delay`: a server too
    /// slow for its health check's timeout.
    pub async fn slow_ssl_refusing(delay: Duration, answer: u8) -> Origin {
        Self::spawn(Behaviour::SlowSsl(delay, answer)).await
    }

    /// Accepts every connection and reads it, and never writes a byte: a hung server whose
    /// TCP stack still completes connects.
    pub async fn mute() -> Origin {
        Self::spawn(Behaviour::Mute).await
    }

    /// Reads `n` bytes of each connection, then resets it (SO_LINGER 0): a backend that dies
    /// as soon as it is asked anything.
    pub async fn reset_after(n: usize) -> Origin {
        Self::spawn(Behaviour::ResetAfter(n)).await
    }

    /// An address where nothing listens: a port bound and immediately released.
    pub fn refused() -> SocketAddr {
        let l = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = l.local_addr().expect("local_addr");
        drop(l);
        addr
    }

    /// Like [`Origin::greeting`], listening on `addr` (an address that refused until now, say).
    pub async fn greeting_at(name: &'static str, addr: SocketAddr) -> Origin {
        Self::spawn_at(Behaviour::Greet(name), addr).await
    }

    async fn spawn(behaviour: Behaviour) -> Origin {
        Self::spawn_at(behaviour, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    async fn spawn_at(behaviour: Behaviour, at: SocketAddr) -> Origin {
        let listener = TcpListener::bind(at)
            .await
            .unwrap_or_else(|e| panic!("bind origin on {at}: {e}"));
        Self::serve_listener(listener, behaviour)
    }

    fn serve_listener(listener: TcpListener, behaviour: Behaviour) -> Origin {
        let addr = listener.local_addr().expect("origin local_addr");
        let accept = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                // Reap finished connections so the set does not grow without bound.
                while conns.try_join_next().is_some() {}
                conns.spawn(async move {
                    let _ = timeout(CONN_LIFETIME, serve(stream, behaviour)).await;
                });
            }
        });
        Origin { addr, accept }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(stream: TcpStream, behaviour: Behaviour) -> std::io::Result<()> {
    if let Behaviour::ResetAfter(n) = behaviour {
        let mut stream = stream;
        let mut buf = vec![0u8; n];
        stream.read_exact(&mut buf).await?;
        // Linger 0: close(2) resets at once (it never blocks).
        socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
        drop(stream);
        return Ok(());
    }
    let (mut rd, mut wr) = stream.into_split();
    match behaviour {
        Behaviour::Greet(name) => {
            wr.write_all(name.as_bytes()).await?;
            tokio::io::copy(&mut rd, &mut wr).await?;
            wr.shutdown().await?;
        }
        Behaviour::Echo => {
            tokio::io::copy(&mut rd, &mut wr).await?;
            wr.shutdown().await?;
        }
        Behaviour::ResetAfter(_) => {}
        Behaviour::Mute => {
            let mut sink = [0u8; 4096];
            for _ in 0..100_000 {
                if rd.read(&mut sink).await? == 0 {
                    break;
                }
            }
        }
        Behaviour::SlowSsl(delay, answer) => {
            let mut buf = [0u8; 8];
            for _ in 0..10_000 {
                if rd.read_exact(&mut buf).await.is_err() {
                    break;
                }
                tokio::time::sleep(delay).await;
                match buf == SSL_REQUEST {
                    true => wr.write_all(&[answer]).await?,
                    false => wr.write_all(&buf).await?,
                }
            }
            wr.shutdown().await?;
        }
        Behaviour::SslRefusing(answer) => {
            let mut buf = [0u8; 8];
            for _ in 0..10_000 {
                if rd.read_exact(&mut buf).await.is_err() {
                    break;
                }
                match buf == SSL_REQUEST {
                    true => wr.write_all(&[answer]).await?,
                    false => wr.write_all(&buf).await?,
                }
            }
            wr.shutdown().await?;
        }
        Behaviour::EchoThenClose(n) => {
            let mut buf = vec![0u8; n];
            rd.read_exact(&mut buf).await?;
            wr.write_all(&buf).await?;
            wr.shutdown().await?;
            let mut sink = [0u8; 4096];
            for _ in 0..100_000 {
                if rd.read(&mut sink).await? == 0 {
                    break;
                }
            }
        }
    }
    Ok(())
}
