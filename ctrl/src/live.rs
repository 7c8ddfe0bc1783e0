//! `ringctl top` (a refreshing per-route view) and `ringctl hist export` (an HdrHistogram
//! interval log), both built from repeated `stats` requests: the difference of two cumulative
//! snapshots is the interval's figures (counters subtracted, histograms subtracted exactly).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use ringctl::{CallError, Client, Merged, Reply, Request};

/// Every route's figures now, merged over the workers.
fn snapshot(client: &mut Client) -> Result<Vec<Merged>, CallError> {
    match client.call(&Request::Stats { route: None })? {
        Reply::Stats { workers, .. } => ringctl::merge(&workers).map_err(CallError::Protocol),
        other => Err(CallError::Protocol(format!("not stats: {other:?}"))),
    }
}

/// `now - before` for one phase of one route (`None` when nothing was recorded in between).
fn interval(now: &Merged, before: Option<&Merged>, phase: &str) -> Option<Histogram<u64>> {
    let h = now.histograms.get(phase)?;
    let mut d = h.clone();
    if let Some(b) = before.and_then(|b| b.histograms.get(phase)) {
        d.subtract(b).ok()?;
    }
    (!d.is_empty()).then_some(d)
}

/// One frame of `top`: per route, tunnels, rates over `secs` and the interval's p99s.
pub(crate) fn frame(now: &[Merged], before: &[Merged], secs: f64, when: &str) -> String {
    let mut s = format!(
        "ringway top: {when}, {} route(s), refreshed every {secs:.1} s (q or Ctrl-C quits)\n\n",
        now.len()
    );
    s.push_str(&format!(
        "{:<24} {:>6} {:>8} {:>12} {:>12} {:>11} {:>11} {:>11}\n",
        "route",
        "open",
        "new/s",
        "to origin/s",
        "to client/s",
        "setup p99",
        "relay→o p99",
        "relay→c p99"
    ));
    let prev: BTreeMap<&str, &Merged> = before.iter().map(|m| (m.route.as_str(), m)).collect();
    for m in now {
        let b = prev.get(m.route.as_str()).copied();
        let rate = |f: fn(&Merged) -> u64| {
            let d = f(m).saturating_sub(b.map_or(0, f));
            d as f64 / secs.max(0.001)
        };
        let p99 = |phase| {
            interval(m, b, phase).map_or("-".to_string(), |h| {
                format!("{} µs", h.value_at_quantile(0.99))
            })
        };
        s.push_str(&format!(
            "{:<24} {:>6} {:>8.1} {:>12} {:>12} {:>11} {:>11} {:>11}\n",
            m.route,
            m.counters.open,
            rate(|m| m.counters.total),
            human_rate(rate(|m| m.counters.to_origin)),
            human_rate(rate(|m| m.counters.to_client)),
            p99("setup"),
            p99("relay-to-origin"),
            p99("relay-to-client"),
        ));
    }
    s
}

fn human_rate(bytes_per_sec: f64) -> String {
    match bytes_per_sec {
        b if b >= 1e9 => format!("{:.1} GB/s", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB/s", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB/s", b / 1e3),
        b => format!("{b:.0} B/s"),
    }
}

/// The terminal in raw mode while `top` runs; restored on drop (also on errors and `q`).
struct RawTerminal {
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        // Keep output processing: "\n" still returns the carriage.
        raw.output_modes = saved.output_modes;
        rustix::termios::tcsetattr(stdin.as_fd(), rustix::termios::OptionalActions::Now, &raw)
            .ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = rustix::termios::tcsetattr(
            stdin.as_fd(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
        print!("\x1b[?25h");
        let _ = std::io::stdout().flush();
    }
}

/// Waits up to `timeout` for a key on stdin; true when it asks to quit (`q`, `Q`, Ctrl-C,
/// Ctrl-D, or stdin closed).
fn quit_pressed(timeout: Duration) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
    let ts = Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as i64,
    };
    match poll(&mut fds, Some(&ts)) {
        Ok(0) | Err(_) => false,
        Ok(_) => {
            let mut key = [0u8; 16];
            match rustix::io::read(&stdin, &mut key) {
                Ok(0) => true,
                Ok(n) => key[..n].iter().any(|k| matches!(k, b'q' | b'Q' | 3 | 4)),
                Err(_) => false,
            }
        }
    }
}

/// `ringctl top`: refreshes every `every` until `q` or Ctrl-C (a terminal), or for
/// `iterations` frames (any stdout, e.g. a pipe; 0: no limit).
pub(crate) fn top(client: &mut Client, every: Duration, iterations: u64) -> Result<(), CallError> {
    let stdin_tty = rustix::termios::isatty(std::io::stdin());
    let stdout_tty = rustix::termios::isatty(std::io::stdout());
    let _raw = if stdin_tty {
        RawTerminal::enter()
    } else {
        None
    };
    let mut before = snapshot(client)?;
    let mut then = Instant::now();
    let mut n = 0;
    loop {
        if stdin_tty {
            if quit_pressed(every) {
                return Ok(());
            }
        } else {
            std::thread::sleep(every);
        }
        let now = snapshot(client)?;
        let secs = then.elapsed().as_secs_f64();
        then = Instant::now();
        let when = humantime(SystemTime::now());
        let text = frame(&now, &before, secs, &when);
        let mut out = std::io::stdout().lock();
        if stdout_tty {
            let _ = write!(out, "\x1b[?25l\x1b[H\x1b[2J{}", text.replace('\n', "\r\n"));
        } else {
            let _ = writeln!(out, "{text}");
        }
        let _ = out.flush();
        before = now;
        n += 1;
        if iterations > 0 && n >= iterations {
            return Ok(());
        }
    }
}

fn humantime(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02} UTC")
}

/// `ringctl hist export`: the histogram of one route's phase as an HdrHistogram interval log
/// (V2 compressed, values in microseconds) at `out`: one interval holding everything recorded
/// so far, or with `every`, `intervals` consecutive intervals of that length.
pub(crate) fn export(
    client: &mut Client,
    route: &str,
    phase: &str,
    out: &Path,
    every: Option<Duration>,
    intervals: u64,
) -> Result<u64, String> {
    if !ringctl::PHASES.iter().any(|(p, _)| *p == phase) {
        let names: Vec<&str> = ringctl::PHASES.iter().map(|(p, _)| *p).collect();
        return Err(format!("no phase {phase:?} (phases: {})", names.join(", ")));
    }
    let find = |all: Vec<Merged>| -> Result<Option<Merged>, String> {
        if all.iter().all(|m| m.route != route) {
            let names: Vec<&str> = all.iter().map(|m| m.route.as_str()).collect();
            return Err(format!(
                "no figures for route {route:?} (routes with figures: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
        Ok(all.into_iter().find(|m| m.route == route))
    };
    let start = SystemTime::now();
    let mut file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "ringway route {route} phase {phase}: latency in microseconds"
        ))
        .with_start_time(start)
        .with_base_time(start)
        .begin_log_with(&mut file, &mut serializer)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let tag = Tag::new(phase);
    let empty = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).expect("bounds");
    let mut written = 0;
    let Some(every) = every else {
        let m = find(snapshot(client).map_err(|e| e.to_string())?)?;
        let h = m
            .and_then(|m| m.histograms.get(phase).cloned())
            .unwrap_or_else(empty);
        log.write_histogram(&h, Duration::ZERO, Duration::ZERO, tag)
            .map_err(|e| format!("{}: {e:?}", out.display()))?;
        return Ok(h.len());
    };
    let mut before = find(snapshot(client).map_err(|e| e.to_string())?)?;
    let t0 = Instant::now();
    for i in 0..intervals.max(1) {
        std::thread::sleep(every);
        let now = find(snapshot(client).map_err(|e| e.to_string())?)?;
        let h = match &now {
            Some(m) => interval(m, before.as_ref(), phase).unwrap_or_else(empty),
            None => empty(),
        };
        let begin = every * i as u32;
        log.write_histogram(&h, begin, every, tag)
            .map_err(|e| format!("{}: {e:?}", out.display()))?;
        written += h.len();
        before = now;
        let _ = t0;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringctl::RouteCounters;

    fn merged(total: u64, bytes: u64, samples: &[u64]) -> Merged {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
        for s in samples {
            h.record(*s).unwrap();
        }
        Merged {
            route: "/db".into(),
            counters: RouteCounters {
                open: 2,
                total,
                to_origin: bytes,
                to_client: bytes * 2,
                ..Default::default()
            },
            histograms: BTreeMap::from([("setup".to_string(), h)]),
        }
    }

    #[test]
    fn a_frame_shows_rates_and_the_interval_p99() {
        let before = merged(10, 1_000, &[100; 50]);
        let mut later: Vec<u64> = vec![100; 50];
        later.extend([5_000; 10]);
        let now = merged(30, 2_001_000, &later);
        let text = frame(&[now], &[before], 2.0, "12:00:00 UTC");
        let row = text.lines().find(|l| l.starts_with("/db")).expect(&text);
        assert!(row.contains(" 10.0 "), "20 new tunnels in 2 s: {row}");
        assert!(
            row.contains("1.0 MB/s") && row.contains("2.0 MB/s"),
            "{row}"
        );
        // The interval holds only the 10 slow setups: its p99 is theirs (within the 1 %).
        let p99: f64 = row
            .split_whitespace()
            .rev()
            .nth(3)
            .unwrap()
            .parse()
            .unwrap();
        assert!((p99 - 5000.0).abs() <= 50.0, "{row}");
        assert!(row.contains(" - "), "no relay samples: {row}");
    }
}
