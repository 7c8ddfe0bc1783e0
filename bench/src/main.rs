//! `ringbench`: the command line. Parses arguments (clap), runs one subcommand, prints the human
//! table (stdout, or stderr when the JSON goes to stdout), writes the JSON if asked, and exits 1
//! if any error was counted, 2 on bad usage.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ringway_bench::client::tls::{TlsClient, TlsOptions};
use ringway_bench::origin::{Origin, OriginMode};
use ringway_bench::report::Report;
use ringway_bench::target::Target;
use ringway_bench::workload::{bulk, connect, hold, latency, rate, Common};

#[derive(Parser)]
#[command(
    name = "ringbench",
    version,
    about = "Ringway's load generator and test origin"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// A TCP origin: echo, sink, source or echo-close, on an epoll event loop per thread.
    Origin {
        /// Address to listen on, e.g. 127.0.0.1:0 (port 0 picks a free port).
        #[arg(long)]
        listen: SocketAddr,
        /// echo (write back), sink (read and discard), source (write continuously) or
        /// echo-close (write back the first 64 bytes, then close: for `connect --close origin`).
        #[arg(long, default_value = "echo", value_parser = parse_mode)]
        mode: OriginMode,
        /// Event-loop threads sharing the port (SO_REUSEPORT).
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Closed-loop ping-pong: C connections, one S-byte message in flight each.
    Latency {
        #[command(flatten)]
        common: CommonArgs,
        /// Connections.
        #[arg(short = 'c', long = "connections", default_value_t = 1)]
        connections: usize,
        /// Payload bytes per message (one ws frame).
        #[arg(short = 's', long = "size", default_value_t = 64)]
        size: usize,
    },
    /// Open loop at a fixed total rate; latency from each message's scheduled time.
    Rate {
        #[command(flatten)]
        common: CommonArgs,
        /// Connections.
        #[arg(short = 'c', long = "connections", default_value_t = 1)]
        connections: usize,
        /// Payload bytes per message (one ws frame).
        #[arg(short = 's', long = "size", default_value_t = 64)]
        size: usize,
        /// Messages per second, all connections together.
        #[arg(short = 'r', long = "rate")]
        rate: u64,
    },
    /// C connections streaming F-byte frames both ways through an echo origin.
    Bulk {
        #[command(flatten)]
        common: CommonArgs,
        /// Connections.
        #[arg(short = 'c', long = "connections", default_value_t = 8)]
        connections: usize,
        /// Payload bytes per message (one ws frame).
        #[arg(short = 'f', long = "frame", default_value_t = 16384)]
        frame: usize,
    },
    /// K loops of connect + upgrade + one 64-byte round trip + close.
    Connect {
        #[command(flatten)]
        common: CommonArgs,
        /// Concurrent setup loops.
        #[arg(short = 'k', long = "concurrency", default_value_t = 1)]
        concurrency: usize,
        /// Who closes: client (after the echo) or origin (needs `origin --mode echo-close`;
        /// the client answers the Close and waits for EOF).
        #[arg(long, default_value = "client", value_parser = parse_close)]
        close: connect::CloseBy,
        /// TLS: offer a session an earlier setup of the same thread received (the default).
        #[arg(long, overrides_with = "no_resume")]
        resume: bool,
        /// TLS: no session resumption; every setup does a full handshake.
        #[arg(long, overrides_with = "resume")]
        no_resume: bool,
    },
    /// Write BENCHMARKS.md and the latency plot from the JSON reports of `bench/compare`.
    Summarize {
        /// Directory of `<workload>__<candidate>__r<round>.json` reports and `meta.json`.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Markdown file to write.
        #[arg(long)]
        out: std::path::PathBuf,
        /// SVG plot to write.
        #[arg(long)]
        plot: std::path::PathBuf,
        /// How the markdown refers to the plot (a path relative to the markdown file).
        #[arg(long)]
        plot_ref: String,
    },
    /// Open N idle tunnels, report RSS growth of --pid per tunnel, hold, close.
    Hold {
        /// tcp://HOST:PORT, ws://HOST:PORT/PATH, tls://HOST:PORT or wss://HOST:PORT/PATH
        #[arg(long)]
        target: String,
        #[command(flatten)]
        tls: TlsArgs,
        /// Tunnels to open.
        #[arg(short = 'n', long = "tunnels")]
        tunnels: usize,
        /// Server process whose VmRSS is read before and after.
        #[arg(long)]
        pid: Option<u32>,
        /// Seconds to keep the tunnels open after the RSS reading.
        #[arg(long, default_value_t = 2.0)]
        hold_secs: f64,
        /// Most setups in flight during the ramp.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Seconds between the last tunnel up and the RSS reading.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Client event-loop threads; tunnels are spread over them.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Write the JSON report to FILE ("-" for stdout).
        #[arg(long)]
        json: Option<String>,
    },
}

#[derive(Args)]
struct CommonArgs {
    /// tcp://HOST:PORT, ws://HOST:PORT/PATH, tls://HOST:PORT or wss://HOST:PORT/PATH
    #[arg(long)]
    target: String,
    #[command(flatten)]
    tls: TlsArgs,
    /// Seconds measured (after the warmup).
    #[arg(short = 'd', long = "duration", default_value_t = 5.0)]
    duration: f64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Client event-loop threads; connections are spread over them.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Write the JSON report to FILE ("-" for stdout).
    #[arg(long)]
    json: Option<String>,
    /// The proxy's process id: its CPU over the measured window is reported next to the
    /// client's (`server_cpu_percent`, and per message for latency runs).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
}

/// How a tls:// or wss:// target is trusted.
#[derive(Args)]
struct TlsArgs {
    /// PEM file of the CA (or the certificate itself) to trust; required for tls:// and wss://
    /// targets unless --insecure is given.
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Accept any server certificate (handshake signatures are still checked). For tests.
    #[arg(long)]
    insecure: bool,
}

impl TlsArgs {
    /// The TLS settings for `target` (`None` for tcp:// and ws://), resuming sessions if
    /// `resume`.
    fn client(&self, target: &Target, resume: bool) -> Result<Option<TlsClient>> {
        if !target.is_tls() {
            if self.ca.is_some() || self.insecure || !resume {
                bail!("--ca, --insecure and --no-resume apply to tls:// and wss:// targets only");
            }
            return Ok(None);
        }
        let opts = TlsOptions {
            ca: self.ca.clone(),
            insecure: self.insecure,
            resume,
        };
        TlsClient::new(target, &opts)
            .map(Some)
            .map_err(anyhow::Error::msg)
    }
}

fn parse_mode(s: &str) -> Result<OriginMode, String> {
    s.parse()
}

fn parse_close(s: &str) -> Result<connect::CloseBy, String> {
    s.parse()
}

fn secs(name: &str, v: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{name} {v}: not a duration"))
}

impl CommonArgs {
    /// The settings; `resume` is connect's `--resume` / `--no-resume` (true elsewhere).
    fn common(&self, resume: bool) -> Result<Common> {
        let target = Target::parse(&self.target).map_err(anyhow::Error::msg)?;
        Ok(Common {
            tls: self.tls.client(&target, resume)?,
            target,
            warmup: secs("warmup", self.warmup)?,
            duration: secs("duration", self.duration)?,
            threads: self.threads.max(1),
            server_pid: self.server_pid,
        })
    }
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ringbench: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    let (report, json) = match cli.cmd {
        Cmd::Origin {
            listen,
            mode,
            threads,
        } => {
            let origin = Origin::start(listen, mode, threads)
                .with_context(|| format!("cannot listen on {listen}"))?;
            let mut out = std::io::stdout();
            writeln!(out, "origin listening on {}", origin.addr())?;
            out.flush()?;
            origin.wait().context("origin failed")?;
            return Ok(0);
        }
        Cmd::Summarize {
            dir,
            out,
            plot,
            plot_ref,
        } => {
            ringway_bench::summary::summarize(&dir, &out, &plot, &plot_ref)?;
            return Ok(0);
        }
        Cmd::Latency {
            common,
            connections,
            size,
        } => {
            let c = common.common(true)?;
            let args = latency::Latency { connections, size };
            (latency::run(&c, args), common.json)
        }
        Cmd::Rate {
            common,
            connections,
            size,
            rate,
        } => {
            let c = common.common(true)?;
            let args = rate::Rate {
                connections,
                size,
                rate,
            };
            (rate::run(&c, args), common.json)
        }
        Cmd::Bulk {
            common,
            connections,
            frame,
        } => {
            let c = common.common(true)?;
            (
                bulk::run(&c, bulk::Bulk { connections, frame }),
                common.json,
            )
        }
        Cmd::Connect {
            common,
            concurrency,
            close,
            resume: _,
            no_resume,
        } => {
            let c = common.common(!no_resume)?;
            let args = connect::Connect { concurrency, close };
            (connect::run(&c, args), common.json)
        }
        Cmd::Hold {
            target,
            tls,
            tunnels,
            pid,
            hold_secs,
            batch,
            warmup,
            threads,
            json,
        } => {
            let target = Target::parse(&target).map_err(anyhow::Error::msg)?;
            let tls = tls.client(&target, true)?;
            let args = hold::Hold {
                tunnels,
                pid,
                hold: secs("hold-secs", hold_secs)?,
                batch: batch.max(1),
                settle: secs("warmup", warmup)?,
                threads,
            };
            (hold::run(&target, tls.as_ref(), args), json)
        }
    };
    emit(&report, json.as_deref())?;
    if report.error_total > 0 {
        let counts: Vec<String> = report
            .errors
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        eprintln!(
            "ringbench: {} errors: {}",
            report.error_total,
            counts.join(" ")
        );
        return Ok(1);
    }
    Ok(0)
}

fn emit(report: &Report, json: Option<&str>) -> Result<()> {
    match json {
        Some("-") => {
            eprint!("{}", report.to_table());
            println!("{}", report.to_json());
        }
        Some(path) => {
            print!("{}", report.to_table());
            std::fs::write(path, report.to_json() + "\n")
                .with_context(|| format!("cannot write {path}"))?;
        }
        None => print!("{}", report.to_table()),
    }
    if report.connections_up == 0 && report.error_total == 0 {
        bail!("no connection was opened");
    }
    Ok(())
}
