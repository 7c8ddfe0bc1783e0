//! A worker's counters and latency histograms per route, recorded without locks: only the
//! worker touches them, and the control thread gets a serialized copy when it asks
//! ([`WorkerStats::report`]).
//!
//! A route is found by name once per tunnel (when it is routed, or refused); the tunnel then
//! records into its route's slot by index. Routes keep their slot for the worker's life, so
//! figures survive route changes (a removed route's figures stay, an added one starts at zero).
//! Refusals before routing (404, 400, 408...) go to the route named `-`.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use ringctl::{RouteCounters, RouteReport, PHASES};
use ringway_proto::tunnel::{CloseReason, CloseRecord, Side};

/// A latency phase, an index into [`ringctl::PHASES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Setup = 0,
    Tls,
    Upgrade,
    Connect,
    FirstByte,
    RelayToOrigin,
    RelayToClient,
}

/// How a tunnel ended, as its figures count it: who ended it and the kind of end, without
/// details that would make a key per error (an errno). A plain value: counting an end
/// allocates nothing; it is worded only when the figures are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct End {
    by: &'static str,
    what: &'static str,
    code: Option<u16>,
}

impl End {
    pub fn of(r: &CloseRecord) -> End {
        let by = match r.by {
            Side::Client => "client",
            Side::Origin => "origin",
            Side::Server => "ringway",
        };
        let (what, code) = match r.reason {
            CloseReason::ClientClose(code) => ("Close", code),
            CloseReason::ClientEof | CloseReason::OriginEof => ("EOF", None),
            CloseReason::ClientError(_) | CloseReason::OriginError(_) => ("socket error", None),
            CloseReason::ClientTls => ("TLS failure", None),
            CloseReason::Protocol(code) => ("protocol error", Some(code)),
            CloseReason::Refused(status) => ("refused", Some(status)),
            CloseReason::HandshakeTimeout => ("handshake timeout", None),
            CloseReason::ConnectFailed(_) => ("connect failed", None),
            CloseReason::ConnectTimeout => ("connect timeout", None),
            CloseReason::OriginSocket(_) => ("no origin socket", None),
            CloseReason::OverLimit => ("over limit", Some(503)),
            CloseReason::IdleTimeout => ("idle timeout", None),
            CloseReason::Shutdown => ("shutdown", None),
            CloseReason::Operator => ("operator", None),
            CloseReason::ClientStalled | CloseReason::OriginStalled => ("stopped reading", None),
        };
        End { by, what, code }
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.by, self.what)?;
        match self.code {
            Some(c) => write!(f, " {c}"),
            None => Ok(()),
        }
    }
}

/// The name of refusals no route was chosen for.
pub const UNROUTED: &str = "-";

/// Microseconds from 1 to an hour, 2 significant digits (1 % precision): about 30 KiB per
/// histogram, so a route's seven cost a worker about 200 KiB.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

struct RouteSlot {
    name: String,
    /// Tunnels and bytes (its `closes` and `refusals` are filled at report time, from the two
    /// maps below).
    counters: RouteCounters,
    /// Ends (`None`: no record) and refusals by status.
    ends: HashMap<Option<End>, u64>,
    refusals: HashMap<u16, u64>,
    /// Created on first sample.
    hist: [Option<Box<Histogram<u64>>>; PHASES.len()],
}

#[derive(Default)]
pub struct WorkerStats {
    index: HashMap<String, usize>,
    routes: Vec<RouteSlot>,
    /// Off: histograms are not recorded (counters still are).
    histograms_off: bool,
}

impl WorkerStats {
    /// `histograms`: record latencies (`[admin] latency_histograms`).
    pub fn new(histograms: bool) -> Self {
        WorkerStats {
            histograms_off: !histograms,
            ..Default::default()
        }
    }

    /// The slot of route `name`, made on first use.
    pub fn slot(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.routes.push(RouteSlot {
            name: name.to_string(),
            counters: RouteCounters::default(),
            ends: HashMap::new(),
            refusals: HashMap::new(),
            hist: Default::default(),
        });
        self.index.insert(name.to_string(), self.routes.len() - 1);
        self.routes.len() - 1
    }

    pub fn record(&mut self, slot: usize, phase: Phase, took: Duration) {
        if self.histograms_off {
            return;
        }
        let h = self.routes[slot].hist[phase as usize].get_or_insert_with(|| Box::new(histogram()));
        h.saturating_record((took.as_micros() as u64).max(1));
    }

    /// Frees the histograms (about 200 KiB a route) of routes no longer in the table with no
    /// open tunnel, so a worker's memory follows the table, not every route it ever served.
    /// Their counters (a few hundred bytes) stay in the figures.
    pub fn retire_absent(&mut self, current: &[&str]) {
        for r in &mut self.routes {
            if r.name != UNROUTED && r.counters.open == 0 && !current.contains(&r.name.as_str()) {
                r.hist = Default::default();
            }
        }
    }

    /// A tunnel on `slot` was upgraded (101 sent).
    pub fn opened(&mut self, slot: usize) {
        let c = &mut self.routes[slot].counters;
        c.open += 1;
        c.total += 1;
    }

    /// A tunnel that was upgraded ended: its bytes and how it ended.
    pub fn closed(&mut self, slot: usize, to_origin: u64, to_client: u64, end: Option<End>) {
        let r = &mut self.routes[slot];
        let c = &mut r.counters;
        c.open = c.open.saturating_sub(1);
        c.to_origin += to_origin;
        c.to_client += to_client;
        *r.ends.entry(end).or_default() += 1;
    }

    /// An L4 relay on `slot` spliced `n` bytes on.
    pub fn spliced(&mut self, slot: usize, n: u64) {
        self.routes[slot].counters.spliced += n;
    }

    /// An upgrade was refused with `status`.
    pub fn refused(&mut self, slot: usize, status: u16) {
        *self.routes[slot].refusals.entry(status).or_default() += 1;
    }

    /// The figures for the control thread (only `route`, when given); `live` adds the bytes
    /// of open tunnels per slot.
    pub fn report(
        &self,
        route: Option<&str>,
        live: &HashMap<usize, (u64, u64)>,
    ) -> Vec<RouteReport> {
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, r)| route.is_none_or(|n| n == r.name))
            .map(|(i, r)| {
                let mut counters = r.counters.clone();
                for (end, n) in &r.ends {
                    let key = end.map_or_else(|| "-".to_string(), |e| e.to_string());
                    *counters.closes.entry(key).or_default() += n;
                }
                for (status, n) in &r.refusals {
                    counters.refusals.insert(status.to_string(), *n);
                }
                if let Some((o, c)) = live.get(&i) {
                    counters.to_origin += o;
                    counters.to_client += c;
                }
                let histograms = r
                    .hist
                    .iter()
                    .enumerate()
                    .filter_map(|(p, h)| {
                        let h = h.as_ref()?;
                        Some((PHASES[p].0.to_string(), ringctl::encode_histogram(h)))
                    })
                    .collect();
                RouteReport {
                    route: r.name.clone(),
                    counters,
                    histograms,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_routes_give_their_histograms_back() {
        let mut w = WorkerStats::new(true);
        let (a, b, u) = (w.slot("/a"), w.slot("/b"), w.slot(UNROUTED));
        for s in [a, b, u] {
            w.record(s, Phase::Setup, Duration::from_micros(5));
        }
        w.opened(b);
        w.refused(u, 404);
        w.retire_absent(&["/c"]);
        assert!(
            w.routes[a].hist.iter().all(Option::is_none),
            "gone and idle: freed"
        );
        assert!(w.routes[b].hist[0].is_some(), "an open tunnel keeps it");
        assert!(
            w.routes[u].hist[0].is_some(),
            "refusals before routing are never retired"
        );
        assert_eq!(w.routes[u].refusals[&404], 1, "counters stay");
    }

    #[test]
    fn figures_merge_exactly_across_workers() {
        let mut w0 = WorkerStats::default();
        let mut w1 = WorkerStats::default();
        let a0 = w0.slot("/a");
        let a1 = w1.slot("/a");
        let b1 = w1.slot("/b");
        for us in 1..=1000u64 {
            w0.record(a0, Phase::Setup, Duration::from_micros(us));
            w1.record(a1, Phase::Setup, Duration::from_micros(us + 1000));
        }
        w0.opened(a0);
        w1.opened(a1);
        w1.opened(a1);
        let normal = CloseRecord {
            by: Side::Client,
            reason: CloseReason::ClientClose(Some(1000)),
        };
        w1.closed(a1, 10, 20, Some(End::of(&normal)));
        w1.refused(b1, 502);
        let live = HashMap::from([(a0, (5, 6))]);
        let merged =
            ringctl::merge(&[w0.report(None, &live), w1.report(None, &HashMap::new())]).unwrap();
        assert_eq!(merged.len(), 2);
        let a = &merged[0];
        assert_eq!(a.route, "/a");
        assert_eq!((a.counters.open, a.counters.total), (2, 3));
        assert_eq!((a.counters.to_origin, a.counters.to_client), (15, 26));
        assert_eq!(a.counters.closes["client: Close 1000"], 1);
        let h = &a.histograms["setup"];
        assert_eq!(h.len(), 2000);
        let p50 = h.value_at_quantile(0.5) as f64;
        assert!((p50 - 1000.0).abs() / 1000.0 < 0.01, "p50 {p50}");
        assert_eq!(merged[1].counters.refusals["502"], 1);
        assert!(merged[1].histograms.is_empty());
        let only_b = w1.report(Some("/b"), &HashMap::new());
        assert_eq!(only_b.len(), 1);
    }
}
