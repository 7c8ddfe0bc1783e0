#!/usr/bin/env bash
# bench/scripts/hist-cost.sh: what recording latency histograms costs the relay, as ringway's CPU
# time per message (64 connections of 64 B ping-pong) and per MiB (8 connections of 16 KiB
# frames both ways), histograms on and off ([admin] latency_histograms), interleaved, same
# binary. CPU time (perf stat task-clock of the ringway process, kernel time included) is far
# steadier on this noisy 2-core machine than throughput.
#
#   bench/scripts/hist-cost.sh            # 3 rounds of 4 s per workload and setting
#   ROUNDS=5 bench/scripts/hist-cost.sh
#
# Needs perf and release builds (built with cargo when RINGWAY / RINGBENCH are unset).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
if [ -z "${RINGWAY:-}" ] || [ -z "${RINGBENCH:-}" ]; then
  cargo build --release -p ringway -p ringway-bench >&2
fi
T=${CARGO_TARGET_DIR:-$PWD/target}/release
RW=${RINGWAY:-$T/ringway}; RB=${RINGBENCH:-$T/ringbench}
D=$(mktemp -d /tmp/hist-cost.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$D"' EXIT
OP=$(free_port)
"$RB" origin --listen 127.0.0.1:"$OP" --mode echo >/dev/null & PIDS+=($!)
echo "round histograms workload cpu"
for round in $(seq 1 "$ROUNDS"); do
  for mode in true false; do
    P=$(free_port)
    printf 'workers = 1\n[control]\nsocket = "%s/%s.sock"\nstate = ""\n[admin]\nlatency_histograms = %s\n[[listener]]\naddr = "127.0.0.1:%s"\n[[route]]\npath = "/echo"\norigin = "127.0.0.1:%s"\n' \
      "$D" "$mode" "$mode" "$P" "$OP" >"$D/$mode.toml"
    RUST_LOG=warn "$RW" run --config "$D/$mode.toml" >/dev/null 2>&1 & RPID=$!
    sleep 0.5
    for wl in lat64 bulk8; do
      case $wl in
        lat64) args=(latency -c 64 -s 64) ;;
        bulk8) args=(bulk -c 8 -f 16384) ;;
      esac
      perf stat -x, -e task-clock -p "$RPID" -o "$D/perf.txt" -- sleep 4 & PP=$!
      "$RB" "${args[@]}" -d 4 --warmup 0 --target "ws://127.0.0.1:$P/echo" --json "$D/out.json" >/dev/null 2>&1
      wait "$PP"
      ms=$(grep task-clock "$D/perf.txt" | cut -d, -f1)
      python3 - "$D/out.json" "$ms" "$round" "$mode" "$wl" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); ms = float(sys.argv[2])
round_, mode, wl = sys.argv[3:6]
if wl == "lat64":
    print(round_, "on" if mode == "true" else "off", wl, f"{ms * 1e3 / d['messages']:.2f} µs CPU per message")
else:
    print(round_, "on" if mode == "true" else "off", wl, f"{ms / (d['tx_bytes'] / 2**20):.3f} ms CPU per MiB")
PY
    done
    kill "$RPID"; wait "$RPID" 2>/dev/null || true
  done
done
