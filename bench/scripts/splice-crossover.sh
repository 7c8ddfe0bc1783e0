#!/usr/bin/env bash
# bench/scripts/splice-crossover.sh: at which message size splicing beats copying. Two ringway
# instances on the same binary, one that splices every read ([engine] splice_min_bytes = 1) and
# one that never does (= 0), relay 8 connections of ping-pong through an echo origin at each
# message size, interleaved, ROUNDS times; printed per size: messages/s and ringway's CPU per
# message (ringbench --server-pid), splice over copy. The size where the ratio crosses 1 is
# where `splice_min_bytes` belongs.
#
#   bench/scripts/splice-crossover.sh                     # L4 (mode = "tcp") listeners
#   MODE=ws bench/scripts/splice-crossover.sh             # ws:// tunnels (origin -> client
#                                                         # splices; client -> origin unmasks)
#   SIZES="4096 65536" ROUNDS=5 bench/scripts/splice-crossover.sh
#
# Needs release builds (built with cargo when RINGWAY / RINGBENCH are unset).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
SIZES=${SIZES:-"1024 4096 16384 32768 65536 262144"}
MODE=${MODE:-tcp}
case $MODE in tcp | ws) ;; *) echo "MODE must be tcp or ws" >&2; exit 2 ;; esac
if [ -z "${RINGWAY:-}" ] || [ -z "${RINGBENCH:-}" ]; then
  cargo build --release -p ringway -p ringway-bench >&2
fi
T=${CARGO_TARGET_DIR:-$PWD/target}/release
RW=${RINGWAY:-$T/ringway}; RB=${RINGBENCH:-$T/ringbench}
D=$(mktemp -d /tmp/splice-crossover.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$D"' EXIT
OP=$(free_port)
"$RB" origin --listen 127.0.0.1:"$OP" --mode echo >/dev/null & PIDS+=($!)
declare -A PORT PID
for mode in splice copy; do
  P=$(free_port); PORT[$mode]=$P
  min=1; [ "$mode" = copy ] && min=0
  if [ "$MODE" = tcp ]; then
    printf 'workers = 1\n[control]\nsocket = "%s/%s.sock"\nstate = ""\n[engine]\nsplice_min_bytes = %s\n[[listener]]\naddr = "127.0.0.1:%s"\nmode = "tcp"\norigin = "127.0.0.1:%s"\n' \
      "$D" "$mode" "$min" "$P" "$OP" >"$D/$mode.toml"
  else
    printf 'workers = 1\n[control]\nsocket = "%s/%s.sock"\nstate = ""\n[engine]\nsplice_min_bytes = %s\n[[listener]]\naddr = "127.0.0.1:%s"\n[[route]]\npath = "/echo"\norigin = "127.0.0.1:%s"\n' \
      "$D" "$mode" "$min" "$P" "$OP" >"$D/$mode.toml"
  fi
  RUST_LOG=warn "$RW" run --config "$D/$mode.toml" >/dev/null 2>&1 & PID[$mode]=$!; PIDS+=($!)
done
sleep 0.5
for size in $SIZES; do
  for round in $(seq 1 "$ROUNDS"); do
    for mode in splice copy; do
      "$RB" latency -c 8 -s "$size" -d "$DURATION" --warmup 0.5 --server-pid "${PID[$mode]}" \
        --target "$([ "$MODE" = tcp ] && echo tcp://127.0.0.1:${PORT[$mode]} || echo ws://127.0.0.1:${PORT[$mode]}/echo)" --json "$D/$size-$mode-$round.json" >/dev/null 2>&1
    done
  done
done
python3 - "$D" "$SIZES" "$ROUNDS" <<'PY'
import json, statistics, sys
d, sizes, rounds = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
def med(size, mode, key):
    return statistics.median(json.load(open(f"{d}/{size}-{mode}-{r}.json"))[key] for r in range(1, rounds + 1))
print(f"{'size':>8} | {'splice msg/s':>12} | {'copy msg/s':>10} | ratio | {'splice µs CPU/msg':>17} | {'copy µs CPU/msg':>15} | ratio")
for s in sizes:
    a, b = med(s, "splice", "messages_per_sec"), med(s, "copy", "messages_per_sec")
    x, y = med(s, "splice", "server_cpu_us_per_message"), med(s, "copy", "server_cpu_us_per_message")
    print(f"{s:>8} | {a:12.0f} | {b:10.0f} | {a / b:4.2f}× | {x:17.2f} | {y:15.2f} | {x / y:4.2f}×")
PY
