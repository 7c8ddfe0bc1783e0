//! What one thread measured ([`Tally`]): counters, a latency histogram and errors by kind, merged
//! across threads at the end of a run.
//!
//! Invariants: latency is recorded in nanoseconds in an HdrHistogram with 3 significant digits
//! (so every reported microsecond figure is exact to 0.1%), from 1 ns to 100 s; a longer sample is
//! clamped to 100 s rather than dropped. Every error is counted under a stable label (the JSON
//! `errors` keys) and the first message of each kind is kept for the human report.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::ws::handshake::HandshakeFailure;
use crate::ws::ReadError;

/// Largest latency the histogram holds, in ns.
const MAX_LATENCY_NS: u64 = 100_000_000_000;

/// Why a connection failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    ConnectRefused,
    ConnectFailed(String),
    /// The server answered the upgrade with this status.
    HandshakeStatus(u16),
    /// A 101 that breaks RFC 6455 §4.1, or no HTTP at all.
    HandshakeInvalid(&'static str),
    /// An echoed byte differs from the byte sent at that stream offset.
    EchoMismatch {
        offset: u64,
    },
    /// The peer closed (EOF, or a ws Close) while the workload expected more.
    UnexpectedClose(String),
    ConnectionReset,
    Io(String),
    /// A server frame that breaks RFC 6455.
    WsProtocol(ReadError),
    /// A step did not finish in time.
    Timeout(&'static str),
    /// The TLS handshake failed (certificate not trusted, alert from the server, ...).
    TlsHandshake(String),
    /// TLS failed after the handshake (a bad record, an alert).
    Tls(String),
}

impl ErrorKind {
    /// The stable label counted in `errors`.
    pub fn label(&self) -> String {
        match self {
            ErrorKind::ConnectRefused => "connection_refused".into(),
            ErrorKind::ConnectFailed(_) => "connect_failed".into(),
            ErrorKind::HandshakeStatus(code) => format!("handshake_status_{code}"),
            ErrorKind::HandshakeInvalid(_) => "handshake_invalid".into(),
            ErrorKind::EchoMismatch { .. } => "echo_mismatch".into(),
            ErrorKind::UnexpectedClose(_) => "unexpected_close".into(),
            ErrorKind::ConnectionReset => "connection_reset".into(),
            ErrorKind::Io(_) => "io_error".into(),
            ErrorKind::WsProtocol(_) => "ws_protocol_error".into(),
            ErrorKind::Timeout(_) => "timeout".into(),
            ErrorKind::TlsHandshake(_) => "tls_handshake_failed".into(),
            ErrorKind::Tls(_) => "tls_error".into(),
        }
    }

    /// A human sentence for the report.
    pub fn detail(&self) -> String {
        match self {
            ErrorKind::ConnectRefused => "connection refused".into(),
            ErrorKind::ConnectFailed(e) | ErrorKind::Io(e) => e.clone(),
            ErrorKind::HandshakeStatus(code) => format!("upgrade answered with HTTP {code}"),
            ErrorKind::HandshakeInvalid(why) => (*why).into(),
            ErrorKind::EchoMismatch { offset } => {
                format!("echoed bytes differ from those sent, at or after stream byte {offset}")
            }
            ErrorKind::UnexpectedClose(how) => how.clone(),
            ErrorKind::ConnectionReset => "connection reset by peer".into(),
            ErrorKind::WsProtocol(e) => e.as_str().into(),
            ErrorKind::Timeout(step) => format!("{step} timed out"),
            ErrorKind::TlsHandshake(e) => format!("TLS handshake: {e}"),
            ErrorKind::Tls(e) => format!("TLS: {e}"),
        }
    }

    /// Classifies an I/O error on an established connection.
    pub fn from_io(e: &io::Error) -> ErrorKind {
        match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                ErrorKind::ConnectionReset
            }
            io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
            _ => ErrorKind::Io(e.to_string()),
        }
    }
}

impl From<ReadError> for ErrorKind {
    fn from(e: ReadError) -> Self {
        ErrorKind::WsProtocol(e)
    }
}

impl From<HandshakeFailure> for ErrorKind {
    fn from(f: HandshakeFailure) -> Self {
        match f {
            HandshakeFailure::Status(code) => ErrorKind::HandshakeStatus(code),
            HandshakeFailure::Invalid(why) => ErrorKind::HandshakeInvalid(why),
        }
    }
}

/// Errors counted by label, with the first detail of each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    pub counts: BTreeMap<String, u64>,
    pub first: BTreeMap<String, String>,
}

impl ErrorCounts {
    pub fn add(&mut self, e: &ErrorKind) {
        let label = e.label();
        if !self.first.contains_key(&label) {
            self.first.insert(label.clone(), e.detail());
        }
        *self.counts.entry(label).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn merge(&mut self, other: ErrorCounts) {
        for (label, n) in other.counts {
            *self.counts.entry(label).or_default() += n;
        }
        for (label, detail) in other.first {
            self.first.entry(label).or_insert(detail);
        }
    }
}

/// What one thread measured in the measurement window (warmup excluded).
#[derive(Clone, Debug)]
pub struct Tally {
    pub latency: Histogram<u64>,
    /// connect: the close phase of each setup counted (echo read → close done).
    pub close_latency: Histogram<u64>,
    /// Messages completed (latency, rate, bulk) or setups completed (connect, hold).
    pub completed: u64,
    /// Payload bytes written / read back.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Rate: messages scheduled in the window that had not come back at its end.
    pub unfinished: u64,
    /// Connections that were up for the whole run (latency, rate, bulk) or opened (hold).
    pub connections_up: u64,
    /// connect over TLS: setups counted whose handshake resumed a session.
    pub tls_resumed: u64,
    /// TLS: protocol version and cipher suite of the first session opened.
    pub tls_session: Option<String>,
    pub errors: ErrorCounts,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            latency: histogram(),
            close_latency: histogram(),
            completed: 0,
            tx_bytes: 0,
            rx_bytes: 0,
            unfinished: 0,
            connections_up: 0,
            tls_resumed: 0,
            tls_session: None,
            errors: ErrorCounts::default(),
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("constant histogram bounds are valid")
}

fn record_in(h: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    h.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
}

impl Tally {
    pub fn record(&mut self, latency: Duration) {
        record_in(&mut self.latency, latency);
    }

    /// connect: how long a counted setup's close took.
    pub fn record_close(&mut self, d: Duration) {
        record_in(&mut self.close_latency, d);
    }

    pub fn merge(&mut self, other: Tally) {
        // All histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.close_latency.add(&other.close_latency);
        self.completed += other.completed;
        self.tx_bytes += other.tx_bytes;
        self.rx_bytes += other.rx_bytes;
        self.unfinished += other.unfinished;
        self.connections_up += other.connections_up;
        self.tls_resumed += other.tls_resumed;
        if self.tls_session.is_none() {
            self.tls_session = other.tls_session;
        }
        self.errors.merge(other.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_everything() {
        let mut a = Tally::default();
        a.record(Duration::from_micros(10));
        a.errors.add(&ErrorKind::HandshakeStatus(503));
        let mut b = Tally::default();
        b.record(Duration::from_micros(30));
        b.completed = 2;
        b.errors.add(&ErrorKind::HandshakeStatus(503));
        b.errors.add(&ErrorKind::ConnectRefused);
        a.merge(b);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.completed, 2);
        assert_eq!(a.errors.counts["handshake_status_503"], 2);
        assert_eq!(a.errors.total(), 3);
        assert!(a.latency.max() >= 30_000);
    }
}
