#!/usr/bin/env python3
"""ringbench against the reference tools on this machine, interleaved, medians quoted.

Checks that ringbench is not the bottleneck: over direct TCP on 127.0.0.1 its figures should
match or beat sockperf (ping-pong latency) and iperf3 (bulk) run on the same box in the same
minutes. Optionally repeats ringbench through a ringway tunnel (--ringway BIN).

Starts every server it needs on 127.0.0.1 and stops exactly those (by pid) at the end. Each
run is bounded by its duration plus a timeout. Needs `apt-get install -y iperf3 sockperf`.

usage: bench/scripts/reference.py [--rounds 3] [--secs 5] [--ringbench PATH] [--ringway PATH]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

started = []


def spawn(cmd, ready=None):
    """Starts cmd; waits for a stdout line matching `ready` and returns (proc, match)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    started.append(p)
    if ready is None:
        time.sleep(0.5)
        return p, None
    deadline = time.time() + 10
    while time.time() < deadline:
        line = p.stdout.readline()
        m = re.search(ready, line)
        if m:
            return p, m
    raise SystemExit(f"{cmd[0]} did not become ready")


def run(cmd, secs):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 30)
    return out.stdout + out.stderr


def ringbench(rb, workload, target, secs, *args):
    out = subprocess.run(
        [rb, workload, "--target", target, "-d", str(secs), "--json", "-", *args],
        capture_output=True, text=True, timeout=secs + 30)
    d = json.loads(out.stdout)
    if d["error_total"]:
        print(f"  ! {workload} {target}: errors {d['errors']}", file=sys.stderr)
    return d


def sockperf(port, secs):
    out = run(["sockperf", "ping-pong", "--tcp", "-i", "127.0.0.1", "-p", str(port), "-m", "64",
               "-t", str(secs), "--full-rtt"], secs)
    valid = re.search(r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); "
                      r"ReceivedMessages=(\d+)", out)
    p50 = re.search(r"percentile 50.000 =\s+([\d.]+)", out)
    p99 = re.search(r"percentile 99.000 =\s+([\d.]+)", out)
    return {"messages_per_sec": int(valid.group(3)) / float(valid.group(1)),
            "p50_us": float(p50.group(1)), "p99_us": float(p99.group(1))}


def iperf3(port, secs, *args):
    out = run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(secs), "-J", *args], secs)
    end = json.loads(out)["end"]
    total = end["sum_received"]["bits_per_second"]
    if "sum_received_bidir_reverse" in end:
        total += end["sum_received_bidir_reverse"]["bits_per_second"]
    return total / 8 / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--ringbench", default="target/release/ringbench")
    ap.add_argument("--ringway", default=None)
    a = ap.parse_args()
    rb, secs = a.ringbench, a.secs

    _, m = spawn([rb, "origin", "--listen", "127.0.0.1:0", "--mode", "echo"], r":(\d+)$")
    echo = int(m.group(1))
    _, m = spawn([rb, "origin", "--listen", "127.0.0.1:0", "--mode", "sink"], r":(\d+)$")
    sink = int(m.group(1))
    spawn(["sockperf", "server", "--tcp", "-i", "127.0.0.1", "-p", "11111"])
    spawn(["iperf3", "-s", "-B", "127.0.0.1", "-p", "5201"])
    ws = None
    if a.ringway:
        cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        cfg.write(f'workers = 1\n[[listener]]\naddr = "127.0.0.1:0"\n[[route]]\n'
                  f'path = "/echo"\norigin = "127.0.0.1:{echo}"\n')
        cfg.close()
        _, m = spawn([a.ringway, "run", "--config", cfg.name], r"listening on (ws://\S+)")
        ws = m.group(1) + "/echo"

    rows = {}

    def add(name, value):
        rows.setdefault(name, []).append(value)

    tcp = f"tcp://127.0.0.1:{echo}"
    for r in range(a.rounds):
        print(f"round {r + 1}/{a.rounds}", file=sys.stderr)
        s = sockperf(11111, secs)
        add("sockperf ping-pong 64B: p50 RTT us", s["p50_us"])
        add("sockperf ping-pong 64B: msg/s", s["messages_per_sec"])
        d = ringbench(rb, "latency", tcp, secs, "-c", "1", "-s", "64")
        add("ringbench latency -c1 -s64 tcp: p50 us", d["p50_us"])
        add("ringbench latency -c1 -s64 tcp: msg/s", d["messages_per_sec"])
        add("iperf3 -P8: MB/s", iperf3(5201, secs, "-P", "8"))
        d = ringbench(rb, "bulk", f"tcp://127.0.0.1:{sink}", secs, "-c", "8", "-f", "16384")
        add("ringbench bulk -c8 -f16384 -> sink: tx MB/s", d["tx_mbps"])
        add("iperf3 -P8 --bidir: total MB/s", iperf3(5201, secs, "-P", "8", "--bidir"))
        d = ringbench(rb, "bulk", tcp, secs, "-c", "8", "-f", "16384")
        add("ringbench bulk -c8 -f16384 echo: total MB/s", d["goodput_mbps"])
        add("ringbench bulk -c8 -f16384 echo: client cpu %", d["client_cpu_percent"])
        d = ringbench(rb, "latency", tcp, secs, "-c", "64", "-s", "64")
        add("ringbench latency -c64 tcp: msg/s", d["messages_per_sec"])
        d = ringbench(rb, "connect", tcp, secs, "-k", "4")
        add("ringbench connect -k4 tcp: setups/s", d["setups_per_sec"])
        if ws:
            d = ringbench(rb, "latency", ws, secs, "-c", "1", "-s", "64")
            add("ringbench latency -c1 -s64 ws/ringway: p50 us", d["p50_us"])
            d = ringbench(rb, "latency", ws, secs, "-c", "64", "-s", "64")
            add("ringbench latency -c64 ws/ringway: msg/s", d["messages_per_sec"])
            d = ringbench(rb, "bulk", ws, secs, "-c", "8", "-f", "16384")
            add("ringbench bulk -c8 -f16384 ws/ringway: total MB/s", d["goodput_mbps"])
            d = ringbench(rb, "connect", ws, secs, "-k", "4")
            add("ringbench connect -k4 ws/ringway: setups/s", d["setups_per_sec"])

    for name, values in rows.items():
        vals = " ".join(f"{v:.1f}" for v in values)
        print(f"{name:<52} median {statistics.median(values):>10.1f}   ({vals})")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in started:
            p.terminate()
        for p in started:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
