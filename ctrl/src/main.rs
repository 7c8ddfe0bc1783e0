//! `ringctl`: programs a running `ringway`'s routes over its control socket.
//!
//! Exit codes: 0 done, 1 the dataplane refused the request (the reason is printed), 2 the
//! dataplane could not be reached or its reply was not understood.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ringctl::{CallError, Client, Reply, Request, RouteSpec};

mod live;

#[derive(Parser)]
#[command(name = "ringctl", version, about = "Control a running ringway")]
struct Cli {
    /// The dataplane's control socket (its config's `[control] socket`). Default:
    /// $RINGWAY_CONTROL, else $XDG_RUNTIME_DIR/ringway/control.sock, else
    /// /run/ringway/control.sock for root.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Print the reply as JSON (one object) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show or change the route table.
    #[command(subcommand)]
    Routes(Routes),
    /// List open tunnels (oldest first), or close one.
    Tunnels {
        #[command(subcommand)]
        action: Option<TunnelsAction>,
        /// Only tunnels on this route (its name, as `routes list` and `stats` show it).
        #[arg(long)]
        route: Option<String>,
    },
    /// Per route: tunnels, bytes, how tunnels ended, refusals, and latency percentiles.
    Stats {
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
    },
    /// A live view per route (tunnels, new tunnels and bytes per second, p99 latencies of the
    /// last interval), refreshed until `q` or Ctrl-C.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        every: f64,
        /// Stop after this many refreshes (0: until `q`).
        #[arg(long, default_value_t = 0)]
        iterations: u64,
    },
    /// Latency histograms for the HdrHistogram tools.
    #[command(subcommand)]
    Hist(Hist),
}

#[derive(Subcommand)]
enum Hist {
    /// Write one route's phase as an HdrHistogram interval log (V2 compressed, microseconds):
    /// everything recorded so far, or with --every, that many seconds per interval.
    Export {
        #[arg(long)]
        route: String,
        /// setup, tls, upgrade, connect, first-byte, relay-to-origin or relay-to-client.
        #[arg(long)]
        phase: String,
        #[arg(long)]
        out: PathBuf,
        /// Seconds per interval (default: one interval, everything so far).
        #[arg(long)]
        every: Option<f64>,
        /// Intervals to write with --every.
        #[arg(long, default_value_t = 10)]
        intervals: u64,
    },
}

#[derive(Subcommand)]
enum TunnelsAction {
    /// End tunnel ID cleanly: Close 1001 to the client after its queued bytes, the origin
    /// half-closed.
    Close { id: String },
}

#[derive(Subcommand)]
enum Routes {
    /// The routes every worker serves now, as config `[[route]]` tables.
    List,
    /// Add one route; new tunnels may use it as soon as this returns.
    Add {
        /// The request path to match (a prefix on segment boundaries).
        #[arg(long)]
        path: String,
        /// Where to connect: IP:port or host:port (resolved now, by the dataplane).
        #[arg(long)]
        origin: String,
        /// Match this Host header only.
        #[arg(long)]
        host: Option<String>,
        /// Match this TLS server name only.
        #[arg(long)]
        sni: Option<String>,
        /// The route's name in logs and stats (default: host + path).
        #[arg(long)]
        name: Option<String>,
        /// Close tunnels on this route after this long without traffic.
        #[arg(long)]
        idle_timeout_ms: Option<u64>,
    },
    /// Remove the route with this name (as `routes list` shows it); open tunnels on it stay.
    Remove { name: String },
    /// Replace the whole table with FILE's `[[route]]`s (a config file's syntax) in one atomic
    /// change on every worker; prints the diff. Open tunnels keep their origin.
    Apply {
        file: PathBuf,
        /// Validate and print the diff; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli
        .socket
        .clone()
        .or_else(|| {
            std::env::var_os("RINGWAY_CONTROL")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(ringctl::default_socket);
    if let Command::Top { every, iterations } = &cli.command {
        let every = Duration::from_secs_f64(every.clamp(0.1, 3600.0));
        let done = Client::connect(&socket).and_then(|mut c| live::top(&mut c, every, *iterations));
        return match done {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringctl: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Hist(Hist::Export {
        route,
        phase,
        out,
        every,
        intervals,
    }) = &cli.command
    {
        let mut client = match Client::connect(&socket) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ringctl: {e}");
                return ExitCode::from(2);
            }
        };
        let every = every.map(|s| Duration::from_secs_f64(s.clamp(0.1, 3600.0)));
        return match live::export(&mut client, route, phase, out, every, *intervals) {
            Ok(n) => {
                println!("wrote {} ({n} sample(s), microseconds)", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringctl: {e}");
                ExitCode::from(1)
            }
        };
    }
    let request = match request(&cli.command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringctl: {e}");
            return ExitCode::from(2);
        }
    };
    let reply = Client::connect(&socket).and_then(|mut c| c.call(&request));
    match reply {
        Ok(reply) => {
            print!("{}", render(&reply, cli.json));
            ExitCode::SUCCESS
        }
        Err(CallError::Refused(e)) => {
            eprintln!("ringctl: refused: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("ringctl: {e}");
            ExitCode::from(2)
        }
    }
}

fn request(command: &Command) -> anyhow::Result<Request> {
    Ok(match command {
        Command::Top { .. } | Command::Hist(_) => anyhow::bail!("handled in main"),
        Command::Routes(Routes::List) => Request::RoutesList,
        Command::Tunnels {
            action: Some(TunnelsAction::Close { id }),
            ..
        } => Request::TunnelsClose { id: id.clone() },
        Command::Tunnels {
            action: None,
            route,
        } => Request::Tunnels {
            route: route.clone(),
        },
        Command::Stats { route } => Request::Stats {
            route: route.clone(),
        },
        Command::Routes(Routes::Add {
            path,
            origin,
            host,
            sni,
            name,
            idle_timeout_ms,
        }) => Request::RoutesAdd {
            route: Box::new(RouteSpec {
                name: name.clone(),
                host: host.clone(),
                sni: sni.clone(),
                path: path.clone(),
                origin: origin.clone(),
                idle_timeout_ms: *idle_timeout_ms,
                ..Default::default()
            }),
        },
        Command::Routes(Routes::Remove { name }) => Request::RoutesRemove { name: name.clone() },
        Command::Routes(Routes::Apply { file, dry_run }) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            Request::RoutesApply {
                text,
                source: file.display().to_string(),
                dry_run: *dry_run,
            }
        }
    })
}

/// The reply as the operator reads it.
fn render(reply: &Reply, json: bool) -> String {
    if json {
        let mut s = serde_json::to_string_pretty(reply).unwrap_or_default();
        s.push('\n');
        return s;
    }
    match reply {
        Reply::Routes { version, routes } => {
            let mut s = format!(
                "# route table version {version}: {} route(s)\n",
                routes.len()
            );
            s.push_str(&ringctl::routes_to_toml(routes));
            s
        }
        Reply::Applied {
            version,
            changes,
            workers,
            apply_us,
            propagate_us,
            dry_run,
        } => {
            let mut s = String::new();
            for c in changes {
                s.push_str(&c.to_string());
                s.push('\n');
            }
            let n = changes.len();
            if *dry_run {
                s.push_str(&format!("dry run: {n} change(s), nothing applied\n"));
            } else if changes.is_empty() {
                s.push_str(&format!("no change (route table version {version})\n"));
            } else {
                s.push_str(&format!(
                    "applied {n} change(s): route table version {version} on {workers} worker(s) in {apply_us} µs ({propagate_us} µs from hand-over to the last worker)\n"
                ));
            }
            s
        }
        Reply::Tunnels { tunnels } => {
            let mut s = format!(
                "{:<14} {:<20} {:<22} {:<22} {:>9} {:>12} {:>12} {:<10} {:>5} {:>5} {:>6}\n",
                "id",
                "route",
                "client",
                "origin",
                "age",
                "to origin",
                "to client",
                "state",
                "cpu",
                "rxcpu",
                "napi"
            );
            let opt = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
            let mut local = 0;
            for t in tunnels {
                if t.worker_cpu.is_some() && t.worker_cpu == t.incoming_cpu {
                    local += 1;
                }
                s.push_str(&format!(
                    "{:<14} {:<20} {:<22} {:<22} {:>9} {:>12} {:>12} {:<10} {:>5} {:>5} {:>6}\n",
                    t.id,
                    t.route,
                    t.client,
                    t.origin,
                    age(t.age_ms),
                    t.to_origin,
                    t.to_client,
                    t.state,
                    opt(t.worker_cpu),
                    opt(t.incoming_cpu),
                    opt(t.napi_id)
                ));
            }
            s.push_str(&format!(
                "{} open tunnel(s); {local} receive on their worker's CPU (cpu: the worker's, rxcpu: \
                 where the client's packets were last processed, napi: their NIC queue)\n",
                tunnels.len()
            ));
            s
        }
        Reply::TunnelClosed { .. } => "closing: Close 1001 sent after its queued bytes\n".into(),
        Reply::Stats { workers, origins } => {
            match ringctl::merge(workers).and_then(|m| Ok((m, ringctl::merge_origins(origins)?))) {
                Ok((merged, origins)) => render_stats(&merged) + &render_origins(&origins),
                Err(e) => format!("error: {e}\n"),
            }
        }
        Reply::Error { error } => format!("error: {error}\n"),
    }
}

/// Every pooled origin: its state on the workers, tunnels, connects and connect times.
fn render_origins(origins: &[ringctl::MergedOrigin]) -> String {
    if origins.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "{:<24} {:<14} {:>6} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>11}\n",
        "origin",
        "state",
        "open",
        "ejections",
        "connects",
        "failed",
        "p50 µs",
        "p99 µs",
        "max µs",
        "warm/used"
    );
    for o in origins {
        let state = match o.ejected_on {
            0 => "healthy".to_string(),
            n if n == o.workers => "ejected".to_string(),
            n => format!("ejected({n}/{})", o.workers),
        };
        let q = |f: f64| {
            o.connect_time
                .as_ref()
                .map_or("-".to_string(), |h| h.value_at_quantile(f).to_string())
        };
        let max = o
            .connect_time
            .as_ref()
            .map_or("-".to_string(), |h| h.max().to_string());
        s.push_str(&format!(
            "{:<24} {:<14} {:>6} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>11}\n",
            o.origin,
            state,
            o.open,
            o.ejections,
            o.connects,
            o.connect_failures,
            q(0.5),
            q(0.99),
            max,
            format!("{}/{}", o.warm, o.warm_used)
        ));
    }
    s
}

fn age(ms: u64) -> String {
    match ms {
        0..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// Every route's counters, and per phase the percentiles over all workers, in microseconds.
fn render_stats(merged: &[ringctl::Merged]) -> String {
    let mut s = String::new();
    if merged.is_empty() {
        s.push_str("no tunnels yet\n");
    }
    for m in merged {
        let c = &m.counters;
        s.push_str(&format!(
            "route {}: {} open, {} total, {} B to origin, {} B to client",
            m.route, c.open, c.total, c.to_origin, c.to_client
        ));
        if c.spliced > 0 {
            s.push_str(&format!(" ({} B spliced)", c.spliced));
        }
        s.push('\n');
        if !c.closes.is_empty() {
            let list: Vec<String> = c.closes.iter().map(|(k, v)| format!("{k} {v}")).collect();
            s.push_str(&format!("  ended: {}\n", list.join(", ")));
        }
        if !c.refusals.is_empty() {
            let list: Vec<String> = c.refusals.iter().map(|(k, v)| format!("{k} {v}")).collect();
            s.push_str(&format!("  refused: {}\n", list.join(", ")));
        }
        if m.histograms.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "  {:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "latency µs", "count", "p50", "p90", "p99", "p99.9", "max"
        ));
        for (phase, _) in ringctl::PHASES {
            let Some(h) = m.histograms.get(phase) else {
                continue;
            };
            s.push_str(&format!(
                "  {:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                phase,
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max()
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringctl::Change;

    #[test]
    fn an_apply_prints_its_diff_and_where_it_landed() {
        let r = RouteSpec {
            name: None,
            host: None,
            sni: None,
            path: "/pg".into(),
            origin: "127.0.0.1:5432".into(),
            idle_timeout_ms: None,
            ..Default::default()
        };
        let text = render(
            &Reply::Applied {
                version: 3,
                changes: vec![Change::Add { route: r }],
                workers: 2,
                apply_us: 87,
                propagate_us: 12,
                dry_run: false,
            },
            false,
        );
        assert_eq!(
            text,
            "+ /pg -> 127.0.0.1:5432\napplied 1 change(s): route table version 3 on 2 worker(s) in 87 µs (12 µs from hand-over to the last worker)\n"
        );
    }
}
