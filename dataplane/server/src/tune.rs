//! `ringway tune check`: reads the host (`/proc`, `/sys`, the process limits) and the config,
//! and lists every deviation from `tuning/RUNBOOK.md` with the command that fixes it.
//!
//! Everything is read under a root directory (`/` on a real host), so tests run on fixture
//! trees that stand in for hosts: a single-queue NIC, IRQs all on CPU 0, a low open-files
//! limit. A file that is missing is not a deviation (a kernel without the knob, a container
//! without the view): the finding says so at `info` level.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// How much a finding matters; the exit status is the worst one's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fine, or could not be read here.
    Ok,
    /// Worth knowing; no action needed by default.
    Info,
    /// Costs throughput or latency, or tunnels at scale.
    Warn,
    /// Will fail under load (tunnels refused).
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
        })
    }
}

/// One check's result.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// Stable name, e.g. `net.core.somaxconn`.
    pub check: String,
    pub severity: Severity,
    /// What was found, in words.
    pub found: String,
    /// What the runbook wants.
    pub want: String,
    /// The command (or unit line) that fixes it; empty when nothing is to be done.
    pub fix: String,
    /// The runbook section.
    pub runbook: String,
}

/// What the check knows of the config.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Worker CPUs (`None`: not pinned).
    pub workers: Vec<Option<usize>>,
    pub steer_by_cpu: bool,
    pub busy_poll_us: u64,
}

/// Runs every check against the host under `root`.
pub fn check(root: &Path, plan: &Plan) -> Vec<Finding> {
    let host = Host { root };
    let mut out = Vec::new();
    out.push(host.nofile());
    for (key, want, section) in [
        ("net.core.somaxconn", 4096, "backlog"),
        ("net.ipv4.tcp_max_syn_backlog", 4096, "backlog"),
        ("net.core.rmem_max", 4 << 20, "socket-buffers"),
        ("net.core.wmem_max", 4 << 20, "socket-buffers"),
    ] {
        out.push(host.sysctl_at_least(key, want, section));
    }
    out.push(host.port_range());
    out.extend(host.nics(plan));
    out.push(host.governor());
    out.push(host.isolation(plan));
    out.push(host.thp());
    out.push(host.busy_poll(plan));
    out
}

/// The worst severity: 0 none above info, 1 warnings, 2 errors.
pub fn exit_code(findings: &[Finding]) -> i32 {
    match findings.iter().map(|f| f.severity).max() {
        Some(Severity::Error) => 2,
        Some(Severity::Warn) => 1,
        _ => 0,
    }
}

/// The findings as the operator reads them: deviations first, each with its fix.
pub fn render(findings: &[Finding]) -> String {
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let mut s = String::new();
    for f in sorted {
        s.push_str(&format!("{:<5} {}: {}", f.severity, f.check, f.found));
        if f.severity > Severity::Ok {
            s.push_str(&format!(" (want {})", f.want));
        }
        s.push('\n');
        if !f.fix.is_empty() && f.severity > Severity::Info {
            s.push_str(&format!("      fix: {}\n", f.fix));
        }
        if f.severity > Severity::Ok {
            s.push_str(&format!("      see tuning/RUNBOOK.md#{}\n", f.runbook));
        }
    }
    let (w, e) = (
        findings
            .iter()
            .filter(|f| f.severity == Severity::Warn)
            .count(),
        findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count(),
    );
    s.push_str(&format!("{e} error(s), {w} warning(s)\n"));
    s
}

struct Host<'a> {
    root: &'a Path,
}

fn finding(
    check: &str,
    severity: Severity,
    found: String,
    want: &str,
    fix: String,
    runbook: &str,
) -> Finding {
    Finding {
        check: check.into(),
        severity,
        found,
        want: want.into(),
        fix,
        runbook: runbook.into(),
    }
}

impl Host<'_> {
    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn read(&self, p: &str) -> Option<String> {
        std::fs::read_to_string(self.path(p)).ok()
    }

    fn missing(&self, check: &str, p: &str, runbook: &str) -> Finding {
        finding(
            check,
            Severity::Info,
            format!("{} not readable here", self.path(p).display()),
            "-",
            String::new(),
            runbook,
        )
    }

    /// Every tunnel holds two descriptors: a low hard limit caps the tunnels.
    fn nofile(&self) -> Finding {
        let p = "/proc/self/limits";
        let Some(text) = self.read(p) else {
            return self.missing("open-files", p, "open-files");
        };
        let hard = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(4))
            .and_then(|v| {
                if v == "unlimited" {
                    Some(u64::MAX)
                } else {
                    v.parse().ok()
                }
            });
        let Some(hard) = hard else {
            return self.missing("open-files", p, "open-files");
        };
        let (sev, want) = match hard {
            h if h >= 1 << 20 => (Severity::Ok, "≥ 1048576"),
            h if h >= 65536 => (Severity::Warn, "≥ 1048576"),
            _ => (Severity::Error, "≥ 1048576"),
        };
        finding(
            "open-files",
            sev,
            format!("hard limit {hard} (about {} tunnels)", hard / 2),
            want,
            "LimitNOFILE=1048576 in the unit (tuning/ringway.service), or `ulimit -Hn 1048576` in the starting shell".into(),
            "open-files",
        )
    }

    fn sysctl(&self, key: &str) -> Option<String> {
        self.read(&format!("/proc/sys/{}", key.replace('.', "/")))
            .map(|s| s.trim().to_string())
    }

    fn sysctl_at_least(&self, key: &str, want: u64, section: &str) -> Finding {
        let Some(v) = self.sysctl(key) else {
            return self.missing(
                key,
                &format!("/proc/sys/{}", key.replace('.', "/")),
                section,
            );
        };
        let Ok(n) = v.parse::<u64>() else {
            return self.missing(key, key, section);
        };
        let sev = if n >= want {
            Severity::Ok
        } else {
            Severity::Warn
        };
        finding(
            key,
            sev,
            format!("{n}"),
            &format!("≥ {want}"),
            format!("sysctl -w {key}={want} (persist: tuning/99-ringway.conf in /etc/sysctl.d/)"),
            section,
        )
    }

    /// Origin connects take ephemeral ports: a narrow range caps tunnels per origin.
    fn port_range(&self) -> Finding {
        let key = "net.ipv4.ip_local_port_range";
        let Some(v) = self.sysctl(key) else {
            return self.missing(key, "/proc/sys/net/ipv4/ip_local_port_range", "ports");
        };
        let nums: Vec<u64> = v
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let size = match nums[..] {
            [lo, hi] if hi >= lo => hi - lo + 1,
            _ => return self.missing(key, key, "ports"),
        };
        let sev = if size >= 50_000 {
            Severity::Ok
        } else {
            Severity::Warn
        };
        finding(
            key,
            sev,
            format!(
                "{} ({size} ports per origin address)",
                v.split_whitespace().collect::<Vec<_>>().join("-")
            ),
            "≥ 50000 ports",
            format!("sysctl -w {key}=\"10000 65535\""),
            "ports",
        )
    }

    /// Per NIC: receive queues against workers, and where their interrupts land.
    fn nics(&self, plan: &Plan) -> Vec<Finding> {
        let dir = self.path("/sys/class/net");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return vec![self.missing("nic", "/sys/class/net", "nic-queues")];
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n != "lo")
            // Hardware only (a `device` link): bridges, veths and ifbs have no queues to steer.
            .filter(|n| dir.join(n).join("device").exists())
            .collect();
        names.sort();
        let workers = plan.workers.len().max(1);
        let interrupts = self.read("/proc/interrupts").unwrap_or_default();
        let mut out = Vec::new();
        for nic in names {
            let queues = std::fs::read_dir(dir.join(&nic).join("queues"))
                .map(|q| {
                    q.filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .filter(|n| n.starts_with("rx-"))
                        .count()
                })
                .unwrap_or(0);
            let sev = if queues >= workers || workers == 1 {
                Severity::Ok
            } else {
                Severity::Warn
            };
            out.push(finding(
                &format!("nic {nic} queues"),
                sev,
                format!("{queues} receive queue(s) for {workers} worker(s)"),
                "one receive queue per worker",
                format!("ethtool -L {nic} combined {workers} (or RPS: echo <cpu mask> > /sys/class/net/{nic}/queues/rx-0/rps_cpus)"),
                "nic-queues",
            ));
            out.extend(self.rps(&nic, queues, workers, plan));
            out.extend(self.xps(&nic));
            // IRQs whose name mentions the NIC (eth0-TxRx-0, virtio0-input.0 for virtio_net).
            let irqs: Vec<&str> = interrupts
                .lines()
                .filter(|l| {
                    l.contains(&nic)
                        || (nic.starts_with("eth") && l.contains("virtio") && l.contains("input"))
                })
                .filter_map(|l| l.split(':').next().map(str::trim))
                .collect();
            if irqs.is_empty() {
                continue;
            }
            let cpus: Vec<String> = irqs
                .iter()
                .filter_map(|irq| self.read(&format!("/proc/irq/{irq}/smp_affinity_list")))
                .map(|s| s.trim().to_string())
                .collect();
            let all_on_zero = !cpus.is_empty() && cpus.iter().all(|c| c == "0");
            let sev = if all_on_zero && workers > 1 {
                Severity::Warn
            } else {
                Severity::Ok
            };
            out.push(finding(
                &format!("nic {nic} irqs"),
                sev,
                format!("{} IRQ(s) on CPUs {}", irqs.len(), cpus.join(" ")),
                "each queue's IRQ on the CPU of the worker that serves it",
                format!("for each queue i: echo <worker i's CPU> > /proc/irq/<irq of queue i>/smp_affinity_list (stop irqbalance first); then `[engine] steer_by_cpu = true`{}", if plan.steer_by_cpu { " (already on)" } else { "" }),
                "irq-affinity",
            ));
        }
        out
    }

    /// Fewer receive queues than workers: RPS spreads the protocol work of each queue over the
    /// worker CPUs in software, and RFS then processes each flow's packets on the CPU of the
    /// worker that reads them. Nothing to check with a queue per worker.
    fn rps(&self, nic: &str, queues: usize, workers: usize, plan: &Plan) -> Vec<Finding> {
        if queues >= workers || queues == 0 {
            return Vec::new();
        }
        let rps_on = (0..queues).any(|q| {
            self.read(&format!("/sys/class/net/{nic}/queues/rx-{q}/rps_cpus"))
                .is_some_and(|m| mask_is_set(&m))
        });
        let mask = worker_mask(plan);
        let mut out = vec![finding(
            &format!("nic {nic} rps"),
            if rps_on { Severity::Ok } else { Severity::Warn },
            if rps_on {
                "RPS on".into()
            } else {
                "RPS off: one CPU's softirq does the protocol work of every packet".into()
            },
            "RPS over the worker CPUs",
            format!("echo {mask} > /sys/class/net/{nic}/queues/rx-<each queue>/rps_cpus"),
            "nic-queues",
        )];
        if rps_on {
            let key = "net.core.rps_sock_flow_entries";
            let entries = self
                .sysctl(key)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            out.push(finding(
                &format!("nic {nic} rfs"),
                if entries > 0 { Severity::Ok } else { Severity::Warn },
                format!("{key} = {entries}"),
                "≥ 32768 (RFS: each flow's packets on the CPU of the worker reading it)",
                format!(
                    "sysctl -w {key}=32768; echo 32768 > /sys/class/net/{nic}/queues/rx-<each queue>/rps_flow_cnt"
                ),
                "nic-queues",
            ));
        }
        out
    }

    /// Several transmit queues: XPS maps each CPU to its own, so sends from different workers
    /// do not contend on one queue's lock.
    fn xps(&self, nic: &str) -> Option<Finding> {
        let dir = self.path(&format!("/sys/class/net/{nic}/queues"));
        let tx: Vec<String> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("tx-"))
            .collect();
        if tx.len() < 2 {
            return None;
        }
        let unset = tx
            .iter()
            .filter(|q| {
                !self
                    .read(&format!("/sys/class/net/{nic}/queues/{q}/xps_cpus"))
                    .is_some_and(|m| mask_is_set(&m))
            })
            .count();
        Some(finding(
            &format!("nic {nic} xps"),
            if unset == 0 {
                Severity::Ok
            } else {
                Severity::Warn
            },
            format!(
                "{unset} of {} transmit queue(s) without an XPS CPU mask",
                tx.len()
            ),
            "each transmit queue mapped to its CPU",
            format!(
                "for each queue i: echo <mask of CPU i> > /sys/class/net/{nic}/queues/tx-i/xps_cpus"
            ),
            "nic-queues",
        ))
    }

    /// Dedicated worker cores: pinned workers on CPUs the scheduler keeps other work off. An
    /// option for the lowest tail latency, not a fault: `info` at most.
    fn isolation(&self, plan: &Plan) -> Finding {
        let p = "/sys/devices/system/cpu/isolated";
        let Some(text) = self.read(p) else {
            return self.missing("cpu isolation", p, "cpu");
        };
        let isolated = parse_cpu_list(text.trim());
        let pinned: Vec<usize> = plan.workers.iter().flatten().copied().collect();
        let list = |cpus: &[usize]| {
            cpus.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let all_isolated = !pinned.is_empty() && pinned.iter().all(|c| isolated.contains(c));
        let found = match (pinned.is_empty(), isolated.is_empty()) {
            (true, _) => "workers not pinned to CPUs".to_string(),
            (false, true) => format!("workers on CPUs {}; no CPU isolated", list(&pinned)),
            (false, false) => format!(
                "workers on CPUs {}; isolated CPUs {}",
                list(&pinned),
                list(&isolated)
            ),
        };
        let cpus = if pinned.is_empty() {
            "<worker CPUs>".to_string()
        } else {
            list(&pinned)
        };
        finding(
            "cpu isolation",
            if all_isolated {
                Severity::Ok
            } else {
                Severity::Info
            },
            found,
            "dedicated worker cores (optional: for the lowest tail latency)",
            format!(
                "kernel command line: isolcpus={cpus} nohz_full={cpus} rcu_nocbs={cpus}, and `workers = [{cpus}]`"
            ),
            "cpu",
        )
    }

    fn governor(&self) -> Finding {
        let dir = self.path("/sys/devices/system/cpu");
        let govs: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    name.strip_prefix("cpu")?.parse::<u32>().ok()?;
                    std::fs::read_to_string(dir.join(&name).join("cpufreq/scaling_governor"))
                        .ok()
                        .map(|g| g.trim().to_string())
                })
                .collect()
            })
            .unwrap_or_default();
        if govs.is_empty() {
            return self.missing(
                "cpu governor",
                "/sys/devices/system/cpu/cpu*/cpufreq",
                "cpu",
            );
        }
        let slow: Vec<&String> = govs.iter().filter(|g| *g != "performance").collect();
        let sev = if slow.is_empty() {
            Severity::Ok
        } else {
            Severity::Warn
        };
        finding(
            "cpu governor",
            sev,
            format!(
                "{} of {} CPU(s) not on `performance` ({})",
                slow.len(),
                govs.len(),
                govs.join(" ")
            ),
            "performance",
            "cpupower frequency-set -g performance".into(),
            "cpu",
        )
    }

    fn thp(&self) -> Finding {
        let p = "/sys/kernel/mm/transparent_hugepage/enabled";
        let Some(v) = self.read(p) else {
            return self.missing("transparent hugepages", p, "thp");
        };
        let mode = v
            .split_whitespace()
            .find(|w| w.starts_with('['))
            .map(|w| w.trim_matches(['[', ']']).to_string())
            .unwrap_or_default();
        let sev = if mode == "always" {
            Severity::Info
        } else {
            Severity::Ok
        };
        finding(
            "transparent hugepages",
            sev,
            mode,
            "madvise (always: compaction stalls can add latency spikes)",
            format!("echo madvise > {p}"),
            "thp",
        )
    }

    fn busy_poll(&self, plan: &Plan) -> Finding {
        let v = self.sysctl("net.core.busy_poll").unwrap_or_default();
        let read = self.sysctl("net.core.busy_read");
        let sev = Severity::Info;
        finding(
            "net.core.busy_poll",
            if v.is_empty() { Severity::Ok } else { sev },
            format!(
                "{}{} (ringway's own busy_poll_us = {})",
                if v.is_empty() { "not readable" } else { &v },
                read.map(|r| format!(", net.core.busy_read {r}"))
                    .unwrap_or_default(),
                plan.busy_poll_us
            ),
            "0 on shared hosts; 50 with dedicated worker cores and a NIC with busy-poll support",
            "sysctl -w net.core.busy_poll=50 net.core.busy_read=50 (dedicated cores only)".into(),
            "busy-poll",
        )
    }
}

/// Whether a sysfs CPU mask (`00000000,00000003`) names any CPU.
fn mask_is_set(mask: &str) -> bool {
    mask.trim()
        .chars()
        .any(|c| c.is_ascii_hexdigit() && c != '0')
}

/// The hex mask of the worker CPUs (unpinned workers: CPUs 0 to workers - 1).
fn worker_mask(plan: &Plan) -> String {
    let cpus: Vec<usize> = if plan.workers.iter().all(Option::is_some) {
        plan.workers.iter().flatten().copied().collect()
    } else {
        (0..plan.workers.len().max(1)).collect()
    };
    if cpus.iter().any(|&c| c >= 128) {
        return "<mask of the worker CPUs>".into();
    }
    format!("{:x}", cpus.iter().fold(0u128, |m, &c| m | 1 << c))
}

/// A kernel CPU list (`2-5,7`); empty for an empty file.
fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b.min(a + 4096));
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, p: &str, text: &str) {
        let f = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, text).unwrap();
    }

    /// The finding called `name`; panics with every finding when there is none.
    fn named<'a>(f: &'a [Finding], name: &str) -> &'a Finding {
        f.iter()
            .find(|x| x.check == name)
            .unwrap_or_else(|| panic!("{name}: {f:?}"))
    }

    fn limits(hard: &str) -> String {
        format!(
            "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 {hard}              files     \n"
        )
    }

    #[test]
    fn a_stock_host_is_told_what_to_fix() {
        let root = std::env::temp_dir().join(format!("ringway-tune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        put(&root, "/proc/self/limits", &limits("4096"));
        put(&root, "/proc/sys/net/core/somaxconn", "128\n");
        put(
            &root,
            "/proc/sys/net/ipv4/ip_local_port_range",
            "32768\t60999\n",
        );
        put(&root, "/sys/class/net/eth0/queues/rx-0/rps_cpus", "0\n");
        put(&root, "/sys/class/net/eth0/device/vendor", "0x1af4\n");
        put(&root, "/sys/class/net/veth0/queues/rx-0/rps_cpus", "0\n"); // virtual: not checked
        put(
            &root,
            "/proc/interrupts",
            "           CPU0       CPU1\n 24:  100  0  PCI-MSI  eth0-TxRx-0\n",
        );
        put(&root, "/proc/irq/24/smp_affinity_list", "0\n");
        put(
            &root,
            "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
            "powersave\n",
        );
        let plan = Plan {
            workers: vec![Some(0), Some(1)],
            ..Plan::default()
        };
        let f = check(&root, &plan);
        let by = |name: &str| named(&f, name);
        assert_eq!(by("open-files").severity, Severity::Error);
        assert_eq!(by("net.core.somaxconn").severity, Severity::Warn);
        assert!(by("net.core.somaxconn")
            .fix
            .contains("sysctl -w net.core.somaxconn=4096"));
        assert_eq!(by("net.ipv4.ip_local_port_range").severity, Severity::Warn);
        assert_eq!(by("nic eth0 queues").severity, Severity::Warn);
        assert!(by("nic eth0 queues")
            .fix
            .contains("ethtool -L eth0 combined 2"));
        assert_eq!(by("nic eth0 irqs").severity, Severity::Warn);
        assert!(
            f.iter().all(|x| !x.check.contains("veth0")),
            "virtual NICs are skipped"
        );
        assert_eq!(by("cpu governor").severity, Severity::Warn);
        assert_eq!(by("nic eth0 rps").severity, Severity::Warn);
        assert!(
            by("nic eth0 rps")
                .fix
                .contains("echo 3 > /sys/class/net/eth0/queues/rx-<each queue>/rps_cpus"),
            "{:?}",
            by("nic eth0 rps")
        );
        assert_eq!(
            by("cpu isolation").severity,
            Severity::Info,
            "not readable here: info"
        );
        assert_eq!(
            by("net.core.rmem_max").severity,
            Severity::Info,
            "missing file: info"
        );
        assert_eq!(exit_code(&f), 2);
        let text = render(&f);
        assert!(
            text.starts_with("ERROR open-files: hard limit 4096"),
            "{text}"
        );
        assert!(
            text.contains("\nWARN  net.core.somaxconn: 128"),
            "aligned: {text}"
        );
        assert!(text.contains("see tuning/RUNBOOK.md#nic-queues"), "{text}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn rps_rfs_xps_and_isolation_are_read_from_the_host() {
        let root = std::env::temp_dir().join(format!("ringway-tune-rps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        put(&root, "/sys/class/net/eth0/device/vendor", "0x1af4\n");
        put(
            &root,
            "/sys/class/net/eth0/queues/rx-0/rps_cpus",
            "00000000,0000000c\n",
        );
        put(&root, "/proc/sys/net/core/rps_sock_flow_entries", "0\n");
        put(&root, "/sys/class/net/eth0/queues/tx-0/xps_cpus", "4\n");
        put(&root, "/sys/class/net/eth0/queues/tx-1/xps_cpus", "0\n");
        put(&root, "/sys/devices/system/cpu/isolated", "2-3\n");
        let plan = Plan {
            workers: vec![Some(2), Some(3)],
            ..Plan::default()
        };
        let f = check(&root, &plan);
        let by = |name: &str| named(&f, name);
        assert_eq!(by("nic eth0 rps").severity, Severity::Ok);
        assert_eq!(by("nic eth0 rfs").severity, Severity::Warn);
        assert!(by("nic eth0 rfs")
            .fix
            .contains("sysctl -w net.core.rps_sock_flow_entries=32768"));
        assert_eq!(by("nic eth0 xps").severity, Severity::Warn);
        assert!(by("nic eth0 xps")
            .found
            .starts_with("1 of 2 transmit queue(s)"));
        assert_eq!(
            by("cpu isolation").severity,
            Severity::Ok,
            "{:?}",
            by("cpu isolation")
        );

        // RFS on, every transmit queue mapped, a worker off the isolated CPUs.
        put(&root, "/proc/sys/net/core/rps_sock_flow_entries", "32768\n");
        put(&root, "/sys/class/net/eth0/queues/tx-1/xps_cpus", "8\n");
        let plan = Plan {
            workers: vec![Some(1), Some(3)],
            ..Plan::default()
        };
        let f = check(&root, &plan);
        let by = |name: &str| named(&f, name);
        assert_eq!(by("nic eth0 rfs").severity, Severity::Ok);
        assert_eq!(by("nic eth0 xps").severity, Severity::Ok);
        assert_eq!(by("cpu isolation").severity, Severity::Info);
        assert_eq!(
            by("cpu isolation").found,
            "workers on CPUs 1,3; isolated CPUs 2,3"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn masks_and_cpu_lists_parse() {
        assert!(!mask_is_set("00000000,00000000\n"));
        assert!(mask_is_set("00000000,00000100"));
        assert_eq!(parse_cpu_list("2-5,7"), vec![2, 3, 4, 5, 7]);
        assert!(parse_cpu_list("").is_empty());
        let unpinned = Plan {
            workers: vec![None, None, None],
            ..Plan::default()
        };
        assert_eq!(worker_mask(&unpinned), "7");
    }
}
