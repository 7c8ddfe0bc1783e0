//! `ringway tune check` on fixture trees standing in for hosts (`--root`): a stock host gets
//! every deviation with its fix and exit 2, a tuned one exit 0; `--json` is machine-readable;
//! every finding points at a section that exists in tuning/RUNBOOK.md.

use std::path::{Path, PathBuf};

use ringway_e2e::server::{run_to_exit, temp_path, write_config};
use ringway_e2e::STEP;

fn put(root: &Path, p: &str, text: &str) {
    let f = root.join(p.trim_start_matches('/'));
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(f, text).unwrap();
}

fn host(
    nofile: &str,
    somaxconn: &str,
    queues: usize,
    irq_cpus: [&str; 2],
    governor: &str,
) -> PathBuf {
    let root = temp_path("host");
    put(
        &root,
        "/proc/self/limits",
        &format!("Limit  Soft Limit  Hard Limit  Units\nMax open files            1024                 {nofile}                files\n"),
    );
    put(&root, "/proc/sys/net/core/somaxconn", somaxconn);
    put(&root, "/proc/sys/net/ipv4/tcp_max_syn_backlog", "4096\n");
    put(&root, "/proc/sys/net/core/rmem_max", "4194304\n");
    put(&root, "/proc/sys/net/core/wmem_max", "4194304\n");
    put(&root, "/proc/sys/net/core/busy_poll", "0\n");
    put(
        &root,
        "/proc/sys/net/ipv4/ip_local_port_range",
        "10000\t65535\n",
    );
    put(&root, "/sys/class/net/eth0/device/vendor", "0x8086\n");
    for q in 0..queues {
        put(
            &root,
            &format!("/sys/class/net/eth0/queues/rx-{q}/rps_cpus"),
            "0\n",
        );
    }
    put(
        &root,
        "/proc/interrupts",
        "           CPU0       CPU1\n 40:  10  0  PCI-MSI  eth0-TxRx-0\n 41:  0  10  PCI-MSI  eth0-TxRx-1\n",
    );
    put(&root, "/proc/irq/40/smp_affinity_list", irq_cpus[0]);
    put(&root, "/proc/irq/41/smp_affinity_list", irq_cpus[1]);
    for cpu in 0..2 {
        put(
            &root,
            &format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
            governor,
        );
    }
    put(
        &root,
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "always [madvise] never\n",
    );
    root
}

fn check(root: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let config = write_config("workers = 2\n[[listener]]\naddr = \"127.0.0.1:0\"\n");
    let mut args = vec![
        "tune",
        "check",
        "--root",
        root.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = run_to_exit(&args, STEP);
    let _ = std::fs::remove_file(config);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_stock_host_gets_each_fix_and_a_tuned_one_passes() {
    let stock = host("4096", "128\n", 1, ["0\n", "0\n"], "powersave\n");
    let (code, text) = check(&stock, &[]);
    assert_eq!(code, Some(2), "{text}");
    for want in [
        "ERROR open-files: hard limit 4096",
        "fix: LimitNOFILE=1048576",
        "WARN  net.core.somaxconn: 128 (want ≥ 4096)",
        "fix: sysctl -w net.core.somaxconn=4096",
        "WARN  nic eth0 queues: 1 receive queue(s) for 2 worker(s)",
        "fix: ethtool -L eth0 combined 2",
        "WARN  nic eth0 irqs: 2 IRQ(s) on CPUs 0 0",
        "WARN  cpu governor: 2 of 2 CPU(s) not on `performance`",
        "WARN  nic eth0 rps: RPS off",
        "fix: echo 3 > /sys/class/net/eth0/queues/rx-<each queue>/rps_cpus",
        "1 error(s), 5 warning(s)",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let tuned = host("1048576", "4096\n", 2, ["0\n", "1\n"], "performance\n");
    let (code, text) = check(&tuned, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("0 error(s), 0 warning(s)"), "{text}");
    for root in [stock, tuned] {
        std::fs::remove_dir_all(root).unwrap();
    }
}

#[test]
fn json_findings_point_at_runbook_sections() {
    let stock = host("65536", "128\n", 1, ["0\n", "0\n"], "schedutil\n");
    let (code, text) = check(&stock, &["--json"]);
    assert_eq!(code, Some(1), "warnings only: {text}");
    let findings: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let runbook =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/RUNBOOK.md"))
            .expect("tuning/RUNBOOK.md");
    let list = findings.as_array().expect("an array of findings");
    assert!(list.len() >= 10, "{text}");
    for f in list {
        for key in ["check", "severity", "found", "want", "fix", "runbook"] {
            assert!(f.get(key).is_some(), "{key} missing in {f}");
        }
        let anchor = format!("<a id=\"{}\"></a>", f["runbook"].as_str().unwrap());
        assert!(runbook.contains(&anchor), "RUNBOOK.md has no {anchor}");
    }
    let open = list.iter().find(|f| f["check"] == "open-files").unwrap();
    assert_eq!(open["severity"], "warn");
    std::fs::remove_dir_all(stock).unwrap();
}

#[test]
fn an_invalid_config_is_exit_3() {
    let root = host("1048576", "4096\n", 2, ["0\n", "1\n"], "performance\n");
    let bad = write_config("workers = 2\n");
    let out = run_to_exit(
        &[
            "tune",
            "check",
            "--root",
            root.to_str().unwrap(),
            "--config",
            bad.to_str().unwrap(),
        ],
        STEP,
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[[listener]]"));
    let _ = std::fs::remove_file(bad);
    std::fs::remove_dir_all(root).unwrap();
}

/// The sysctl file and the systemd unit that tuning/ ships make `tune check` happy on the points
/// they cover: a host whose /proc/sys holds exactly 99-ringway.conf's values and whose open-files
/// limit is the unit's LimitNOFILE has no deviation there; and the unit runs what the runbook says.
#[test]
fn the_shipped_sysctl_file_and_unit_satisfy_the_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning");
    let conf = std::fs::read_to_string(dir.join("99-ringway.conf")).expect("99-ringway.conf");
    let unit = std::fs::read_to_string(dir.join("ringway.service")).expect("ringway.service");
    let root = temp_path("shipped");
    let mut keys = Vec::new();
    for line in conf.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not `key = value`: {line:?}"));
        let key = key.trim();
        put(
            &root,
            &format!("/proc/sys/{}", key.replace('.', "/")),
            &format!(
                "{}\n",
                value.split_whitespace().collect::<Vec<_>>().join("\t")
            ),
        );
        keys.push(key.to_string());
    }
    assert!(keys.len() >= 5, "{keys:?}");
    let nofile = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("LimitNOFILE="))
        .expect("the unit sets LimitNOFILE");
    put(
        &root,
        "/proc/self/limits",
        &format!("Limit  Soft Limit  Hard Limit  Units\nMax open files            {nofile}                 {nofile}                files\n"),
    );
    let (_, text) = check(&root, &["--json"]);
    let findings: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    for want in keys.iter().map(String::as_str).chain(["open-files"]) {
        let f = findings
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == want)
            .unwrap_or_else(|| panic!("no finding for {want}: {text}"));
        assert_eq!(f["severity"], "ok", "{want}: {f}");
    }
    for line in [
        "ExecStartPre=/usr/local/bin/ringway check --config /etc/ringway/ringway.toml",
        "ExecStart=/usr/local/bin/ringway run --config /etc/ringway/ringway.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == line),
            "the unit lacks {line:?}"
        );
    }
    std::fs::remove_dir_all(root).unwrap();
}
