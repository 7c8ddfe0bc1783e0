//! `/metrics` on the admin address: the workers' figures in the OpenMetrics text format, written
//! by the Prometheus project's Rust client (`prometheus-client`).
//!
//! Per route: `ringway_tunnels_total`, `ringway_tunnels_open`, `ringway_tunnel_bytes_total`
//! (`direction` = `to_origin` / `to_client`), `ringway_spliced_bytes_total` (what went by
//! splice(2)), `ringway_tunnel_ends_total` (`end` = who and how,
//! as `ringctl stats` words it), `ringway_refusals_total` (`status`), and the latencies as
//! Prometheus histograms `ringway_latency_seconds` (`phase` as in `ringctl stats`), their
//! buckets counted from the merged HdrHistograms. Per pooled origin: see [`Origins`].

use std::fmt;

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use ringctl::{Merged, MergedOrigin};

/// Upper bounds of the latency buckets, seconds (50 µs to 10 s).
const BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

#[derive(Debug)]
struct Figures(Vec<Merged>);

impl Collector for Figures {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let counter = MetricType::Counter;
        {
            let help = "Tunnels upgraded since the start";
            let mut m = enc.encode_descriptor("ringway_tunnels", help, None, counter)?;
            for r in &self.0 {
                let c = ConstCounter::new(r.counters.total);
                c.encode(m.encode_family(&[("route", r.route.as_str())])?)?;
            }
        }
        {
            let help = "Tunnels upgraded and not yet ended";
            let mut m =
                enc.encode_descriptor("ringway_tunnels_open", help, None, MetricType::Gauge)?;
            for r in &self.0 {
                let g = ConstGauge::new(r.counters.open as i64);
                g.encode(m.encode_family(&[("route", r.route.as_str())])?)?;
            }
        }
        {
            let help = "Payload bytes moved, ended and open tunnels";
            let mut m = enc.encode_descriptor("ringway_tunnel_bytes", help, None, counter)?;
            for r in &self.0 {
                for (dir, v) in [
                    ("to_origin", r.counters.to_origin),
                    ("to_client", r.counters.to_client),
                ] {
                    let labels = [("route", r.route.as_str()), ("direction", dir)];
                    ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        {
            let help = "Bytes moved with splice(2), frame headers included";
            let mut m = enc.encode_descriptor("ringway_spliced_bytes", help, None, counter)?;
            for r in &self.0 {
                let g = ConstCounter::new(r.counters.spliced);
                g.encode(m.encode_family(&[("route", r.route.as_str())])?)?;
            }
        }
        {
            let help = "Tunnels ended, by who ended them and how";
            let mut m = enc.encode_descriptor("ringway_tunnel_ends", help, None, counter)?;
            for r in &self.0 {
                for (end, v) in &r.counters.closes {
                    let labels = [("route", r.route.as_str()), ("end", end.as_str())];
                    ConstCounter::new(*v).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        {
            let help = "Upgrades refused, by HTTP status (route - : refused before routing)";
            let mut m = enc.encode_descriptor("ringway_refusals", help, None, counter)?;
            for r in &self.0 {
                for (status, v) in &r.counters.refusals {
                    let labels = [("route", r.route.as_str()), ("status", status.as_str())];
                    ConstCounter::new(*v).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        {
            let help = "Latency by phase (see ringctl stats)";
            let mut m = enc.encode_descriptor(
                "ringway_latency_seconds",
                help,
                None,
                MetricType::Histogram,
            )?;
            for r in &self.0 {
                for (phase, _) in ringctl::PHASES {
                    let Some(h) = r.histograms.get(phase) else {
                        continue;
                    };
                    let (sum, buckets) = seconds_buckets(h);
                    let labels = [("route", r.route.as_str()), ("phase", phase)];
                    m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                        sum,
                        h.len(),
                        &buckets,
                        None,
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// A histogram of microseconds as Prometheus buckets of seconds: the sum, and per bucket the
/// samples in it.
fn seconds_buckets(h: &Histogram<u64>) -> (f64, Vec<(f64, u64)>) {
    let mut buckets = Vec::with_capacity(BUCKETS.len() + 1);
    let mut below = 0u64;
    for b in BUCKETS {
        let upto = h.count_between(0, (b * 1e6) as u64);
        buckets.push((b, upto - below));
        below = upto;
    }
    buckets.push((f64::MAX, h.len() - below));
    (h.mean() * h.len() as f64 / 1e6, buckets)
}

/// Per pooled origin (label `origin`): `ringway_origin_ejected` (workers that have it out of
/// rotation now; each worker judges from its own tunnels), `ringway_origin_open`,
/// `ringway_origin_ejections_total`, `ringway_origin_connects_total`,
/// `ringway_origin_connect_failures_total`, `ringway_origin_warm` (ready or connecting),
/// `ringway_origin_warm_used_total` and `ringway_origin_connect_seconds` (completed
/// connects).
#[derive(Debug)]
struct Origins(Vec<MergedOrigin>);

impl Collector for Origins {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        type Field = fn(&MergedOrigin) -> u64;
        let gauges: [(&str, &str, Field); 3] = [
            (
                "ringway_origin_ejected",
                "Workers that have the origin out of rotation now",
                |o| o.ejected_on,
            ),
            (
                "ringway_origin_open",
                "Tunnels open to the origin (connects in flight included)",
                |o| o.open,
            ),
            (
                "ringway_origin_warm",
                "Warm connections to the origin, ready or connecting",
                |o| o.warm,
            ),
        ];
        for (name, help, f) in gauges {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for o in &self.0 {
                let g = ConstGauge::new(f(o) as i64);
                g.encode(m.encode_family(&[("origin", o.origin.as_str())])?)?;
            }
        }
        let counters: [(&str, &str, Field); 4] = [
            (
                "ringway_origin_ejections",
                "Times the origin was ejected, over every worker",
                |o| o.ejections,
            ),
            (
                "ringway_origin_connects",
                "Connects to the origin that completed",
                |o| o.connects,
            ),
            (
                "ringway_origin_connect_failures",
                "Connects to the origin that failed or timed out",
                |o| o.connect_failures,
            ),
            (
                "ringway_origin_warm_used",
                "Tunnels given a warm connection to the origin",
                |o| o.warm_used,
            ),
        ];
        for (name, help, f) in counters {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for o in &self.0 {
                let c = ConstCounter::new(f(o));
                c.encode(m.encode_family(&[("origin", o.origin.as_str())])?)?;
            }
        }
        let help = "Time of the connects to the origin that completed";
        let mut m = enc.encode_descriptor(
            "ringway_origin_connect_seconds",
            help,
            None,
            MetricType::Histogram,
        )?;
        for o in &self.0 {
            let Some(h) = &o.connect_time else { continue };
            let (sum, buckets) = seconds_buckets(h);
            m.encode_family(&[("origin", o.origin.as_str())])?
                .encode_histogram::<NoLabelSet>(sum, h.len(), &buckets, None)?;
        }
        Ok(())
    }
}

/// The figures as an OpenMetrics text page.
pub fn render(merged: Vec<Merged>, origins: Vec<MergedOrigin>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Figures(merged)));
    registry.register_collector(Box::new(Origins(origins)));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        out = format!("# encoding failed: {e}\n# EOF\n");
    }
    out
}

/// What a request head asks for: `Ok(())` for `GET /metrics`, else the status to answer.
pub fn check_request(head: &[u8]) -> Result<(), u16> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| 400u16)?.trim_end();
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(400);
    }
    if method != Some("GET") {
        return Err(405);
    }
    match target.map(|t| t.split('?').next().unwrap_or(t)) {
        Some("/metrics") => Ok(()),
        _ => Err(404),
    }
}

/// A whole HTTP/1.1 response that closes the connection.
pub fn response(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    let phrase = ringway_proto::ws::handshake::reason_phrase(status);
    format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The content type of [`render`]'s page.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn requests_are_checked() {
        assert_eq!(
            check_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(())
        );
        assert_eq!(check_request(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Ok(()));
        assert_eq!(check_request(b"POST /metrics HTTP/1.1\r\n\r\n"), Err(405));
        assert_eq!(check_request(b"GET / HTTP/1.1\r\n\r\n"), Err(404));
        assert_eq!(check_request(b"hello\r\n\r\n"), Err(400));
    }

    #[test]
    fn histograms_become_buckets() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
        for us in [40, 90, 900, 20_000] {
            h.record(us).unwrap();
        }
        let mut counters = ringctl::RouteCounters {
            total: 4,
            ..Default::default()
        };
        counters.refusals.insert("502".into(), 2);
        let origin = MergedOrigin {
            origin: "127.0.0.1:5432".into(),
            open: 3,
            ejected_on: 1,
            workers: 2,
            ejections: 4,
            connects: 4,
            connect_failures: 9,
            warm: 2,
            warm_used: 5,
            connect_time: Some(h.clone()),
        };
        let page = render(
            vec![Merged {
                route: "/db".into(),
                counters,
                histograms: BTreeMap::from([("setup".to_string(), h)]),
            }],
            vec![origin],
        );
        for line in [
            "ringway_origin_ejected{origin=\"127.0.0.1:5432\"} 1\n",
            "ringway_origin_open{origin=\"127.0.0.1:5432\"} 3\n",
            "ringway_origin_ejections_total{origin=\"127.0.0.1:5432\"} 4\n",
            "ringway_origin_connect_failures_total{origin=\"127.0.0.1:5432\"} 9\n",
            "ringway_origin_warm{origin=\"127.0.0.1:5432\"} 2\n",
            "ringway_origin_warm_used_total{origin=\"127.0.0.1:5432\"} 5\n",
            "ringway_origin_connect_seconds_bucket{le=\"0.0001\",origin=\"127.0.0.1:5432\"} 2\n",
        ] {
            assert!(page.contains(line), "{line} in {page}");
        }
        assert!(
            page.contains("ringway_tunnels_total{route=\"/db\"} 4"),
            "{page}"
        );
        assert!(
            page.contains("ringway_refusals_total{route=\"/db\",status=\"502\"} 2"),
            "{page}"
        );
        for (le, n) in [
            ("0.00005", 1),
            ("0.0001", 2),
            ("0.001", 3),
            ("0.025", 4),
            ("+Inf", 4),
        ] {
            let line = format!(
                "ringway_latency_seconds_bucket{{le=\"{le}\",route=\"/db\",phase=\"setup\"}} {n}\n"
            );
            assert!(page.contains(&line), "{line} in {page}");
        }
        assert!(
            page.contains("ringway_latency_seconds_count{route=\"/db\",phase=\"setup\"} 4"),
            "{page}"
        );
        assert!(page.ends_with("# EOF\n"), "{page}");
    }
}
