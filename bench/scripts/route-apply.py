#!/usr/bin/env python3
"""Route change latency: 1,000 `routes apply` requests against a release `ringway run` with two
workers, with and without load (64 connections of ringbench ping-pong through the same ringway),
speaking the control protocol directly (one JSON line each way, as ringctl does).

    bench/scripts/route-apply.py                 # 1000 applies idle, 1000 under load
    APPLIES=200 bench/scripts/route-apply.py
    STATE=0 bench/scripts/route-apply.py         # without a state file (no write + fsync)

For each apply it records the dataplane's own figures, `propagate_us` (from handing the new
table to the workers until the last one acknowledged it) and `apply_us` (from the request's
arrival: validation and the state file's write and fsync included), and the round trip seen by
the client (what `ringctl routes apply` waits for). When the reply arrives every worker already serves the new
table, so "time from apply returning until every worker uses it" is zero by construction; the
figures below say how long getting there takes. Everything runs on 127.0.0.1; needs release
builds of ringway and ringbench (built with cargo when RINGWAY / RINGBENCH are unset).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
APPLIES = int(os.environ.get("APPLIES", "1000"))


def build(binary, package):
    path = os.environ.get(binary.upper())
    if path:
        return path
    subprocess.run(["cargo", "build", "--release", "-p", package], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", binary)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * q))]


def main():
    ringway = build("ringway", "ringway")
    ringbench = build("ringbench", "ringway-bench")
    work = tempfile.mkdtemp(prefix="route-apply.")
    procs = []
    try:
        origin_port, a_port, b_port, edge = free_port(), free_port(), free_port(), free_port()
        for port in (origin_port, a_port, b_port):
            procs.append(subprocess.Popen(
                [ringbench, "origin", "--listen", f"127.0.0.1:{port}", "--mode", "echo"],
                stdout=subprocess.DEVNULL))
        config = os.path.join(work, "ringway.toml")
        with open(config, "w") as f:
            state = "" if os.environ.get("STATE") == "0" else f"{work}/routes.toml"
            f.write(f'workers = 2\n[control]\nsocket = "{work}/control.sock"\nstate = "{state}"\n'
                    f'[[listener]]\naddr = "127.0.0.1:{edge}"\n'
                    f'[[route]]\npath = "/echo"\norigin = "127.0.0.1:{origin_port}"\n')
        env = dict(os.environ, RUST_LOG="warn")
        server = subprocess.Popen([ringway, "run", "--config", config], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(server)
        for _ in range(100):
            if server.stdout.readline().startswith("listening on"):
                break
        ctl = socket.socket(socket.AF_UNIX)
        ctl.connect(os.path.join(work, "control.sock"))
        reader = ctl.makefile("r")

        def run(label):
            apply_us, prop_us, rtt_us = [], [], []
            for i in range(APPLIES):
                origin = a_port if i % 2 == 0 else b_port
                text = (f'[[route]]\npath = "/echo"\norigin = "127.0.0.1:{origin_port}"\n'
                        f'[[route]]\npath = "/who"\norigin = "127.0.0.1:{origin}"\n')
                req = {"v": 1, "cmd": "routes-apply", "text": text, "source": "bench"}
                t = time.perf_counter()
                ctl.sendall((json.dumps(req) + "\n").encode())
                reply = json.loads(reader.readline())
                rtt_us.append((time.perf_counter() - t) * 1e6)
                assert reply["reply"] == "applied", reply
                apply_us.append(reply["apply_us"])
                prop_us.append(reply["propagate_us"])
            print(f"{label:<24} {APPLIES} applies (µs): hand-over to last worker p50 "
                  f"{pct(prop_us, .5):.0f} p99 {pct(prop_us, .99):.0f} max {max(prop_us):.0f}; "
                  f"arrival to last worker p50 {pct(apply_us, .5):.0f} p99 "
                  f"{pct(apply_us, .99):.0f}; client round trip p50 {pct(rtt_us, .5):.0f} "
                  f"p99 {pct(rtt_us, .99):.0f}")

        run("idle")
        load = subprocess.Popen(
            [ringbench, "latency", "-c", "64", "-s", "64", "-d", "600",
             "--target", f"ws://127.0.0.1:{edge}/echo"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(load)
        time.sleep(1.5)
        run("under 64-conn ping-pong")
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
