#!/usr/bin/env python3
"""Prints a markdown table of the criterion results under DIR (target/criterion): one row per
benchmark with its mean time and, where the benchmark declared a throughput, GB/s or million
operations per second. Used by bench/compare for BENCHMARKS.md.

usage: criterion_table.py target/criterion
"""

import json
import pathlib
import sys


def main(root):
    rows = []
    for bench in sorted(pathlib.Path(root).glob("**/new/benchmark.json")):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        ns = est["mean"]["point_estimate"]
        thr = meta.get("throughput") or {}
        if "Bytes" in thr:
            rate = f"{thr['Bytes'] / ns:.2f} GB/s"
        elif "Elements" in thr:
            rate = f"{thr['Elements'] / ns * 1e3:.2f} M/s"
        else:
            rate = ""
        rows.append((meta["full_id"], ns, rate))
    if not rows:
        sys.exit(f"no criterion results under {root}")
    print("| benchmark | mean time | throughput |")
    print("|---|---:|---:|")
    for name, ns, rate in rows:
        t = f"{ns:.1f} ns" if ns < 1e4 else f"{ns / 1e3:.1f} µs"
        print(f"| {name} | {t} | {rate} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
