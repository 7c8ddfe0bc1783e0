//! A connection's origin side: the socket toward the TCP origin and its connect. An origin can
//! be connected again after a failed attempt ([`Origin::retire`] hands back the old descriptor
//! to close and leaves a fresh, unconnected socket), which origin pools and failover build on.
//!
//! Invariant: at most one connect is in flight, and its id is kept only while it is, so an
//! abort never cancels an operation that already ended (ring ids carry a generation too).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use ringway_uring::OpId;

use crate::socket::{Socket, SocketLimits};

pub struct Origin {
    pub socket: Socket,
    connect: Option<OpId>,
    /// Connect attempts made for this connection.
    attempts: u32,
    /// Where the latest connect went.
    addr: Option<SocketAddr>,
}

impl Origin {
    pub fn new(limits: SocketLimits, now: Instant) -> Origin {
        Origin {
            socket: Socket::new(None, limits, now),
            connect: None,
            attempts: 0,
            addr: None,
        }
    }

    /// Creates the socket for a connect to `addr`; the caller submits the connect on the
    /// returned descriptor and reports its id with [`Origin::connect_submitted`].
    pub fn begin_connect(&mut self, addr: SocketAddr) -> std::io::Result<RawFd> {
        self.addr = Some(addr);
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.nonblocking().cloexec(),
            Some(socket2::Protocol::TCP),
        )?;
        s.set_nodelay(true)?;
        let fd: OwnedFd = s.into();
        let raw = fd.as_raw_fd();
        self.socket.attach(fd);
        self.attempts += 1;
        Ok(raw)
    }

    pub fn connect_submitted(&mut self, id: OpId) {
        self.socket.op_submitted();
        self.connect = Some(id);
    }

    /// The in-flight connect, if any (to cancel it).
    pub fn pending_connect(&self) -> Option<OpId> {
        self.connect
    }

    pub fn on_connected(&mut self) {
        self.connect = None;
        self.socket.on_connected();
    }

    /// The connect failed; the descriptor is kept until [`Origin::retire`] or the teardown.
    pub fn on_connect_failed(&mut self) {
        self.connect = None;
        self.socket.op_done();
    }

    /// Starts over after a failed connect: returns the old descriptor (no operation names it)
    /// for the caller to close and leaves a fresh socket to connect again.
    pub fn retire(&mut self, limits: SocketLimits, now: Instant) -> Option<OwnedFd> {
        if self.connect.is_some() || !self.socket.is_idle() {
            return None;
        }
        let old = std::mem::replace(&mut self.socket, Socket::new(None, limits, now));
        old.into_fd()
    }

    /// The address of the latest connect, if one was begun.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;

    const LIMITS: SocketLimits = SocketLimits {
        backpressure: 1024,
        linger: Duration::from_secs(1),
        send_stall: Duration::from_secs(1),
    };

    #[test]
    fn a_failed_origin_can_be_connected_again() {
        let now = Instant::now();
        let mut o = Origin::new(LIMITS, now);
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let first = o.begin_connect(addr).unwrap();
        assert!(first >= 0);
        // (the worker submits the connect here; it fails)
        o.socket.op_submitted();
        o.on_connect_failed();
        let old = o
            .retire(LIMITS, now)
            .expect("the failed socket's descriptor");
        assert_eq!(old.as_raw_fd(), first);
        drop(old);
        let second = o.begin_connect(addr).unwrap();
        assert!(second >= 0);
        o.socket.op_submitted();
        o.on_connected();
        assert_eq!(o.attempts(), 2);
        assert!(o.socket.is_open());
        assert!(
            o.retire(LIMITS, now).is_none(),
            "a connected origin is not retired"
        );
    }
}
