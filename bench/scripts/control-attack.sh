#!/usr/bin/env bash
# bench/scripts/control-attack.sh: does a flood of control requests hurt the tunnels? One
# worker holds 2,000 idle tunnels while a single tunnel measures ping-pong latency, first quiet,
# then while clients scrape /metrics and run `ringctl tunnels` and `ringctl stats` as fast as
# they can (each answer walks the worker's tunnels). Prints the two latency reports.
#
#   bench/scripts/control-attack.sh          # release builds (cargo builds them if unset)
#   FLOOD="metrics stats" bench/scripts/control-attack.sh    # only some kinds of request
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${RINGWAY:-}" ]; then cargo build --release -p ringway -p ringctl -p ringway-bench >&2; fi
T=${CARGO_TARGET_DIR:-$PWD/target}/release
RW=${RINGWAY:-$T/ringway}; RB=${RINGBENCH:-$T/ringbench}; CTL=${RINGCTL:-$T/ringctl}
D=$(mktemp -d /tmp/control-attack.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$D"' EXIT
OP=$(free_port); EDGE=$(free_port); MP=$(free_port)
"$RB" origin --listen 127.0.0.1:"$OP" --mode echo >/dev/null & PIDS+=($!)
cat >"$D/ringway.toml" <<T
workers = 1
[control]
socket = "$D/control.sock"
state = ""
[admin]
metrics = "127.0.0.1:$MP"
[[listener]]
addr = "127.0.0.1:$EDGE"
[[route]]
path = "/echo"
origin = "127.0.0.1:$OP"
T
RUST_LOG=warn "$RW" run --config "$D/ringway.toml" >/dev/null 2>"$D/ringway.log" & PIDS+=($!)
sleep 0.5
"$RB" hold -n 2000 --hold-secs 600 --target "ws://127.0.0.1:$EDGE/echo" >/dev/null 2>&1 & PIDS+=($!)
sleep 4
lat() { "$RB" latency -c 1 -s 64 -d 5 --warmup 1 --target "ws://127.0.0.1:$EDGE/echo" 2>/dev/null | grep -E "messages/s|latency"; }
echo "== quiet (2000 idle tunnels held)"; lat
flood() {
  local end=$((SECONDS + 8))
  while [ $SECONDS -lt $end ]; do
    case $1 in
      metrics) python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$MP/metrics').read()" ;;
      tunnels) "$CTL" --socket "$D/control.sock" tunnels >/dev/null ;;
      stats) "$CTL" --socket "$D/control.sock" stats >/dev/null ;;
    esac
  done
}
FLOODERS=()
for kind in ${FLOOD:-metrics tunnels stats}; do flood "$kind" & FLOODERS+=($!); done
sleep 1
echo "== under a flood of: ${FLOOD:-metrics tunnels stats}"; lat
wait "${FLOODERS[@]}"
"$CTL" --socket "$D/control.sock" stats | head -3
