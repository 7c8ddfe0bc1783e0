//! The result of a run: one [`Report`], printed as a human table and, with `--json`, as one JSON
//! object.
//!
//! Units are in the field names: `_us` microseconds, `_per_sec` per second, `_mbps` megabytes
//! (10^6 bytes) per second, `_bytes` and `_kib` memory. Fields a workload does not measure are
//! absent from the JSON rather than zero. `errors` maps each error label to its count and is
//! always present (empty when the run was clean).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::Tally;

/// The parameters a run was given.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Params {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnels: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_secs: Option<f64>,
    /// connect: which side ends each connection ("client" or "origin").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close: Option<&'static str>,
    /// connect over TLS: whether setups offer to resume an earlier session (`--no-resume`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<bool>,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub threads: usize,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub workload: &'static str,
    pub target: String,
    pub params: Params,
    /// Length of the measurement window.
    pub elapsed_secs: f64,
    /// Connections that stayed up through the run (tunnels opened, for hold).
    pub connections_up: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unfinished: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setups: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setups_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p999_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_us: Option<f64>,
    /// connect: the close phase alone, from the echo's last byte read to the end of the close.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_p90_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_mbps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_mbps: Option<f64>,
    /// tx + rx.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goodput_mbps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_before_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_after_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_tunnel_bytes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_tunnel_kib: Option<f64>,
    /// TLS: protocol version and cipher suite of the first session, e.g.
    /// `TLSv1_3 TLS13_AES_256_GCM_SHA384`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// connect over TLS: setups counted whose handshake resumed a session, and their share of
    /// `setups` in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_resumed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_resumed_percent: Option<f64>,
    /// CPU the client process used over the window, in percent of one core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cpu_percent: Option<f64>,
    /// CPU the proxy (`--server-pid`) used over the window, in percent of one core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_percent: Option<f64>,
    /// The proxy's CPU time per message (latency runs), µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_message: Option<f64>,
    /// The proxy's and the client's CPU time per setup (connect runs), µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_setup: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cpu_us_per_setup: Option<f64>,
    pub errors: BTreeMap<String, u64>,
    pub error_total: u64,
    /// The first message seen for each error label.
    pub error_details: BTreeMap<String, String>,
}

impl Report {
    /// A report with the figures every workload shares filled in from `tally`.
    pub fn new(workload: &'static str, target: String, params: Params, tally: &Tally) -> Report {
        let mut r = Report {
            workload,
            target,
            params,
            connections_up: tally.connections_up,
            tls: tally.tls_session.clone(),
            errors: tally.errors.counts.clone(),
            error_total: tally.errors.total(),
            error_details: tally.errors.first.clone(),
            ..Report::default()
        };
        let h = &tally.latency;
        if !h.is_empty() {
            let us = |ns: u64| ns as f64 / 1000.0;
            r.p50_us = Some(us(h.value_at_quantile(0.50)));
            r.p90_us = Some(us(h.value_at_quantile(0.90)));
            r.p99_us = Some(us(h.value_at_quantile(0.99)));
            r.p999_us = Some(us(h.value_at_quantile(0.999)));
            r.max_us = Some(us(h.max()));
            r.mean_us = Some(h.mean() / 1000.0);
        }
        r
    }

    /// Fills the throughput figures over a window of `secs`.
    pub fn set_throughput(&mut self, tally: &Tally, secs: f64) {
        self.elapsed_secs = secs;
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        self.tx_bytes = Some(tally.tx_bytes);
        self.rx_bytes = Some(tally.rx_bytes);
        self.tx_mbps = Some(per_sec(tally.tx_bytes) / 1e6);
        self.rx_mbps = Some(per_sec(tally.rx_bytes) / 1e6);
        self.goodput_mbps = Some(per_sec(tally.tx_bytes + tally.rx_bytes) / 1e6);
    }

    /// Fills `messages` (`tally.completed`) and `messages_per_sec` over a window of `secs`.
    pub fn set_messages(&mut self, tally: &Tally, secs: f64) {
        self.messages = Some(tally.completed);
        self.messages_per_sec = Some(tally.completed as f64 / secs);
        if let (Some(p), true) = (self.server_cpu_percent, tally.completed > 0) {
            self.server_cpu_us_per_message = Some(p / 100.0 * secs * 1e6 / tally.completed as f64);
        }
    }

    /// Fills `setups` (`tally.completed`), `setups_per_sec` over a window of `secs`, and the CPU
    /// the proxy and the client spent per setup.
    pub fn set_setups(&mut self, tally: &Tally, secs: f64) {
        self.setups = Some(tally.completed);
        self.setups_per_sec = Some(tally.completed as f64 / secs);
        let per_setup = |p: Option<f64>| {
            p.filter(|_| tally.completed > 0)
                .map(|p| p / 100.0 * secs * 1e6 / tally.completed as f64)
        };
        self.server_cpu_us_per_setup = per_setup(self.server_cpu_percent);
        self.client_cpu_us_per_setup = per_setup(self.client_cpu_percent);
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// The human table.
    pub fn to_table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "{} against {}", self.workload, self.target);
        let row = |t: &mut String, k: &str, v: String| {
            let _ = writeln!(t, "  {k:<22} {v}");
        };
        let p = &self.params;
        let mut given = Vec::new();
        let fields = [
            ("connections", p.connections),
            ("size", p.size),
            ("rate", p.rate),
            ("frame", p.frame),
            ("concurrency", p.concurrency),
            ("tunnels", p.tunnels),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                given.push(format!("{k}={v}"));
            }
        }
        if let Some(pid) = p.pid {
            given.push(format!("pid={pid}"));
        }
        if let Some(close) = p.close {
            given.push(format!("close={close}"));
        }
        if let Some(resume) = p.resume {
            given.push(format!("resume={resume}"));
        }
        match p.hold_secs {
            Some(hold) => given.push(format!(
                "hold={hold}s settle={}s threads={}",
                p.warmup_secs, p.threads
            )),
            None => given.push(format!(
                "duration={}s warmup={}s threads={}",
                p.duration_secs, p.warmup_secs, p.threads
            )),
        }
        row(&mut t, "parameters", given.join(" "));
        row(&mut t, "window", format!("{:.2} s", self.elapsed_secs));
        row(&mut t, "connections up", self.connections_up.to_string());
        if let Some(tls) = &self.tls {
            row(&mut t, "tls", tls.clone());
        }
        let opt_f = |t: &mut String, k: &str, v: Option<f64>, unit: &str| {
            if let Some(v) = v {
                let _ = writeln!(t, "  {k:<22} {}", format!("{v:.1} {unit}").trim_end());
            }
        };
        let opt_u = |t: &mut String, k: &str, v: Option<u64>| {
            if let Some(v) = v {
                let _ = writeln!(t, "  {k:<22} {v}");
            }
        };
        opt_u(&mut t, "messages", self.messages);
        opt_f(&mut t, "messages/s", self.messages_per_sec, "");
        opt_u(&mut t, "unfinished", self.unfinished);
        opt_u(&mut t, "setups", self.setups);
        opt_f(&mut t, "setups/s", self.setups_per_sec, "");
        if let (Some(n), Some(pct)) = (self.tls_resumed, self.tls_resumed_percent) {
            row(&mut t, "tls resumed", format!("{n} ({pct:.1}%)"));
        }
        opt_f(&mut t, "tx goodput", self.tx_mbps, "MB/s");
        opt_f(&mut t, "rx goodput", self.rx_mbps, "MB/s");
        opt_f(&mut t, "total goodput", self.goodput_mbps, "MB/s");
        opt_u(&mut t, "requested", self.requested);
        opt_u(&mut t, "succeeded", self.succeeded);
        opt_f(
            &mut t,
            "rss before",
            self.rss_before_bytes.map(|b| b as f64 / 1024.0),
            "KiB",
        );
        opt_f(
            &mut t,
            "rss after",
            self.rss_after_bytes.map(|b| b as f64 / 1024.0),
            "KiB",
        );
        if let (Some(b), Some(k)) = (self.rss_per_tunnel_bytes, self.rss_per_tunnel_kib) {
            row(
                &mut t,
                "rss per tunnel",
                format!("{b:.0} bytes ({k:.2} KiB)"),
            );
        }
        if let Some(p50) = self.p50_us {
            let _ = writeln!(
                t,
                "  {:<22} p50 {p50:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
                "latency (us)",
                self.p90_us.unwrap_or_default(),
                self.p99_us.unwrap_or_default(),
                self.p999_us.unwrap_or_default(),
                self.max_us.unwrap_or_default(),
                self.mean_us.unwrap_or_default(),
            );
        }
        if let Some(p50) = self.close_p50_us {
            let _ = writeln!(
                t,
                "  {:<22} p50 {p50:.1}  p90 {:.1}  p99 {:.1}",
                "close phase (us)",
                self.close_p90_us.unwrap_or_default(),
                self.close_p99_us.unwrap_or_default(),
            );
        }
        opt_f(&mut t, "client cpu", self.client_cpu_percent, "% of a core");
        opt_f(&mut t, "server cpu", self.server_cpu_percent, "% of a core");
        opt_f(
            &mut t,
            "server cpu/msg",
            self.server_cpu_us_per_message,
            "µs",
        );
        opt_f(
            &mut t,
            "server cpu/setup",
            self.server_cpu_us_per_setup,
            "µs",
        );
        opt_f(
            &mut t,
            "client cpu/setup",
            self.client_cpu_us_per_setup,
            "µs",
        );
        row(&mut t, "errors", self.error_total.to_string());
        for (label, n) in &self.errors {
            let detail = self.error_details.get(label).map_or("", String::as_str);
            let _ = writeln!(t, "    {label:<24} {n:>8}  ({detail})");
        }
        t
    }
}
