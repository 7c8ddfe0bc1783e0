//! `ringbench summarize`: turns the JSON reports of one `bench/compare` invocation into
//! BENCHMARKS.md (machine, versions, a table of every figure as the median over rounds with its
//! ratio to direct TCP and to the best peer) and a latency-percentile plot drawn with plotters.
//!
//! Input files are named `<workload>__<candidate>__r<round>.json` (one ringbench `--json`
//! report each) next to `meta.json` (free-form machine and version facts from the script).
//! A candidate that failed a run simply has no file for it; the table shows `n/a`. A workload no
//! candidate ran (`ONLY=...` in the script) has no row. `ringway-before` (a second ringway binary,
//! `RINGWAY_BEFORE=...`) gets its own column and a `ringway / before` ratio, and is no peer.
//! The TLS rows (`wss-*` workloads) are followed by what TLS each candidate negotiated, the share
//! of resumed setups, and the relay cost of TLS: bulk8 goodput with TLS over without, per
//! candidate, from the same run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};
use plotters::prelude::*;
use serde_json::Value;

/// One workload row of the table.
struct Workload {
    key: &'static str,
    title: &'static str,
    /// JSON field that decides the median run and the ratios.
    metric: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    target: &'static str,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        key: "lat1",
        title: "latency, 1 conn, 64 B: p50",
        metric: "p50_us",
        unit: "µs",
        higher_is_better: false,
        target: "≤ 1.20× direct, below HAProxy",
    },
    Workload {
        key: "lat1",
        title: "latency, 1 conn, 64 B: p99",
        metric: "p99_us",
        unit: "µs",
        higher_is_better: false,
        target: "",
    },
    Workload {
        key: "lat64",
        title: "latency, 64 conns, 64 B: messages/s",
        metric: "messages_per_sec",
        unit: "msg/s",
        higher_is_better: true,
        target: "≥ 0.65× direct",
    },
    Workload {
        key: "lat1",
        title: "latency, 1 conn, 64 B: proxy CPU per message",
        metric: "server_cpu_us_per_message",
        unit: "µs CPU",
        higher_is_better: false,
        target: "",
    },
    Workload {
        key: "lat64",
        title: "latency, 64 conns, 64 B: proxy CPU per message",
        metric: "server_cpu_us_per_message",
        unit: "µs CPU",
        higher_is_better: false,
        target: "",
    },
    Workload {
        key: "lat64",
        title: "latency, 64 conns, 64 B: p99",
        metric: "p99_us",
        unit: "µs",
        higher_is_better: false,
        target: "",
    },
    Workload {
        key: "bulk1",
        title: "bulk, 1 conn, 16 KiB frames: goodput",
        metric: "goodput_mbps",
        unit: "MB/s",
        higher_is_better: true,
        target: "",
    },
    Workload {
        key: "bulk8",
        title: "bulk, 8 conns, 16 KiB frames: goodput",
        metric: "goodput_mbps",
        unit: "MB/s",
        higher_is_better: true,
        target: "≥ 0.50× direct",
    },
    Workload {
        key: "connect",
        title: "connect + upgrade + 64 B round trip + close",
        metric: "setups_per_sec",
        unit: "setups/s",
        higher_is_better: true,
        target: "≥ 0.60× direct",
    },
    Workload {
        key: "connect-origin-close",
        title: "connect + upgrade + 64 B round trip, origin closes",
        metric: "setups_per_sec",
        unit: "setups/s",
        higher_is_better: true,
        target: "",
    },
    Workload {
        key: "connect-origin-close",
        title: "connect, origin closes: echo read → close done, p50",
        metric: "close_p50_us",
        unit: "µs",
        higher_is_better: false,
        target: "",
    },
    Workload {
        key: "connect-origin-close",
        title: "connect, origin closes: proxy CPU per setup",
        metric: "server_cpu_us_per_setup",
        unit: "µs CPU",
        higher_is_better: false,
        target: "",
    },
    Workload {
        key: "hold",
        title: "idle tunnels: RSS growth per tunnel",
        metric: "rss_per_tunnel_bytes",
        unit: "bytes",
        higher_is_better: false,
        target: "≤ 2 KiB",
    },
    Workload {
        key: "wss-lat1",
        title: "TLS: latency, 1 conn, 64 B: p50",
        metric: "p50_us",
        unit: "µs",
        higher_is_better: false,
        target: "",
    },
    Workload {
        key: "wss-lat1",
        title: "TLS: latency, 1 conn, 64 B: p99",
        metric: "p99_us",
        unit: "µs",
        higher_is_better: false,
        target: "",
    },
    Workload {
        key: "wss-lat64",
        title: "TLS: latency, 64 conns, 64 B: messages/s",
        metric: "messages_per_sec",
        unit: "msg/s",
        higher_is_better: true,
        target: "",
    },
    Workload {
        key: "wss-lat64",
        title: "TLS: latency, 64 conns, 64 B: p99",
        metric: "p99_us",
        unit: "µs",
        higher_is_better: false,
        target: "",
    },
    Workload {
        key: "wss-bulk8",
        title: "TLS: bulk, 8 conns, 16 KiB frames: goodput",
        metric: "goodput_mbps",
        unit: "MB/s",
        higher_is_better: true,
        target: "",
    },
    Workload {
        key: "wss-connect",
        title: "TLS: connect + handshake (resumed) + upgrade + 64 B round trip + close",
        metric: "setups_per_sec",
        unit: "setups/s",
        higher_is_better: true,
        target: "≥ HAProxy with TLS",
    },
    Workload {
        key: "wss-connect-noresume",
        title: "TLS: the same, full handshake every time",
        metric: "setups_per_sec",
        unit: "setups/s",
        higher_is_better: true,
        target: "",
    },
    Workload {
        key: "l4-lat1",
        title: "L4 (tcp mode): latency, 1 conn, 64 B: p50",
        metric: "p50_us",
        unit: "µs",
        higher_is_better: false,
        target: "",
    },
    Workload {
        key: "l4-lat64",
        title: "L4 (tcp mode): latency, 64 conns, 64 B: messages/s",
        metric: "messages_per_sec",
        unit: "msg/s",
        higher_is_better: true,
        target: "",
    },
    Workload {
        key: "l4-bulk8",
        title: "L4 (tcp mode): bulk, 8 conns, 16 KiB writes: goodput",
        metric: "goodput_mbps",
        unit: "MB/s",
        higher_is_better: true,
        target: "≥ 1.2× HAProxy",
    },
    Workload {
        key: "l4-connect",
        title: "L4 (tcp mode): connect + 64 B round trip + close",
        metric: "setups_per_sec",
        unit: "setups/s",
        higher_is_better: true,
        target: "",
    },
    Workload {
        key: "l4-connect-origin-close",
        title: "L4 (tcp mode): connect + 64 B round trip, origin closes",
        metric: "setups_per_sec",
        unit: "setups/s",
        higher_is_better: true,
        target: "",
    },
    Workload {
        key: "l4-connect-origin-close",
        title: "L4 (tcp mode): connect, origin closes: proxy CPU per setup",
        metric: "server_cpu_us_per_setup",
        unit: "µs CPU",
        higher_is_better: false,
        target: "",
    },
];

/// The same setups over WebSocket and over ringway's L4 relay, for the cost of the WebSocket
/// protocol at setup (ringway only: the peers serve one of the two).
const WS_SETUP_COST: (&str, &str) = ("connect-origin-close", "l4-connect-origin-close");

/// Workloads with TLS and the same workload without, for the relay cost of TLS.
const TLS_COST: (&str, &str) = ("wss-bulk8", "bulk8");

/// Candidates in table order; `direct` is the limit, `ringway` the subject, `ringway-before` the
/// subject's previous build, the rest peers.
const CANDIDATES: &[&str] = &[
    "direct",
    "ringway",
    BEFORE,
    "haproxy",
    "websocat",
    "websockify",
    "socat",
];

/// The previous ringway build, compared with `ringway` in the same run.
const BEFORE: &str = "ringway-before";

type Runs = BTreeMap<(String, String), Vec<Value>>;

fn load(dir: &Path) -> anyhow::Result<(Runs, Value)> {
    let mut runs: Runs = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let parts: Vec<&str> = stem.split("__").collect();
        if parts.len() != 3 {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a ringbench JSON report", path.display()))?;
        runs.entry((parts[0].to_string(), parts[1].to_string()))
            .or_default()
            .push(v);
    }
    let meta = std::fs::read_to_string(dir.join("meta.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    if runs.is_empty() {
        bail!(
            "no <workload>__<candidate>__r<N>.json reports in {}",
            dir.display()
        );
    }
    Ok((runs, meta))
}

fn num(v: &Value, field: &str) -> Option<f64> {
    v.get(field).and_then(Value::as_f64)
}

fn clean(v: &Value) -> bool {
    v.get("errors")
        .and_then(Value::as_object)
        .is_none_or(|e| e.values().all(|c| c.as_u64() == Some(0)))
}

/// The run whose `metric` is the median of the clean runs (lower middle for an even count).
fn median_run<'a>(runs: &'a [Value], metric: &str) -> Option<&'a Value> {
    let mut ok: Vec<&Value> = runs
        .iter()
        .filter(|r| clean(r) && num(r, metric).is_some())
        .collect();
    ok.sort_by(|a, b| num(a, metric).partial_cmp(&num(b, metric)).expect("no NaN"));
    ok.get(ok.len().saturating_sub(1) / 2).copied()
}

fn fmt_value(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// Writes BENCHMARKS.md to `out` and the plot to `plot` (its path in the markdown is `plot_ref`).
pub fn summarize(dir: &Path, out: &Path, plot: &Path, plot_ref: &str) -> anyhow::Result<()> {
    let (runs, meta) = load(dir)?;
    let present: Vec<&str> = CANDIDATES
        .iter()
        .copied()
        .filter(|c| runs.keys().any(|(_, cand)| cand == c))
        .collect();
    let mut md = String::new();
    writeln!(md, "# Ringway benchmarks\n")?;
    writeln!(
        md,
        "Written by `bench/compare` (do not edit by hand). Every figure is the median over the \
rounds of one invocation, with all candidates interleaved in each round; ratios compare figures \
from that same invocation on the same machine. Client, proxy and origin share the machine's \
cores, so CPU spent per byte and per message decides these numbers.\n"
    )?;
    writeln!(md, "## Machine and versions\n")?;
    if let Some(obj) = meta.as_object() {
        for (k, v) in obj {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            writeln!(md, "- {k}: {v}")?;
        }
    }
    writeln!(md, "\n## Results\n")?;
    let before = present.contains(&BEFORE);
    write!(md, "| workload | unit |")?;
    for c in &present {
        write!(md, " {c} |")?;
    }
    write!(md, " ringway / direct |")?;
    if before {
        write!(md, " ringway / before |")?;
    }
    writeln!(md, " ringway vs best peer | target |")?;
    write!(md, "|---|---|")?;
    for _ in &present {
        write!(md, "---:|")?;
    }
    if before {
        write!(md, "---:|")?;
    }
    writeln!(md, "---:|---:|---|")?;
    for w in WORKLOADS {
        if !runs.keys().any(|(wl, _)| wl == w.key) {
            continue;
        }
        let value = |cand: &str| -> Option<f64> {
            let rs = runs.get(&(w.key.to_string(), cand.to_string()))?;
            median_run(rs, w.metric).and_then(|r| num(r, w.metric))
        };
        write!(md, "| {} | {} |", w.title, w.unit)?;
        for c in &present {
            match value(c) {
                Some(x) => write!(md, " {} |", fmt_value(x))?,
                None => write!(md, " n/a |")?,
            }
        }
        let ring = value("ringway");
        let ratio = match (ring, value("direct")) {
            (Some(r), Some(d)) if d > 0.0 && w.key != "hold" => format!("{:.2}×", r / d),
            _ => "—".to_string(),
        };
        let vs_before = match (ring, value(BEFORE)) {
            (Some(r), Some(b)) if b > 0.0 => format!("{:.2}×", r / b),
            _ => "—".to_string(),
        };
        let peers: Vec<(&str, f64)> = present
            .iter()
            .filter(|c| !matches!(**c, "direct" | "ringway" | BEFORE))
            .filter_map(|c| value(c).map(|v| (*c, v)))
            .collect();
        let best = peers.iter().copied().reduce(|a, b| {
            let better = if w.higher_is_better {
                b.1 > a.1
            } else {
                b.1 < a.1
            };
            if better {
                b
            } else {
                a
            }
        });
        let vs_peer = match (ring, best) {
            (Some(r), Some((name, b))) if b > 0.0 => format!("{:.2}× {name}", r / b),
            _ => "—".to_string(),
        };
        write!(md, " {ratio} |")?;
        if before {
            write!(md, " {vs_before} |")?;
        }
        writeln!(md, " {vs_peer} | {} |", w.target)?;
    }
    md.push_str(&tls_notes(&runs, &present));
    md.push_str(&ws_setup_notes(&runs));
    writeln!(
        md,
        "\nRatios are ringway's figure divided by the other's: above 1 is better for rates and \
goodput, below 1 is better for latency and memory. `n/a`: the candidate did not run or every \
run had errors (see the JSON reports).\n"
    )?;
    let plotted = runs.keys().any(|(wl, _)| wl == "lat1");
    if plotted {
        writeln!(
            md,
            "## Latency percentiles (1 connection, 64 B ping-pong)\n"
        )?;
        writeln!(md, "![latency percentiles]({plot_ref})\n")?;
    }
    let mut errors = String::new();
    for ((wl, cand), rs) in &runs {
        for r in rs {
            if !clean(r) {
                let counts = r.get("errors").unwrap_or(&Value::Null);
                let details = r.get("error_details").unwrap_or(&Value::Null);
                writeln!(errors, "- {wl} / {cand}: {counts}, first: {details}")?;
            }
        }
    }
    if !errors.is_empty() {
        writeln!(
            md,
            "## Runs with errors (left out of the medians)\n\n{errors}"
        )?;
    }
    std::fs::write(out, md).with_context(|| format!("writing {}", out.display()))?;
    if plotted {
        draw(&runs, &present, plot)?;
    }
    Ok(())
}

/// The paragraph under the table about the TLS rows: what each candidate negotiated, the share
/// of setups that resumed, and the relay cost of TLS (goodput with TLS / without). Empty when
/// no TLS workload ran.
fn tls_notes(runs: &Runs, present: &[&str]) -> String {
    let median = |wl: &str, cand: &str, metric: &str| -> Option<&Value> {
        median_run(runs.get(&(wl.to_string(), cand.to_string()))?, metric)
    };
    let mut sessions = Vec::new();
    let mut resumed = Vec::new();
    let mut cost = Vec::new();
    for &c in present {
        let session = ["wss-bulk8", "wss-lat1", "wss-lat64", "wss-connect"]
            .iter()
            .filter_map(|wl| runs.get(&(wl.to_string(), c.to_string())))
            .flatten()
            .find_map(|r| r.get("tls").and_then(Value::as_str));
        if let Some(session) = session {
            sessions.push(format!("{c} `{session}`"));
        }
        let pct = |wl: &str| {
            median(wl, c, "setups_per_sec")
                .and_then(|r| num(r, "tls_resumed_percent"))
                .map(|p| format!("{p:.0} %"))
        };
        if let (Some(on), Some(off)) = (pct("wss-connect"), pct("wss-connect-noresume")) {
            resumed.push(format!("{c} {on} / {off}"));
        } else if let Some(on) = pct("wss-connect") {
            resumed.push(format!("{c} {on}"));
        }
        let (with, without) = TLS_COST;
        let goodput = |wl: &str| median(wl, c, "goodput_mbps").and_then(|r| num(r, "goodput_mbps"));
        if c != "direct" {
            if let (Some(t), Some(p)) = (goodput(with), goodput(without)) {
                if p > 0.0 {
                    let (ts, ps) = (fmt_value(t), fmt_value(p));
                    cost.push(format!("{c} {:.2}× ({ts} vs {ps} MB/s)", t / p));
                }
            }
        }
    }
    let mut out = String::new();
    if !sessions.is_empty() {
        out.push_str(&format!(
            "\nTLS rows: every candidate terminates TLS itself (direct stays plain TCP; HAProxy \
carries raw bytes inside TLS, no WebSocket). Negotiated: {}.",
            sessions.join(", ")
        ));
    }
    if !resumed.is_empty() {
        out.push_str(&format!(
            " Setups that resumed a session (with / without resumption): {}.",
            resumed.join(", ")
        ));
    }
    if !cost.is_empty() {
        out.push_str(&format!(
            "\n\n**Relay cost of TLS** (bulk, 8 conns, 16 KiB frames: goodput with TLS / without, \
same run): {}.",
            cost.join(", ")
        ));
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// The paragraph about what the WebSocket protocol adds to a setup: ringway's own WebSocket
/// setups against its own L4 relay of the same setups (the upgrade round trip and the Close frames
/// are the whole difference), with the CPU that the proxy and the client spent per setup. Empty
/// unless both ran.
fn ws_setup_notes(runs: &Runs) -> String {
    let (ws, l4) = WS_SETUP_COST;
    let run = |wl: &str| {
        median_run(
            runs.get(&(wl.to_string(), "ringway".to_string()))?,
            "setups_per_sec",
        )
    };
    let (Some(w), Some(t)) = (run(ws), run(l4)) else {
        return String::new();
    };
    let (Some(wr), Some(tr)) = (num(w, "setups_per_sec"), num(t, "setups_per_sec")) else {
        return String::new();
    };
    if tr <= 0.0 {
        return String::new();
    }
    let mut out = format!(
        "\n**What WebSocket adds to a setup** (ringway, origin closes, same run: WebSocket / its \
own L4 relay of the same setups): {:.2}× the rate ({} vs {} setups/s)",
        wr / tr,
        fmt_value(wr),
        fmt_value(tr)
    );
    for (field, who) in [
        ("server_cpu_us_per_setup", "proxy"),
        ("client_cpu_us_per_setup", "client"),
    ] {
        if let (Some(a), Some(b)) = (num(w, field), num(t, field)) {
            out.push_str(&format!(
                ", {who} CPU per setup {} vs {} µs",
                fmt_value(a),
                fmt_value(b)
            ));
        }
    }
    out.push_str(
        ". The difference is the protocol: the upgrade's request and 101, and the Close frames, \
each way.\n",
    );
    out
}

fn draw(runs: &Runs, present: &[&str], plot: &Path) -> anyhow::Result<()> {
    const PCTS: [(&str, f64); 4] = [
        ("p50_us", 50.0),
        ("p90_us", 90.0),
        ("p99_us", 99.0),
        ("p999_us", 99.9),
    ];
    let mut series: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    for c in present {
        let Some(rs) = runs.get(&("lat1".to_string(), c.to_string())) else {
            continue;
        };
        let Some(r) = median_run(rs, "p50_us") else {
            continue;
        };
        // x: the percentile's index, so p50, p90, p99 and p99.9 are evenly spaced.
        let pts: Vec<(f64, f64)> = PCTS
            .iter()
            .enumerate()
            .filter_map(|(i, (f, _))| num(r, f).map(|y| (i as f64, y.max(1.0))))
            .collect();
        series.push((c, pts));
    }
    let ys = || series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1));
    let ymax = ys().fold(10.0f64, f64::max);
    let ymin = ys().fold(ymax, f64::min);
    let root = SVGBackend::new(plot, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "64 B ping-pong, 1 connection: latency percentiles",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.25f64..3.25f64, (ymin * 0.7..ymax * 1.4).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs, log scale)")
        .x_labels(15)
        .x_label_formatter(&|x| {
            let names = ["p50", "p90", "p99", "p99.9"];
            let i = x.round();
            if (x - i).abs() < 1e-6 && (0.0..4.0).contains(&i) {
                names[i as usize].to_string()
            } else {
                String::new()
            }
        })
        .draw()?;
    for (name, pts) in &series {
        let color = match *name {
            "direct" => BLACK.to_rgba(),
            "ringway" => RGBColor(0, 150, 60).to_rgba(),
            BEFORE => RGBColor(120, 200, 140).to_rgba(),
            "haproxy" => RGBColor(30, 90, 200).to_rgba(),
            "websocat" => RGBColor(230, 120, 0).to_rgba(),
            _ => RGBColor(150, 50, 170).to_rgba(),
        };
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_skips_runs_with_errors() {
        let runs = vec![
            serde_json::json!({"p50_us": 10.0, "errors": {}}),
            serde_json::json!({"p50_us": 1.0, "errors": {"refused": 3}}),
            serde_json::json!({"p50_us": 30.0, "errors": {}}),
            serde_json::json!({"p50_us": 20.0, "errors": {}}),
        ];
        assert_eq!(
            num(median_run(&runs, "p50_us").unwrap(), "p50_us"),
            Some(20.0)
        );
    }

    #[test]
    fn summarize_writes_table_and_plot() {
        let dir = std::env::temp_dir().join(format!("ringbench-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (cand, p50, mps) in [
            ("direct", 20.0, 100.0),
            ("ringway", 22.0, 80.0),
            ("haproxy", 30.0, 50.0),
        ] {
            let lat = serde_json::json!({"p50_us": p50, "p90_us": p50 * 1.2, "p99_us": p50 * 2.0,
                "p999_us": p50 * 4.0, "max_us": p50 * 9.0, "errors": {}});
            std::fs::write(dir.join(format!("lat1__{cand}__r1.json")), lat.to_string()).unwrap();
            let b = serde_json::json!({"goodput_mbps": mps, "errors": {}});
            std::fs::write(dir.join(format!("bulk8__{cand}__r1.json")), b.to_string()).unwrap();
        }
        std::fs::write(dir.join("meta.json"), r#"{"machine": "test"}"#).unwrap();
        let (md, svg) = (dir.join("B.md"), dir.join("p.svg"));
        summarize(&dir, &md, &svg, "p.svg").unwrap();
        let text = std::fs::read_to_string(&md).unwrap();
        assert!(
            text.contains(
                "| latency, 1 conn, 64 B: p50 | µs | 20.0 | 22.0 | 30.0 | 1.10× | 0.73× haproxy |"
            ),
            "{text}"
        );
        assert!(text.contains("| bulk, 8 conns, 16 KiB frames: goodput | MB/s | 100 | 80.0 | 50.0 | 0.80× | 1.60× haproxy |"), "{text}");
        assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
        assert!(
            !text.contains("ringway / before") && !text.contains("setups/s"),
            "no column without ringway-before, no row without runs: {text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn summarize_compares_ringway_with_its_previous_build() {
        let dir = std::env::temp_dir().join(format!("ringbench-before-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (cand, rate, close) in [
            ("direct", 100.0, 10.0),
            ("ringway", 80.0, 40.0),
            ("ringway-before", 50.0, 600.0),
            ("haproxy", 70.0, 12.0),
        ] {
            let r = serde_json::json!({"setups_per_sec": rate, "close_p50_us": close,
                "p50_us": close * 2.0, "errors": {}});
            let name = format!("connect-origin-close__{cand}__r1.json");
            std::fs::write(dir.join(name), r.to_string()).unwrap();
        }
        let (md, svg) = (dir.join("B.md"), dir.join("p.svg"));
        summarize(&dir, &md, &svg, "p.svg").unwrap();
        let text = std::fs::read_to_string(&md).unwrap();
        assert!(
            text.contains("| workload | unit | direct | ringway | ringway-before | haproxy | ringway / direct | ringway / before | ringway vs best peer | target |"),
            "{text}"
        );
        assert!(
            text.contains("| connect + upgrade + 64 B round trip, origin closes | setups/s | 100 | 80.0 | 50.0 | 70.0 | 0.80× | 1.60× | 1.14× haproxy |  |"),
            "{text}"
        );
        assert!(
            text.contains("| connect, origin closes: echo read → close done, p50 | µs | 10.0 | 40.0 | 600 | 12.0 | 4.00× | 0.07× | 3.33× haproxy |  |"),
            "{text}"
        );
        assert!(
            !text.contains("Latency percentiles") && !svg.exists(),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_rows_report_sessions_resumption_and_the_relay_cost() {
        let dir = std::env::temp_dir().join(format!("ringbench-tls-rows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let put = |name: String, v: Value| {
            std::fs::write(dir.join(name), v.to_string()).unwrap();
        };
        let suite = "TLSv1_3 TLS13_AES_256_GCM_SHA384";
        for (cand, plain, tls) in [
            ("direct", 4600.0, 4600.0),
            ("ringway", 1500.0, 450.0),
            ("haproxy", 1200.0, 560.0),
        ] {
            put(
                format!("bulk8__{cand}__r1.json"),
                serde_json::json!({"goodput_mbps": plain, "errors": {}}),
            );
            let mut r = serde_json::json!({"goodput_mbps": tls, "errors": {}});
            let mut on = serde_json::json!({"setups_per_sec": tls * 2.0, "errors": {}});
            let mut off = serde_json::json!({"setups_per_sec": tls, "errors": {}});
            if cand != "direct" {
                r["tls"] = suite.into();
                on["tls_resumed_percent"] = 100.0.into();
                off["tls_resumed_percent"] = 0.0.into();
            }
            put(format!("wss-bulk8__{cand}__r1.json"), r);
            put(format!("wss-connect__{cand}__r1.json"), on);
            put(format!("wss-connect-noresume__{cand}__r1.json"), off);
        }
        let (md, svg) = (dir.join("B.md"), dir.join("p.svg"));
        summarize(&dir, &md, &svg, "p.svg").unwrap();
        let text = std::fs::read_to_string(&md).unwrap();
        assert!(
            text.contains("| TLS: bulk, 8 conns, 16 KiB frames: goodput | MB/s | 4600 | 450 | 560 | 0.10× | 0.80× haproxy |  |"),
            "{text}"
        );
        assert!(
            text.contains("| TLS: connect + handshake (resumed) + upgrade + 64 B round trip + close | setups/s | 9200 | 900 | 1120 | 0.10× | 0.80× haproxy | ≥ HAProxy with TLS |"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "Negotiated: ringway `{suite}`, haproxy `{suite}`."
            )),
            "{text}"
        );
        assert!(
            text.contains("(with / without resumption): ringway 100 % / 0 %, haproxy 100 % / 0 %."),
            "{text}"
        );
        assert!(
            text.contains(
                "same run): ringway 0.30× (450 vs 1500 MB/s), haproxy 0.47× (560 vs 1200 MB/s)."
            ),
            "{text}"
        );
        // The notes sit between the table and the ratios paragraph (bench/compare prints that span).
        assert!(text.find("Relay cost").unwrap() < text.find("Ratios are").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Runs the summary over `dir`; BENCHMARKS.md's text.
    fn summary_of(dir: &Path) -> String {
        let (md, svg) = (dir.join("B.md"), dir.join("p.svg"));
        summarize(dir, &md, &svg, "p.svg").unwrap();
        std::fs::read_to_string(&md).unwrap()
    }

    fn assert_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(text.contains(line), "{line:?} missing in:\n{text}");
        }
    }

    #[test]
    fn l4_setup_rows_and_what_websocket_adds_to_a_setup() {
        let dir = std::env::temp_dir().join(format!("ringbench-l4-setup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let put = |name: String, v: Value| {
            std::fs::write(dir.join(name), v.to_string()).unwrap();
        };
        // ringway: WebSocket and L4; haproxy and socat: L4 only (socat serves no WebSocket).
        put(
            "connect-origin-close__ringway__r1.json".into(),
            serde_json::json!({"setups_per_sec": 9000.0, "server_cpu_us_per_setup": 70.0,
                "client_cpu_us_per_setup": 50.0, "errors": {}}),
        );
        for (cand, rate, cpu) in [
            ("direct", 26000.0, None),
            ("ringway", 15000.0, Some(50.0)),
            ("haproxy", 12000.0, Some(65.0)),
            ("socat", 900.0, Some(400.0)),
        ] {
            let mut r = serde_json::json!({"setups_per_sec": rate, "client_cpu_us_per_setup": 33.0,
                "errors": {}});
            if let Some(c) = cpu {
                r["server_cpu_us_per_setup"] = c.into();
            }
            put(format!("l4-connect-origin-close__{cand}__r1.json"), r);
        }
        assert_lines(
            &summary_of(&dir),
            &[
                "| workload | unit | direct | ringway | haproxy | socat | ringway / direct | ringway vs best peer | target |",
                "| L4 (tcp mode): connect + 64 B round trip, origin closes | setups/s | 26000 | 15000 | 12000 | 900 | 0.58× | 1.25× haproxy |  |",
                "| L4 (tcp mode): connect, origin closes: proxy CPU per setup | µs CPU | n/a | 50.0 | 65.0 | 400 | — | 0.77× haproxy |  |",
                "| connect, origin closes: proxy CPU per setup | µs CPU | n/a | 70.0 | n/a | n/a | — | — |  |",
                "own L4 relay of the same setups): 0.60× the rate (9000 vs 15000 setups/s), proxy CPU per setup 70.0 vs 50.0 µs, client CPU per setup 50.0 vs 33.0 µs.",
            ],
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
