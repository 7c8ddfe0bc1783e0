//! A plain TCP (L4) relay: a connection accepted on a `mode = "tcp"` listener is carried to its
//! listener's origin byte for byte, with no WebSocket at all.
//!
//! Sans-IO like the tunnel: `handle_*` in, [`Intent`]s out. The origin is connected first (the
//! client is not read until then, so nothing is buffered here); then bytes pass unchanged both
//! ways. A half-close is passed on: the client's FIN becomes a shutdown of the origin's write
//! side and the origin may go on answering (and the other way round); once both directions have
//! ended, both sockets close. An error on either side, a connect failure or timeout, or a
//! shutdown ends both (a shutdown after the queued bytes).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::tunnel::{CloseReason, CloseRecord, Intent, Side, TunnelStats};

/// What a TCP relay needs to know.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    pub origin: SocketAddr,
    pub connect_timeout: Duration,
    /// Close after this long with no byte either way; `None`: never.
    pub idle_timeout: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting { deadline: Instant },
    Relaying,
    Closed,
}

/// One L4 connection.
#[derive(Debug)]
pub struct TcpRelay {
    config: TcpConfig,
    phase: Phase,
    intents: VecDeque<Intent>,
    record: Option<CloseRecord>,
    stats: TunnelStats,
    client_eof: bool,
    origin_eof: bool,
    last_byte: Instant,
}

impl TcpRelay {
    /// A relay for a freshly accepted connection: asks for the origin connect at once.
    pub fn new(config: TcpConfig, now: Instant) -> TcpRelay {
        let mut intents = VecDeque::new();
        intents.push_back(Intent::ConnectOrigin(config.origin));
        TcpRelay {
            phase: Phase::Connecting {
                deadline: now + config.connect_timeout,
            },
            config,
            intents,
            record: None,
            stats: TunnelStats::default(),
            client_eof: false,
            origin_eof: false,
            last_byte: now,
        }
    }

    pub fn poll_intent(&mut self) -> Option<Intent> {
        self.intents.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting { deadline } => Some(deadline),
            Phase::Relaying => self.config.idle_timeout.map(|t| self.last_byte + t),
            Phase::Closed => None,
        }
    }

    /// The client is not read before the origin is connected.
    pub fn client_paused(&self) -> bool {
        matches!(self.phase, Phase::Connecting { .. })
    }

    pub fn is_relaying(&self) -> bool {
        matches!(self.phase, Phase::Relaying)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    pub fn close_record(&self) -> Option<CloseRecord> {
        self.record
    }

    pub fn stats(&self) -> TunnelStats {
        self.stats
    }

    pub fn handle_origin_connected(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Connecting { .. }) {
            self.phase = Phase::Relaying;
            self.last_byte = now;
        }
    }

    pub fn handle_origin_connect_failed(&mut self, errno: i32, _now: Instant) {
        self.end_at_once(Side::Origin, CloseReason::ConnectFailed(errno.abs()));
    }

    /// The origin socket could not be created here (out of descriptors or memory).
    pub fn handle_origin_socket_failed(&mut self, errno: i32, _now: Instant) {
        self.end_at_once(Side::Server, CloseReason::OriginSocket(errno.abs()));
    }

    /// `n` bytes from the client, forwarded unchanged.
    pub fn handle_client_bytes(&mut self, n: usize, now: Instant) {
        self.stats.to_origin += n as u64;
        self.last_byte = now;
    }

    /// `n` bytes from the origin, forwarded unchanged.
    pub fn handle_origin_bytes(&mut self, n: usize, now: Instant) {
        self.stats.to_client += n as u64;
        self.last_byte = now;
    }

    /// The client's FIN: passed on to the origin; the origin may still answer.
    pub fn handle_client_eof(&mut self, _now: Instant) {
        if self.phase != Phase::Relaying || self.client_eof {
            if matches!(self.phase, Phase::Connecting { .. }) {
                self.end_at_once(Side::Client, CloseReason::ClientEof);
            }
            return;
        }
        self.client_eof = true;
        self.intents.push_back(Intent::ShutOriginWrite);
        self.maybe_done(Side::Client, CloseReason::ClientEof);
    }

    /// The origin's FIN: passed on to the client; the client may still send.
    pub fn handle_origin_eof(&mut self, _now: Instant) {
        if self.phase != Phase::Relaying || self.origin_eof {
            return;
        }
        self.origin_eof = true;
        self.intents.push_back(Intent::ShutClientWrite);
        self.maybe_done(Side::Origin, CloseReason::OriginEof);
    }

    pub fn handle_client_error(&mut self, errno: i32, _now: Instant) {
        self.end_at_once(Side::Client, CloseReason::ClientError(errno.abs()));
    }

    pub fn handle_origin_error(&mut self, errno: i32, _now: Instant) {
        self.end_at_once(Side::Origin, CloseReason::OriginError(errno.abs()));
    }

    /// A socket stopped reading what was queued to it for the send-stall timeout.
    pub fn handle_stalled(&mut self, origin: bool, _now: Instant) {
        let (by, why) = if origin {
            (Side::Origin, CloseReason::OriginStalled)
        } else {
            (Side::Client, CloseReason::ClientStalled)
        };
        self.end_at_once(by, why);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        match self.phase {
            Phase::Connecting { .. } => self.end_at_once(Side::Origin, CloseReason::ConnectTimeout),
            Phase::Relaying => self.end_after_queues(Side::Server, CloseReason::IdleTimeout),
            Phase::Closed => {}
        }
    }

    /// Shutdown (or an operator's close): both sockets close after their queued bytes.
    pub fn handle_shutdown(&mut self, reason: CloseReason, _now: Instant) {
        match self.phase {
            Phase::Relaying => self.end_after_queues(Side::Server, reason),
            Phase::Connecting { .. } => self.end_at_once(Side::Server, reason),
            Phase::Closed => {}
        }
    }

    fn maybe_done(&mut self, by: Side, reason: CloseReason) {
        if self.client_eof && self.origin_eof {
            self.end_after_queues(by, reason);
        }
    }

    fn end_after_queues(&mut self, by: Side, reason: CloseReason) {
        self.record.get_or_insert(CloseRecord { by, reason });
        self.intents.push_back(Intent::CloseOrigin);
        self.intents.push_back(Intent::CloseClient);
        self.intents.push_back(Intent::Finished);
        self.phase = Phase::Closed;
    }

    fn end_at_once(&mut self, by: Side, reason: CloseReason) {
        if self.phase == Phase::Closed {
            return;
        }
        self.record.get_or_insert(CloseRecord { by, reason });
        self.intents.push_back(Intent::AbortOrigin);
        self.intents.push_back(Intent::CloseClient);
        self.intents.push_back(Intent::Finished);
        self.phase = Phase::Closed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(now: Instant) -> TcpRelay {
        TcpRelay::new(
            TcpConfig {
                origin: "127.0.0.1:5432".parse().unwrap(),
                connect_timeout: Duration::from_secs(5),
                idle_timeout: None,
            },
            now,
        )
    }

    fn drain(r: &mut TcpRelay) -> Vec<Intent> {
        std::iter::from_fn(|| r.poll_intent()).collect()
    }

    #[test]
    fn connects_first_then_passes_bytes_and_half_closes_each_way() {
        let t = Instant::now();
        let mut r = relay(t);
        assert_eq!(
            drain(&mut r),
            [Intent::ConnectOrigin("127.0.0.1:5432".parse().unwrap())]
        );
        assert!(r.client_paused(), "not read before the origin is up");
        r.handle_origin_connected(t);
        assert!(!r.client_paused() && r.is_relaying());
        r.handle_client_bytes(10, t);
        r.handle_origin_bytes(7, t);
        r.handle_client_eof(t);
        assert_eq!(drain(&mut r), [Intent::ShutOriginWrite]);
        assert!(r.is_relaying(), "the origin may still answer");
        r.handle_origin_bytes(5, t);
        r.handle_origin_eof(t);
        assert_eq!(
            drain(&mut r),
            [
                Intent::ShutClientWrite,
                Intent::CloseOrigin,
                Intent::CloseClient,
                Intent::Finished
            ]
        );
        assert!(r.is_closed());
        assert_eq!((r.stats().to_origin, r.stats().to_client), (10, 12));
        assert_eq!(r.close_record().unwrap().reason, CloseReason::OriginEof);
    }

    #[test]
    fn a_dead_origin_ends_the_client_at_once() {
        let t = Instant::now();
        let mut r = relay(t);
        drain(&mut r);
        r.handle_origin_connect_failed(-111, t);
        assert_eq!(
            drain(&mut r),
            [Intent::AbortOrigin, Intent::CloseClient, Intent::Finished]
        );
        assert_eq!(
            r.close_record().unwrap().reason,
            CloseReason::ConnectFailed(111)
        );
        let mut r = relay(t);
        drain(&mut r);
        r.handle_timeout(t + Duration::from_secs(5));
        assert_eq!(
            r.close_record().unwrap().reason,
            CloseReason::ConnectTimeout
        );
    }

    #[test]
    fn shutdown_and_idle_close_after_the_queues() {
        let t = Instant::now();
        let mut r = relay(t);
        drain(&mut r);
        r.handle_origin_connected(t);
        r.handle_shutdown(CloseReason::Shutdown, t);
        assert_eq!(
            drain(&mut r),
            [Intent::CloseOrigin, Intent::CloseClient, Intent::Finished]
        );
        let mut r = TcpRelay::new(
            TcpConfig {
                idle_timeout: Some(Duration::from_secs(30)),
                ..relay(t).config
            },
            t,
        );
        drain(&mut r);
        r.handle_origin_connected(t);
        r.handle_client_bytes(1, t + Duration::from_secs(20));
        assert_eq!(r.poll_timeout(), Some(t + Duration::from_secs(50)));
        r.handle_timeout(t + Duration::from_secs(50));
        assert_eq!(r.close_record().unwrap().reason, CloseReason::IdleTimeout);
    }
}
